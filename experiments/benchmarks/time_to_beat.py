"""Benchmark ``time_to_beat``: meta-training wall-clock until the learned optimizer wins.

The baselines (momentum, RMSProp, Adam) are tuned on the family first (not timed as part of
meta-training; reported separately). Meta-training then runs with the preset's settings; every
``--eval-every`` meta-steps the clock is paused and the current theta is evaluated on the same
128 held-out problems as the baselines. Two moments are reported:

* ``below``: the learned optimizer's mean normalised loss is below the best tuned baseline's
  (BENCHMARKS.md §2);
* ``beats``: it is lower than *every* baseline's by more than 2 s.e.m. of the paired difference
  (the project's definition of "beats").

Wall-clock counts meta-training only, compilation included. One JSON object per line.

    python experiments/benchmarks/time_to_beat.py --task linear_regression --preset quick
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import jax
import numpy as np

import tasks
from lopt.evaluation import (
    DEFAULT_BASELINES,
    heldout_key,
    paired,
    per_problem_metric,
    tune_baselines,
)
from lopt.meta_train import make_meta_step
from lopt.presets import preset
from lopt.rnn import RNNOptimizer
from lopt.unroll import evaluate, init_inner, unroll


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="linear_regression")
    parser.add_argument("--preset", default="quick", choices=["quick", "paper"])
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--max-steps", type=int, default=None, help="default: the preset's")
    parser.add_argument("--num-problems", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--until", choices=["below", "beats", "end"], default="beats")
    parser.add_argument(
        "--tuned",
        default=None,
        help="cache file of the tuned baselines (lopt.evaluation.tune_baselines(cache=...)): "
        "read when it matches the family, else written",
    )
    parser.add_argument(
        "--optimizer",
        type=json.loads,
        default={},
        help="RNNOptimizer overrides as JSON, e.g. '{\"output_scale\": 0.03}'",
    )
    parser.add_argument(
        "--config",
        type=json.loads,
        default={},
        help="MetaTrainConfig overrides as JSON, e.g. '{\"learning_rate\": 1e-3}'",
    )
    args = parser.parse_args()

    p = preset(args.task, args.preset)
    family = tasks.get(args.task, **p.task_settings)
    opt = RNNOptimizer(**{**p.optimizer, **args.optimizer})
    config = dataclasses.replace(p.config, **args.config).resolved(family)
    max_steps = args.max_steps or config.num_steps
    key = heldout_key()
    common = {
        "benchmark": "time_to_beat",
        "task": family.name,
        "preset": args.preset,
        "data_source": family.data_source,
        "devices": jax.device_count(),
        "optimizer_overrides": args.optimizer,
        "config_overrides": args.config,
    }

    t0 = time.perf_counter()
    tuned = tune_baselines(family, DEFAULT_BASELINES, cache=args.tuned)
    per_baseline = {
        name: per_problem_metric(np.asarray(evaluate(r.tx, family, key, args.num_problems)))
        for name, r in tuned.items()
    }
    means = {n: float(np.mean(m)) for n, m in per_baseline.items()}
    best = min(means, key=means.get)
    print(
        json.dumps(
            {
                **common,
                "stage": "baselines",
                "tune_and_eval_s": time.perf_counter() - t0,
                "metrics": means,
                "best": best,
                "hyperparams": {n: r.hyperparams for n, r in tuned.items()},
            }
        ),
        flush=True,
    )

    num_steps = family.num_steps

    @jax.jit
    def held_out(family, theta):
        tx = opt.optimizer(theta)
        keys = jax.random.split(key, args.num_problems)
        return jax.vmap(lambda k: unroll(tx, family, init_inner(tx, family, k), num_steps)[1])(keys)

    init_fn, step_fn = make_meta_step(opt, config, config.meta_optimizer())
    k_theta, k_run = jax.random.split(jax.random.key(args.seed))
    train_s = 0.0
    t = time.perf_counter()
    state = init_fn(family, opt.init(k_theta), k_run)
    jax.block_until_ready(state)
    train_s += time.perf_counter() - t
    first = {"below": None, "beats": None}
    step = 0
    while step < max_steps:
        t = time.perf_counter()
        for _ in range(args.eval_every):
            state, _ = step_fn(family, state)
        jax.block_until_ready(state)
        train_s += time.perf_counter() - t
        step += args.eval_every
        mine = per_problem_metric(np.asarray(held_out(family, state.theta)))
        versus = {n: paired(mine, m) for n, m in per_baseline.items()}
        below = bool(np.mean(mine) < means[best])
        beats = all(v["beats"] for v in versus.values())
        for name, hit in (("below", below), ("beats", beats)):
            if hit and first[name] is None:
                first[name] = {"step": step, "train_s": train_s}
        print(
            json.dumps(
                {
                    **common,
                    "stage": "meta_train",
                    "step": step,
                    "train_s": train_s,
                    "metric": float(np.mean(mine)),
                    "best_baseline": means[best],
                    "below": below,
                    "beats": beats,
                }
            ),
            flush=True,
        )
        if args.until != "end" and first[args.until] is not None:
            break
    print(
        json.dumps(
            {
                **common,
                "stage": "result",
                "best_baseline": best,
                "below_at_step": (first["below"] or {}).get("step"),
                "below_train_s": (first["below"] or {}).get("train_s"),
                "beats_at_step": (first["beats"] or {}).get("step"),
                "beats_train_s": (first["beats"] or {}).get("train_s"),
                "max_steps": max_steps,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
