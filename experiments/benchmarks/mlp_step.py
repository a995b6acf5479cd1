"""The MLP optimizer's optax step, side by side with learned_optimization's ``MLPLOpt``.

Times one jitted optax-style update (``tx.update`` then ``optax.apply_updates``; params and
optimizer state donated, a fixed gradient) of ``lopt.MLPOptimizer`` and of the peer library's
``MLPLOpt`` through its optax bridge (``opt_to_optax.opt_to_optax_opt``), in the same process
and the same JAX, on a pytree of about 10⁵ parameters (the leaves of a small three-layer MLP,
so the per-tensor normalisation sees tensors of very different sizes). Variants:

* ``peer``: ``MLPLOpt(compute_summary=False)``: features ``g, p`` and 6 momenta, normalised per
  tensor, plus an 11-timescale step embedding: 19 inputs, MLP 32-32-2.
* ``lopt-like``: ``MLPOptimizer`` with the peer's 6 momentum decays and 11 timescales (its
  own feature set, so 27 inputs: it adds the second moment and the three rms-normalised
  features), MLP 32-32-2.
* ``lopt-19``: ``MLPOptimizer`` with the peer's exact MLP size: 4 decays and 7 timescales,
  19 inputs, MLP 32-32-2.
* ``lopt-default``: ``MLPOptimizer()`` (17 inputs, MLP 32-32-2).
* ``adam``: ``optax.adam``, for scale.

Timing: every variant is compiled and warmed up, then timed in interleaved rounds; a round
times ``--inner`` consecutive steps of each variant in turn (a single step is a few
milliseconds, too short to time alone on a shared machine). Each variant's line gives the
median seconds per step and, against ``peer``, the median and interquartile range of the
per-round ratio (``paired_vs_peer``: the variant's time over the peer's in the same round).

The peer library is not a dependency of this project: check it out anywhere outside the
repository and put it on ``PYTHONPATH`` (with ``flax``, ``gin-config`` and ``chex``
installed; its ``summary`` module imports ``tensorflow`` only for its file writers, so when
``tensorflow`` is absent this script registers an empty stand-in before importing it). Without
the peer, only the ``lopt`` variants and Adam are timed.

Usage::

    PYTHONPATH=/path/to/learned_optimization python experiments/benchmarks/mlp_step.py \
        [--rounds 15] [--inner 20]

Prints one JSON object per line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lopt

PEER_DECAYS = (0.1, 0.5, 0.9, 0.99, 0.999, 0.9999)
PEER_TIMESCALES = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 1e4, 3e4, 1e5)
#: Leaf shapes of a 3-layer MLP with 101 336 parameters.
SHAPES = {"w1": (256, 320), "b1": (320,), "w2": (320, 56), "b2": (56,), "w3": (56, 20)}


def _tensorflow_stand_in() -> None:
    """Registers an empty ``tensorflow.compat.v2`` if tensorflow is not installed."""
    if importlib.util.find_spec("tensorflow") is not None:
        return
    tf = types.ModuleType("tensorflow")
    compat = types.ModuleType("tensorflow.compat")
    v2 = types.ModuleType("tensorflow.compat.v2")
    v2.enable_v2_behavior = lambda: None
    tf.compat, compat.v2 = compat, v2
    sys.modules.update({"tensorflow": tf, "tensorflow.compat": compat, "tensorflow.compat.v2": v2})


def peer_optimizer():
    """The peer's ``MLPLOpt`` as an optax transformation, or None if it is not importable."""
    if importlib.util.find_spec("learned_optimization") is None:
        return None
    _tensorflow_stand_in()
    from learned_optimization.learned_optimizers import mlp_lopt
    from learned_optimization.optimizers import opt_to_optax

    peer = mlp_lopt.MLPLOpt(compute_summary=False)
    theta = peer.init(jax.random.key(0))
    return opt_to_optax.opt_to_optax_opt(peer.opt_fn(theta)), _num_params(theta)


def _num_params(tree) -> int:
    return sum(int(np.size(x)) for x in jax.tree.leaves(tree))


def lopt_optimizer(**kwargs):
    """``lopt.MLPOptimizer(**kwargs)`` with random MLP weights, and its MLP's size."""
    opt = lopt.MLPOptimizer(**kwargs)
    theta = opt.init(jax.random.key(0))
    return opt.optimizer(theta), _num_params(theta)


def compiled_step(tx, params, grads, *, extra: dict):
    """Compiles ``update + apply_updates`` (params, state donated); returns ``run(n)``, info."""

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params, **extra)
        return optax.apply_updates(params, updates), state

    state = jax.tree.map(jnp.copy, tx.init(params))
    params = jax.tree.map(jnp.copy, params)
    jitted = jax.jit(step, donate_argnums=(0, 1))
    start = time.perf_counter()
    compiled = jitted.lower(params, state, grads).compile()
    info = {"compile_s": time.perf_counter() - start}
    mem = compiled.memory_analysis()
    if mem is not None:
        info["temp_mib"] = mem.temp_size_in_bytes / 2**20
    carry = [compiled(params, state, grads)]
    jax.block_until_ready(carry)

    def run(n: int) -> None:
        for _ in range(n):
            carry[0] = compiled(*carry[0], grads)
        jax.block_until_ready(carry[0])

    run(3)
    return run, info


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = np.percentile(np.asarray(values), [25, 50, 75])
    return float(q1), float(q2), float(q3)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--inner", type=int, default=20, help="steps timed per round")
    parser.add_argument("--variants", nargs="+", default=None, help="subset to time")
    args = parser.parse_args(argv)

    keys = jax.random.split(jax.random.key(1), len(SHAPES))
    params = {
        name: 0.1 * jax.random.normal(k, shape, jnp.float32)
        for (name, shape), k in zip(SHAPES.items(), keys, strict=True)
    }
    grads = jax.tree.map(lambda x: 0.01 * jnp.sin(7.0 * x + 1.0), params)
    size = _num_params(params)

    makers = {
        "peer": peer_optimizer,
        "lopt-like": lambda: lopt_optimizer(
            momentum_decays=PEER_DECAYS, timescales=PEER_TIMESCALES
        ),
        "lopt-19": lambda: lopt_optimizer(timescales=PEER_TIMESCALES[:7]),
        "lopt-default": lambda: lopt_optimizer(),
        "adam": lambda: (optax.adam(1e-3), 0),
    }
    names = args.variants or list(makers)
    runs, infos = {}, {}
    for name in names:
        made = makers[name]()
        if made is None:
            print(json.dumps({"variant": name, "skipped": "learned_optimization not importable"}))
            continue
        tx, mlp_size = made
        extra = {"extra_args": {"loss": jnp.float32(1.0)}} if name == "peer" else {}
        runs[name], infos[name] = compiled_step(tx, params, grads, extra=extra)
        infos[name]["mlp_params"] = mlp_size

    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run(args.inner)
            times[name].append((time.perf_counter() - start) / args.inner)

    for name, per_step in times.items():
        row = {
            "benchmark": "mlp_step",
            "variant": name,
            "params": size,
            "leaves": len(SHAPES),
            "rounds": args.rounds,
            "inner": args.inner,
            "s_per_step": statistics.median(per_step),
            **infos[name],
        }
        if "peer" in times:
            ratios = [a / b for a, b in zip(per_step, times["peer"], strict=True)]
            q1, q2, q3 = _quartiles(ratios)
            row.update(paired_vs_peer=q2, paired_vs_peer_iqr=[q1, q3])
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
