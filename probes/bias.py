"""Bias: an update that does not vanish at zero gradient, and the gradient where it does.

Every hand-designed optimizer steps by zero where the gradient is zero, so training with it can
only come to rest at a stationary point of the loss. A learned optimizer need not: if its
update at ``g = 0`` is some ``u₀ ≠ 0``, it keeps moving with no gradient at all, and a parameter
can come to rest only where its gradient entry cancels that drift, ``g = g₀``. On a quadratic
the loss then plateaus above its minimum (a quickstart optimizer's final loss stays at 0.02
where momentum reaches 3e-7, its median gradient entry at the last step within 5% of ``g₀``).

**Probe.** ``U(g)``: the update after ``W`` steps of a constant gradient ``g`` from a fresh
state (the steady state the adaptation probe also reads; the parameter advances as in training).
``u₀ = U(0)``; the reference is ``max |U(g)|`` over ``±`` a log grid spanning the range of
training gradients (two decades below it as well).

**Rule.** Bias is detected when ``|u₀| > SHARE × max |U|`` (the update at zero gradient is not
a rounding error of the updates the optimizer makes) and the update does not vanish closer to 0
than the grid's smallest magnitude, two decades below the training range (a rest point that
close is a minimum to the probe: a steep but continuous update through ``g ≈ 0``). ``g₀`` is the
zero of ``U`` nearest 0: on each side, the first grid point where ``U`` has the sign opposite
to ``u₀`` and the last finite one before it bracket a zero, refined twice on a uniform grid
inside the bracket (non-finite points skipped) and interpolated linearly; the nearer of the
two sides' zeros is kept. It is ``nan`` when ``U`` keeps ``u₀``'s sign over the whole range
(the optimizer drifts at every gradient probed). Every optax optimizer has ``u₀ = 0`` exactly
(nothing moves a parameter at 0 with a zero gradient); :mod:`probes.battery` checks both the
silence and ``g₀`` on optimizers with a drift added.

The chain writes a detected bias as :func:`lopt.chain.offset_gradient` (``g ↦ g − g₀``) in front
of the other mechanisms (:mod:`probes.to_chain`), so that its update vanishes at ``g₀`` too.

Shapes: ``G`` gradient values (``2·POINTS + 1``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from probes.detectors import Result

#: Share of the largest steady update the update at zero gradient must exceed (about 100×
#: the float32 rounding of a sum of terms of that size).
SHARE = 1e-5
#: Grid magnitudes per side (the grid also holds 0): one compiled program per update function.
POINTS = 24
#: Decades below the range of training gradients that the grid also covers.
BELOW = 2.0
#: Uniform refinements of the bracket around ``g₀``.
REFINE = 2
#: Compiled programs kept (as in :mod:`probes.black_box`).
PROGRAM_CACHE = 16


@dataclasses.dataclass
class Bias(Result):
    """The update at zero gradient and the gradient where the update vanishes.

    Attributes:
        detected: ``|update_at_zero| > SHARE × reference``, and ``|stall_gradient|`` not below
            the grid's smallest magnitude.
        update_at_zero: ``u₀ = U(0)``, the update after ``steps`` steps of ``g = 0``.
        reference: ``max |U(g)|`` over the grid.
        stall_gradient: ``g₀``, the zero of ``U`` nearest 0 (``nan``: none in the range).
        stall_percentile: percentage of training ``|g|`` samples at most ``|g₀|`` (``nan``:
            no samples or no ``g₀``).
        final_gradient: the median gradient entry at the last step of the training
            trajectories (``nan`` without ``(B, T, C)`` samples): near ``g₀`` where training
            came to rest there.
        steps: ``W``.
        gradients: the grid's ``g`` (sorted), for the figure.
        updates: ``U`` on the grid.
    """

    detected: bool
    update_at_zero: float
    reference: float
    stall_gradient: float
    stall_percentile: float
    final_gradient: float
    steps: int
    gradients: np.ndarray
    updates: np.ndarray


@functools.lru_cache(maxsize=PROGRAM_CACHE)
def steady_update_program(run: Callable, steps: int) -> Callable:
    """``gs (G,) -> U(gs) (G,)``: the update after ``steps`` steps of each constant ``g``."""

    @jax.jit
    def steady(gs):
        return jax.vmap(lambda g: run(jnp.full(steps, g, jnp.float32))[-1])(gs)

    return steady


def _crossing(g: np.ndarray, u: np.ndarray, sign: float) -> tuple[int, int] | None:
    """The bracket of the first sign change of ``u`` away from ``sign``.

    ``(i, j)``: the first finite point ``j`` without ``sign`` and the last finite ``i < j``
    (``i = -1``: none), or ``None`` when every finite point has ``sign``.
    """
    ok = np.isfinite(u)
    other = np.flatnonzero(ok & (np.sign(u) != sign))
    if not other.size:
        return None
    j = int(other[0])
    before = np.flatnonzero(ok[:j])
    return (int(before[-1]) if before.size else -1), j


def _zero_between(program: Callable, a: float, b: float, ua: float, ub: float, sign: float):
    """``g₀`` in ``[a, b]``, where ``U(a) = ua`` has ``sign`` and ``U(b) = ub`` not.

    The bracket is refined on a uniform grid ``REFINE`` times (non-finite points skipped),
    then interpolated linearly; a refinement that finds no crossing keeps the bracket.
    """
    n = 2 * POINTS + 1
    for _ in range(REFINE):
        g = np.linspace(a, b, n)
        u = np.asarray(program(jnp.asarray(g, jnp.float32)), np.float64)
        u[0], u[-1] = ua, ub  # the ends are known (float32 grids may round them)
        found = _crossing(g, u, sign)
        if found is None or found[0] < 0:
            break
        i, j = found
        a, b, ua, ub = g[i], g[j], u[i], u[j]
    return float(a + (b - a) * ua / (ua - ub)) if ua != ub else float(0.5 * (a + b))


def probe_bias(
    run: Callable[[jax.Array], jax.Array],
    lo: float,
    hi: float,
    steps: int,
    gradient_samples: Any = None,
    *,
    cached: bool = True,
) -> Bias:
    """Reads the bias of the optimizer whose update sequence is ``run(gs)`` (module docstring).

    Args:
        run: ``gs (T,) -> updates (T,)`` for one coordinate from a fresh state.
        lo: the smallest training ``|g|`` of the range (the grid starts ``BELOW`` decades under).
        hi: the largest.
        steps: ``W``, steps of each constant gradient.
        gradient_samples: training gradients, for ``stall_percentile`` (optional), and as
            ``(B, T, C)`` trajectories for ``final_gradient``.
        cached: keep the compiled program per ``run`` (``False`` for a ``run`` made afresh
            per call, such as a cell's).

    Returns:
        The :class:`Bias`.
    """
    make = steady_update_program if cached else steady_update_program.__wrapped__
    program = make(run, int(steps))
    mags = np.logspace(np.log10(lo) - BELOW, np.log10(hi), POINTS)
    g = np.concatenate([-mags[::-1], [0.0], mags])
    u = np.asarray(program(jnp.asarray(g, jnp.float32)), np.float64)
    u0 = float(u[POINTS])
    finite = np.isfinite(u)
    ref = float(np.max(np.abs(u[finite]))) if finite.any() else float("nan")
    moves = bool(np.isfinite(u0) and ref > 0 and abs(u0) > SHARE * ref)
    g0 = float("nan")
    if moves:
        sign = float(np.sign(u0))
        zeros = []
        for side in (1.0, -1.0):  # the zero nearest 0 on either side
            gs = np.concatenate([[0.0], side * mags])
            us = np.concatenate([[u0], u[POINTS + 1 :] if side > 0 else u[:POINTS][::-1]])
            found = _crossing(gs, us, sign)
            if found is not None:
                i, j = found  # i ≥ 0: U(0) = u0 is finite and has the sign
                zeros.append(_zero_between(program, gs[i], gs[j], us[i], us[j], sign))
        if zeros:
            g0 = min(zeros, key=abs)
    # a rest point closer to 0 than the grid's smallest magnitude is a minimum to the probe
    detected = moves and not abs(g0) < mags[0]
    percentile = float("nan")
    if gradient_samples is not None and np.isfinite(g0):
        s = np.abs(np.asarray(gradient_samples, np.float64).reshape(-1))
        s = s[np.isfinite(s)]
        if s.size:
            percentile = float(100.0 * np.mean(s <= abs(g0)))
    final = float("nan")
    if gradient_samples is not None and np.ndim(gradient_samples) == 3:
        last = np.asarray(gradient_samples, np.float64)[:, -1, :].reshape(-1)
        last = last[np.isfinite(last)]
        final = float(np.median(last)) if last.size else final
    return Bias(detected, u0, ref, g0, percentile, final, int(steps), g, u)


def rest_gradient(bias: Bias | None) -> float:
    """The gradient the optimizer rests at: ``g₀`` where a bias is detected and finite, else 0."""
    if bias is None or not bias.detected or not np.isfinite(bias.stall_gradient):
        return 0.0
    return float(bias.stall_gradient)
