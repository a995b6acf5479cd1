"""Which oscillations a damping damps, and what it does to the persistent gradient beside them.

The damping probe (``probes.detectors.Damping``) reads two frequencies: a persistent gradient
and one that flips sign every step. This script reads the ones in between. For each period
``P`` (2 = a sign flip every step), one coordinate runs for ``--steps`` steps from a fresh state
under ``g₀ ± A·cos(2πt/P)`` (``g₀`` the bias, 0 without one), and over the last ``TAIL`` steps
(a whole number of every period) it reads:

* **kept**: the response's amplitude at that frequency per unit of ``A``, over the same at
  ``A/1000`` (1: not damped; the damping's factor otherwise);
* **persistent kept**: the gain for a small persistent ``±A/10`` added to that oscillation, over
  the gain for it alone (as the probe's ``persistent_kept``, which is period 2).

``lopt.chain.damp_oscillations`` scales the whole gradient by one factor, so both columns agree
at every period, and the factor rises smoothly towards 1 as the period grows. Printed for the
run's learned optimizer and for its probed chain (``RUN/distill.json``'s ``chain``), with the
amplitude ``A = 3κ`` of the detected damping (``--amplitude`` to choose it). Usage::

    python3 experiments/damping_bands.py runs/quickstart [--amplitude 0.13]

Prints one JSON object per optimizer; writes nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

#: Periods read (steps per oscillation; 2 is the probe's sign flip every step).
PERIODS = (2, 3, 4, 6, 8, 12, 16, 32)
#: Steps averaged at the end (a whole number of every period above).
TAIL = 96
#: Probabilities that the sign flips from one step to the next (``--flips``).
FLIP_RATES = (0.0, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0)


def scalar_run(tx):
    """``gs (T,) -> updates (T,)``: one coordinate trained by ``tx`` from a fresh state."""
    import jax
    import jax.numpy as jnp

    @jax.jit
    def run(gs):
        p = jnp.zeros((1,), jnp.float32)

        def body(state, g):
            u, state = tx.update(g[None], state, p)
            return state, u[0]

        return jax.lax.scan(body, tx.init(p), gs)[1]

    return run


def bands(run, amplitude: float, *, bias: float = 0.0, steps: int = 400, periods=PERIODS):
    """``{period: (kept, persistent kept)}`` of the optimizer ``run`` (see the module docstring)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    if steps < TAIL:
        raise ValueError(f"steps ({steps}) must be at least {TAIL}")
    t = np.arange(steps)
    out = {}
    for period in periods:
        w = 2 * np.pi / period
        wave = np.cos(w * t)
        phase = np.exp(-1j * w * t[-TAIL:])
        c = amplitude / 10.0
        seqs = [bias + s * a * wave for a in (amplitude, amplitude * 1e-3) for s in (1, -1)]
        seqs += [bias + s * c + amplitude * wave for s in (1, -1)]
        seqs += [bias + s * c + 0 * wave for s in (1, -1)]
        u = np.asarray(jax.vmap(run)(jnp.asarray(np.stack(seqs), jnp.float32)), np.float64)
        u = u[:, -TAIL:]

        def at_w(plus, minus, a, phase=phase):
            return np.abs(np.mean((plus - minus) / 2 * phase)) * 2 / a

        big, small = at_w(u[0], u[1], amplitude), at_w(u[2], u[3], amplitude * 1e-3)
        dc_with, dc_alone = np.mean(u[4] - u[5]), np.mean(u[6] - u[7])
        out[period] = (float(big / small), float(dc_with / dc_alone))
    return out


