"""Sign agreement: a step size that grows while gradients keep their sign, shrinks when they flip.

Rprop and delta-bar-delta adapt each coordinate's step size by whether successive gradients
agree in sign: ``η ← η·η₊`` after an agreement, ``η ← η·η₋`` after a flip. Under a gradient
whose sign flips with probability ``p`` the log step drifts by ``(1-p) ln η₊ + p ln η₋`` per
step, so it grows below the switch rate ``p* = ln η₊ / (ln η₊ - ln η₋)`` and shrinks above it.
None of the linear-response probes sees this: the step size depends on the history's signs,
not on the gradient's size or on a linear filter of it.

**Probe.** For each flip rate ``p`` of :data:`RATES`, ``SEQUENCES`` random sign sequences
``s_t`` (each flips with probability ``p`` per step) are run for ``HISTORY`` steps as
``g₀ + A·s_t`` (``g₀`` the bias's rest gradient, 0 without one), followed by a pulse
``g₀ ± A·s_N`` (continuing the last sign or reversing it) and ``WINDOW - 1`` steps of ``g₀``.
The *gain after the history* is ``D = -s_N·Σ (u⁺ - u⁻)/(2A)`` over the window (the window
catches an update that comes one step late, as Rprop's does), its median over the sequences.
A linear optimizer's ``D`` does not depend on the history; Adam's, RMSProp's and Adagrad's
depend on the history's size, not on its signs.

**Reference.** The same pulse from a fresh state, ``D_fresh(A)``, times the schedule's change
over the history measured with a small pulse ``a = SMALL·A`` (``D_rest(a)/D_fresh(a)``, the
rest history being ``HISTORY`` steps of ``g₀``), so that a learning-rate schedule does not read
as adaptation and a damping's response to the history's onset (the step from ``g₀`` to
``g₀ ± A`` is a change) does not either. Where the fresh small-signal gain is 0 (a warm-up from
zero) the reference is ``D_rest(A)``. ``R(p) = D(p) / reference``.

**Rule.** Agreement is detected at an amplitude when the largest ``R`` over agreeing histories
(``p < ½``) exceeds ``FACTOR`` and the smallest over disagreeing ones (``p > ½``) is below
``1/FACTOR``: the step after agreeing gradients is larger than a fresh one and after flipping
ones smaller. Amplitudes span the training gradients' range (``AMPLITUDES`` log-spaced); the
reading reports the amplitude with the largest contrast (``max R / min R``) among those where
the rule holds (among all where it holds nowhere). The **switch rate** ``p*`` is where ``R``
falls through 1 after its largest agreeing value (log-linear between the rates around it):
Rprop's ``ln η₊ / (ln η₊ - ln η₋)``. Momentum, clipping, sign-SGD and Adam read ``R`` flat in
``p``; Lion (whose sign follows a fresh gradient more after flips) rises with ``p``;
:func:`lopt.chain.damp_oscillations` never exceeds its fresh gain: none is agreement.
Centred RMSProp and AdaBelief with a short second-moment memory (their denominators, the spread
of recent gradients, go to zero under a constant gradient) are, with ``p*`` near 0.

Shapes: ``P`` flip rates, ``M`` amplitudes.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from probes.result import Result

#: Flip probabilities read (0: a constant sign, ½: white noise, 1: a flip every step).
RATES = tuple(round(0.1 * i, 1) for i in range(11))
#: Steps of each history.
HISTORY = 100
#: Random sign sequences per flip rate (the gain is their median).
SEQUENCES = 128
#: Steps summed after the pulse (the pulse's own and one more, for a one-step-late update).
WINDOW = 2
#: Amplitudes read, log-spaced over the training gradients' range.
AMPLITUDES = 7
#: The gain after agreeing histories must exceed the fresh one by this factor, and after
#: disagreeing ones fall below it by this factor.
FACTOR = 1.25
#: The small pulse (a fraction of ``A``) that measures the schedule's change over the history.
SMALL = 1e-3
#: Compiled programs kept (as in :mod:`probes.black_box`).
PROGRAM_CACHE = 16


@dataclasses.dataclass
class Agreement(Result):
    """The step size's dependence on the sign agreement of recent gradients.

    Attributes:
        detected: the rule holds at some amplitude (module docstring).
        switch_rate: ``p*``, the flip rate where ``R`` falls through 1 at the reported amplitude
            (``nan``: not detected, or no crossing).
        amplitude: the reported amplitude ``A``.
        agreeing: ``max R`` over ``p < ½`` at the reported amplitude.
        disagreeing: ``min R`` over ``p > ½`` there.
        history: ``HISTORY``.
        rates: the flip rates ``(P,)``.
        ratios: ``R(p)`` at the reported amplitude ``(P,)``.
        amplitudes: every amplitude read ``(M,)``.
        agreeing_by_amplitude: ``max R`` over ``p < ½`` at each amplitude ``(M,)``.
        disagreeing_by_amplitude: ``min R`` over ``p > ½`` at each ``(M,)``.
    """

    detected: bool
    switch_rate: float
    amplitude: float
    agreeing: float
    disagreeing: float
    history: int
    rates: np.ndarray
    ratios: np.ndarray
    amplitudes: np.ndarray
    agreeing_by_amplitude: np.ndarray
    disagreeing_by_amplitude: np.ndarray


@functools.lru_cache(maxsize=PROGRAM_CACHE)
def updates_program(run: Callable) -> Callable:
    """``gs (S, T) -> updates (S, T)``: ``run`` on each row from a fresh state."""
    return jax.jit(jax.vmap(run))


def sign_sequences(rate: float, count: int, steps: int, seed: int) -> np.ndarray:
    """``(count, steps)`` signs ``±1`` that flip with probability ``rate`` at each step.

    Half the rows are drawn (each sign the previous one flipped with probability ``rate``, from
    ``+1`` before the first step), the other half are their negations, so that both signs are
    equally represented at every step (``count`` even); ``seed`` seeds the stream.
    """
    rng = np.random.default_rng(seed)
    half = np.cumprod(np.where(rng.random((count // 2, steps)) < rate, -1.0, 1.0), axis=1)
    return np.concatenate([half, -half])


def switch_rate(rates: np.ndarray, ratios: np.ndarray) -> float:
    """Where ``ratios`` falls through 1 after its largest value over ``rates < ½``.

    Log-linear interpolation between the last rate at or above 1 and the first below it;
    ``nan`` where it does not fall below 1 (or the largest agreeing value is not above 1).
    """
    r = np.asarray(ratios, np.float64)
    agree = np.flatnonzero(np.asarray(rates) < 0.5)
    if not agree.size or not np.any(np.isfinite(r[agree])):
        return float("nan")
    i = int(agree[np.nanargmax(r[agree])])
    if not r[i] > 1.0:
        return float("nan")
    for j in range(i + 1, r.size):
        if not np.isfinite(r[j]):
            return float("nan")
        if r[j] < 1.0:
            lo, hi = np.log(r[j - 1]), np.log(max(r[j], 1e-300))
            frac = lo / (lo - hi) if lo != hi else 0.5
            return float(rates[j - 1] + frac * (rates[j] - rates[j - 1]))
    return float("nan")


def _sides(rates: np.ndarray, ratios: np.ndarray) -> tuple[float, float]:
    """``(max R over p < ½, min R over p > ½)`` (``nan`` where any is not finite)."""
    r = np.asarray(ratios, np.float64)
    a, d = r[np.asarray(rates) < 0.5], r[np.asarray(rates) > 0.5]
    hi = float(np.max(a)) if a.size and np.all(np.isfinite(a)) else float("nan")
    lo = float(np.min(d)) if d.size and np.all(np.isfinite(d)) else float("nan")
    return hi, lo


def holds(agreeing: float, disagreeing: float) -> bool:
    """The rule: ``agreeing > FACTOR`` and ``disagreeing < 1/FACTOR``."""
    return bool(agreeing > FACTOR and disagreeing < 1.0 / FACTOR)


def probe_agreement(
    run: Callable[[jax.Array], jax.Array],
    lo: float,
    hi: float,
    g0: float = 0.0,
    *,
    seed: int = 0,
    cached: bool = True,
) -> Agreement:
    """Reads the sign-agreement adaptation of ``run`` (module docstring).

    Args:
        run: ``gs (T,) -> updates (T,)`` for one coordinate from a fresh state.
        lo: the smallest amplitude (the training gradients' low percentile).
        hi: the largest.
        g0: the rest gradient the histories are centred on (the bias's ``g₀``; 0 without one).
        seed: seeds the sign sequences (each rate its own stream).
        cached: keep the compiled program per ``run`` (``False`` for a ``run`` made afresh
            per call, such as a cell's).

    Returns:
        The :class:`Agreement`.
    """
    program = updates_program(run) if cached else updates_program.__wrapped__(run)
    rates = np.asarray(RATES, np.float64)
    amps = np.logspace(np.log10(lo), np.log10(hi), AMPLITUDES)
    signs = np.concatenate(
        [sign_sequences(p, SEQUENCES, HISTORY, seed * 1000 + i) for i, p in enumerate(rates)]
    )
    steps = HISTORY + WINDOW
    rows, pulse_at = [], []
    # per amplitude: the random histories at A, then fresh(A), rest(A), fresh(a), rest(a)
    for a in amps:
        for sign in (1.0, -1.0):
            g = np.full((signs.shape[0], steps), g0, np.float64)
            g[:, :HISTORY] += a * signs
            g[:, HISTORY] += sign * a * signs[:, -1]
            rows.append(g)
            pulse_at += [HISTORY] * signs.shape[0]
        for amp in (a, SMALL * a):
            for at in (0, HISTORY):
                for sign in (1.0, -1.0):
                    g = np.full((1, steps), g0, np.float64)
                    g[0, at] += sign * amp
                    rows.append(g)
                    pulse_at.append(at)
    gs = np.concatenate(rows)
    u = np.asarray(program(jnp.asarray(gs, jnp.float32)), np.float64)
    at = np.asarray(pulse_at)
    window = u[np.arange(u.shape[0])[:, None], at[:, None] + np.arange(WINDOW)[None, :]]
    # an update that blows up reads as not finite (nan), and nothing is detected from it
    window = np.where(np.isfinite(window), window, np.nan)
    summed = window.sum(1)
    n, k = signs.shape[0], 0
    agreeing, disagreeing, curves = [], [], []
    for a in amps:
        plus, minus = summed[k : k + n], summed[k + n : k + 2 * n]
        k += 2 * n
        gain = -(plus - minus) * signs[:, -1] / (2 * a)
        d = np.median(gain.reshape(rates.size, SEQUENCES), axis=1)
        refs = -(summed[k : k + 8 : 2] - summed[k + 1 : k + 8 : 2]) / 2
        k += 8
        fresh_a, rest_a = refs[0] / a, refs[1] / a
        fresh_s, rest_s = refs[2] / (SMALL * a), refs[3] / (SMALL * a)
        if np.isfinite(fresh_s) and fresh_s != 0 and np.isfinite(rest_s):
            reference = fresh_a * rest_s / fresh_s
        else:
            reference = rest_a
        with np.errstate(divide="ignore", invalid="ignore"):
            r = d / reference if np.isfinite(reference) and reference != 0 else d * np.nan
        curves.append(r)
        up, down = _sides(rates, r)
        agreeing.append(up)
        disagreeing.append(down)
    agreeing_arr, disagreeing_arr = np.asarray(agreeing), np.asarray(disagreeing)
    with np.errstate(divide="ignore", invalid="ignore"):
        contrast = np.where(disagreeing_arr > 0, agreeing_arr / disagreeing_arr, np.inf)
    contrast = np.where(np.isfinite(agreeing_arr) & np.isfinite(disagreeing_arr), contrast, -1.0)
    ok = np.asarray([holds(x, y) for x, y in zip(agreeing_arr, disagreeing_arr, strict=True)])
    pick = np.where(ok, contrast, -np.inf) if ok.any() else contrast
    best = int(np.argmax(pick))
    return Agreement(
        detected=bool(ok.any()),
        switch_rate=switch_rate(rates, curves[best]) if ok.any() else float("nan"),
        amplitude=float(amps[best]),
        agreeing=float(agreeing_arr[best]),
        disagreeing=float(disagreeing_arr[best]),
        history=HISTORY,
        rates=rates,
        ratios=np.asarray(curves[best]),
        amplitudes=amps,
        agreeing_by_amplitude=agreeing_arr,
        disagreeing_by_amplitude=disagreeing_arr,
    )
