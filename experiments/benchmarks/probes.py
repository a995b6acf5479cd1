"""Benchmark (BENCHMARKS.md §4): input-conditioned fixed points and a full analysis.

Fixed points for ``--inputs`` constant gradients × ``--seeds`` seeds on a GRU cell of
``--hidden`` units, with the residual reached, compile time separate (median of ``--repeats``
runs after compilation), a matmul roofline measured in the same process, and a full
``probes.analyze_cell`` timing (``--run RUN``: a full ``probes.analyze`` of the run's trained
optimizer, trajectories included), and a verification that polishes every seed of a few inputs
(no clustering) to show where seeds outside the kept clusters go. One JSON object per line.

The cell is random with sensible scales (``probes.reference.random_gru_cell``) unless ``--theta``
names a ``lopt.save`` file of a trained GRU optimizer (``lopt.load``, when it exists). The CPU is
shared: numbers are noisy; compare ratios measured in the same run.

    python experiments/benchmarks/probes.py [--hidden 256 --inputs 101 --seeds 32] [--run RUN]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# This script is named like the package it measures: keep its own folder off the import path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import probes  # noqa: E402
from probes import reference  # noqa: E402
from probes.fixed_points import FIXED, first_order, floor, polish  # noqa: E402


def _median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), [round(t, 3) for t in times]


def _cell(args):
    if args.theta:
        import lopt

        opt, theta, _ = lopt.load(args.theta)
        return opt.cell(theta), f"trained:{args.theta}"
    return reference.random_gru_cell(jax.random.key(args.seed), args.hidden), "random"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--inputs", type=int, default=101)
    p.add_argument("--seeds", type=int, default=32)
    p.add_argument("--max-unique", type=int, default=2)
    p.add_argument("--first-order-steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--theta", default=None, help="a lopt.save file (default: random GRU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run", default=None, help="time probes.analyze on this run directory")
    p.add_argument(
        "--verify-inputs", type=int, default=5, help="inputs whose seeds all get polished"
    )
    p.add_argument("--skip-analyze", action="store_true")
    args = p.parse_args()

    env = {"cpus": os.cpu_count(), "backend": jax.default_backend(), "shared_machine": True}
    a = jnp.ones((2048, 2048), jnp.float32)
    mm = jax.jit(lambda a: a @ a)
    jax.block_until_ready(mm(a))
    t_mm, _ = _median_time(lambda: mm(a), 5)
    roofline = 2 * 2048**3 / t_mm / 1e9
    print(json.dumps({"name": "matmul_roofline", "gflops": round(roofline, 1), **env}), flush=True)

    cell, source = _cell(args)
    H = int(cell.init_state().shape[0])
    inputs = jnp.linspace(-3.0, 3.0, args.inputs)

    # Seeds: states visited while iterating F(·, g*) from h0 (every 4th of 4·S steps) + noise.
    def visit(g):
        def body(h, _):
            h = cell.step(h, g)
            return h, h

        return jax.lax.scan(body, cell.init_state(), None, length=4 * args.seeds)[1][::4]

    visited = jax.jit(jax.vmap(visit))(inputs)
    seeds = visited + 0.05 * jax.random.normal(jax.random.key(1), visited.shape)
    kw = dict(max_unique=args.max_unique, first_order_steps=args.first_order_steps)

    t0 = time.perf_counter()
    fp = jax.block_until_ready(probes.fixed_points(cell, inputs, seeds, **kw))
    first = time.perf_counter() - t0
    t_run, times = _median_time(
        lambda: probes.fixed_points(cell, inputs, seeds, **kw), args.repeats
    )
    mask = np.asarray(fp.mask)
    kind = np.asarray(fp.kind)
    fixed = mask & (kind == FIXED)
    ratio = np.asarray(fp.residual) / np.asarray(fp.floor)
    sc = np.asarray(fp.seed_cluster)
    seed_fixed = (sc >= 0) & np.take_along_axis(fixed, np.maximum(sc, 0), 1)
    print(
        json.dumps(
            {
                "name": "fixed_points",
                "cell": source,
                "hidden": H,
                "inputs": args.inputs,
                "seeds": args.seeds,
                "max_unique": args.max_unique,
                "first_order_steps_cap": args.first_order_steps,
                "compile_s": round(first - t_run, 2),
                "run_s_median": round(t_run, 3),
                "run_s_all": times,
                "target_run_s": 10.0,
                "points": int(mask.sum()),
                "fixed": int(fixed.sum()),
                "slow": int((mask & (kind == 1)).sum()),
                "failed": int((mask & (kind == 2)).sum()),
                "inputs_with_fixed_point": int(fixed.any(1).sum()),
                # Seeds outside the K kept clusters after the first-order stage (not polished
                # individually; see "verify" below for where they actually go).
                "seeds_in_a_fixed_point": int(seed_fixed.sum()),
                "seeds_not_in_a_kept_cluster": int((sc < 0).sum()),
                "max_residual_over_floor_fixed": float(ratio[fixed].max()) if fixed.any() else None,
                "max_residual_inf": float(np.asarray(fp.residual)[mask].max()),
                "first_order_iters_median": float(np.median(np.asarray(fp.first_order_steps))),
                **env,
            }
        ),
        flush=True,
    )

    # Verification: polish *every* seed of a sample of inputs (dense Newton, no clustering):
    # do the seeds outside the kept clusters fail, or converge to the points found?
    sample = np.linspace(0, args.inputs - 1, args.verify_inputs).astype(int)
    h1, _ = jax.jit(lambda h, g: first_order(cell, h, g, steps=args.first_order_steps))(
        seeds[sample].reshape(-1, H), jnp.repeat(inputs[sample], args.seeds)
    )
    g_s = jnp.repeat(inputs[sample], args.seeds)
    hp = np.asarray(jax.jit(lambda h, g: polish(cell, h, g))(h1, g_s))
    r = np.asarray(jax.vmap(lambda h, g: cell.step(h, g) - h)(jnp.asarray(hp), g_s))
    at_floor = np.max(np.abs(r), -1) <= np.asarray(floor(jnp.asarray(hp)))
    hp = hp.reshape(len(sample), args.seeds, H)
    pts = np.asarray(fp.points)[sample]
    d = np.max(np.abs(hp[:, :, None] - pts[:, None]), -1)  # (inputs, seeds, K)
    d = np.where(fixed[sample][:, None], d, np.inf).min(-1)
    spread = np.max(np.abs(hp - hp[:, :1]), axis=(1, 2))
    print(
        json.dumps(
            {
                "name": "verify_every_seed_polished",
                "inputs_sampled": [round(float(inputs[i]), 3) for i in sample],
                "seeds": int(at_floor.size),
                "seeds_at_float32_floor": int(at_floor.sum()),
                "max_dist_to_a_found_fixed_point": float(d.max()),
                "max_spread_of_seeds_per_input": [float(x) for x in spread],
            }
        ),
        flush=True,
    )

    if args.run:
        # A full probes.analyze of a trained optimizer (trajectories on its task family
        # included), first call with compilation, then again.
        import lopt
        from lopt.evaluation import family_from_config
        from lopt.rundir import read_json

        opt, theta, _ = lopt.load(os.path.join(args.run, "theta.npz"))
        family = family_from_config(read_json(os.path.join(args.run, "config.json")))

        def analyze_run():
            return probes.analyze(opt, theta, family=family, key=jax.random.key(0))

        source = f"trained:{args.run}"
    else:

        def analyze_run():
            return probes.analyze_cell(cell)

    if not args.skip_analyze:
        t0 = time.perf_counter()
        an = analyze_run()
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        an = analyze_run()
        second = time.perf_counter() - t0
        print(
            json.dumps(
                {
                    "name": "analyze" if args.run else "analyze_cell",
                    "cell": source,
                    "first_call_s_incl_compile": round(first, 2),
                    "second_call_s": round(second, 2),
                    "target_s_incl_compile": 60.0,
                    "momentum": [an.momentum.detected, an.momentum.beta, an.momentum.share],
                    "clipping": [an.clipping.detected, an.clipping.threshold],
                    "schedule": an.schedule.shape,
                    "adaptation": [an.adaptation.detected, an.adaptation.slope],
                    "folds": {k: b["fold_magnitudes"] for k, b in an.adaptation.branches.items()},
                    **env,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
