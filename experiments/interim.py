"""Evaluates, analyses and reports the best-validated iterate of an unfinished run.

A run with ``validate_every`` keeps its best theta so far in ``RUN/best.npz``. This script
copies it (with the run's ``config.json`` and ``metrics.jsonl``) into ``OUT`` as ``theta.npz``
and runs the rest of the pipeline there: ``eval.json`` against the tuned baselines on the
128 held-out problems, ``analysis.json`` and ``report/index.html``. The run itself is not
touched, so it can keep training (or be resumed later).

Tuned baselines are cached in ``RUN/../tuned.json`` (the file ``experiments/paper.py``
shares between the seeds of a task); tuning is deterministic, so a cache for the same family
settings and data gives the same baselines.

Usage::

    python3 experiments/interim.py runs/paper/paper/linear_regression/seed0 \
        --out runs/interim/linear_regression_seed0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BASELINES = ("momentum", "rmsprop", "adam")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run directory with best.npz")
    parser.add_argument("--out", type=Path, required=True, help="where to write (not RUN)")
    args = parser.parse_args(argv)
    run, out = args.run, args.out

    from lopt import load
    from lopt.evaluation import Evaluation, family_from_config, tune_baselines
    from lopt.run import evaluate_run
    from lopt.rundir import read_json
    from probes import report_run
    from probes.runs import analyze_run, copy_best

    try:
        copy_best(run, out)
    except ValueError as e:
        parser.error(str(e))
    _, _, meta = load(out / "theta.npz")
    family = family_from_config(read_json(run / "config.json"))
    tuned = tune_baselines(family, BASELINES, progress=True, cache=run.parent / "tuned.json")
    ev = Evaluation.from_json(evaluate_run(out, tuned=tuned))
    analyze_run(out)
    report_run(out, progress=False)
    summary = {
        "best_step": meta.get("step"),
        "validation": meta.get("validation"),
        "heldout": {k: ev.main.metric(k) for k in ev.main.optimizers},
        "beats_all": ev.main.beats_all,
    }
    print(json.dumps(summary))
    print(f"report: {out / 'report' / 'index.html'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
