"""A meta-training run directory as the probes see it: its analysis, written and re-used.

``RUN/analysis.json`` is derived from ``RUN/theta.npz``; :func:`saved_analysis` says whether a
saved one still describes the run, :func:`analyze_run` writes a fresh one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import jax

from lopt.run import Run
from lopt.rundir import read_json, write_json
from probes.analysis import analyze, is_current
from probes.faithfulness import faithfulness


def saved_analysis(
    run: Run | str | os.PathLike, *, key_seed: int | None = 0
) -> tuple[dict | None, str]:
    """``RUN/analysis.json`` if it still describes the run, else ``None``; and why.

    It is out of date when older than ``RUN/theta.npz`` (by modification time), written by a
    version of the probes without every result of this one (:func:`probes.analysis.is_current`),
    or drawn with another trajectory seed than ``key_seed`` (``None``: any seed; analyses that
    do not record one were drawn with 0).
    """
    run = run if isinstance(run, Run) else Run(run)
    path = run.file("analysis.json")
    if not path.exists():
        return None, "no analysis.json"
    if not run.is_current("analysis.json"):
        return None, "analysis.json is older than theta.npz"
    analysis = read_json(path)
    if not isinstance(analysis, dict) or not is_current(analysis):
        return None, "analysis.json predates this version's probes (no oscillation damping)"
    seed = analysis.get("key_seed")
    seed = 0 if seed is None else seed
    if key_seed is not None and seed != key_seed:
        return None, f"analysis.json was drawn with seed {seed}, not {key_seed}"
    return analysis, "re-using analysis.json"


def analyze_run(run: Run | str | os.PathLike, *, key_seed: int = 0) -> dict[str, Any]:
    """Analyses ``RUN/theta.npz`` on the run's task family; writes ``RUN/analysis.json``."""
    run = run if isinstance(run, Run) else Run(run)
    opt, theta, _ = run.checkpoint()
    family = run.family
    analysis = analyze(opt, theta, family=family, key=jax.random.key(key_seed))
    result = analysis.to_json()
    # How well the detected mechanisms, with their probed numbers, reproduce the optimizer.
    result["faithfulness"] = faithfulness(result, opt.optimizer(theta), family).to_json()
    # What was analysed, so that results on the MNIST fallback digits cannot pass for MNIST and
    # a later command can tell which seed drew the trajectories.
    result["task"] = {"name": family.name, "data_source": getattr(family, "data_source", None)}
    result["key_seed"] = key_seed
    write_json(run.file("analysis.json"), result)
    return result


def copy_best(run: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Copies a run's best-validated iterate into a new run directory ``out``.

    ``RUN/best.npz`` becomes ``OUT/theta.npz``, beside copies of the run's ``config.json`` and
    ``metrics.jsonl``, so every later stage (evaluation, analysis, report) treats it as a
    finished run while ``RUN`` itself can keep training.

    Raises:
        ValueError: ``RUN`` has no ``best.npz`` (it needs ``validate_every`` and one
            validation), or ``out`` is ``run``.
    """
    run, out = Path(run), Path(out)
    if not (run / "best.npz").exists():
        raise ValueError(f"{run}: no best.npz (the run needs validate_every and one validation)")
    if out.resolve() == run.resolve():
        raise ValueError("the output directory must differ from the run directory")
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "metrics.jsonl"):
        shutil.copy(run / name, out / name)
    shutil.copy(run / "best.npz", out / "theta.npz")
    return out
