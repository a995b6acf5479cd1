"""Every run file, damaged every way, through every command that reads it (issue 23).

A table of ``file × damage → the field named``: wrong-shape JSON (``[]``, ``{}``, a missing
``task``, wrong types), a ``.npy`` saved as ``theta.npz``, truncated and non-UTF-8 files. Each
command that reads the file refuses with exactly one line ``PROG: error: RUN/FILE: FIELD: ...``
and status 2, never a traceback. Then seeds out of range and Ctrl-C in every command.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from run_files import assert_one_clean_line, copy_run, run_cli, touch_after
from run_files import session_run as session_run  # a fixture, used by name


def _json(value):
    def write(path: Path) -> None:
        path.write_text(json.dumps(value))

    return write


def _edit(change):
    def write(path: Path) -> None:
        d = json.loads(path.read_text())
        change(d)
        path.write_text(json.dumps(d))

    return write


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _not_utf8(path: Path) -> None:
    path.write_bytes(b'{"task": "\xff\xfe"}')


def _npy(path: Path) -> None:
    buf = io.BytesIO()
    np.save(buf, np.zeros(3, np.float32))
    path.write_bytes(buf.getvalue())


def _missing(path: Path) -> None:
    path.unlink()


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def change(d):
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value

    return _edit(change)


def _drop(key):
    return _edit(lambda d: d.pop(key))


def _first_horizon(change):
    def edit(d):
        change(d["horizons"][str(d["horizon"])])

    return _edit(edit)


ALL = ("evaluate", "distill", "analyze", "report", "resume")
#: Commands that read the file only once its other files are in order (derived files).
READERS = {
    "config.json": ALL,
    "theta.npz": ("evaluate", "distill", "analyze", "report"),
    "eval.json": ("distill", "report", "compare"),
    "analysis.json": ("distill", "report", "compare"),
    "distill.json": ("report",),
}

#: (file, damage name, damage, the field the line names, commands: None = every reader)
TABLE = [
    ("config.json", "list", _json([]), "(top level)", (*ALL, "compare")),
    ("config.json", "empty object", _json({}), "task", None),
    ("config.json", "no task", _drop("task"), "task", None),
    ("config.json", "task a string", _set("task", "mnist"), "task", None),
    ("config.json", "task name a list", _set("task", "name", [1]), "task.name", None),
    ("config.json", "settings a list", _set("task", "settings", [1]), "task.settings", None),
    ("config.json", "unknown setting", _set("task", "settings", "x", 1), "task.settings", None),
    ("config.json", "steps a string", _set("meta_train", "num_steps", "1"), "meta_train", None),
    ("config.json", "meta_train a list", _set("meta_train", []), "meta_train", None),
    ("config.json", "optimizer a list", _set("optimizer", [1]), "optimizer", None),
    ("config.json", "hidden a string", _set("optimizer", "hidden_size", "4"), "optimizer", None),
    ("config.json", "truncated", _truncated, "not valid JSON", (*ALL, "compare")),
    ("config.json", "not UTF-8", _not_utf8, "not valid JSON", (*ALL, "compare")),
    ("config.json", "missing", _missing, "no such file", None),
    ("theta.npz", ".npy", _npy, "checkpoint", None),
    ("theta.npz", "truncated", _truncated, "truncated", None),
    ("theta.npz", "JSON", _json({}), "theta.npz", None),
    ("theta.npz", "missing", _missing, "no such", None),
    ("eval.json", "list", _json([]), "(top level)", None),
    ("eval.json", "empty object", _json({}), "horizons", None),
    ("eval.json", "horizons a list", _set("horizons", []), "horizons", None),
    ("eval.json", "horizon a string", _set("horizon", "8"), "horizon", None),
    (
        "eval.json",
        "optimizers a list",
        _first_horizon(lambda b: b.update(optimizers=[])),
        "optimizers",
        None,
    ),
    (
        "eval.json",
        "metric a string",
        _first_horizon(lambda b: b["optimizers"]["learned"].update(metric="0.5")),
        "optimizers.learned.metric",
        None,
    ),
    (
        "eval.json",
        "beats a string",
        _first_horizon(lambda b: b["versus"]["momentum"].update(beats="yes")),
        "versus.momentum.beats",
        None,
    ),
    (
        "eval.json",
        "unknown best baseline",
        _first_horizon(lambda b: b.update(best_baseline="adam")),
        "best_baseline",
        None,
    ),
    (
        "eval.json",
        "best baseline a list",
        _first_horizon(lambda b: b.update(best_baseline=["momentum"])),
        "best_baseline",
        None,
    ),
    ("eval.json", "num_problems negative", _set("num_problems", -1), "num_problems", None),
    ("eval.json", "truncated", _truncated, "not valid JSON", None),
    ("eval.json", "not UTF-8", _not_utf8, "not valid JSON", None),
    ("analysis.json", "no momentum", _drop("momentum"), "momentum", None),
    ("analysis.json", "beta a string", _set("momentum", "beta", "x"), "momentum.beta", None),
    ("analysis.json", "momentum a list", _set("momentum", []), "momentum", None),
    ("analysis.json", "source a number", _set("source", 5), "source", None),
    ("analysis.json", "meta a list", _set("meta", [1]), "meta", None),
    ("analysis.json", "truncated", _truncated, "not valid JSON", None),
    ("analysis.json", "not UTF-8", _not_utf8, "not valid JSON", None),
    ("distill.json", "list", _json([]), "(top level)", None),
    ("distill.json", "chain an object", _set("chain", {}), "chain", None),
    ("distill.json", "transform a number", _set("chain", [{"transform": 1}]), "chain[0]", None),
    ("distill.json", "results a list", _set("results", []), "results", None),
    (
        "distill.json",
        "metric a string",
        _set("results", "distilled", "metric", "x"),
        "results.distilled.metric",
        None,
    ),
    ("distill.json", "curves a list", _set("curves", [1]), "curves", None),
    ("distill.json", "truncated", _truncated, "not valid JSON", None),
]


def _cases():
    for file, name, damage, field, commands in TABLE:
        for command in commands or READERS[file]:
            yield pytest.param(file, damage, field, command, id=f"{file}-{name}-{command}")


def _argv(command: str, run: Path, tmp: Path) -> tuple[str, list[str]]:
    return {
        "evaluate": ("lopt", ["evaluate", str(run), "--baselines", "momentum", "--quiet"]),
        "distill": ("lopt", ["distill", str(run), "--no-retune", "--no-identify", "--quiet"]),
        "resume": (
            "lopt",
            ["meta-train", "--out", str(run), "--resume", "--steps", "2", "--quiet"],
        ),
        "analyze": ("probes", ["analyze", str(run), "--quiet"]),
        "report": ("probes", ["report", str(run), "--quiet"]),
        "compare": ("probes", ["compare", str(run), "--out", str(tmp / "cmp"), "--quiet"]),
    }[command]


@pytest.mark.parametrize(("file", "damage", "field", "command"), list(_cases()))
def test_a_damaged_run_file_is_one_line_naming_file_and_field(
    file, damage, field, command, session_run, tmp_path, capsys
):
    run = copy_run(session_run, tmp_path / "run")
    path = run / file
    damage(path)
    if path.exists() and file != "theta.npz":
        touch_after(path, run / "theta.npz")  # a derived file stays current
    prog, argv = _argv(command, run, tmp_path)
    status, _, err = run_cli(capsys, prog, *argv)
    line = assert_one_clean_line(status, err, prog, f"{run / file}:", field)
    assert status == 2, line


@pytest.mark.parametrize(
    "damage", [b"[1, 2]\n", b"\xff\xfe\n", b'{"step": 1, "meta_loss"'], ids=["list", "UTF", "torn"]
)
def test_damaged_metrics_lines_are_skipped(damage, session_run, tmp_path):
    from lopt.run import Run

    run = copy_run(session_run, tmp_path / "run")
    good = (run / "metrics.jsonl").read_bytes()
    (run / "metrics.jsonl").write_bytes(damage + b"\n" + good + damage)
    rows = Run(run).metrics()
    assert rows == Run(session_run).metrics() and rows and all("step" in r for r in rows)


# ------------------------------------------------------------------------------ seeds


@pytest.mark.parametrize("value", [str(2**63), str(2**64 + 5), "-1", "seven"])
@pytest.mark.parametrize(
    ("prog", "argv"),
    [
        ("lopt", ["tune", "--task", "linear_regression", "--seed"]),
        ("lopt", ["meta-train", "--task", "linear_regression", "--out", "x", "--seed"]),
        ("probes", ["analyze", "RUN", "--seed"]),
        ("probes", ["report", "RUN", "--seed"]),
    ],
    ids=["tune", "meta-train", "analyze", "report"],
)
def test_a_seed_out_of_range_is_an_argparse_error(prog, argv, value, capsys):
    status, _, err = run_cli(capsys, prog, *argv, value)
    assert_one_clean_line(status, err, prog, "--seed", repr(value))
    assert status == 2


def test_the_largest_seed_is_accepted():
    from lopt_cli.args import seed

    assert seed(str(2**63 - 1)) == 2**63 - 1 and seed("0") == 0


# ------------------------------------------------------------------------------ Ctrl-C


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


#: command -> (prog, argv, the function it calls that is made to raise KeyboardInterrupt)
INTERRUPTS = {
    "tune": ("lopt", ["tune", "--task", "linear_regression"], "lopt.tune.tune"),
    "meta-train": (
        "lopt",
        ["meta-train", "--task", "linear_regression", "--out", "{tmp}/new", "--steps", "1"],
        "lopt.meta_train.meta_train",
    ),
    "evaluate": ("lopt", ["evaluate", "{run}"], "lopt.run.evaluate_run"),
    "distill": ("lopt", ["distill", "{run}"], "probes.distill.distill_run"),
    "analyze": ("probes", ["analyze", "{run}"], "probes.runs.analyze_run"),
    "report": ("probes", ["report", "{run}"], "probes.report.report_run"),
    "compare": (
        "probes",
        ["compare", "{run}", "--out", "{tmp}/cmp"],
        "probes.compare.compare_runs",
    ),
}


@pytest.mark.parametrize("command", list(INTERRUPTS))
def test_ctrl_c_in_every_command_is_one_line_and_status_130(
    command, session_run, tmp_path, capsys, monkeypatch
):
    import importlib

    prog, argv, target = INTERRUPTS[command]
    module, name = target.rsplit(".", 1)
    monkeypatch.setattr(importlib.import_module(module), name, _interrupt)
    argv = [a.format(run=session_run, tmp=tmp_path) for a in argv]
    status, _, err = run_cli(capsys, prog, *argv)
    # progress before the interrupt, then one line
    assert status == 130 and err.splitlines()[-1] == f"{prog}: interrupted", err
    assert "Traceback" not in err


@pytest.mark.parametrize("prog", ["lopt", "probes"])
def test_ctrl_c_while_the_parser_imports_is_one_line_and_status_130(prog, capsys, monkeypatch):
    import importlib

    cli = importlib.import_module(f"lopt_cli.{prog}")
    monkeypatch.setattr(cli, "build_parser", _interrupt)  # building it imports JAX
    status, _, err = run_cli(capsys, prog, "--help")
    assert status == 130 and err == f"{prog}: interrupted\n", err


def _interrupted_by_a_real_sigint(argv: list[str], ready: str) -> tuple[int, str]:
    """Runs a console script's module, sends SIGINT once ``ready`` is on stderr; (status, stderr).

    ``ready`` is a progress line printed as XLA starts compiling and running; the signal follows
    a second later, so it lands while XLA's threads work: the moment at which an interrupt used
    to end in a segmentation fault during the interpreter's shutdown (in about one try in four
    with this test's run, one in two with a fully trained run). Readiness is a line, not a
    time: the second is counted from it, however slow the machine.
    """
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    from hang import HANG_S

    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen(
        [sys.executable, "-m", *argv], env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    seen, err = threading.Event(), bytearray()

    def read():  # tqdm redraws with carriage returns, so read bytes, not lines
        while chunk := proc.stderr.read1(4096):
            err.extend(chunk)
            if ready.encode() in err:
                seen.set()
        seen.set()  # end of output: the command ended before the marker

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        seen.wait(HANG_S)
        assert proc.poll() is None, err.decode(errors="replace")  # still working: interrupt it
        time.sleep(1.0)  # into the work the marker announces
        proc.send_signal(signal.SIGINT)
        proc.wait(HANG_S)
    finally:
        proc.kill()
    reader.join(HANG_S)
    return proc.returncode, err.decode(errors="replace")


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """A run of the default linear-regression configuration after one meta-step.

    The session's tiny run evaluates too quickly for an interrupt to meet XLA at work; this one
    is the size a user's first run has.
    """
    from lopt_cli.lopt import main

    out = tmp_path_factory.mktemp("default") / "run"
    argv = ["meta-train", "--task", "linear_regression", "--steps", "1", "--out", str(out)]
    assert main([*argv, "--quiet"]) == 0
    return out


@pytest.mark.parametrize(
    "argv, ready, which",
    [
        (["lopt_cli.lopt", "evaluate", "{run}"], "adam]", "default"),
        (["lopt_cli.probes", "report", "{run}", "--out", "{tmp}/report"], "] ", "session"),
    ],
    ids=["lopt-evaluate", "probes-report"],
)
def test_a_real_sigint_while_xla_works_exits_130_with_one_line_and_files_intact(
    argv, ready, which, request, tmp_path
):
    source = request.getfixturevalue("default_run" if which == "default" else "session_run")
    run = copy_run(source, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    argv = [a.format(run=run, tmp=tmp_path) for a in argv]
    status, err = _interrupted_by_a_real_sigint(argv, ready)
    prog = argv[0].rsplit(".", 1)[1]
    # -11 (SIGSEGV) about half the time before the console scripts skipped the interpreter's
    # shutdown after an interrupt
    assert status == 130, err
    assert err.rstrip().splitlines()[-1] == f"{prog}: interrupted" and "Traceback" not in err
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert after == before  # nothing half-written, no temporary left behind


def test_a_distill_json_with_bootstrap_intervals_is_accepted():
    # What lopt distill writes when the gain is significant: each fraction carries its interval
    # and how it was formed.
    from probes.runs import check_distill

    fraction = {
        "mean": 0.38,
        "ci": [-0.33, 0.85],
        "method": "paired bootstrap over problems, 95% percentile interval",
        "samples": 10000,
        "seed": 0,
    }
    d = {"chain": [], "fraction": fraction, "fraction_identified": fraction, "significant": True}
    check_distill(d, "distill.json")  # raises on a field it rejects
    with pytest.raises(Exception, match="distill.json: fraction.mean: expected numbers"):
        check_distill({**d, "fraction": {**fraction, "mean": "high"}}, "distill.json")
