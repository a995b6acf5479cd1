"""BENCHMARKS.md §1: seconds per meta-step, achieved GFLOP/s and fraction of the roofline.

Times one jitted meta-step (``lopt.meta_train.make_meta_step``: full-BPTT meta-gradient over
the linear-regression family plus the meta-optimizer update) for the paper's configuration
(GRU-256, 64 problems, 201 inner steps, rematerialised scan body) and the quick one (GRU-32,
output scale 3, 32 problems, 201 steps, full BPTT), next to a plain reference written here:
``hk.GRU`` applied with ``vmap`` over problems and coordinates, ``lax.scan`` with
``jax.checkpoint``, ``value_and_grad``; same meta-loss (mean_t f_t / f_0 over the problems).

FLOPs are counted analytically for what the implementation performs: a GRU step costs
``2·3·H·(H+I)`` FLOPs per coordinate forward (I = 1 input feature); the backward pass costs
about twice the forward, and rematerialisation adds one more forward, so a meta-step costs
``4×`` (remat) or ``3×`` (no remat) the forward FLOPs ``B·T·P·2·3·H·(H+1)`` (B problems,
T steps, P coordinates per problem). The roofline is the throughput of a large ``jnp.dot``
timed in the same process.

Usage::

    python experiments/benchmarks/meta_step.py [--presets paper quick] [--repeats 5]

Prints one JSON object per line.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from typing import Any

import haiku as hk
import jax
import jax.numpy as jnp
import optax

import lopt
import tasks
from lopt.meta_train import MetaTrainConfig, make_meta_step

PRESETS = {
    # name: (hidden size, output scale, problems)
    "paper": (256, 1.0, 64),
    "quick": (32, 3.0, 32),
}
HORIZON = 201


def _emit(row: dict[str, Any]) -> None:
    print(json.dumps(row), flush=True)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _memory(compiled) -> dict[str, float | None]:
    """Compiled program's temporary and argument bytes, in MiB (None if unavailable)."""
    try:
        m = compiled.memory_analysis()
        return {
            "temp_mib": m.temp_size_in_bytes / 2**20,
            "argument_mib": m.argument_size_in_bytes / 2**20,
            "output_mib": m.output_size_in_bytes / 2**20,
        }
    except Exception:  # noqa: BLE001 - memory analysis is optional on some backends
        return {"temp_mib": None, "argument_mib": None, "output_mib": None}


