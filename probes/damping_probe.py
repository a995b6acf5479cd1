"""The oscillation-damping probe: steady gains, their build-up and what the damping spares.

Shared by the black box (:func:`probes.analyze_optax`) and the white box
(:func:`probes.analyze_cell`): each takes ``run``, ``gs (T,) -> updates (T,)`` for one scalar
coordinate from a fresh state, and :func:`probe_damping` turns its responses into a
:class:`probes.detectors.Damping` (see there for the rule).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from probes import detectors
from probes.detectors import Damping

#: Damping gains are unresolved where ``|ū(+a) - ū(-a)| ≤ RESOLUTION·max|ū|`` (~800 float32 ulps).
RESOLUTION = 1e-4


def damping_gains(
    run: Callable[[jax.Array], jax.Array],
    amplitudes: Any,
    *,
    steps: int = 200,
    tail: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
    """Steady DC and Nyquist gains of a scalar optimizer at each amplitude (oscillation damping).

    For each amplitude ``a`` four gradient sequences of ``steps`` steps are run from a fresh
    state: ``+a`` and ``-a`` constant, and ``±a`` alternating starting with either sign. Over
    the last ``tail`` steps (even, so the alternation averages out):

    * DC gain ``G₀(a) = -(ū(+a) - ū(-a)) / 2a``, the mean update per unit of a persistent
      gradient;
    * Nyquist gain ``G_π(a) = -mean((u(+alt) - u(-alt))·s_t) / 2a`` with ``s_t = ±1`` the sign
      of the ``+alt`` input: the alternating part of the update per unit of a gradient that
      flips sign every step.

    Differences between the two signs cancel an update the optimizer makes with no gradient
    (a learned bias) and average asymmetric responses. Where they differ by at most
    ``RESOLUTION`` of the update itself, float32 noise dominates: both gains are ``nan``. A
    linear optimizer gives constant gains:
    heavy-ball ``(α, β)``: ``G₀ = α/(1-β)``, ``G_π = α/(1+β)``.

    Args:
        run: ``gs (T,) -> updates (T,)`` for one coordinate from a fresh state.
        amplitudes: ``(A,)`` positive amplitudes.
        steps: ``T``, long enough for the state to settle.
        tail: steps averaged at the end (rounded down to even, at least 2).

    Returns:
        ``(dc_gain, nyquist_gain)``, each ``(A,)``.
    """
    a = jnp.asarray(np.asarray(amplitudes, np.float32).reshape(-1))
    tail = max(2, int(tail) // 2 * 2)
    if steps < tail:
        raise ValueError(f"steps ({steps}) must be at least tail ({tail})")
    const = jnp.stack([jnp.ones(steps), -jnp.ones(steps)]).astype(jnp.float32)
    u = jax.vmap(jax.vmap(run))(a[:, None, None] * const[None])[..., -tail:]  # (A, 2, tail)
    up, um = np.asarray(u[:, 0].mean(-1), np.float64), np.asarray(u[:, 1].mean(-1), np.float64)
    dc = -(up - um) / (2 * np.asarray(a, np.float64))
    ny = nyquist_response(run, amplitudes, steps=steps)[:, -tail:].mean(-1)
    # A gain is resolved where the two signs' updates differ by more than float32 noise on the
    # update itself (a learned bias makes the difference of two nearly equal numbers).
    unresolved = np.abs(up - um) <= RESOLUTION * np.maximum(np.abs(up), np.abs(um))
    return np.where(unresolved, np.nan, dc), np.where(unresolved, np.nan, ny)


def nyquist_response(
    run: Callable[[jax.Array], jax.Array], amplitudes: Any, *, steps: int = 200
) -> np.ndarray:
    """Per-step Nyquist gain ``-(u_t(+alt) - u_t(-alt))·s_t / 2a`` from a fresh state, ``(A, T)``.

    The step-by-step version of :func:`damping_gains`' ``G_π``: how the response to a gradient
    alternating ``±a`` evolves while the optimizer's state settles.
    """
    a = jnp.asarray(np.asarray(amplitudes, np.float32).reshape(-1))
    sign = jnp.where(jnp.arange(steps) % 2 == 0, 1.0, -1.0).astype(jnp.float32)
    u = jax.vmap(jax.vmap(run))(a[:, None, None] * jnp.stack([sign, -sign])[None])
    return np.asarray(-(u[:, 0] - u[:, 1]) * sign / (2 * a[:, None]), np.float64)


def probe_damping(
    run: Callable[[jax.Array], jax.Array],
    lo: float,
    hi: float,
    range_source: str,
    points: int,
    steps: int,
) -> Damping:
    """The damping probe over ``[lo/100, 10·hi]`` (log grid), decided on ``[lo, hi]``."""
    amps = np.logspace(np.log10(lo) - 2.0, np.log10(hi) + 1.0, points)
    dc, ny = damping_gains(run, amps, steps=steps)
    d = detectors.detect_damping(
        amps, dc, ny, gradient_range=(lo, hi), gradient_range_source=range_source
    )
    if d.detected:
        # How fast it builds up: at 3κ (inside the range), relative to the smallest amplitude.
        a_m = float(min(3.0 * d.kappa, hi))
        resp = nyquist_response(run, [float(amps[0]), a_m], steps=steps)
        with np.errstate(divide="ignore", invalid="ignore"):
            d.buildup = resp[1] / resp[0]
        d.buildup_amplitude = a_m
        d.memory, d.buildup_fit = detectors.fit_damping_memory(
            d.buildup, a_m, d.kappa, reference=resp[0], return_fit=True
        )
        d.persistent_kept = persistent_kept(run, a_m, steps=steps)
        d.sparing = d.persistent_kept / float(np.mean(d.buildup[-SPARING_TAIL:]))
    return d


#: Steps at the end of the damping probe over which the kept gains are averaged (even: an
#: alternation averages out).
SPARING_TAIL = 20


def persistent_kept(run: Callable[[jax.Array], jax.Array], a_m: float, *, steps: int) -> float:
    """DC gain for ``±c`` under ``±a_m`` alternating, over the DC gain for ``±c`` alone.

    ``c = a_m/10``; the four sequences ``±c + alt`` and ``±c`` run from a fresh state, and the
    mean updates over the last :data:`SPARING_TAIL` steps are compared (the two signs' difference
    cancels a bias). For :func:`lopt.chain.damp_oscillations` it is the damping factor
    ``1/(1 + √e/κ)`` that also scales the alternating part.
    """
    c = a_m / 10.0
    alt = jnp.where(jnp.arange(steps) % 2 == 0, 1.0, -1.0).astype(jnp.float32) * a_m
    ones = jnp.ones(steps, jnp.float32) * c
    gs = jnp.stack([ones + alt, -ones + alt, ones, -ones])
    u = np.asarray(jax.vmap(run)(gs)[:, -SPARING_TAIL:].mean(-1), np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float((u[0] - u[1]) / (u[2] - u[3]))
