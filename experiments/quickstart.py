"""The main job: meta-train a learned optimizer, compare it with tuned baselines, explain it.

Runs the whole pipeline on one task family (default: ``linear_regression``, ``quick`` preset):

1. meta-train a component-wise GRU optimizer into ``OUT`` (``lopt meta-train``);
2. tune momentum, RMSProp and Adam on the same family and evaluate all four optimizers on the
   same 128 held-out problems, at the training horizon and at twice it (``lopt evaluate``);
3. analyse the learned optimizer's dynamics (``probes analyze``: momentum, clipping, schedule,
   adaptation) and write ``analysis.json``;
4. distil the detected mechanisms into an optax chain and evaluate it (``lopt distill``);
5. write the interpretation report ``OUT/report/index.html`` (``probes report``);

and prints where everything was written. Usage::

    python3 experiments/quickstart.py --out runs/quickstart
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="linear_regression")
    parser.add_argument("--preset", default="quick", choices=["quick", "paper"])
    parser.add_argument("--out", default="runs/quickstart")
    parser.add_argument("--steps", type=int, default=None, help="meta-steps (preset default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh", action="store_true", help="delete OUT first")
    args = parser.parse_args(argv)

    import dataclasses

    import tasks
    from lopt.evaluation import format_table
    from lopt.meta_train import meta_train
    from lopt.presets import preset
    from lopt.run import evaluate_run

    out = Path(args.out)
    if args.fresh and out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    p = preset(args.task, args.preset)
    family = tasks.get(args.task, **p.task_settings)
    opt, config = p.build()
    config = dataclasses.replace(
        config, seed=args.seed, **({"num_steps": args.steps} if args.steps else {})
    )
    resume = (out / "state.npz").exists()
    print(
        f"[1/5] meta-training on {family.name} ({args.preset} preset) into {out}"
        + (" (resuming)" if resume else ""),
        flush=True,
    )
    result = meta_train(opt, family, config, out_dir=out, resume=resume)
    t_train = time.perf_counter() - t0
    if result.interrupted:
        print(f"interrupted; resume by running the same command again ({out})")
        return 130

    print("[2/5] tuning baselines and evaluating on 128 held-out problems", flush=True)
    evaluation = evaluate_run(out)
    print(format_table(evaluation))
    t_eval = time.perf_counter() - t0 - t_train

    print("[3/5] analysing the learned optimizer's dynamics", flush=True)
    from probes.runs import analyze_run
    from probes.words import describe

    for line in describe(analyze_run(out)):
        print(f"  {line}")

    print("[4/5] distilling the mechanisms into an optax chain", flush=True)
    from probes.distill import distill_run, format_report

    print("\n".join(f"  {line}" for line in format_report(distill_run(out)).splitlines()))

    print("[5/5] writing the interpretation report", flush=True)
    from probes.report import report_run

    index = report_run(out)
    total = time.perf_counter() - t0
    print(
        f"done in {total:.0f} s (meta-training {t_train:.0f} s, evaluation {t_eval:.0f} s); "
        f"results in {out}/ (config.json, theta.npz, metrics.jsonl, eval.json, analysis.json, "
        f"distill.json)\nreport: {index.resolve()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
