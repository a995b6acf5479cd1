"""BENCHMARKS.md §3 ``optax_step``: the GRU optimizer inside a jitted optax training step.

For each parameter count P and optimizer (``optax.adam``; the paper's GRU optimizer at H = 32
and H = 256), one jitted step ``grad → tx.update → apply_updates`` (params and optimizer state
donated) on a diagonal quadratic over a plain parameter vector, so the step time is the
optimizer's. Prints one JSON object per line:

* ``kind: "roofline"``: the machine's matmul throughput, timed in this process on a large
  ``jnp.dot`` (and on the GRU's own ``(P, H) @ (H, 3H)`` shape at the largest P);
* ``kind: "optax_step"``: compile seconds, median step seconds (≥ 5 runs), ratio to Adam,
  analytic FLOPs ``2·3·H·(H+I)·P`` (I = 1), GFLOP/s, and the fraction of the roofline matmul
  timed *alternately* with the step (``roofline_gflops``; the machine is shared and its speed
  drifts); memory: the optimizer state, XLA's accounting of the compiled step (arguments +
  outputs + temporaries - aliased), and the process's peak RSS so far.

Usage::

    python experiments/benchmarks/optax_step.py [--sizes 1e3 1e4 1e5 1e6] [--hidden 32 256]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

import jax
import jax.numpy as jnp
import optax

import lopt


def _seconds(fn) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def _median_seconds(fn, repeats: int) -> float:
    return statistics.median(_seconds(fn) for _ in range(repeats))


def _paired_median_seconds(fn, roof: Roofline, repeats: int) -> tuple[float, float]:
    """Medians of ``fn`` and of the roofline matmul, timed alternately."""
    pairs = [(_seconds(fn), _seconds(roof)) for _ in range(repeats)]
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)


class Roofline:
    """An ``n × n × n`` float32 matmul, timed next to each measurement.

    The machine is shared, so its speed drifts between measurements; timing the matmul
    interleaved with the step it is compared with puts both under the same load.
    """

    def __init__(self, n: int):
        self.flops = 2.0 * n**3
        self.a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
        self.b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
        self.dot = jax.jit(jnp.dot)
        jax.block_until_ready(self.dot(self.a, self.b))

    def __call__(self):
        """Runs the matmul once (asynchronously)."""
        return self.dot(self.a, self.b)


def gate_matmul(size: int, hidden: int, repeats: int) -> float:
    """FLOP/s of the GRU step's matmul shape ``(P, H) @ (H, 3H)`` on its own."""
    h = jax.random.normal(jax.random.key(0), (size, hidden), jnp.float32)
    w = jax.random.normal(jax.random.key(1), (hidden, 3 * hidden), jnp.float32)
    dot = jax.jit(jnp.dot)
    jax.block_until_ready(dot(h, w))
    return 2.0 * size * hidden * 3 * hidden / _median_seconds(lambda: dot(h, w), repeats)


def _loss(params):
    w = params["w"]
    curvature = jnp.linspace(1e-3, 1.0, w.shape[0], dtype=w.dtype)
    return 0.5 * jnp.sum(curvature * w * w)


def bench_step(tx, size: int, roof: Roofline, repeats: int) -> dict:
    """Compiles and times one training step of ``tx`` on ``size`` parameters."""

    def step(params, state):
        grads = jax.grad(_loss)(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    params = {"w": jnp.ones((size,), jnp.float32)}
    # Fresh buffers for every leaf: init may share one array between fields (e.g. two zero
    # counters), and a donated buffer may appear only once.
    state = jax.tree.map(jnp.copy, tx.init(params))
    jitted = jax.jit(step, donate_argnums=(0, 1))
    start = time.perf_counter()
    compiled = jitted.lower(params, state).compile()
    compile_s = time.perf_counter() - start
    mem = compiled.memory_analysis()
    xla_bytes = None
    if mem is not None:
        xla_bytes = (
            mem.argument_size_in_bytes
            + mem.output_size_in_bytes
            + mem.temp_size_in_bytes
            - mem.alias_size_in_bytes
        )
    carry = [compiled(params, state)]  # warm-up (the inputs are donated: keep the outputs)

    def run():
        carry[0] = compiled(*carry[0])
        return carry[0]

    seconds, roof_seconds = _paired_median_seconds(run, roof, repeats)
    state_bytes = sum(x.nbytes for x in jax.tree.leaves(carry[0][1]))
    carry.clear()
    return {
        "compile_s": round(compile_s, 3),
        "step_s": seconds,
        "roofline_gflops": roof.flops / roof_seconds / 1e9,
        "state_bytes": state_bytes,
        "xla_peak_bytes": xla_bytes,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e3, 1e4, 1e5, 1e6])
    parser.add_argument("--hidden", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--roofline-n", type=int, default=2048)
    args = parser.parse_args(argv)
    repeats = max(5, args.repeats)

    roof = Roofline(args.roofline_n)
    peak = roof.flops / _median_seconds(roof, repeats)
    info = {"kind": "roofline", "matmul": f"{args.roofline_n}^3 f32", "gflops": peak / 1e9}
    info.update(device=str(jax.devices()[0]), backend=jax.default_backend())
    print(json.dumps(info), flush=True)
    biggest = int(max(args.sizes))
    for hidden in args.hidden:
        rate = gate_matmul(biggest, hidden, repeats)
        shape = f"({biggest},{hidden})@({hidden},{3 * hidden})"
        line = {"kind": "roofline", "matmul": shape, "gflops": rate / 1e9, "fraction": rate / peak}
        print(json.dumps(line), flush=True)

    for size in (int(s) for s in args.sizes):
        adam = bench_step(optax.adam(1e-3), size, roof, repeats)
        print(json.dumps({"kind": "optax_step", "params": size, "optimizer": "adam", **adam}))
        for hidden in args.hidden:
            opt = lopt.RNNOptimizer("gru", hidden)
            theta = opt.init(jax.random.key(0))
            theta["readout"]["w"] = jnp.full((hidden,), 1e-3)  # a non-trivial update
            result = bench_step(opt.optimizer(theta), size, roof, repeats)
            flops = 2 * 3 * hidden * (hidden + 1) * size
            gflops = flops / result["step_s"] / 1e9
            line = {
                "kind": "optax_step",
                "params": size,
                "optimizer": f"gru{hidden}",
                **result,
                "vs_adam": result["step_s"] / adam["step_s"],
                "flops": flops,
                "gflops": gflops,
                "roofline_fraction": gflops / result["roofline_gflops"],
            }
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
