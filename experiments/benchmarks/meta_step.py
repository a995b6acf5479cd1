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
T steps, P coordinates per problem). lopt's default keeps the GRU's matrix products for the
backward pass (``MetaTrainConfig.save_products``) and rematerialises only the elementwise
rest, so it performs ``3×``; ``lopt-recompute`` (``save_products=False``) performs ``4×``.
The roofline is the throughput of a large ``jnp.dot`` timed in the same process.

The variants of one configuration and the roofline matmul are compiled first and then timed
in interleaved rounds (one call of each per round), so a slow spell of the (shared) machine
hits all of them alike: ``roofline_fraction`` is the median over rounds of the variant's
FLOP/s over the roofline's in the same round, and ``paired_vs_plain`` the median over rounds
of the variant's time over the plain reference's, with its interquartile range
(``paired_vs_plain_iqr``). Each row also gives the minor page faults per call (median over
rounds) and memory: XLA's accounting of the compiled program (``peak_mib``: arguments, outputs
and temporaries, less aliased buffers) and, with ``--rss``, the peak resident set of a separate
process that compiles and runs only that variant (``subprocess_peak_rss_mib``).

Page faults: XLA:CPU allocates a program's temporaries as one block per call, and glibc serves
a block that large with a fresh ``mmap`` (and ``munmap``) on every call, so every page is
faulted in and zeroed again: about 66 000 faults per paper-config lopt step (337 MiB of
temporaries) against 17 000 for the plain reference. ``--thp malloc`` re-runs the script with
``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (transparent huge pages on malloc's mappings, where
the kernel's THP mode is ``madvise`` or ``always``), which cuts the faults to a few hundred;
``--thp off`` turns transparent huge pages off for the process (``prctl``), as on a kernel
whose mode is ``never``. Every row records the kernel's mode (``thp_mode``). See
docs/performance.md.

Usage::

    python experiments/benchmarks/meta_step.py [--presets paper quick] [--repeats 15]
        [--thp {default,malloc,off}] [--rss]

Prints one JSON object per line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

import lopt
import tasks
from lopt.meta_train import MetaTrainConfig, make_meta_step, saves_products

PRESETS = {
    # name: (hidden size, output scale, problems)
    "paper": (256, 1.0, 64),
    "quick": (32, 3.0, 32),
    # sizes in between, for where storing the products starts to pay (lopt.meta_train)
    "gru64": (64, 1.0, 64),
    "gru128": (128, 1.0, 64),
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
            "peak_mib": (
                m.temp_size_in_bytes
                + m.argument_size_in_bytes
                + m.output_size_in_bytes
                - m.alias_size_in_bytes
            )
            / 2**20,
        }
    except Exception:  # noqa: BLE001 - memory analysis is optional on some backends
        return {"temp_mib": None, "argument_mib": None, "output_mib": None, "peak_mib": None}


ROOFLINE_N = 2048


def prepare_roofline(n: int = ROOFLINE_N):
    """``run()`` for one ``n×n @ n×n`` float32 matmul (the machine's matmul roofline)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    dot(a, b).block_until_ready()
    return lambda: dot(a, b).block_until_ready()


def forward_flops(hidden: int, problems: int, coords: int, steps: int = HORIZON) -> float:
    """Analytic forward FLOPs of the GRU over one unroll: ``B·T·P·2·3·H·(H+1)``."""
    return problems * steps * coords * 2 * 3 * hidden * (hidden + 1)


def prepare_lopt(
    hidden, scale, problems, family, *, remat: bool, save_products=None, outlier_threshold=None
) -> tuple[Any, dict[str, Any]]:
    """One compiled meta-step of ``lopt`` (estimator + meta-optimizer).

    Returns:
        ``(run, info)``: ``run()`` takes one meta-step and waits for it; ``info`` has the
        compile time and the compiled program's memory.
    """
    opt = lopt.RNNOptimizer(hidden_size=hidden, output_scale=scale)
    config = MetaTrainConfig(
        num_problems=problems,
        horizon=HORIZON,
        remat=remat,
        save_products=save_products,
        num_steps=1,
        outlier_threshold=outlier_threshold,
    )
    config = config.resolved(family)
    init_fn, step_fn = make_meta_step(opt, config, config.meta_optimizer())
    state = init_fn(family, opt.init(jax.random.key(0)), jax.random.key(1))
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    compiled = step_fn.lower(family, state).compile()
    info = {
        "compile_s": time.perf_counter() - t0,
        "save_products": saves_products(opt, family, config),
        **_memory(compiled),
    }
    holder = {"state": state}

    def run():
        holder["state"], metrics = compiled(family, holder["state"])
        jax.block_until_ready(metrics)

    run()  # warm-up
    return run, info


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


def prepare_plain(hidden, scale, problems, family) -> tuple[Any, dict[str, Any]]:
    """The plain reference's compiled meta-step, like :func:`prepare_lopt`."""
    step, params, opt_state, keys = plain_meta_step(hidden, scale, problems, family)
    t0 = time.perf_counter()
    compiled = step.lower(params, opt_state, keys).compile()
    info = {"compile_s": time.perf_counter() - t0, **_memory(compiled)}
    holder = {"p": params, "s": opt_state}

    def run():
        holder["p"], holder["s"], loss = compiled(holder["p"], holder["s"], keys)
        loss.block_until_ready()

    run()
    return run, info


def interleaved(
    runs: dict[str, Any], repeats: int
) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    """Times every ``run`` ``repeats`` times in rounds of one call each.

    Returns:
        ``(times, faults)``: seconds and minor page faults of each call, per variant.
    """
    times: dict[str, list[float]] = {name: [] for name in runs}
    faults: dict[str, list[int]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
            faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return times, faults


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """First quartile, median and third quartile."""
    q1, q2, q3 = np.percentile(np.asarray(values, np.float64), [25, 50, 75])
    return float(q1), float(q2), float(q3)


HUGEPAGES = "glibc.malloc.hugetlb=1"
_PR_SET_THP_DISABLE = 41  # linux/prctl.h


def _with_hugepages() -> None:
    """Re-executes this script with malloc's transparent huge pages on (see the docstring)."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if HUGEPAGES in tunables.split(":"):
        return
    env = dict(os.environ, GLIBC_TUNABLES=":".join(filter(None, [tunables, HUGEPAGES])))
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def _without_thp() -> bool:
    """Turns transparent huge pages off for this process (``prctl``); True if it worked."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(_PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0


def thp_mode() -> str:
    """The kernel's transparent huge page mode (the bracketed word), or "" if unknown."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            text = f.read()
    except OSError:
        return ""
    return text[text.find("[") + 1 : text.find("]")] if "[" in text else text.strip()


def _variant_maxrss(preset: str, impl: str, kw: dict[str, Any] | None) -> float | None:
    """Peak RSS (MiB) of a fresh process that compiles ``impl`` and runs two meta-steps.

    Read from ``VmHWM`` in ``/proc/self/status`` (Linux): ``ru_maxrss`` would carry over the
    parent's peak through ``fork`` and ``exec``.
    """
    code = (
        "import json, resource, sys; sys.argv = ['meta_step']; "
        f"sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
        "import meta_step as m, tasks; "
        "family = tasks.get('linear_regression', num_steps=m.HORIZON); "
        f"hidden, scale, problems = m.PRESETS[{preset!r}]; kw = json.loads({json.dumps(kw)!r}); "
        "run, _ = (m.prepare_plain(hidden, scale, problems, family) if kw is None else "
        "m.prepare_lopt(hidden, scale, problems, family, **kw)); run(); "
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
        return None
    return int(done.stdout.split()[-1]) / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["paper", "quick"], choices=PRESETS)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--no-plain", action="store_true", help="skip the plain reference")
    parser.add_argument(
        "--no-remat-variant", action="store_true", help="skip lopt without rematerialisation"
    )
    parser.add_argument(
        "--no-recompute-variant",
        action="store_true",
        help="skip lopt with rematerialisation that recomputes the matrix products",
    )
    parser.add_argument(
        "--outlier-variants",
        action="store_true",
        help="also time outlier_threshold steps without an outlier (kappa 1e30: one pass) and "
        "with outliers (kappa 1: half the problems left out, second pass)",
    )
    parser.add_argument(
        "--thp",
        choices=["default", "malloc", "off"],
        default="default",
        help=f"transparent huge pages: as the kernel and malloc have them; 'malloc': re-run "
        f"with GLIBC_TUNABLES={HUGEPAGES}; 'off': disabled for this process (prctl)",
    )
    parser.add_argument(
        "--rss",
        action="store_true",
        help="also measure each variant's peak RSS in a process of its own (compiles again)",
    )
    args = parser.parse_args()
    thp_disabled = False
    if args.thp == "malloc":
        _with_hugepages()
    elif args.thp == "off":
        thp_disabled = _without_thp()

    family = tasks.get("linear_regression", num_steps=HORIZON)
    coords = family.dim
    roofline = prepare_roofline()
    roofline_flops = 2.0 * ROOFLINE_N**3
    common = {
        "benchmark": "meta_step",
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        "task": "linear_regression",
        "dim": coords,
        "inner_steps": HORIZON,
        "estimator": "full_bptt",
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "thp_mode": thp_mode(),
        "thp_disabled": thp_disabled,
    }
    for name in args.presets:
        hidden, scale, problems = PRESETS[name]
        fwd = forward_flops(hidden, problems, coords)
        # variant: lopt's keyword arguments (None: the plain reference)
        variants = {"lopt": dict(remat=True)}
        if not args.no_recompute_variant:
            variants["lopt-recompute"] = dict(remat=True, save_products=False)
        if not args.no_remat_variant:
            variants["lopt-no-remat"] = dict(remat=False)
        if args.outlier_variants:
            # kappa 1e30: one pass, no outlier; kappa 1: half the problems left out, second pass
            variants["lopt-outliers-none"] = dict(remat=True, outlier_threshold=1e30)
            variants["lopt-outliers-half"] = dict(remat=True, outlier_threshold=1.0)
        if not args.no_plain:
            variants["plain"] = None
        runs, infos = {"roofline": roofline}, {}
        for impl, kw in variants.items():
            if kw is None:
                runs[impl], infos[impl] = prepare_plain(hidden, scale, problems, family)
            else:
                runs[impl], infos[impl] = prepare_lopt(hidden, scale, problems, family, **kw)
        times, faults = interleaved(runs, args.repeats)
        peaks = [roofline_flops / t for t in times["roofline"]]
        _emit(
            {
                **common,
                "preset": name,
                "impl": "roofline",
                "n": ROOFLINE_N,
                "matmul_gflops": statistics.median(peaks) / 1e9,
                "matmul_gflops_range": [min(peaks) / 1e9, max(peaks) / 1e9],
            }
        )
        for impl, kw in variants.items():
            remat = True if kw is None else kw["remat"]
            # remat recomputes the matmuls (4x the forward) unless the products are stored
            recomputes = remat and not infos[impl].get("save_products", False)
            multiple = 4.0 if recomputes else 3.0
            median = statistics.median(times[impl])
            flops = multiple * fwd
            row = {
                **common,
                "preset": name,
                "impl": impl,
                "remat": remat,
                "hidden": hidden,
                "problems": problems,
                "s_per_step": median,
                "times": [round(t, 4) for t in times[impl]],
                "gflop_per_step": flops / 1e9,
                "gflops": flops / median / 1e9,
                # per round, against the roofline matmul timed in the same round
                "roofline_fraction": statistics.median(
                    flops / t / peak for t, peak in zip(times[impl], peaks, strict=True)
                ),
                **infos[impl],
                "minor_faults_per_step": statistics.median(faults[impl]),
                "ru_maxrss_mib": _rss_mib(),
            }
            if "plain" in times:
                ratios = [a / b for a, b in zip(times[impl], times["plain"], strict=True)]
                q1, q2, q3 = quartiles(ratios)
                row["paired_vs_plain"] = q2
                row["paired_vs_plain_iqr"] = [q1, q3]
            # spread of the variant's own times: interquartile range over the median
            t1, t2, t3 = quartiles(times[impl])
            row["relative_iqr"] = (t3 - t1) / t2
            if args.rss:
                row["subprocess_peak_rss_mib"] = _variant_maxrss(name, impl, kw)
            _emit(row)


if __name__ == "__main__":
    main()
