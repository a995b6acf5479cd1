"""A hostile run directory through every command that reads one (issue 22).

Reports are HTML pages people share, built from run files that may come from someone else.
Each variant below is a copy of the session's complete tiny run (:mod:`run_files`) whose files
were rewritten by an attacker: every string carries a ``<script>``, an ``<img onerror>`` and
matplotlib mathtext, the directory's name holds mathtext, a backslash and markup, or the sizes
are absurd. ``lopt evaluate``, ``lopt distill``, ``probes analyze``, ``probes report`` and
``probes compare`` must each either refuse with exactly one clean line or write a page in which
no element or attribute came from the data (the payload shows as text).
"""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from run_files import assert_one_clean_line, copy_run, run_cli, touch_after
from run_files import session_run as session_run  # a fixture, used by name

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
MATH = r"$\undefinedcmd$"
#: Appended to every string: markup for the page, mathtext for the figures.
PAYLOAD = f" {SCRIPT} {IMG} {MATH} \\"
#: The run directory's name ("/" cannot be in a name, so no closing tag).
DIRNAME = rf"run {MATH} \x {IMG}"
FILES = ("config.json", "eval.json", "analysis.json", "distill.json")


#: Fields that name one of a few choices (a kind of point, a schedule's shape, a transform):
#: the "strings" variant leaves them, the "config" variant does not.
CHOICES = {"source", "kind", "point_kind", "method", "shape", "transform", "schema", "chosen"}


def _hostile(x, *, skip: frozenset = frozenset()):
    """``x`` with the payload appended to every string, except the values of keys in ``skip``."""
    if isinstance(x, dict):
        return {k: v if k in skip else _hostile(v, skip=skip) for k, v in x.items()}
    if isinstance(x, list):
        return [_hostile(v, skip=skip) for v in x]
    return x + PAYLOAD if isinstance(x, str) else x


def _free_text(x):
    return _hostile(x, skip=frozenset(CHOICES))


def _rewrite(run: Path, name: str, change) -> None:
    path = run / name
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    touch_after(path, run / "theta.npz")  # a derived file stays current


def _strings(run: Path) -> None:
    """Every free-text string of the derived files (and optimizer names, the keys of eval.json's
    tables) carries the payload, and so do config.json's free-text fields."""

    def renamed(m):  # optimizer and hyperparameter names carry the payload too
        return {k + PAYLOAD: v for k, v in m.items()}

    def ev(d):
        d = _hostile(d)
        for block in d["horizons"].values():
            block["optimizers"] = renamed(block["optimizers"])
            block["versus"] = renamed(block["versus"])
            for o in block["optimizers"].values():
                o["hyperparams"] = renamed(o["hyperparams"])
        return d

    def config(d):
        d["task"]["data_source"] += PAYLOAD
        d["versions"] = _hostile(d["versions"])
        return d

    _rewrite(run, "config.json", config)
    _rewrite(run, "eval.json", ev)
    _rewrite(run, "analysis.json", _free_text)
    _rewrite(run, "distill.json", _free_text)


def _config(run: Path) -> None:
    """Every string of every file, config.json's names of task, optimizer and estimator too."""
    for name in FILES:
        _rewrite(run, name, _hostile)


def _sizes(run: Path) -> None:
    """Absurd sizes and negative counts everywhere."""

    def config(d):
        d["optimizer"]["hidden_size"] = 10**9
        d["task"]["settings"]["num_steps"] = 10**12
        d["task"]["settings"]["dim"] = 10**9
        d["meta_train"].update(num_steps=10**12, horizon=10**12, num_problems=-4)
        return d

    def ev(d):
        d.update(num_problems=-4, meta_step=-1)
        for block in d["horizons"].values():
            for s in block["optimizers"].values():
                s["diverged"] = -1
            for v in block["versus"].values():
                v.update(learned_diverged=-3, finite_pairs=-1)
        return d

    def analysis(d):
        d["meta"]["hidden_size"] = 10**9
        d["schedule"]["peak_step"] = -5
        return d

    def distill(d):
        d["notes"]["evaluation"].update(num_problems=-4, horizon=10**12)
        return d

    _rewrite(run, "config.json", config)
    _rewrite(run, "eval.json", ev)
    _rewrite(run, "analysis.json", analysis)
    _rewrite(run, "distill.json", distill)


