"""What a ``paper``-preset meta-training run costs, per task, without running it.

The paper presets (GRU-256, 64 problems, full BPTT, 5000 meta-steps) take hours per seed on a
2-core CPU, and for the classifier families more memory than such a machine has. This script
builds each task's paper-preset meta-step (``lopt.meta_train.make_meta_step``, exactly what
``lopt meta-train --preset paper`` compiles) with fewer problems per meta-step, times it after
compilation, and reads XLA's memory analysis of the compiled step. Both grow linearly in the
number of problems (the problems are a ``vmap`` axis; the meta-parameters and the
meta-optimizer state are the fixed part), so two problem counts give the slope and intercept,
from which the full preset's seconds per meta-step, hours for its steps and bytes of temporary
memory are extrapolated. Validation passes (forward only, every 100 steps) are left out.

Usage::

    python experiments/benchmarks/paper_cost.py [--tasks rosenbrock two_moons mnist]
        [--problems 1 2] [--repeats 2]

Prints one JSON object per task and problem count, then the extrapolation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import jax

import tasks
from lopt.meta_train import make_meta_step, saves_products
from lopt.presets import preset


def measure(task: str, problems: int, repeats: int) -> dict:
    p = preset(task, "paper")
    family = tasks.get(task, **p.task_settings)
    opt, config = p.build()
    config = config.resolved(family)
    # keep or recompute the matrix products as the full preset would (the automatic choice
    # depends on the number of problems)
    config = dataclasses.replace(
        config, num_problems=problems, save_products=saves_products(opt, family, config)
    )
    init_fn, step_fn = make_meta_step(opt, config, config.meta_optimizer())
    state = init_fn(family, opt.init(jax.random.key(0)), jax.random.key(1))
    jax.block_until_ready(state)
    t = time.perf_counter()
    compiled = step_fn.lower(family, state).compile()
    compile_s = time.perf_counter() - t
    mem = compiled.memory_analysis()
    temp = getattr(mem, "temp_size_in_bytes", None) if mem is not None else None
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        state, metrics = compiled(family, state)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t)
    return {
        "task": task,
        "problems": problems,
        "preset_problems": p.config.num_problems,
        "meta_steps": p.config.num_steps,
        "inner_steps": family.num_steps,
        "compile_s": compile_s,
        "step_s": statistics.median(times),
        "temp_bytes": temp,
        "save_products": config.save_products,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["rosenbrock", "two_moons", "mnist"])
    parser.add_argument("--problems", type=int, nargs=2, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    for task in args.tasks:
        rows = [measure(task, n, args.repeats) for n in args.problems]
        for r in rows:
            print(json.dumps(r), flush=True)
        (a, b), full = rows, rows[0]["preset_problems"]

        def extrapolate(key, a=a, b=b, full=full):
            if a[key] is None or b[key] is None:
                return None
            slope = (b[key] - a[key]) / (b["problems"] - a["problems"])
            return a[key] + slope * (full - a["problems"])

        step_s = extrapolate("step_s")
        temp = extrapolate("temp_bytes")
        print(
            json.dumps(
                {
                    "task": task,
                    "extrapolated_to_problems": full,
                    "step_s": step_s,
                    "hours_for_meta_steps": step_s * rows[0]["meta_steps"] / 3600,
                    "temp_gib": None if temp is None else temp / 2**30,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
