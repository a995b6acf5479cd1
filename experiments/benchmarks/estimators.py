"""BENCHMARKS.md §5: throughput of the meta-gradient estimators and scaling with devices.

Throughput is ``inner steps × parameters per second``: each estimate unrolls ``B`` problems
(ES/PES: ``2B`` particles, a ``+ε`` and a ``-ε`` one per pair) for ``K`` inner steps (the
horizon for full BPTT and ES, the truncation for truncated BPTT and PES) on ``P``-parameter
problems, so one estimate performs ``particles·K·P`` coordinate-steps of the learned
optimizer; dividing by the median seconds per jitted ``grad`` call gives the figure.

Same optimizer (GRU-32, the quick preset's) and family (linear regression, dim 5, horizon 201)
for all four estimators. Device scaling: the script re-runs itself in subprocesses with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``; the problem batch is sharded over the
N devices with ``lopt.meta_train.batch_sharding()``.

Caveat: forced host devices are threads of one CPU process sharing the same physical cores
(2 here), so the scaling figure shows the overhead (or gain from better core use) of the
sharded program and its all-reduces, not the speed-up of N real accelerators.

Usage::

    python experiments/benchmarks/estimators.py [--devices 1 2 4] [--repeats 5]

Prints one JSON object per line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ESTIMATORS = ("full_bptt", "tbptt", "es", "pes")


def child(num_devices: int, repeats: int, hidden: int, problems: int, truncation: int) -> None:
    """Times every estimator on this process's devices and prints one JSON line each."""
    import jax

    import lopt
    import tasks
    from lopt import estimators
    from lopt.meta_train import batch_sharding

    assert jax.device_count() == num_devices, (jax.device_count(), num_devices)
    family = tasks.get("linear_regression")
    horizon = family.num_steps
    opt = lopt.RNNOptimizer(hidden_size=hidden, output_scale=3.0)
    theta = opt.init(jax.random.key(0))
    theta["readout"]["w"] = 0.01 * jax.random.normal(jax.random.key(1), (hidden,))
    shard = batch_sharding()
    for name in ESTIMATORS:
        kw = {"horizon": horizon, "shard": shard}
        if name in ("full_bptt", "tbptt"):
            kw["num_problems"] = problems
        else:
            kw["num_pairs"] = problems
        if name in ("tbptt", "pes"):
            kw["truncation"] = truncation
        est = estimators.make_estimator(name, opt, family, **kw)
        state = jax.jit(est.init)(theta, jax.random.key(2))
        grad = jax.jit(est.grad)
        t0 = time.perf_counter()
        compiled = grad.lower(theta, state, jax.random.key(3)).compile()
        compile_s = time.perf_counter() - t0
        holder = {"state": state}

        def run(i, compiled=compiled, holder=holder):
            loss, g, holder["state"], _ = compiled(theta, holder["state"], jax.random.key(4 + i))
            jax.block_until_ready((loss, g))

        run(0)
        times = []
        for i in range(repeats):
            t0 = time.perf_counter()
            run(i + 1)
            times.append(time.perf_counter() - t0)
        median = statistics.median(times)
        particles = problems * (2 if name in ("es", "pes") else 1)
        steps = truncation if name in ("tbptt", "pes") else horizon
        coord_steps = particles * steps * family.dim
        print(
            json.dumps(
                {
                    "benchmark": "estimators",
                    "estimator": name,
                    "devices": num_devices,
                    "hidden": hidden,
                    "problems_or_pairs": problems,
                    "particles": particles,
                    "inner_steps": steps,
                    "parameters": family.dim,
                    "s_per_estimate": median,
                    "times": [round(t, 4) for t in times],
                    "compile_s": compile_s,
                    "throughput_steps_x_params_per_s": coord_steps / median,
                }
            ),
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--problems", type=int, default=32, help="problems (ES/PES: pairs)")
    parser.add_argument("--truncation", type=int, default=67)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=1200.0)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.repeats, args.hidden, args.problems, args.truncation)
        return
    base: dict[str, float] = {}
    for n in args.devices:
        env = dict(os.environ)
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n}"
        env.setdefault("JAX_PLATFORMS", "cpu")
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        cmd = [sys.executable, __file__, "--child", str(n), "--repeats", str(args.repeats)]
        cmd += ["--hidden", str(args.hidden), "--problems", str(args.problems)]
        cmd += ["--truncation", str(args.truncation)]
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=args.timeout, check=False
        )
        if proc.returncode:
            print(
                json.dumps({"benchmark": "estimators", "devices": n, "error": proc.stderr[-500:]})
            )
            continue
        for line in proc.stdout.splitlines():
            if not line.startswith("{"):
                continue
            row = json.loads(line)
            name = row["estimator"]
            base.setdefault(name, row["throughput_steps_x_params_per_s"])
            row["scaling_vs_first"] = row["throughput_steps_x_params_per_s"] / base[name]
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
