"""Does learning-rate adaptation appear when it pays? Meta-training on two families, compared.

The paper reports that learned optimizers lower their effective learning rate as the
gradient's magnitude grows (adaptation). Our linear-regression optimizers do not show it. The
hypothesis tested here: adaptation appears when the family needs it, i.e. when gradient scales
differ by orders of magnitude between problems. ``linear_regression_scaled`` is the same
family with each problem's loss multiplied by ``s``, ``log10 s ~ U[-2, 2]``.

For each family and seed this script meta-trains the ``quick`` preset into
``OUT/FAMILY/seedN`` (resuming a finished or interrupted run), analyses it (``probes
analyze``), optionally evaluates it against tuned baselines (``--evaluate``) and writes the
report (``--report``, with the adaptation figure). It prints one JSON line per run and a
summary line per family: how many seeds the adaptation detector fires on, and the log-log
slopes of the effective learning rate against the gradient magnitude.

Usage::

    python3 experiments/adaptation.py --seeds 0-3 --out runs/adaptation
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

FAMILIES = ("linear_regression", "linear_regression_scaled")


def run_one(family_name: str, seed: int, out: Path, *, evaluate: bool, report: bool) -> dict:
    import numpy as np

    import tasks
    from lopt.evaluation import Evaluation
    from lopt.meta_train import meta_train
    from lopt.presets import preset
    from lopt.run import evaluate_run
    from probes.runs import analyze_run, saved_analysis

    p = preset(family_name, "quick")
    family = tasks.get(family_name, **p.task_settings)
    opt, config = p.build()
    config = dataclasses.replace(config, seed=seed)
    t0 = time.perf_counter()
    meta_train(
        opt, family, config, out_dir=out, resume=(out / "state.npz").exists(), progress=False
    )
    analysis, _ = saved_analysis(out)
    analysis = analysis or analyze_run(out)
    a = analysis["adaptation"]
    row = {
        "family": family_name,
        "seed": seed,
        "adaptation": bool(a["detected"]),
        "slope": a.get("slope"),
        "slope_pos": a.get("slope_pos"),
        "slope_neg": a.get("slope_neg"),
        "gradient_range": a.get("gradient_range"),
        "momentum_beta": analysis["momentum"].get("beta"),
        "clipping": bool(analysis["clipping"]["detected"]),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if evaluate:
        ev = Evaluation.read(out) if (out / "eval.json").exists() else None
        ev = ev or Evaluation.from_json(evaluate_run(out, progress=False))
        row["learned"] = ev.main.metric("learned")
        row["best_baseline"] = ev.main.best_baseline
        row["baseline"] = ev.main.metric(ev.main.best_baseline)
        row["beats_all"] = ev.main.beats_all
    if report:
        from probes.report import report_run

        row["report"] = str(report_run(out, progress=False))
    row["slope"] = None if row["slope"] is None else float(np.round(row["slope"], 3))
    return row


def main(argv: list[str] | None = None) -> int:
    from lopt_cli.args import seed_list

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=seed_list, default=seed_list("0-3"), help="e.g. 0-3")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--out", type=Path, default=Path("runs/adaptation"))
    parser.add_argument("--evaluate", action="store_true", help="also compare with baselines")
    parser.add_argument("--report", action="store_true", help="also write each run's report")
    args = parser.parse_args(argv)
    for family_name in args.families:
        rows = []
        for seed in args.seeds:
            out = args.out / family_name / f"seed{seed}"
            row = run_one(family_name, seed, out, evaluate=args.evaluate, report=args.report)
            rows.append(row)
            print(json.dumps(row), flush=True)
        slopes = [r["slope"] for r in rows if r["slope"] is not None]
        summary = {
            "family": family_name,
            "seeds": len(rows),
            "adaptation_detected": sum(r["adaptation"] for r in rows),
            "slope_range": [min(slopes), max(slopes)] if slopes else None,
        }
        print(json.dumps({"summary": summary}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
