"""A meta-training run directory as the probes see it: its analysis, written and re-used.

``RUN/analysis.json`` is derived from ``RUN/theta.npz``; :func:`saved_analysis` says whether a
saved one still describes the run, :func:`analyze_run` writes a fresh one. :func:`check_inputs`
checks every file a report reads (``config.json``, ``theta.npz``, ``eval.json``,
``analysis.json``, ``distill.json``) before anything is computed, so a malformed one is one
line naming the file and the field.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax

from lopt.run import Run
from lopt.rundir import CheckpointError, read_json, write_json
from probes.analysis import analyze, is_current
from probes.analysis_result import SCHEMA_VERSION, Analysis, check_partial
from probes.faithfulness import faithfulness


def stage_printer(progress: bool | Callable[[str], None] | None) -> Callable[[str], None]:
    """A stage printer: ``progress`` itself if callable, timed lines on stderr if true."""
    if callable(progress):
        return progress
    if not progress:
        return lambda msg: None
    start = time.perf_counter()

    def emit(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f} s] {msg}", file=sys.stderr, flush=True)

    return emit


def check_analysis(
    analysis: Any, source: str | os.PathLike, *, partial: bool = False
) -> Analysis | None:
    """``analysis`` (an ``analysis.json`` dict) parsed, or one line naming ``source`` and field.

    Args:
        analysis: the dict.
        source: the file it was read from (named in the error).
        partial: allow fields left out (:func:`probes.analysis_result.check_partial`; returns
            ``None``), for consumers that read an analysis with defaults.

    Raises:
        lopt.CheckpointError: ``SOURCE: FIELD: what is wrong``.
    """
    try:
        if partial:
            check_partial(analysis)
            return None
        return Analysis.from_json(analysis)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{source}: {e}") from None


def check_distill(d: Any, source: str | os.PathLike) -> Mapping[str, Any]:
    """A ``distill.json`` dict, checked for the fields the report reads.

    Raises:
        lopt.CheckpointError: ``SOURCE: FIELD: what is wrong``.
    """

    def need(ok: bool, field: str, what: str, value: Any) -> None:
        if not ok:
            raise CheckpointError(f"{source}: {field}: expected {what}, got {value!r:.80}")

    def number(v: Any) -> bool:
        return v is None or (isinstance(v, int | float) and not isinstance(v, bool))

    need(isinstance(d, Mapping), "(top level)", "a JSON object", type(d).__name__)
    for key in ("chain", "chain_retuned", "chain_identified"):
        chain = d.get(key)
        need(chain is None or isinstance(chain, list), key, "a list of transforms", chain)
        for i, step in enumerate(chain or []):
            need(isinstance(step, Mapping), f"{key}[{i}]", "an object", step)
            need(isinstance(step.get("transform"), str), f"{key}[{i}].transform", "a name", step)
    for key in ("optax_code", "optax_code_retuned", "optax_code_identified", "reason"):
        v = d.get(key)
        need(v is None or isinstance(v, str), key, "a string", v)
    for key in ("gain", "fraction", "fraction_retuned", "fraction_identified"):
        v = d.get(key)
        need(v is None or isinstance(v, Mapping) or number(v), key, "an object or number", v)
        for k, x in v.items() if isinstance(v, Mapping) else []:
            ok = number(x) or (isinstance(x, list) and all(number(y) for y in x))
            ok = ok or (k == "method" and isinstance(x, str))  # how the interval was formed
            need(ok, f"{key}.{k}", "numbers", x)
    need(d.get("significant") in (None, True, False), "significant", "true or false", d)
    results = d.get("results")
    need(results is None or isinstance(results, Mapping), "results", "an object", results)
    results = results or {}
    for name, r in results.items():
        need(r is None or isinstance(r, Mapping), f"results.{name}", "an object", r)
        for k in ("metric", "sem", "final"):
            x = (r or {}).get(k)
            need(number(x), f"results.{name}.{k}", "a number or null", x)
        for k in ("vs_best_baseline", "vs_learned"):
            x = (r or {}).get(k)
            ok = x is None or (isinstance(x, Mapping) and all(map(number, x.values())))
            need(ok, f"results.{name}.{k}", "an object of numbers", x)
    curves = d.get("curves")
    need(curves is None or isinstance(curves, Mapping), "curves", "an object", curves)
    curves = curves or {}
    for name, c in curves.items():
        need(isinstance(c, Mapping), f"curves.{name}", "an object", c)
        for k, x in c.items():
            ok = isinstance(x, list) and all(map(number, x))
            need(ok, f"curves.{name}.{k}", "a list of numbers", x)
    notes = d.get("notes")
    need(notes is None or isinstance(notes, Mapping), "notes", "an object", notes)
    notes = notes or {}
    return d


def check_inputs(run: Run, *, key_seed: int | None = 0) -> None:
    """Checks every file a report of ``run`` reads, before anything is computed.

    ``config.json`` and ``theta.npz`` (:meth:`lopt.run.Run.check`), ``eval.json``
    (:class:`lopt.evaluation.Evaluation`), a current ``analysis.json`` (:class:`Analysis`; an
    out-of-date one is redone, not read) and ``distill.json`` (:func:`check_distill`).

    Raises:
        lopt.CheckpointError: one line naming the file and the field at fault.
    """
    run.check()
    run.evaluation()
    analysis, _ = saved_analysis(run, key_seed=key_seed)
    if analysis is not None:
        check_analysis(analysis, run.file("analysis.json"))
    if run.file("distill.json").exists():
        check_distill(read_json(run.file("distill.json")), run.file("distill.json"))


def saved_analysis(
    run: Run | str | os.PathLike, *, key_seed: int | None = 0
) -> tuple[dict | None, str]:
    """``RUN/analysis.json`` if it still describes the run, else ``None``; and why.

    It is out of date when older than ``RUN/theta.npz`` (by modification time), written by a
    version of the probes without every result of this one (:func:`probes.analysis.is_current`),
    or drawn with another trajectory seed than ``key_seed`` (``None``: any seed; analyses that
    do not record one were drawn with 0).
    Its contents are not checked here: consumers parse it with :func:`check_analysis`.
    """
    run = run if isinstance(run, Run) else Run(run)
    path = run.file("analysis.json")
    if not path.exists():
        return None, "no analysis.json"
    if not run.is_current("analysis.json"):
        return None, "analysis.json is older than theta.npz"
    analysis = read_json(path)
    if not isinstance(analysis, dict) or not is_current(analysis):
        return None, (
            f"analysis.json predates this version's probes (schema_version below {SCHEMA_VERSION})"
        )
    seed = analysis.get("key_seed")
    seed = 0 if seed is None else seed
    if key_seed is not None and seed != key_seed:
        return None, f"analysis.json was drawn with seed {seed!r:.40}, not {key_seed}"
    return analysis, "re-using analysis.json"


def coordinatewise(opt: Any, theta: Any) -> bool:
    """Whether a learned optimizer treats every coordinate alone (it has a cell).

    Replaying it on a subset of coordinates is exact only then; the MLP optimizer's per-tensor
    features are not.
    """
    try:
        opt.cell(theta)
    except TypeError:
        return False
    return True


def analyze_run(
    run: Run | str | os.PathLike,
    *,
    key_seed: int = 0,
    progress: bool | Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Analyses ``RUN/theta.npz`` on the run's task family; writes ``RUN/analysis.json``.

    Args:
        run: the run directory.
        key_seed: seed of the key that draws the recorded trajectories.
        progress: a callable that takes one line per stage, or ``True`` for timed lines on
            stderr (:func:`stage_printer`); ``None``/``False``: silent.
    """
    stage = stage_printer(progress)
    run = run if isinstance(run, Run) else Run(run)
    opt, theta, _ = run.checkpoint()
    family = run.family
    stage(
        f"probing {family.name}'s learned optimizer: recording trajectories, fixed points, "
        "linearising, detectors (about a minute on a CPU)"
    )
    analysis = analyze(opt, theta, family=family, key=jax.random.key(key_seed))
    result = analysis.to_json()
    # How well the detected mechanisms, with their probed numbers, reproduce the optimizer.
    stage("scoring faithfulness: replaying the detected mechanisms on the optimizer's gradients")
    result["faithfulness"] = faithfulness(
        result, opt.optimizer(theta), family, coordinatewise=coordinatewise(opt, theta)
    ).to_json()
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
