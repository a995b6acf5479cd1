"""Benchmark: seconds to tune the four baselines on each task family, vectorised vs sequential.

For every family (those of linear_regression, rosenbrock, two_moons, mnist that exist) and
both search modes of :func:`lopt.tune` (``vectorize=True``: candidates ``vmap``-ped in
chunks; ``vectorize=False``: one candidate per call of the same compiled program), the script
tunes sgd, momentum, rmsprop and adam once to compile (compile time from JAX's own compile
events, reported separately), then times the median of ``--repeats`` further runs. Each result
is one JSON object per line (see ``BENCHMARKS.md``); ratios are measured in the same run: the
speed-up of vectorising, and the inner-step throughput against the machine's matmul roofline
(a large ``jnp.dot`` timed in this process).

Usage:
    python experiments/benchmarks/tune.py                      # full grids, 32 problems
    python experiments/benchmarks/tune.py --families rosenbrock --grid quick --repeats 5
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp

import lopt
import tasks

FAMILIES = ("linear_regression", "rosenbrock", "two_moons", "mnist")


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Achieved GFLOP/s of an ``n × n`` float32 matmul: this machine's roofline right now."""
    a = jax.random.normal(jax.random.key(0), (n, n))
    dot = jax.jit(jnp.dot)
    dot(a, a).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        dot(a, a).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


class CompileClock:
    """Sums the durations of JAX's compile events (tracing, lowering, XLA compilation)."""

    def __init__(self):
        self.seconds = 0.0
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event: str, duration: float, **kwargs) -> None:
        del kwargs
        if event.startswith("/jax/core/compile/"):
            self.seconds += duration


def space_for(name: str, grid: str) -> lopt.SearchSpace:
    """The default search space, or a small one for ``--grid quick``."""
    space = lopt.search_space(name)
    if grid == "quick":
        space = space._replace(
            learning_rates=(1e-3, 1e-2, 1e-1, 1.0),
            other_values=space.other_values[1:3] if space.other else (),
        )
    return space


def tune_all(family, key, args, vectorize: bool) -> int:
    """Tunes every baseline once; returns the number of candidates evaluated."""
    n = 0
    for name in args.optimizers:
        res = lopt.tune(
            name,
            family,
            key,
            num_problems=args.num_problems,
            num_steps=args.num_steps,
            space=space_for(name, args.grid),
            refine=args.grid == "full",
            vectorize=vectorize,
        )
        n += len(res.grid["metric"])
    return n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="+", default=list(FAMILIES))
    p.add_argument("--optimizers", nargs="+", default=lopt.baseline_names())
    p.add_argument("--grid", choices=["full", "quick"], default="full")
    p.add_argument("--num-problems", type=int, default=32)
    p.add_argument("--num-steps", type=int, default=None, help="default: the family's")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--modes",
        nargs="+",
        choices=["vectorized", "sequential", "naive"],
        default=["vectorized", "sequential"],
        help="naive: lopt.evaluate per candidate (recompiles each time), estimated",
    )
    p.add_argument("--naive-sample", type=int, default=3)
    args = p.parse_args()

    roofline = matmul_gflops()
    print(
        json.dumps(
            {
                "benchmark": "matmul",
                "gflops": round(roofline, 2),
                "devices": [str(d) for d in jax.devices()],
                "machine": platform.processor() or platform.machine(),
            }
        ),
        flush=True,
    )
    clock = CompileClock()
    key = jax.random.fold_in(jax.random.key(0), 0)
    for fam_name in args.families:
        if fam_name not in tasks.names():
            print(json.dumps({"benchmark": "tune", "family": fam_name, "skipped": "absent"}))
            continue
        family = tasks.get(fam_name)
        num_steps = family.num_steps if args.num_steps is None else args.num_steps
        medians, compiles = {}, {}
        for mode in [m for m in args.modes if m != "naive"]:
            vectorize = mode == "vectorized"
            before = clock.seconds
            t = time.perf_counter()
            candidates = tune_all(family, key, args, vectorize)
            first = time.perf_counter() - t
            compile_s = clock.seconds - before
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                tune_all(family, key, args, vectorize)
                times.append(time.perf_counter() - t)
            median = statistics.median(times) if times else first - compile_s
            medians[mode] = median
            compiles[mode] = compile_s
            inner_steps = candidates * args.num_problems * num_steps
            print(
                json.dumps(
                    {
                        "benchmark": "tune",
                        "family": fam_name,
                        "data_source": family.data_source,
                        "mode": mode,
                        "optimizers": args.optimizers,
                        "grid": args.grid,
                        "candidates": candidates,
                        "num_problems": args.num_problems,
                        "num_steps": num_steps,
                        "compile_s": round(compile_s, 3),
                        "first_call_s": round(first, 3),
                        "median_s": round(median, 3),
                        "runs": len(times),
                        "min_s": round(min(times), 3) if times else None,
                        "inner_steps_per_s": round(inner_steps / median, 1),
                        "matmul_gflops": round(roofline, 2),
                    }
                ),
                flush=True,
            )
        if "naive" in args.modes:
            # What "one run per candidate" costs without this module: a fresh optax
            # transformation per candidate through lopt.evaluate, which compiles every time.
            # Timed on --naive-sample candidates per optimizer and scaled to the full count.
            t = time.perf_counter()
            sampled = total = 0
            for name in args.optimizers:
                grid = space_for(name, args.grid).coarse()
                total += len(grid["learning_rate"])
                for i in range(min(args.naive_sample, len(grid["learning_rate"]))):
                    hp = {k: float(v[i]) for k, v in grid.items()}
                    tx = lopt.baseline(name, **hp)
                    lopt.evaluate(tx, family, key, args.num_problems, num_steps).block_until_ready()
                    sampled += 1
            per_candidate = (time.perf_counter() - t) / sampled
            medians["naive"] = per_candidate * candidates
            print(
                json.dumps(
                    {
                        "benchmark": "tune",
                        "family": fam_name,
                        "mode": "naive",
                        "estimated": True,
                        "sampled_candidates": sampled,
                        "seconds_per_candidate": round(per_candidate, 3),
                        "estimated_s": round(per_candidate * candidates, 1),
                        "coarse_candidates": total,
                        "candidates": candidates,
                    }
                ),
                flush=True,
            )
        if {"vectorized", "sequential"} <= set(medians):
            print(
                json.dumps(
                    {
                        "benchmark": "tune_speedup",
                        "family": fam_name,
                        "sequential_over_vectorized": round(
                            medians["sequential"] / medians["vectorized"], 2
                        ),
                        **(
                            {
                                "naive_over_vectorized_incl_compile": round(
                                    medians["naive"]
                                    / (medians["vectorized"] + compiles["vectorized"]),
                                    1,
                                )
                            }
                            if "naive" in medians
                            else {}
                        ),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
