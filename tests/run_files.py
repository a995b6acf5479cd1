"""One complete tiny run directory, built once per test session, and ways to damage it.

:func:`complete_run` meta-trains a GRU-4 on a 3-d linear regression for one meta-step and
then runs the real commands on it (``lopt evaluate``, ``probes analyze``, ``lopt distill``), so
the directory holds every file a user's run holds: ``config.json``, ``theta.npz``,
``state.npz``, ``metrics.jsonl``, ``eval.json``, ``analysis.json``, ``distill.json``. Tests copy
it (:func:`copy_run`) before damaging anything. :func:`run_cli` calls a command line in-process
and returns its exit status and output; :func:`assert_one_clean_line` checks a refusal.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

_BUILT: dict[str, Path] = {}

#: Files a run directory holds once every command has run on it.
RUN_FILES = ("config.json", "eval.json", "analysis.json", "distill.json", "metrics.jsonl")


def run_cli(capsys, prog: str, *argv: str) -> tuple[int, str, str]:
    """``(status, stdout, stderr)`` of ``lopt``/``probes`` ``argv``, called in-process."""
    if prog == "lopt":
        from lopt_cli.lopt import main
    else:
        from lopt_cli.probes import main
    capsys.readouterr()
    try:
        status = main(list(argv))
    except SystemExit as e:
        status = e.code
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_clean_line(status: int, err: str, prog: str, *fragments: str) -> str:
    """A refusal: non-zero status and exactly one line ``PROG: error: ...`` on stderr."""
    lines = err.strip().splitlines()
    assert status not in (0, None), err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: "), err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


def complete_run(tmp_path_factory) -> Path:
    """The session's complete tiny run (built on first use; never modify it, copy it)."""
    if "run" in _BUILT:
        return _BUILT["run"]
    import lopt
    import tasks
    from lopt.meta_train import MetaTrainConfig, meta_train
    from lopt_cli.lopt import main as lopt_main
    from lopt_cli.probes import main as probes_main

    run = tmp_path_factory.mktemp("complete") / "run"
    family = tasks.get("linear_regression", dim=3, num_steps=8)
    config = MetaTrainConfig(num_problems=4, num_steps=1, log_every=1)
    meta_train(lopt.RNNOptimizer(hidden_size=4), family, config, out_dir=run, progress=False)
    base = ["--baselines", "momentum", "--num-problems", "4", "--quiet"]
    assert lopt_main(["evaluate", str(run), *base]) == 0
    assert probes_main(["analyze", str(run), "--quiet"]) == 0
    assert lopt_main(["distill", str(run), "--no-retune", "--no-identify", "--quiet"]) == 0
    for name in RUN_FILES:
        assert (run / name).exists(), name
    _BUILT["run"] = run
    return run


def copy_run(src: Path, dst: Path) -> Path:
    """A copy of the run ``src`` at ``dst`` with the files' modification order kept.

    Derived files stay newer than ``theta.npz`` (``copy2`` keeps modification times), so the
    copy's ``analysis.json`` is re-used as the original's would be.
    """
    shutil.copytree(src, dst, copy_function=shutil.copy2)
    return dst


@pytest.fixture(scope="session")
def session_run(tmp_path_factory) -> Path:
    """Pytest fixture over :func:`complete_run` (import it into a test module)."""
    return complete_run(tmp_path_factory)


def touch_after(path: Path, reference: Path) -> None:
    """Sets ``path``'s modification time after ``reference``'s (a derived file stays current)."""
    t = reference.stat().st_mtime + 5
    os.utime(path, (t, t))