def flips(
    run,
    amplitude: float,
    *,
    bias: float = 0.0,
    steps: int = 400,
    rates=FLIP_RATES,
    sequences: int = 32,
    seed: int = 0,
):
    """``{p: (kept, persistent kept)}`` under ``g₀ ± A`` whose sign flips with probability ``p``.

    Each of ``sequences`` random sign sequences ``s_t`` (its first sign random too) is run as
    ``g₀ ± A·s_t``, ``g₀ ± A·s_t/1000`` and ``g₀ + A·s_t ± A/10``. Over the last ``TAIL``
    steps, **kept** is the least-squares factor of the large response on the small one scaled
    up (1 for a linear optimizer; below 1 where the sequence is damped, above where it is
    amplified) and **persistent kept** the gain for ``±A/10`` with the sequence over the gain
    for it alone, as :func:`bands` reads them. ``p = 1`` is the probe's sign flip every step,
    ``p = 0`` a constant ``±A``, ``p = ½`` white noise.

    Args:
        run: ``gs (T,) -> updates (T,)``, one coordinate from a fresh state.
        amplitude: ``A``.
        bias: ``g₀`` (the optimizer's rest gradient; 0 without a bias).
        steps: steps per sequence (at least ``TAIL``).
        rates: the flip probabilities.
        sequences: random sequences per rate.
        seed: each rate draws its sequences from its own stream (``seed`` and the rate's
            position), so a rate's reading does not depend on which other rates are asked.

    Returns:
        ``{p: (kept, persistent kept)}``; ``nan`` where a denominator is 0 (an optimizer that
        does not respond to the small sequence or to the persistent gradient alone).
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    if steps < TAIL:
        raise ValueError(f"steps ({steps}) must be at least {TAIL}")
    c = amplitude / 10.0
    out = {}
    for p in rates:
        rng = np.random.default_rng([seed, int(round(1e6 * p))])
        flip = rng.random((sequences, steps)) < p
        s = np.cumprod(np.where(flip, -1.0, 1.0), axis=1) * rng.choice([-1.0, 1.0], (sequences, 1))
        seqs = [bias + k * a * s for a in (amplitude, amplitude * 1e-3) for k in (1, -1)]
        seqs += [bias + amplitude * s + k * c for k in (1, -1)]
        seqs += [bias + k * c + 0 * s for k in (1, -1)]
        gs = jnp.asarray(np.concatenate(seqs), jnp.float32)
        u = np.asarray(jax.vmap(run)(gs), np.float64).reshape(8, sequences, steps)[..., -TAIL:]
        big = (u[0] - u[1]) / 2 / amplitude
        small = (u[2] - u[3]) / 2 / (amplitude * 1e-3)
        norm, alone = np.sum(small * small), np.mean(u[6] - u[7])
        kept = float(np.sum(big * small) / norm) if norm > 0 else float("nan")
        persistent = float(np.mean(u[4] - u[5]) / alone) if alone != 0 else float("nan")
        out[p] = (kept, persistent)
    return out


def _rounded(x: float) -> float | None:
    """``x`` to 3 decimals for JSON, ``None`` where it is not finite."""
    return round(x, 3) if math.isfinite(x) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run directory with analysis.json and distill.json")
    parser.add_argument("--amplitude", type=float, help="A (default: 3κ of the detected damping)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument(
        "--flips", action="store_true", help="also read random signs by flip probability"
    )
    args = parser.parse_args(argv)

    import lopt
    from lopt import rundir
    from lopt.chain import build_chain

    run = Path(args.run)
    try:
        analysis = rundir.read_json(run / "analysis.json")
        chain = rundir.read_json(run / "distill.json")["chain"]
    except (OSError, KeyError) as e:
        print(f"damping_bands.py: error: {e}", file=sys.stderr)
        return 2
    kappa = (analysis.get("damping") or {}).get("kappa")
    amplitude = args.amplitude or (3.0 * kappa if kappa else None)
    if not amplitude or amplitude <= 0:
        print("damping_bands.py: error: no damping detected; give --amplitude", file=sys.stderr)
        return 2
    b = analysis.get("bias") or {}
    bias = float(b["stall_gradient"]) if b.get("detected") and b.get("stall_gradient") else 0.0
    opt, theta, _ = lopt.load(run / "theta.npz")
    for name, tx in (("learned", opt.optimizer(theta)), ("probed chain", build_chain(chain))):
        run = scalar_run(tx)
        res = bands(run, amplitude, bias=bias, steps=args.steps)
        row = {
            "optimizer": name,
            "amplitude": amplitude,
            "bias": bias,
            "kept": {p: _rounded(k) for p, (k, _) in res.items()},
            "persistent_kept": {p: _rounded(k) for p, (_, k) in res.items()},
        }
        if args.flips:
            fl = flips(run, amplitude, bias=bias, steps=args.steps)
            row["flips_kept"] = {p: _rounded(k) for p, (k, _) in fl.items()}
            row["flips_persistent_kept"] = {p: _rounded(k) for p, (_, k) in fl.items()}
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
