"""Interpretation reports: ``probes.write_report``, ``probes.report_run``, ``probes report``.

One tiny meta-training run (GRU-4, 2 meta-steps) is reported once through the command line and
shared by the white-box checks; the black-box checks use optax optimizers and hand-made
analyses, so the file stays fast (JAX compilation dominates).
"""

import base64
import html
import json
import math
import re

import jax
import numpy as np
import optax
import pytest
from run_files import touch_after

import lopt
import probes
from lopt.rundir import write_json
from lopt_cli.probes import main
from probes.report import SCHEMA

WHITE_BOX = {
    "momentum_states.png",
    "momentum_update_functions.png",
    "momentum_eigenvalues.png",
    "adaptation_s_curve.png",
    "adaptation_update_functions.png",
}


def _strict_json(path):
    def no_constant(name):
        raise AssertionError(f"{path}: non-finite number {name}")

    return json.loads(path.read_text(), parse_constant=no_constant)


def _external_refs(page):
    """URLs the browser would fetch: src/href/url() pointing at http(s) or protocol-relative."""
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page)
    refs += re.findall(r"""url\(\s*["']?([^"')]+)""", page)
    return [r for r in refs if re.match(r"(https?:)?//", r)]


def _eval_json(T=6):
    curve = list(np.geomspace(1.0, 1e-3, T))
    opt = {
        "metric": 0.04,
        "sem": 0.002,
        "final": 1e-3,
        "final_sem": 1e-4,
        "diverged": 0,
        "curve_mean": curve,
        "curve_sem": [0.01] * T,
        "hyperparams": {},
    }
    horizon = {
        "optimizers": {
            "learned": opt,
            "momentum": {
                **opt,
                "metric": 0.05,
                "hyperparams": {"learning_rate": 3.6, "momentum": 0.9},
            },
            "adam": {**opt, "metric": None, "sem": None, "curve_mean": curve[:-1] + [None]},
        },
        "versus": {
            "momentum": {"diff": -0.01, "diff_sem": 0.001, "beats": True, "finite_pairs": 8},
            "adam": {"diff": None, "diff_sem": None, "beats": False, "finite_pairs": 7},
        },
        "best_baseline": "momentum",
        "beats_all": False,
    }
    return {
        "schema": "lopt.eval/1",
        "horizon": T,
        "num_problems": 8,
        "learned": "learned",
        "task": {"name": "linear_regression"},
        "horizons": {str(T): horizon, str(2 * T): horizon},
    }


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run directory as ``lopt meta-train`` writes it (config.json, theta.npz) plus eval.json.

    theta is a GRU-4 at initialisation with a random readout (meta-training would only cost
    compilation time here; the report needs non-zero updates, not a good optimizer).
    """
    run = tmp_path_factory.mktemp("run")
    opt = lopt.RNNOptimizer(hidden_size=4)
    theta = opt.init(jax.random.key(0))
    theta["readout"]["w"] = -0.3 * jax.random.normal(jax.random.key(1), (4,))
    lopt.save(run / "theta.npz", opt, theta, step=0, task="linear_regression")
    task = {"name": "linear_regression", "settings": {"dim": 3, "num_steps": 8}}
    write_json(run / "config.json", {"optimizer": opt.config(), "task": task})
    write_json(run / "eval.json", _eval_json(8))
    return run


def test_probes_report_cli_writes_a_white_box_report(tiny_run, capsys):
    # An analysis.json from before the damping probe (schema 1) is redone, not re-used: the one
    # analysis this report computes is the redo (a missing analysis.json takes the same branch
    # of report_run, covered in test_probes_report_browser; the rule in test_probes_cli).
    write_json(tiny_run / "analysis.json", {"schema_version": 1, "source": "cell"})
    touch_after(tiny_run / "analysis.json", tiny_run / "theta.npz")  # outdated by schema alone
    assert main(["report", str(tiny_run)]) == 0
    captured = capsys.readouterr()
    assert "predates" in captured.err
    out = captured.out.strip().splitlines()
    index = tiny_run / "report" / "index.html"
    assert out[-1] == f"wrote {index}" and index.exists()
    report = _strict_json(tiny_run / "report" / "report.json")
    assert report["schema"] == SCHEMA and report["source"] == "cell" and report["white_box"]
    pngs = {p.name for p in (tiny_run / "report" / "figures").glob("*.png")}
    assert WHITE_BOX <= pngs
    assert {f["file"].split("/")[-1] for f in report["figures"]} == pngs
    # The numbers shown are the analysis numbers, of the analysis computed on the way (as
    # `probes analyze` does).
    analysis = _strict_json(tiny_run / "analysis.json")
    assert analysis["schema_version"] == 13 and "damping" in analysis
    m = report["mechanisms"]["momentum"]["numbers"]
    assert m["beta"]["value"] == analysis["momentum"]["beta"]
    assert report["mechanisms"]["clipping"]["detected"] == analysis["clipping"]["detected"]
    ev = report["evidence"]
    assert ev["convergence"]["kind"] in ("fixed", "slow", "trajectory end")
    assert set(ev["s_curve"]["arms"]) == {"pos_up", "pos_down", "neg_up", "neg_down"}
    assert ev["optimum"]["beta"] == pytest.approx(0.8808, abs=0.01)  # linear_regression's β*
    assert report["results"]["horizons"][0]["rows"][0]["name"] == "learned"
    assert "loss_curves.png" in pngs
    assert "damping" in report["mechanisms"] and "damping_gains.png" in pngs


def test_index_html_is_self_contained_and_embeds_every_figure(tiny_run):
    if not (tiny_run / "report" / "index.html").exists():
        assert main(["report", str(tiny_run), "--quiet"]) == 0
    page = (tiny_run / "report" / "index.html").read_text()
    figures = sorted((tiny_run / "report" / "figures").glob("*.png"))
    assert figures
    for png in figures:
        assert base64.b64encode(png.read_bytes()).decode() in page, png.name
    assert _external_refs(page) == []
    assert "<script" not in page and "<link" not in page
    report = _strict_json(tiny_run / "report" / "report.json")
    for sentence in report["summary"]:
        assert html.escape(sentence) in page


@pytest.fixture(scope="module")
def heavy_ball():
    """The black-box analysis of ``optax.sgd(0.1, momentum=0.9)`` (β = 0.9, α = 0.1)."""
    return probes.analyze_optax(optax.sgd(0.1, momentum=0.9))


def test_black_box_report_of_optax_momentum(tmp_path, heavy_ball):
    analysis = heavy_ball
    report = probes.write_report(analysis, tmp_path)
    assert report["schema"] == SCHEMA and not report["white_box"] and report["source"] == "optax"
    assert float(re.search(r"β ≈ ([0-9.]+)", report["summary"][0])[1]) == pytest.approx(0.9)
    assert len(report["summary"]) == 5  # one sentence per mechanism
    beta = report["mechanisms"]["momentum"]["numbers"]["beta"]["value"]
    assert beta == pytest.approx(0.9, abs=0.01) and beta == analysis.momentum.beta
    pngs = {p.name for p in (tmp_path / "figures").glob("*.png")}
    assert pngs and not pngs & WHITE_BOX
    assert {"momentum_impulse_response.png", "clipping_update_function.png"} <= pngs
    assert "schedule_alpha_eff.png" in pngs and "adaptation_alpha_eff.png" in pngs
    assert not any(f["white_box"] for f in report["figures"])
    # No clipping, no schedule, no adaptation for heavy-ball momentum, and the page says so.
    for mechanism in ("clipping", "schedule", "adaptation", "damping"):
        assert report["mechanisms"][mechanism]["detected"] is False
    assert _strict_json(tmp_path / "report.json") == report
    # Writing again into the same directory leaves no figure of an earlier report behind.
    (tmp_path / "figures" / "stale.png").write_bytes(b"x")
    probes.write_report(analysis, tmp_path)
    assert not (tmp_path / "figures" / "stale.png").exists()


def test_results_distillation_and_missing_keys(tmp_path, heavy_ball):
    analysis = heavy_ball.to_json()
    distill = {
        "schema": "lopt.distill/1",
        "chain": [{"transform": "trace", "decay": 0.9}, {"transform": "scale", "step_size": -0.1}],
        "optax_code": "optax.chain(optax.trace(decay=0.9), optax.scale(-0.1))",
        "results": {
            "learned": {"metric": 0.04, "sem": 0.002},
            "best_baseline": {"name": "momentum", "metric": 0.05, "sem": 0.002},
            "distilled": {"metric": 0.045, "sem": 0.002},
            "distilled_retuned": {"metric": 0.041, "sem": 0.002, "label": "tuned"},
            "distilled_identified": {"metric": 0.0425, "sem": 0.002, "label": "fitted"},
        },
        "optax_code_identified": "optax.chain(optax.trace(decay=0.8), optax.scale(-0.3))",
        "optax_code_retuned": "optax.chain(optax.trace(decay=0.7), optax.scale(-0.4))",
        "notes": {"retune": {"start": "identified"}},
        "fraction_retuned": {"mean": 0.9, "ci": [0.5, 1.4]},
        "gain": {"mean": 0.01, "sem": 0.001},
        "significant": True,
        "fraction": {"mean": 0.5, "ci": [0.3, 0.7]},
        "fraction_identified": {"mean": 0.75, "ci": [0.2, 1.1]},
        "curves": {
            "distilled": {"mean": list(np.geomspace(1.0, 2e-3, 6)), "sem": [0.01] * 6},
            "distilled_identified": {"mean": list(np.geomspace(1.0, 1e-3, 6)), "sem": [0.01] * 6},
        },
    }
    report = probes.write_report(analysis, tmp_path, evaluation=_eval_json(), distill=distill)
    page = (tmp_path / "index.html").read_text()
    assert "optax.chain(optax.trace(decay=0.9), optax.scale(-0.1))" in page
    assert "trace(decay=0.9)" in page and "50%" in page
    assert report["mechanisms"]["distill"]["numbers"]["fraction"]["value"] == [0.5, 0.3, 0.7]
    ident = report["mechanisms"]["distill"]["numbers"]["fraction_identified"]
    assert ident["value"] == [0.75, 0.2, 1.1] and "75%" in page
    assert "optax.scale(-0.3)" in page and "distilled, identified (fitted)" in page
    assert "loss_curves.png" in {p.name for p in (tmp_path / "figures").glob("*.png")}
    # the summary ends with what the chains recover: probed, identified, re-tuned (with CIs)
    assert len(report["summary"]) == 1 + 5 + 1  # the result first, the chains last
    shares = [int(x) for x in re.findall(r"(\d+)%(?! CI)", report["summary"][-1])]
    assert shares == [50, 30, 70, 75, 20, 110, 90, 50, 140]
    sec = report["mechanisms"]["distill"]
    assert [r["key"] for r in sec["rows"]][2:] == [
        "distilled",
        "distilled_identified",
        "distilled_retuned",
    ]
    assert list(sec["code"]) == ["distilled", "identified", "re-tuned"]
    assert "distilled, re-tuned (tuned)" in page and "optax.scale(-0.4)" in page
    assert "tuned on the loss of training problems, from the identified numbers" in page
    rows = report["results"]["horizons"][0]["rows"]
    assert [r["name"] for r in rows] == ["learned", "momentum", "adam"]
    assert rows[1]["diff_baseline_minus_learned"] == pytest.approx(0.01)
    assert rows[2]["metric"] is None and "diverged" in page
    assert report["results"]["horizons"][1]["multiple"] == 2
    _strict_json(tmp_path / "report.json")
    # A distill.json with almost nothing in it, and an eval.json without horizons, still render.
    lean = probes.write_report(
        analysis,
        tmp_path / "lean",
        evaluation={"schema": "lopt.eval/1"},
        distill={"significant": False, "fraction": None},
    )
    assert lean["results"] is None and not any("optax chain" in x for x in lean["summary"])
    assert any("not reported" in n for n in lean["mechanisms"]["distill"]["notes"])


def test_report_of_a_hand_made_analysis_dict_with_extra_fields(tmp_path):
    analysis = probes.analyze_optax(optax.rmsprop(0.01)).to_json()
    analysis["adaptation"]["branch_slope_pos"] = -0.9  # a field from a newer detector
    report = probes.write_report(analysis, tmp_path, title="RMSProp & friends")
    assert report["mechanisms"]["adaptation"]["detected"]
    assert report["mechanisms"]["adaptation"]["numbers"]["branch_slope_pos"]["value"] == -0.9
    slope = analysis["adaptation"]["slope"]
    assert report["mechanisms"]["adaptation"]["numbers"]["slope"]["value"] == slope
    assert "RMSProp &amp; friends" in (tmp_path / "index.html").read_text()
    assert math.isfinite(report["mechanisms"]["adaptation"]["numbers"]["slope"]["value"])
    assert not report["mechanisms"]["damping"]["detected"]
    assert len(report["summary"]) == 5
    # an analysis without the damping result (written by an older version): no section, no line
    del analysis["damping"]
    older = probes.write_report(analysis, tmp_path / "older")
    assert "damping" not in older["mechanisms"] and len(older["summary"]) == 4


def test_data_other_than_the_familys_own_is_named_in_title_and_summary(tmp_path, heavy_ball):
    fallback = "sklearn-digits-8x8 (fallback, NOT MNIST)"
    ev = _eval_json()
    ev["task"] = {"name": "mnist", "data_source": fallback}
    report = probes.write_report(heavy_ball.to_json(), tmp_path, evaluation=ev)
    page = (tmp_path / "index.html").read_text()
    assert fallback in report["title"] and fallback in page
    assert fallback in report["results_sentence"]
    assert report["results"]["data_source"] == fallback
    # a synthetic family's own data is not a note
    plain = probes.write_report(heavy_ball.to_json(), tmp_path / "lr", evaluation=_eval_json())
    assert "(data:" not in plain["results_sentence"]


def test_probes_report_missing_run_is_one_line(tmp_path, capsys):
    no_theta = tmp_path / "no_theta"
    no_theta.mkdir()
    write_json(no_theta / "config.json", {"task": {"name": "linear_regression"}})
    cases = [
        (tmp_path / "nope", "no such run directory"),
        (tmp_path, "config.json"),
        (no_theta, "theta.npz"),
    ]
    for run, message in cases:
        with pytest.raises(SystemExit) as e:
            main(["report", str(run)])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("probes: error:") and "\n" not in err and "Traceback" not in err
        assert message in err


def test_probes_compare_is_wired_to_compare_runs(tmp_path, capsys, monkeypatch):
    import sys
    import types

    calls = []
    fake = types.ModuleType("probes.compare")
    fake.compare_runs = lambda runs, out, progress: (
        calls.append((runs, out, progress)) or out / "index.html"
    )
    monkeypatch.setitem(sys.modules, "probes.compare", fake)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    assert calls == [([a, b], tmp_path / "cmp", True)]
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'cmp' / 'index.html'}"
    with pytest.raises(SystemExit) as e:
        main(["compare", str(a), str(tmp_path / "missing")])
    assert e.value.code == 2 and "no such run directory" in capsys.readouterr().err


def test_strings_from_the_json_files_reach_the_page_escaped(tmp_path, heavy_ball):
    evil = "<script>alert(1)</script>"
    ev = _eval_json()
    block = ev["horizons"]["6"]
    block["optimizers"][evil] = {**block["optimizers"]["momentum"], "hyperparams": {evil: 1.0}}
    block["versus"][evil] = {"diff": 0.01, "diff_sem": 0.001, "beats": False}
    block["versus"]["momentum"] = {**block["versus"]["momentum"], "beats": False}
    block["versus"]["momentum"]["learned_diverged"] = evil  # the divergence description
    block["best_baseline"] = evil
    ev["task"] = {"name": evil, "data_source": evil}
    a = heavy_ball.to_json()
    a["schedule"]["shape"] = evil
    a["momentum"]["point_kind"] = evil
    a["adaptation"]["newer_field"] = evil  # a field of a newer detector: shown as it is
    a["damping"]["gradient_range_source"] = evil
    distill = {
        "chain": [{"transform": evil, "mechanism": evil, evil: evil}],
        "optax_code": evil,
        "reason": evil,
        "significant": False,
        "results": {"best_baseline": {"name": evil, "metric": 0.1, "label": evil}},
    }
    report = probes.write_report(a, tmp_path, evaluation=ev, distill=distill, title=evil)
    page = (tmp_path / "index.html").read_text()
    assert "<script" not in page
    assert page.count("&lt;script&gt;") >= 10
    rows = report["results"]["horizons"][0]["rows"]
    assert [r["learned_diverged"] for r in rows if r["name"] == "momentum"] == [evil]


def test_a_malformed_analysis_is_one_clear_error(tiny_run, tmp_path, capsys, heavy_ball):
    bad = heavy_ball.to_json()
    bad["momentum"]["beta"] = "fast"
    with pytest.raises(ValueError, match=r"momentum\.beta"):
        probes.write_report(bad, tmp_path / "bad")
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "theta.npz"):
        (run / name).write_bytes((tiny_run / name).read_bytes())
    analysis = heavy_ball.to_json()
    del analysis["clipping"]["threshold"]
    write_json(run / "analysis.json", {**analysis, "key_seed": 0, "faithfulness": {}})
    with pytest.raises(SystemExit) as e:
        main(["report", str(run), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err and "Traceback" not in err
    assert "analysis.json" in err and "clipping: missing 'threshold'" in err


def _bistable_cell():
    """``h' = h + 0.1·h(1-h) - 0.1·g`` from ``h0 = 10⁻³``: an unstable fixed point at 0 that the
    trajectory leaves slowly (most seeds along it fall back there) and an attractor at 1 (where
    the trajectory ends)."""
    import jax.numpy as jnp

    return lopt.Cell(
        lambda: jnp.full(1, 1e-3),
        lambda h, g: h + 0.1 * h * (1 - h) - 0.1 * g,
        lambda h: -0.1 * h[0],
    )


def test_report_figures_are_drawn_around_the_analysis_convergence_point():
    from probes.analysis import convergence_point
    from probes.report import white_box_evidence

    cell = _bistable_cell()
    a = probes.analyze_cell(cell, gradient_scale=1.0)
    h_star = np.asarray(a.meta["convergence_point"])
    # Most seeds reach the unstable point 0, while the trajectory ends at the attractor 1: the
    # two candidates differ, so the test tells which one the report used. The convergence
    # point must persist under further iterations, which the unstable point does not.
    assert abs(h_star[0] - 1) < 1e-3 and a.meta["linearized_at"] == "fixed"
    assert convergence_point(cell).point == pytest.approx(h_star)
    ev = white_box_evidence(cell, a)
    assert ev["convergence"]["point"] == pytest.approx(h_star.tolist())
    assert ev["convergence"]["kind"] == a.meta["linearized_at"]
    # β and α were measured there: the same linearisation (λ = 1.1 at 0, 0.9 at 1).
    eig = a.momentum.eigenvalues[np.argmax(np.abs(a.momentum.eigenvalues))]
    assert ev["convergence"]["slow_eigenvalue"][0] == pytest.approx(eig.real) == pytest.approx(0.9)
    # An analysis.json written before h* was recorded: the same function finds the same point.
    old = a.to_json()
    del old["meta"]["convergence_point"]
    again = white_box_evidence(cell, old)
    assert again["convergence"]["point"] == pytest.approx(h_star.tolist())


def test_the_summary_leads_with_the_result_the_plateau_and_the_faithfulness(tmp_path, heavy_ball):
    analysis = heavy_ball.to_json()
    analysis["faithfulness"] = {
        "update_error": 0.42,
        "num_problems": 32,
        "loss_learned": 0.04,
        "loss_chain": 0.07,
        "residual": {"steps": {"early": {"error_share": 0.9, "update_share": 0.3}}},
    }
    ev = _eval_json()
    ev["horizons"]["6"]["optimizers"]["learned"]["final"] = 0.037  # momentum's is 1e-3
    report = probes.write_report(analysis, tmp_path, evaluation=ev)
    numbers = [[float(x) for x in re.findall(r"\d+\.\d+(?:e-?\d+)?", s)] for s in report["summary"]]
    assert numbers[0][:2] == [0.04, 0.05]  # learned against the best tuned baseline
    assert 0.037 in numbers[1] and 0.001 in numbers[1]  # the plateau, with both final losses
    assert "42%" in report["summary"][2] and "early" in report["summary"][2]
    assert report["faithfulness"]["update_error"] == 0.42
    assert len(report["summary"]) == 3 + 5
    # a black box is not called a learned optimizer
    assert "black box" in report["title"] and "learned" not in report["title"]
    # without a plateau, no plateau sentence
    ev["horizons"]["6"]["optimizers"]["learned"]["final"] = 1e-3
    assert len(probes.write_report(analysis, tmp_path, evaluation=ev)["summary"]) == 2 + 5
    # a memory along training that differs from h*'s follows the faithfulness, and the momentum
    # section gives both and draws the responses along training beside the one at h*
    along = {
        "starts": [0, 10],
        "lags": 3,
        "memory": [2.5, 2.9],
        "gain": [0.1, 0.1],
        "response": [[-0.1, -0.1, -0.05], [-0.1, -0.1, -0.09]],
        "convergence_memory": 1.2,
        "state_dependent": True,
    }
    analysis["faithfulness"]["memory_along"] = along
    report = probes.write_report(analysis, tmp_path, evaluation=ev)
    assert (
        len(report["summary"]) == 3 + 5 and "against 1.2 at the convergence" in report["summary"][2]
    )
    mom = report["mechanisms"]["momentum"]
    assert mom["numbers"]["memory_along"]["display"] == "2.5 … 2.9"
    assert mom["numbers"]["memory_convergence"]["value"] == 1.2
    assert any("from steps 0–10" in n for n in mom["notes"])
    # a start without a memory (None in the JSON) is left out of the range
    along["memory"] = [None, 2.9]
    report = probes.write_report(analysis, tmp_path, evaluation=ev)
    assert report["mechanisms"]["momentum"]["numbers"]["memory_along"]["display"] == "2.9 … 2.9"
    along["memory"] = [2.5, 2.9]
    # one that agrees with h* stays in the momentum section
    along.update(convergence_memory=2.6, state_dependent=False)
    report = probes.write_report(analysis, tmp_path, evaluation=ev)
    assert len(report["summary"]) == 2 + 5
    assert any("holds along training" in n for n in report["mechanisms"]["momentum"]["notes"])