def _one_size(section: str, field: str, value: int):
    """One absurd size in config.json, everything else as written (each bound is reached)."""

    def change(run: Path) -> None:
        def config(d):
            part = d[section]
            for key in field.split(".")[:-1]:
                part = part[key]
            part[field.split(".")[-1]] = value
            return d

        _rewrite(run, "config.json", config)

    return change


def _types(run: Path) -> None:
    """Markup where numbers belong: the count of problems on which the learned optimizer
    diverged (shown in the results table; it once reached the page unescaped), a β, a
    hyperparameter."""

    def ev(d):
        for block in d["horizons"].values():
            for v in block["versus"].values():
                v["learned_diverged"] = SCRIPT
            for o in block["optimizers"].values():
                o["hyperparams"] = {k: IMG for k in o.get("hyperparams") or {}}
        return d

    def analysis(d):
        d["momentum"]["beta"] = SCRIPT
        return d

    _rewrite(run, "eval.json", ev)
    _rewrite(run, "analysis.json", analysis)


#: One absurd size at a time: (section of config.json, field, value).
SIZES = {
    "hidden_size": ("optimizer", "hidden_size", 10**9),
    "task_steps": ("task", "settings.num_steps", 10**12),
    "dim": ("task", "settings.dim", 10**9),
    "meta_steps": ("meta_train", "num_steps", 10**12),
    "num_problems": ("meta_train", "num_problems", -4),
}
VARIANTS = {
    "strings": _strings,
    "config": _config,
    "sizes": _sizes,
    "types": _types,
    **{name: _one_size(*change) for name, change in SIZES.items()},
}


class _Elements(HTMLParser):
    """The elements and text of a page, as a browser would parse them."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag

    def handle_data(self, data):
        self.text.append(data)


def _assert_no_markup_from_data(page: str) -> None:
    p = _Elements()
    p.feed(page)
    p.close()
    tags = [t for t, _ in p.elements]
    assert "script" not in tags
    for tag, attrs in p.elements:
        assert not any(a.startswith("on") for a in attrs), (tag, attrs)
        if tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,"), attrs
    # The payload reached the page, as text: the check above could have failed.
    assert "onerror=alert(1)" in "".join(p.text)


def _command(name: str, run: Path, tmp: Path) -> tuple[str, list[str], Path | None]:
    """``(prog, argv, page)`` of one of the five commands on ``run`` (``page``: its index.html)."""
    if name == "evaluate":
        return (
            "lopt",
            ["evaluate", str(run), "--baselines", "momentum", "--num-problems", "4", "--quiet"],
            None,
        )
    if name == "distill":
        return "lopt", ["distill", str(run), "--no-retune", "--no-identify", "--quiet"], None
    if name == "analyze":
        return "probes", ["analyze", str(run), "--quiet"], None
    if name == "report":
        return "probes", ["report", str(run), "--quiet"], run / "report" / "index.html"
    out = tmp / "compare"
    return "probes", ["compare", str(run), "--out", str(out), "--quiet"], out / "index.html"


COMMANDS = ("evaluate", "distill", "analyze", "report", "compare")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_hostile_run_gives_a_clean_line_or_a_page_without_its_markup(
    variant, command, session_run, tmp_path, capsys
):
    run = copy_run(session_run, tmp_path / DIRNAME)
    VARIANTS[variant](run)
    prog, argv, page = _command(command, run, tmp_path)
    status, out, err = run_cli(capsys, prog, *argv)
    if status != 0:
        line = assert_one_clean_line(status, err, prog)
        # the line names the file at fault
        assert any(f in line for f in (*FILES, "theta.npz")), line
        if variant in SIZES:  # the line names the field
            section, field, _ = SIZES[variant]
            assert f"config.json: {section}" in line, line
            assert field.split(".")[-1] in line or section == "task", line
        assert variant != "strings" or command not in ("report", "compare"), line
        return
    assert "Traceback" not in err
    if page is not None:
        _assert_no_markup_from_data(page.read_text())
    # compare only shows a run's sizes; every other command would build something from them
    absurd = variant == "sizes" or variant in SIZES
    assert not absurd or command == "compare", f"{command} accepted absurd sizes"
