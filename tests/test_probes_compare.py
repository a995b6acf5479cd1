import base64
import json
import re

import pytest

import lopt
import probes
from lopt.rundir import write_json
from probes.compare import compare_runs


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two run directories holding only analysis.json: heavy ball with β = 0.9, and with
    β = 0.5 plus a hard clip (so clipping is idiosyncratic and momentum universal)."""
    root = tmp_path_factory.mktemp("runs")
    cells = {
        "beta09": lopt.hand_designed.momentum(0.1, 0.9),
        "beta05": lopt.hand_designed.momentum(0.1, 0.5),
    }
    for name, cell in cells.items():
        a = probes.analyze_cell(cell, gradient_scale=1.0).to_json()
        write_json(root / name / "analysis.json", a)
    # The second run clips: take the clipping result of a clipped-SGD cell.
    clipped = probes.analyze_cell(
        lopt.hand_designed.clipped_sgd(0.1, 0.7), gradient_scale=1.0
    ).to_json()
    a = json.loads((root / "beta05" / "analysis.json").read_text())
    a["clipping"] = clipped["clipping"]
    write_json(root / "beta05" / "analysis.json", a)
    return root


def test_compare_two_runs(two_runs, tmp_path):
    runs = [two_runs / "beta09", two_runs / "beta05"]
    result = compare_runs(runs, tmp_path / "cmp")
    out = tmp_path / "cmp"
    saved = json.loads((out / "compare.json").read_text())
    assert saved["schema"] == "probes.compare/1" and saved == result
    assert [r["run"] for r in saved["table"]] == ["beta09", "beta05"]
    betas = [r["momentum"]["beta"] for r in saved["table"]]
    assert betas == pytest.approx([0.9, 0.5], abs=0.01)
    summary = saved["summary"]
    assert summary["universal"] == ["momentum"]  # the intersection of detected mechanisms
    assert summary["idiosyncratic"] == {"clipping": ["beta05"]}
    assert set(summary["absent"]) == {"schedule", "adaptation", "damping", "bias"}
    assert summary["spread"]["momentum_beta"]["max"] == pytest.approx(0.9, abs=0.01)
    assert saved["table"][0]["fixed_points"]["stable"] is True
    page = (out / "index.html").read_text()
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(embedded) == len(saved["figures"]) >= 3
    files = {(out / rel).read_bytes() for rel in saved["figures"].values()}
    assert {base64.b64decode(data) for data in embedded} == files  # every figure, embedded
    assert "http" not in page  # nothing fetched


def test_default_out_dir_is_in_the_common_parent(two_runs):
    result = compare_runs([two_runs / "beta09", two_runs / "beta05"])
    assert (two_runs / "compare" / "index.html").exists()
    assert result["out_dir"] == str(two_runs.resolve() / "compare")


def test_missing_run_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="no such run directory"):
        compare_runs([tmp_path / "nope"], tmp_path / "out")


def test_damping_missing_from_an_older_analysis_is_unmeasured_not_absent():
    from probes.compare import _row, summarize

    new = {"momentum": {"detected": True, "beta": 0.9}, "damping": {"detected": True, "kappa": 0.1}}
    old = {"momentum": {"detected": True, "beta": 0.8}}  # written before the damping probe
    s = summarize([_row("a", new, None, None), _row("b", old, None, None)])
    assert s["universal"] == ["momentum"] and "damping" not in s["absent"]
    assert "damping" not in s["idiosyncratic"] and s["unmeasured"]["damping"] == ["b"]
    assert any("damping not measured in b" in t for t in s["text"])
    both = summarize([_row("a", new, None, None), _row("c", new, None, None)])
    assert "damping" in both["universal"] and "damping" not in both["unmeasured"]


def test_bias_is_compared_where_measured():
    from probes.compare import _row, summarize

    biased = {"bias": {"detected": True, "stall_gradient": -0.0077, "update_at_zero": -0.3}}
    other = {"bias": {"detected": True, "stall_gradient": 0.0011, "update_at_zero": 0.09}}
    old = {"momentum": {"detected": True, "beta": 0.8}}  # written before the bias probe
    s = summarize([_row("a", biased, None, None), _row("b", other, None, None)])
    assert s["universal"] == ["bias"]
    assert s["spread"]["bias_stall_gradient"]["values"] == [-0.0077, 0.0011]
    assert any("|g₀| = 0.0011–0.0077 (negative or positive)" in t for t in s["text"])
    s = summarize([_row("a", biased, None, None), _row("c", old, None, None)])
    assert s["unmeasured"]["bias"] == ["c"] and "bias" not in s["universal"] + s["absent"]


def test_damping_read_from_the_first_steps_counts_as_detected_and_says_so():
    from probes.compare import _row, summarize

    steady = {"damping": {"detected": True, "kappa": 0.1}}
    first = {
        "damping": {"detected": False, "kappa": None},
        "damping_transient": {"detected": True, "kappa": 0.9, "memory": 0.8, "steps": 20},
    }
    quiet = {**first, "damping_transient": {"detected": False, "kappa": 5.0}}
    rows = [_row("a", steady, None, None), _row("b", first, None, None)]
    s = summarize(rows)
    assert s["universal"] == ["damping"] and s["spread"]["damping_kappa"]["values"] == [0.1, 0.9]
    assert rows[1]["damping"]["first_steps"] and not rows[0]["damping"]["first_steps"]
    assert any("read from the first steps only in b" in t for t in s["text"])
    none = _row("c", quiet, None, None)["damping"]
    assert not none["detected"] and not none["first_steps"]


def test_runs_without_weights_keep_an_old_analysis_and_say_so(two_runs, tmp_path):
    import shutil

    from probes.compare import _load

    old = tmp_path / "old"
    shutil.copytree(two_runs / "beta09", old)
    a = json.loads((old / "analysis.json").read_text())
    write_json(old / "analysis.json", {**a, "schema_version": 1})
    analysis, source, _, _ = _load(old)  # no theta.npz: nothing to analyse again
    assert analysis["schema_version"] == 1 and "predates" in source
    assert _load(two_runs / "beta09")[1] == "analysis.json"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither analysis.json nor theta.npz"):
        _load(tmp_path / "empty")


def test_compare_page_shares_the_report_stylesheet(two_runs, tmp_path):
    from probes.report.page import CSS

    compare_runs([two_runs / "beta09", two_runs / "beta05"], tmp_path / "cmp")
    page = (tmp_path / "cmp" / "index.html").read_text()
    assert f"<style>{CSS}</style>" in page and page.count("<style>") == 1
    assert '<div class="figs">' in page and '<div class="summary">' in page


def test_run_names_are_shown_literally_in_figures_and_page(two_runs, tmp_path):
    import shutil

    names = ["a\\undefinedcmd", "$x\\undefinedcmd$ <b>"]
    for name in names:
        shutil.copytree(two_runs / "beta09", tmp_path / name)
    result = compare_runs([tmp_path / n for n in names], tmp_path / "cmp")  # mathtext would fail
    assert [r["run"] for r in result["table"]] == names
    page = (tmp_path / "cmp" / "index.html").read_text()
    assert "$x\\undefinedcmd$ &lt;b&gt;" in page and "<b>" not in page


def test_literal_escapes_mathtext_only():
    from probes import figures as F

    assert F.literal("a\\undefinedcmd") == "a\\undefinedcmd"
    assert F.literal("$x\\undefinedcmd$") == "\\$x\\undefinedcmd\\$"
    assert F.literal(3) == "3"
    fig, (ax,) = F.figure(1)
    ax.plot([0, 1], [0, 1], label=F.literal("$x\\undefinedcmd$"))
    ax.set_title(F.literal("$\\alpha$ costs $5"))
    ax.legend()
    assert F.png(fig)[:4] == b"\x89PNG"
    unescaped, (ax,) = F.figure(1)
    ax.set_title("$x\\undefinedcmd$")
    with pytest.raises(ValueError):
        F.png(unescaped)
