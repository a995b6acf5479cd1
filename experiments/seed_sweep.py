"""How often a preset's meta-training beats the tuned baselines: one run per seed.

Meta-training amplifies float rounding, so one or three seeds say little about a preset's
reliability, and any change to the compiled meta-step (a new GRU formulation, a new XLA) can
move which seeds fail. This script meta-trains a preset (optionally with overrides) on each of
``--seeds`` in memory, evaluates each result on the 128 held-out problems next to the tuned
baselines, and prints one JSON line per seed and a summary line: the held-out metric, the
selected meta-step, the meta-gradient's largest logged norm, whether it beats every baseline by
more than 2 s.e.m. of the paired difference, and the meta-training time. Nothing is written
except the optional ``--tuned`` cache.

Usage::

    python3 experiments/seed_sweep.py --task linear_regression --seeds 0-7
    python3 experiments/seed_sweep.py --seeds 0-7 \
        --config '{"learning_rate": 1e-3, "num_steps": 3200, "validate_every": 200}'
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np

import tasks
from lopt.evaluation import (
    DEFAULT_BASELINES,
    heldout_key,
    paired,
    per_problem_metric,
    tune_baselines,
)
from lopt.meta_train import meta_train
from lopt.presets import preset
from lopt.rnn import RNNOptimizer
from lopt.unroll import evaluate
from lopt_cli.args import seed_list


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="linear_regression")
    parser.add_argument("--preset", default="quick", choices=["quick", "paper"])
    parser.add_argument("--seeds", type=seed_list, default=seed_list("0-7"), help="e.g. 0-7")
    parser.add_argument("--num-problems", type=int, default=128)
    parser.add_argument("--tuned", default=None, help="tuned-baselines cache file (JSON)")
    parser.add_argument(
        "--optimizer", type=json.loads, default={}, help="RNNOptimizer overrides as JSON"
    )
    parser.add_argument(
        "--config", type=json.loads, default={}, help="MetaTrainConfig overrides as JSON"
    )
    args = parser.parse_args()

    p = preset(args.task, args.preset)
    family = tasks.get(args.task, **p.task_settings)
    opt = RNNOptimizer(**{**p.optimizer, **args.optimizer})
    key = heldout_key()
    tuned = tune_baselines(family, DEFAULT_BASELINES, cache=args.tuned)
    base = {
        n: per_problem_metric(np.asarray(evaluate(r.tx, family, key, args.num_problems)))
        for n, r in tuned.items()
    }
    means = {n: round(float(np.mean(m)), 4) for n, m in base.items()}
    print(json.dumps({"stage": "baselines", "task": family.name, "metrics": means}), flush=True)

    rows = []
    for seed in args.seeds:
        config = dataclasses.replace(p.config, **args.config, seed=seed)
        t0 = time.perf_counter()
        result = meta_train(opt, family, config, progress=False)
        train_s = time.perf_counter() - t0
        learned = per_problem_metric(
            np.asarray(evaluate(opt.optimizer(result.theta), family, key, args.num_problems))
        )
        versus = {n: paired(learned, m) for n, m in base.items()}
        row = {
            "seed": seed,
            "metric": round(float(np.mean(learned)), 4),
            "selected_step": result.selected_step,
            "max_grad_norm": float(max(r["grad_norm"] for r in result.metrics)),
            "beats_all": all(v["beats"] for v in versus.values()),
            "diff_vs": {
                n: None if v["diff"] is None else round(v["diff"], 4) for n, v in versus.items()
            },
            "meta_train_s": round(train_s, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    metrics = [r["metric"] for r in rows]
    summary = {
        "stage": "summary",
        "task": family.name,
        "preset": args.preset,
        "optimizer_overrides": args.optimizer,
        "config_overrides": args.config,
        "seeds": args.seeds,
        "beats_all": sum(r["beats_all"] for r in rows),
        "metric_mean": round(float(np.mean(metrics)), 4),
        "metric_sd": round(float(np.std(metrics, ddof=1)), 4) if len(rows) > 1 else None,
        "baselines": means,
    }
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