def _median_time(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def roofline(n: int = 2048, repeats: int = 7) -> float:
    """Measured FLOP/s of an ``n×n @ n×n`` float32 matmul (the machine's matmul roofline)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()
    median, _ = _median_time(lambda: dot(a, b).block_until_ready(), repeats)
    return 2.0 * n**3 / median


def forward_flops(hidden: int, problems: int, coords: int, steps: int = HORIZON) -> float:
    """Analytic forward FLOPs of the GRU over one unroll: ``B·T·P·2·3·H·(H+1)``."""
    return problems * steps * coords * 2 * 3 * hidden * (hidden + 1)


def bench_lopt(
    hidden, scale, problems, family, *, remat: bool, repeats: int, outlier_threshold=None
) -> dict[str, Any]:
    """One meta-step of ``lopt`` (estimator + meta-optimizer), compiled once, then timed."""
    opt = lopt.RNNOptimizer(hidden_size=hidden, output_scale=scale)
    config = MetaTrainConfig(
        num_problems=problems,
        horizon=HORIZON,
        remat=remat,
        num_steps=1,
        outlier_threshold=outlier_threshold,
    )
    config = config.resolved(family)
    init_fn, step_fn = make_meta_step(opt, config, config.meta_optimizer())
    state = init_fn(family, opt.init(jax.random.key(0)), jax.random.key(1))
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    compiled = step_fn.lower(family, state).compile()
    compile_s = time.perf_counter() - t0
    holder = {"state": state}

    def run():
        holder["state"], metrics = compiled(family, holder["state"])
        jax.block_until_ready(metrics)

    run()  # warm-up
    median, times = _median_time(run, repeats)
    return {"compile_s": compile_s, "s_per_step": median, "times": times, **_memory(compiled)}


def plain_meta_step(hidden: int, scale: float, problems: int, family):
    """The plain reference: ``hk.GRU`` + ``vmap`` + ``lax.scan(jax.checkpoint)``, no fusion.

    Returns:
        ``(step, params, opt_state, keys)`` where ``step(params, opt_state, keys)`` is jitted and
        returns ``(params, opt_state, meta_loss)``.
    """

    def cell(g, h):
        out, h = hk.GRU(hidden)(g[None], h)
        return scale * hk.Linear(1, w_init=jnp.zeros)(out)[0], h

    net = hk.without_apply_rng(hk.transform(cell))
    params = net.init(jax.random.key(0), jnp.zeros([]), jnp.zeros([hidden]))
    meta_tx = optax.chain(optax.clip(0.047), optax.adam(7.8e-4, b1=0.806, b2=0.594, eps=4.5e-6))

    def one_problem(params, key):
        k_task, k_init = jax.random.split(key)
        task = family.sample(k_task)
        x = family.init(task, k_init)
        h = jnp.zeros(x.shape + (hidden,))
        per_coord = jax.vmap(net.apply, in_axes=(None, 0, 0))

        @jax.checkpoint
        def body(carry, _):
            x, h = carry
            loss, g = jax.value_and_grad(family.loss, argnums=1)(task, x, None)
            dx, h = per_coord(params, g, h)
            return (x + dx, h), loss

        _, losses = jax.lax.scan(body, (x, h), length=HORIZON)
        return jnp.mean(losses / losses[0])

    def meta_loss(params, keys):
        return jnp.mean(jax.vmap(one_problem, in_axes=(None, 0))(params, keys))

    @jax.jit
    def step(params, opt_state, keys):
        loss, grads = jax.value_and_grad(meta_loss)(params, keys)
        updates, opt_state = meta_tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    keys = jax.random.split(jax.random.key(2), problems)
    return step, params, meta_tx.init(params), keys


def bench_plain(hidden, scale, problems, family, *, repeats: int) -> dict[str, Any]:
    """Times the plain reference's meta-step like :func:`bench_lopt`."""
    step, params, opt_state, keys = plain_meta_step(hidden, scale, problems, family)
    t0 = time.perf_counter()
    compiled = step.lower(params, opt_state, keys).compile()
    compile_s = time.perf_counter() - t0
    holder = {"p": params, "s": opt_state}

    def run():
        holder["p"], holder["s"], loss = compiled(holder["p"], holder["s"], keys)
        loss.block_until_ready()

    run()
    median, times = _median_time(run, repeats)
    return {"compile_s": compile_s, "s_per_step": median, "times": times, **_memory(compiled)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["paper", "quick"], choices=PRESETS)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-plain", action="store_true", help="skip the plain reference")
    parser.add_argument(
        "--no-remat-variant", action="store_true", help="skip lopt without rematerialisation"
    )
    parser.add_argument(
        "--outlier-variants",
        action="store_true",
        help="also time outlier_threshold steps without an outlier (kappa 1e30: one pass) and "
        "with outliers (kappa 1: half the problems left out, second pass)",
    )
    args = parser.parse_args()

    family = tasks.get("linear_regression", num_steps=HORIZON)
    coords = family.dim
    peak = roofline()
    common = {
        "benchmark": "meta_step",
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        "task": "linear_regression",
        "dim": coords,
        "inner_steps": HORIZON,
        "estimator": "full_bptt",
    }
    _emit({**common, "impl": "roofline", "matmul_gflops": peak / 1e9, "n": 2048})
    for name in args.presets:
        hidden, scale, problems = PRESETS[name]
        fwd = forward_flops(hidden, problems, coords)
        variants = [("lopt", True)]
        if not args.no_remat_variant:
            variants.append(("lopt", False))
        if not args.no_plain:
            variants.append(("plain", True))
        results = {}
        for impl, remat in variants:
            if impl == "lopt":
                r = bench_lopt(hidden, scale, problems, family, remat=remat, repeats=args.repeats)
            else:
                r = bench_plain(hidden, scale, problems, family, repeats=args.repeats)
            flops = (4.0 if remat else 3.0) * fwd
            gflops = flops / r["s_per_step"] / 1e9
            results[impl, remat] = r["s_per_step"]
            row = {
                **common,
                "preset": name,
                "impl": impl,
                "remat": remat,
                "hidden": hidden,
                "problems": problems,
                "s_per_step": r["s_per_step"],
                "times": [round(t, 4) for t in r["times"]],
                "compile_s": r["compile_s"],
                "gflop_per_step": flops / 1e9,
                "gflops": gflops,
                "roofline_fraction": gflops * 1e9 / peak,
                "temp_mib": r["temp_mib"],
                "argument_mib": r["argument_mib"],
                "ru_maxrss_mib": _rss_mib(),
            }
            if impl == "lopt" and ("plain", True) in results:
                row["speedup_vs_plain"] = results["plain", True] / r["s_per_step"]
            if impl == "plain":
                row["lopt_speedup_vs_plain"] = r["s_per_step"] / results["lopt", True]
            _emit(row)
        if args.outlier_variants:
            for kappa in (1e30, 1.0):
                r = bench_lopt(
                    hidden,
                    scale,
                    problems,
                    family,
                    remat=True,
                    repeats=args.repeats,
                    outlier_threshold=kappa,
                )
                _emit(
                    {
                        **common,
                        "preset": name,
                        "impl": "lopt",
                        "remat": True,
                        "outlier_threshold": kappa,
                        "second_pass": kappa == 1.0,
                        "s_per_step": r["s_per_step"],
                        "times": [round(t, 4) for t in r["times"]],
                        "relative_to_plain_lopt": r["s_per_step"] / results["lopt", True],
                        "temp_mib": r["temp_mib"],
                    }
                )


if __name__ == "__main__":
    main()
