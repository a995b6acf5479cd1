"""Black-box probes: what an optimizer does, read from its updates alone (no hidden state).

:func:`analyze_optax` answers the mechanism questions on one
scalar coordinate, with exact linear responses from ``jax.jvp`` through the update sequence:

* **momentum**: impulse response ``r_k = ∂u_{W+k}/∂g_W`` after ``W`` steps of a background
  gradient ``b`` (``b = 0``; if that is not finite, e.g. Adam's ``√ν`` at ``ν = 0``,
  ``b = gradient_scale``), fitted with modes (:func:`probes.detectors.fit_modes`). Expected:
  ``sgd(α)``: one mode ``λ = 0``, ``α``; ``sgd(α, momentum=β)``: ``(β, α)``; ``rmsprop``: a
  dominant ``λ = 0`` mode (no momentum); ``adam(α, b1, b2)`` on background ``b``:
  ``r_k = -(α/|b|)[(1-b1)b1^k - c(1-b2)b2^k]`` with ``c = 1/(1-b2^{W+k+1}) ≈ 1`` for a long
  ``W``, so the dominant mode is ``β = b1``, ``α = α(1-b1)/|b|`` (share ≈ ``(1-b1)/(2-b1-b2)``)
  and the ``b2`` mode has the opposite sign: the steady response
  ``-Σ α_j/(1-λ_j) = -α(1-c)/|b| ≈ 0``
  (Adam's update is invariant to the gradient's scale; ``c - 1 ≈ 0.16`` at ``W = 2000``).
* **clipping**: the first update from a fresh state, ``u_0(g)``, as for cells. ``adam``'s first
  update is ``-α g/(|g| + ε)``: a sign step, which this probe reports as clipping at ``≈ ε``.
* **schedule**: ``-∂u_t/∂g_t`` after ``t`` zero gradients (a secant at ``±10⁻³·scale`` where the
  derivative is not finite).
* **adaptation**: ``-∂u_W/∂g_W`` at ``g_W = 0`` after ``W`` steps of constant ``g*``. Expected:
  constant for sgd/momentum/clip; ``α/√(ρ g*² + ε)`` for rmsprop and
  ``≈ α(1-b1)/(√b2 |g*|)`` for adam (log-log slope ``-1``).

The behavioural probes here serve the white-box analysis too (:mod:`probes.analysis`): the
clipping threshold from ``U(g)`` and ``∂U/∂g`` (:func:`probe_clipping`), the range of training
gradients (:func:`gradient_range`) and the oscillation-damping gains (:func:`damping_gains`,
:func:`nyquist_response`, :func:`probe_damping`).

Shapes: ``T`` steps, ``G`` gradient values, ``M`` magnitudes, ``A`` amplitudes.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from probes import detectors
from probes.agreement import probe_agreement
from probes.analysis_result import Analysis
from probes.bias import probe_bias, rest_gradient
from probes.damping_probe import (  # noqa: F401 (re-exported)
    RESOLUTION,
    SPARING_TAIL,
    damping_gains,
    nyquist_response,
    persistent_kept,
    probe_damping,
)
from probes.detectors import Clipping
from probes.modes import memory_from_flips
from probes.transient import read_transient_damping

# ----------------------------------------------------------------------------- shared pieces


def log_grid(scale: float, lo: float, hi: float, num: int) -> np.ndarray:
    """``num`` log-spaced values from ``scale·lo`` to ``scale·hi``."""
    return scale * np.logspace(np.log10(lo), np.log10(hi), num)


#: Where a slope at ``g = 0`` is not finite (a norm or ``√ν`` at 0) it is read at ``±hair``,
#: ``hair = HAIR × the smallest probed magnitude``: far below any threshold the grid resolves.
HAIR = 1e-6
#: The schedule probe's gain along a constant gradient ``b`` is the slope at ``b·(1 + KINK)``
#: at the step read: where the update has a kink at ``b`` (a running maximum that ties with
#: its input at every step of a constant gradient, as AMSGrad's), the branch a growing gradient
#: takes. A normalising update's second curve is its step there instead (AMSGrad's now), so
#: this serves the updates without detected adaptation.
KINK = 1e-2
#: Default schedule horizon without a task family (the paper's 200 updates).
SCHEDULE_HORIZON = 200


def slope_at_zero(slope_fn: Callable[[np.ndarray], np.ndarray], hair: float) -> float:
    """``∂U/∂g`` at 0, or the mean of the slopes at ``±hair`` where that is not finite."""
    slope0 = float(slope_fn(np.zeros(1))[0])
    if not np.isfinite(slope0):
        slope0 = float(np.mean(slope_fn(np.array([hair, -hair]))))
    return slope0


def first_response(
    update_fn: Callable[[np.ndarray, int, int], np.ndarray], probe, steps
) -> tuple[int, int]:
    """``(t, lag)``: the first step and delay at which a gradient at step ``t`` moves the update.

    ``update_fn(gs, t, lag)`` is the update at step ``t + lag`` for a gradient ``g`` at step
    ``t`` after ``t`` zero gradients (zero gradients after it). The first ``t < steps`` whose
    update at the same step (``lag = 0``) is not zero at every ``g`` of ``probe`` is taken;
    where none has one, the first with an update one step later (``lag = 1``: Rprop's, which
    moves by the previous step's sign); ``(0, 0)`` where neither does.
    """
    for lag in (0, 1):
        for t in range(int(steps)):
            u = update_fn(np.asarray(probe), t, lag)
            if np.any(np.isfinite(u) & (u != 0)):
                return t, lag
    return 0, 0


def probe_clipping(
    slope_fn: Callable[[np.ndarray], np.ndarray],
    update_fn: Callable[[np.ndarray], np.ndarray],
    magnitudes: np.ndarray,
    gradient_samples: np.ndarray | None,
    fraction: float,
    step: int = 0,
    lag: int = 0,
) -> Clipping:
    """Clipping evidence and threshold from vectorised ``∂U/∂g`` and ``U`` (see module doc).

    The reference slope is ``∂U/∂g`` at 0, or at ``±HAIR·magnitudes[0]`` where that is not
    finite. An update whose slope is zero there and at the hair while it jumps across 0 is
    sign-like: clipping at threshold 0.
    """
    hair = HAIR * float(magnitudes[0])
    slope0 = slope_at_zero(slope_fn, hair)
    u_hair = update_fn(np.array([hair, -hair]))
    sign_like = bool(
        slope0 == 0.0
        and np.all(slope_fn(np.array([hair, -hair])) == 0.0)
        and np.all(np.isfinite(u_hair))
        and u_hair[0] != u_hair[1]
    )
    thresholds = {}
    for sign in (1.0, -1.0):
        s = slope_fn(sign * magnitudes)
        t, j = detectors.one_sided_threshold(magnitudes, s, slope0, fraction)
        if j > 0:  # refine between the bracketing grid points
            lo, hi = magnitudes[j - 1], magnitudes[j]
            for _ in range(2):
                sub = np.linspace(lo, hi, 64)
                ts, k = detectors.one_sided_threshold(sub, slope_fn(sign * sub), slope0, fraction)
                if k <= 0:
                    break
                lo, hi, t = sub[k - 1], sub[k], ts
        thresholds[sign] = t
    grid = np.concatenate([-magnitudes[::-1], [0.0], magnitudes])
    updates = update_fn(grid)
    slopes = slope_fn(grid)
    if gradient_samples is not None and np.size(gradient_samples):
        gs = np.asarray(gradient_samples, np.float64).reshape(-1)
        gs = gs[np.isfinite(gs)]
        counts, edges = np.histogram(gs, bins=64)
    else:
        counts, edges = np.zeros(0), np.zeros(0)
    tp, tn = thresholds[1.0], thresholds[-1.0]
    if not (np.isfinite(slope0) and slope0 != 0.0):
        tp = tn = float("inf")
    if sign_like:
        tp = tn = 0.0
    detected = bool(sign_like or (slope0 != 0.0 and np.isfinite(min(tp, tn))))
    return Clipping(
        detected,
        float(min(tp, tn)),
        float(tp),
        float(tn),
        float(updates[-1]),
        float(updates[0]),
        slope0,
        grid,
        np.asarray(updates),
        np.asarray(slopes),
        counts,
        edges,
        sign_like,
        int(step),
        int(lag),
    )


def median_gradient(gradient_samples: Any, default: float = 1.0) -> float:
    """The median non-zero finite ``|g|`` of the samples (``default`` without any)."""
    if gradient_samples is None:
        return default
    g = np.abs(np.asarray(gradient_samples, np.float64).reshape(-1))
    g = g[np.isfinite(g) & (g > 0)]
    return float(np.median(g)) if g.size else default


#: Percentiles of the training ``|g|`` spanned by the adaptation grid.
GRADIENT_PERCENTILES = (1.0, 99.9)


def gradient_range(
    gradient_samples: Any, scale: float, magnitude_range: tuple[float, float]
) -> tuple[float, float, str]:
    """``(lo, hi, source)``: the ``|g*|`` covered by the adaptation grid.

    The percentiles ``GRADIENT_PERCENTILES`` of the non-zero finite ``|g|`` seen in training, or
    ``scale × magnitude_range`` without samples.
    """
    if gradient_samples is not None:
        g = np.abs(np.asarray(gradient_samples, np.float64).reshape(-1))
        g = g[np.isfinite(g) & (g > 0)]
        if g.size >= 2:
            lo, hi = np.percentile(g, GRADIENT_PERCENTILES)
            if hi > lo > 0:
                p0, p1 = GRADIENT_PERCENTILES
                return float(lo), float(hi), f"training |g| percentiles {p0:g}%-{p1:g}%"
    lo, hi = magnitude_range
    return scale * lo, scale * hi, "gradient scale x magnitude_range"


# ----------------------------------------------------------------------------- optax


#: Compiled probe programs kept per update function (:func:`analyze_optax` called again on the
#: same transformation object reuses them instead of compiling again).
PROGRAM_CACHE = 16


def _run_for(tx: optax.GradientTransformation) -> Callable[[jax.Array], jax.Array]:
    """:func:`scalar_updates` of ``tx``, the same function for the same ``tx`` object.

    The probe programs are cached on that function, so analysing one transformation twice
    compiles once. A transformation that cannot be hashed gets a fresh function (and compiles).
    """
    try:
        return _cached_updates(tx)
    except TypeError:
        return scalar_updates(tx)


def scalar_updates(tx: optax.GradientTransformation) -> Callable[[jax.Array], jax.Array]:
    """``gs (T,) -> updates (T,)`` for one scalar parameter trained by ``tx`` (params advance)."""

    def run(gs):
        p0 = jnp.zeros([], jnp.float32)
        state0 = tx.init(p0)

        def body(c, g):
            p, s = c
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), u

        return jax.lax.scan(body, (p0, state0), gs)[1]

    return run


_cached_updates = functools.lru_cache(maxsize=PROGRAM_CACHE)(scalar_updates)


@functools.lru_cache(maxsize=PROGRAM_CACHE)
def _first_update_program(run: Callable, steps: int) -> Callable:
    """``(gs (G,), t, lag) -> u_{t+lag} (G,)``, ``g`` at step ``t`` after ``t`` zero gradients."""

    @jax.jit
    def first_update(gs, t, lag):
        zeros = jnp.zeros(steps + 1, jnp.float32)
        return jax.vmap(lambda g: run(zeros.at[t].set(g))[t + lag])(gs)

    return first_update


@functools.lru_cache(maxsize=PROGRAM_CACHE)
def _first_slope_program(run: Callable) -> Callable:
    """``(gs (G,), t, lag) -> ∂u_{t+lag}/∂g_t (G,)`` after ``t`` zero gradients (static ints)."""

    @functools.partial(jax.jit, static_argnums=(1, 2))
    def first_slope(gs, t, lag=0):
        # Exactly t + 1 + lag steps: reverse mode through later zero-gradient steps would
        # multiply 0 by the infinite slope of a √ν they drive to 0, and forward mode multiplies
        # the zero tangent of a parameter norm at p = 0 (AGC) by its infinite slope.
        n = t + 1 + lag
        one = jax.grad(lambda g: run(jnp.zeros(n, jnp.float32).at[t].set(g))[t + lag])
        return jax.vmap(one)(gs)

    return first_slope


@functools.lru_cache(maxsize=PROGRAM_CACHE)
def _steady_lr_program(run: Callable, warmup: int) -> Callable:
    """``(g* (M,), hair) -> α_eff (M,)``: the gain after ``warmup`` steps of a constant ``g*``.

    ``-∂u/∂g`` at ``g = 0`` after the steady steps; where that is not finite (a norm or a root
    of a square at exactly 0, as NovoGrad's), the mean of the slopes at ``±hair``.
    """

    @jax.jit
    def steady_lr(gstar, hair):
        def one(g):
            gs = jnp.concatenate([jnp.full(warmup, g, jnp.float32), jnp.zeros(1, jnp.float32)])
            tangent = jnp.zeros_like(gs).at[-1].set(1.0)

            def slope(x):
                return -jax.jvp(run, (gs.at[-1].set(x),), (tangent,))[1][-1]

            d = slope(0.0)
            return jnp.where(jnp.isfinite(d), d, 0.5 * (slope(hair) + slope(-hair)))

        return jax.vmap(one)(gstar)

    return steady_lr


@functools.lru_cache(maxsize=PROGRAM_CACHE)
def _jitted(run: Callable) -> Callable:
    return jax.jit(run)


@functools.lru_cache(maxsize=PROGRAM_CACHE)
def impulse_program(run: Callable, warmup: int, lags: int) -> Callable:
    """``(b, w) -> (r, gains)``: the impulse response after ``w ≤ warmup`` steps of ``b``.

    ``r_k = ∂u_{w+k}/∂g_w`` and ``gains_k = -∂u_{w+k}/∂g_{w+k}`` (the instantaneous gain at each
    lag, which follows a schedule), both ``(lags,)``, exact by ``jax.jvp``; one compilation.
    """
    length = warmup + lags

    def at(gs, pos):
        tangent = (jnp.arange(length) == pos).astype(jnp.float32)
        return jax.jvp(run, (gs,), (tangent,))[1]

    @jax.jit
    def program(b, w):
        gs = jnp.full(length, b, jnp.float32)
        r = jax.lax.dynamic_slice(at(gs, w), (w,), (lags,))
        gains = jax.vmap(lambda k: -at(gs, w + k)[w + k])(jnp.arange(lags))
        return r, gains, run(gs)[w]

    return program


def measure_impulse(program: Callable, scale: float, warmup: int) -> tuple[Any, float, int]:
    """The impulse response the momentum detector fits, normalised by the schedule.

    Backgrounds ``b = 0``, then ``scale·10^{-j}`` (``j = 0…6``): the first where the response is
    finite and, at some ``w = warmup, warmup/2, …, 1``, not zero (``ZERO_RESPONSE``; a schedule
    that has reached 0 by ``warmup``, or a clip that the background saturates, answers nothing).
    Where the instantaneous gain changes over the lags (a schedule), ``r_k`` is rescaled by
    ``gains_0/gains_k`` over the lags before the gain vanishes or changes sign, so that a decay
    ``γ`` per step does not read as ``βγ``.

    Returns:
        ``(r, b, w)``, or ``(None, nan, 0)`` if the response is zero or not finite everywhere.
    """
    for b in [0.0] + [scale * 10.0**-j for j in range(7)]:
        w = int(warmup)
        while w >= 1:
            r, gains, u_w = (np.asarray(x, np.float64) for x in program(jnp.float32(b), w))
            if not np.all(np.isfinite(r)):
                break
            # at b = 0 any non-zero response counts (an update that drifts at g = 0, a
            # bias, is not a background that saturates a clip)
            floor = ZERO_RESPONSE * abs(float(u_w)) / b if b > 0 else 0.0
            if np.any(np.abs(r) > floor):
                g0 = gains[0]
                if np.isfinite(g0) and g0 != 0 and np.all(np.isfinite(gains)):
                    same = gains * np.sign(g0) > 0
                    n = int(np.argmin(same)) if not same.all() else gains.size
                    if np.any(np.abs(gains[:n] - g0) > 1e-6 * abs(g0)):
                        r = r[:n] * g0 / gains[:n]
                return r, float(b), w
            w //= 2
    return None, float("nan"), 0


#: A response below this fraction of the update per unit background ``|u_w|/b`` is rounding
#: (a clip saturated by the background); at ``b = 0`` any non-zero response counts.
ZERO_RESPONSE = 1e-6
#: Opposite impulses ``-X·b`` of the sign-flip probe and the lags it watches.
FLIP_AMPLITUDES = np.logspace(4.0, 10.0, 13)
FLIP_LAGS = 2500


@functools.lru_cache(maxsize=PROGRAM_CACHE)
def flip_program(run: Callable, warmup: int) -> Callable:
    """``b -> (K (A,), u_W)``: steps whose update's sign an impulse ``-X·b`` flips (sign-like)."""
    length = warmup + FLIP_LAGS
    amps = jnp.asarray(FLIP_AMPLITUDES, jnp.float32)

    @jax.jit
    def program(b):
        gs = jnp.full(length, b, jnp.float32)
        ref = run(gs)[warmup:]
        kicked = jax.vmap(lambda x: run(gs.at[warmup].set(-x * b))[warmup:])(amps)
        flipped = jnp.sign(kicked) != jnp.sign(ref)[None]
        return jnp.sum(jnp.cumprod(flipped, axis=1), axis=1), ref[0]

    return program


def momentum_from_response(
    run: Callable, scale: float, warmup: int, lags: int, *, cached: bool = True
):
    """Momentum from the exact impulse response of ``run`` (black box; a cell's fallback).

    The small-signal response (:func:`measure_impulse`) is fitted with modes; where it is zero
    at every background the update is sign-like and its memory is read from how long an
    opposite impulse flips its sign (:func:`probes.modes.memory_from_flips`). ``cached``: keep
    the compiled programs for the next call with the same ``run`` (pass false for a ``run``
    made afresh per call, which would never be asked for again and would stay in memory).

    Returns:
        ``(Momentum, r, b)``.
    """
    impulse = impulse_program if cached else impulse_program.__wrapped__
    flips = flip_program if cached else flip_program.__wrapped__
    r, b, _ = measure_impulse(impulse(run, warmup, lags), scale, warmup)
    if r is not None:
        lams, alphas = detectors.fit_modes(r)
        return detectors.detect_momentum(lams, alphas, point_kind="impulse response"), r, b
    counts, u0 = flips(run, warmup)(jnp.float32(scale))
    beta = memory_from_flips(FLIP_AMPLITUDES, np.asarray(counts))
    alpha = abs(float(u0)) / scale
    m = detectors.detect_momentum(np.array([beta]), np.array([alpha]), point_kind="sign flips")
    m.impulse_response = np.asarray(counts, np.float64)
    return m, np.zeros(0), scale


def _gain_after_zeros(run: Callable, steps: int, t: Any, hair: jax.Array) -> jax.Array:
    """``A_t = -∂u_t/∂g_t`` after ``t`` zero gradients, in a run of ``steps``.

    The mean of the slopes at ``±hair`` where the slope at ``g = 0`` is not finite.
    """
    onehot = (jnp.arange(steps) == t).astype(jnp.float32)
    d = -jax.jvp(run, (jnp.zeros(steps, jnp.float32),), (onehot,))[1][t]
    plus = -jax.jvp(run, (hair * onehot,), (onehot,))[1][t]
    minus = -jax.jvp(run, (-hair * onehot,), (onehot,))[1][t]
    return jnp.where(jnp.isfinite(d), d, 0.5 * (plus + minus))


@functools.lru_cache(maxsize=PROGRAM_CACHE)
def schedule_program(run: Callable, steps: int) -> Callable:
    """``(hair, b) -> (A (T,), C (T,))``: the two curves of the schedule probe.

    ``A_t = -∂u_t/∂g_t`` after ``t`` zero gradients (the mean of the slopes at ``±hair`` where
    that is not finite); ``C_t = -∂u_t/∂g_t`` after ``t`` steps of a constant gradient ``b``,
    at ``g_t = b·(1 + KINK)`` (:data:`KINK`).
    """

    @jax.jit
    def program(hair, b):
        def at(t):
            return _gain_after_zeros(run, steps, t, hair)

        def along(t):
            onehot = (jnp.arange(steps) == t).astype(jnp.float32)
            gs = jnp.full(steps, b, jnp.float32).at[t].multiply(1.0 + KINK)
            return -jax.jvp(run, (gs,), (onehot,))[1][t]

        return jax.vmap(at)(jnp.arange(steps)), jax.vmap(along)(jnp.arange(steps))

    return program


@functools.lru_cache(maxsize=PROGRAM_CACHE)
def gain_at_program(run: Callable, step: int) -> Callable:
    """``hair -> A_step``: the schedule probe's gain ``A_t`` at one step ``t`` (e.g. ``W``).

    The same protocol as :func:`schedule_program`'s ``A``: ``-∂u_t/∂g_t`` after ``t`` zero
    gradients (the mean of the slopes at ``±hair`` where that is not finite).
    """
    return jax.jit(lambda hair: _gain_after_zeros(run, step + 1, step, hair))


@functools.lru_cache(maxsize=PROGRAM_CACHE)
def step_size_program(run: Callable, steps: int, lag: int = 0) -> Callable:
    """``b -> (A (T,), C (T,))``: a sign-like update's step sizes, its schedule's two curves.

    ``A_t = |u_{t+lag}|`` for a gradient ``b`` at step ``t`` after ``t`` zero gradients (zero
    after it; ``lag`` as :func:`first_response`); ``C_t = |u_t|`` after ``t`` steps of the
    constant gradient ``b``. A sign-like update's slopes are 0, so :func:`schedule_program`
    reads nothing; its step is ``lr_t`` whatever the gradient. ``C`` is also the second curve of
    a normalising update's schedule (:func:`probes.detectors.detect_schedule`).
    """

    @jax.jit
    def program(b):
        def at(t):
            gs = jnp.where(jnp.arange(steps + lag) == t, b, 0.0).astype(jnp.float32)
            return jnp.abs(run(gs)[t + lag])

        return jax.vmap(at)(jnp.arange(steps)), jnp.abs(run(jnp.full(steps, b, jnp.float32)))

    return program


def with_transient_damping(
    analysis: Analysis,
    run: Callable[[jax.Array], jax.Array],
    gradient_range: tuple[float, float],
    *,
    cached: bool = True,
) -> Analysis:
    """``analysis`` with the transient damping reading where none was detected in steady state.

    :func:`probes.transient.read_transient_damping` on ``run`` (the chain of the other
    mechanisms is built from ``analysis``), amplitudes over ``gradient_range``; ``cached`` as
    there.
    """
    if analysis.damping is None or analysis.damping.detected:
        return analysis
    reading = read_transient_damping(
        run, analysis.to_json(), scalar_updates, gradient_range, cached=cached
    )
    return dataclasses.replace(analysis, damping_transient=reading)


def analyze_optax(
    tx: optax.GradientTransformation,
    *,
    gradient_scale: float = 1.0,
    gradient_samples: Any = None,
    impulse_steps: int = 200,
    warmup: int = 2000,
    schedule_steps: int | None = None,
    horizon_source: str = "",
    num_magnitudes: int = 9,
    magnitude_range: tuple[float, float] = (1e-2, 1e1),
    clip_range: tuple[float, float] = (1e-4, 1e4),
    clip_points: int = 161,
    damping_points: int = 25,
    damping_steps: int = 200,
) -> Analysis:
    """The detectors for any coordinate-wise optax transformation, by behaviour alone.

    See the module docstring for each probe and the number every optax optimizer should give.

    Args:
        tx: the transformation (acting on each coordinate independently).
        gradient_scale: the typical gradient magnitude (background, grids).
        gradient_samples: gradients seen in training (histogram only).
        impulse_steps: lags ``T`` of the impulse response.
        warmup: ``W``, steps of background / constant gradient before probing.
        schedule_steps: the horizon of the schedule probe (default ``SCHEDULE_HORIZON``).
        horizon_source: where ``schedule_steps`` came from (recorded in the result).
        num_magnitudes: ``M`` per arm for adaptation.
        magnitude_range: ``scale × [lo, hi]`` for adaptation.
        clip_range: ``scale × [lo, hi]`` for the clipping grid.
        clip_points: grid points per side.
        damping_points: amplitudes of the oscillation-damping probe (:func:`damping_gains`).
        damping_steps: steps of each damping sequence.

    Returns:
        An :class:`Analysis` (``momentum.point_kind == "impulse response"``, or
        ``"sign flips"`` for a sign-like update).
    """
    run = _run_for(tx)
    scale = float(gradient_scale)
    if schedule_steps is None:
        schedule_steps = SCHEDULE_HORIZON
        horizon_source = horizon_source or f"default {SCHEDULE_HORIZON} steps (no task family)"
    T = int(schedule_steps)

    momentum, response, background = momentum_from_response(run, scale, warmup, impulse_steps)
    first_update = _first_update_program(run, T)
    first_slope = _first_slope_program(run)

    mags = log_grid(scale, *clip_range, clip_points)

    def updates_at(g, t, lag=0):
        return np.asarray(first_update(jnp.asarray(g, jnp.float32), t, lag))

    t0, lag = first_response(updates_at, [-mags[-1], -scale, scale, mags[-1]], T)
    clipping = probe_clipping(
        lambda g: np.asarray(first_slope(jnp.asarray(g, jnp.float32), t0, lag)),
        lambda g: updates_at(g, t0, lag),
        mags,
        gradient_samples,
        detectors.SLOPE_FRACTION,
        t0,
        lag,
    )

    m = log_grid(scale, *magnitude_range, num_magnitudes)

    steady_lr = _steady_lr_program(run, int(warmup))
    hair = jnp.float32(HAIR * m[0])
    a_both = np.asarray(steady_lr(jnp.asarray(np.concatenate([m, -m]), jnp.float32), hair))
    M = len(m)
    a_pos, a_neg = a_both[:M], a_both[M:]
    adaptation = detectors.detect_adaptation(
        m,
        a_pos,
        a_neg,
        point_kind={"pos": ["iterated"] * M, "neg": ["iterated"] * M},
        evidence={
            "pos": {"method": "iterated", "inputs": m, "alpha_eff": a_pos},
            "neg": {"method": "iterated", "inputs": -m, "alpha_eff": a_neg},
        },
        gradient_samples=gradient_samples,
        gradient_range=(float(m[0]), float(m[-1])),
        gradient_range_source="gradient scale x magnitude_range",
    )
    gain_at_warmup = None
    if clipping.sign_like:
        a_t, b_t = step_size_program(run, T, lag)(jnp.float32(scale))
    else:
        hair = jnp.float32(HAIR * mags[0])
        a_t, b_t = schedule_program(run, T)(hair, jnp.float32(scale))
        # the gain where the adaptation probe reads (step W): past the horizon a schedule may
        # still move there; within it, the curve's own value
        w = int(warmup)
        at_w = a_t[w] if w < T else gain_at_program(run, w)(hair)
        gain_at_warmup = float(at_w)
    constant_measure = None
    if detectors.normalised_schedule_curve(adaptation, clipping.sign_like):
        # a normaliser: the step along the constant gradient, not its gain (detect_schedule)
        b_t = jnp.abs(_jitted(run)(jnp.full(T, scale, jnp.float32)))
        constant_measure = "step size"
    schedule = detectors.detect_schedule(
        np.asarray(a_t),
        np.asarray(b_t),
        horizon_source=horizon_source,
        measure="step size" if clipping.sign_like else "gain",
        constant_measure=constant_measure,
    )

    lams, alphas = momentum.fit_eigenvalues, momentum.fit_alphas
    with np.errstate(divide="ignore", invalid="ignore"):
        steady = float(-np.real(np.sum(alphas / (1.0 - lams)))) if response.size else np.nan
    meta = {
        "gradient_scale": scale,
        "impulse_background": background,
        "impulse_response": response,
        # -Σ α_j/(1-λ_j) from the fitted modes (the lags recorded may be shorter than the
        # slowest mode): Adam ≈ 0 (only the bias-correction factor of the ν mode remains).
        "steady_response": steady,
        "warmup": warmup,
        # the schedule probe's gain A_t at t = W, where the adaptation probe reads the steady
        # state: a normalised chain's learning rate is referred to it (probes.to_chain)
        "gain_at_warmup": gain_at_warmup,
    }
    damping = probe_damping(
        _jitted(run),
        float(m[0]),
        float(m[-1]),
        "gradient scale x magnitude_range",
        damping_points,
        damping_steps,
    )
    bias = probe_bias(run, float(m[0]), float(m[-1]), int(warmup), gradient_samples)
    agreement = probe_agreement(run, float(m[0]), float(m[-1]), rest_gradient(bias))
    mechanisms = (momentum, clipping, schedule, adaptation)
    result = Analysis(*mechanisms, "optax", meta, damping, bias=bias, agreement=agreement)
    return with_transient_damping(result, _jitted(run), (float(m[0]), float(m[-1])))
