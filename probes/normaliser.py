"""A normaliser's numbers read off the probes: ``scale_by_rms`` for a distilled chain.

When the adaptation probe finds that the effective learning rate falls with the gradient's
size, :mod:`probes.to_chain` writes an ``optax.scale_by_rms`` into the chain. Its numbers are
read where the probes read them (:func:`rms_from_probes`): the learning rate after it and
``ε/d`` from the adaptation curve, the decay ``d`` and ``ε`` from the first update's
saturation or from the impulse response's mode against descent (:func:`normalisation_memory`),
and a detected schedule referred to the step at which the adaptation probe reads
(:func:`at_probe`, :func:`schedule_ratios`, :func:`normalised_schedule`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from probes.modes import IMAG_TOL

#: ``scale_by_rms``'s decay where the probes cannot see it (no saturating first update and no
#: opposite-sign mode in the impulse response).
RMS_DECAY = 0.9
#: The slope of ``g/√(a g² + ε)`` halves where ``a g² = RMS_HALF · ε``.
RMS_HALF = 2.0 ** (2.0 / 3.0) - 1.0
#: The normalisation explains the first update's saturation when ``A/√(m² + ε/d)`` with the
#: ``ε`` that the saturation implies matches the adaptation curve within this RMS log-ratio.
RMS_FIT_TOL = 0.1
#: The largest decay a plain normaliser is given (past it: an accumulator, see _plain_decay).
D_MAX = 1.0 - 1e-6
#: The smallest ``ε`` a normaliser is given (``g·rsqrt(ν + ε)`` is NaN at ``g = ν = 0``).
EPS_FLOOR = 1e-20


def _rms_curve_fit(m: np.ndarray, a: np.ndarray) -> tuple[float, float, float]:
    """Least-squares ``a ≈ A/√(m² + e)`` in log space: ``(A, e, RMS log-ratio)``.

    ``e`` on a log grid around the probed ``m²`` (and 0); ``log A`` in closed form for each.
    """
    lo, hi = np.log10(np.min(m) ** 2), np.log10(np.max(m) ** 2)
    best = (np.nan, np.nan, np.inf)
    for e in np.concatenate([[0.0], np.logspace(lo - 6, hi + 2, 161)]):
        la = np.log(a) + 0.5 * np.log(m**2 + e)
        err = float(np.sqrt(np.mean((la - la.mean()) ** 2)))
        if err < best[2] - 1e-12:
            best = (float(np.exp(la.mean())), float(e), err)
    return best


def _rms_error(m: np.ndarray, a: np.ndarray, big_a: float, e: float) -> float:
    """RMS log-ratio of ``a`` to ``big_a/√(m² + e)``."""
    return float(np.sqrt(np.mean((np.log(a) - np.log(big_a / np.sqrt(m**2 + e))) ** 2)))


def normalisation_memory(mom: Mapping[str, Any]) -> float | None:
    """``λ`` of the strongest real fitted mode with ``α < 0`` (against descent; ``None`` if none).

    A normaliser read at a background ``b ≠ 0`` answers an impulse with such a mode: the
    impulse raises its second-moment estimate, which lowers the following updates for as long
    as the estimate remembers it (Adam: ``λ = b2``).
    """
    lams, alphas = mom.get("fit_eigenvalues") or [], mom.get("fit_alphas") or []
    if len(lams) != len(alphas) or not lams:
        return None
    pairs = [(complex(*lam), complex(*a)) for lam, a in zip(lams, alphas, strict=True)]
    opposite = [
        (abs(a), lam.real)
        for lam, a in pairs
        if a.real < 0 and abs(lam.imag) <= IMAG_TOL and 0.0 < lam.real < 1.0
    ]
    return max(opposite)[1] if opposite else None


def rms_from_probes(
    ada: Mapping[str, Any],
    clip: Mapping[str, Any],
    memory: float | None,
    gain: float,
    warmup: int | None,
    schedule_ratios: tuple[float, float] = (1.0, 1.0),
) -> dict[str, Any] | None:
    """``scale_by_rms(d, ε)`` and the learning rate ``L`` after it, from the probes alone.

    The adaptation probe (``α_eff`` at ``g = 0`` after ``W`` steps of a constant ``g*``) reads
    ``A/√(g*² + e)``; ``A`` (and ``e`` where the curve bends within the probed range) come
    from a fit. The clipping probe (the first update from a fresh state) saturates at ``S``
    and its slope halves at ``t``. Two forms of normaliser are weighed by the ratio ``S/A``:

    After ``W`` steps of ``g*`` the second moment holds ``f = 1 − d^W`` of ``g*²``, and the
    probe reads the next step, ``ν = d f g*²``.

    * **plain** (RMSProp): ``scale_by_rms(d, ε) → momentum → L`` has ``A = L/√(d f)`` and
      ``S = L/√(1−d)``, so ``S/A = √(d f/(1−d))``, solved for ``d`` (:func:`_plain_decay`);
      ``(1−d) t² = RMS_HALF · ε``.
    * **bias-corrected** (Adam): ``scale_by_rms(d, ε, bias_correction=True)`` and a debiased
      momentum (:func:`lopt.chain.momentum_modes`) have ``A = L/√(d f/c)`` with
      ``c = 1 − d^{W+1}`` and a first update already at its steady size, ``S = G L`` (``G``
      the momentum's steady gain per unit of its lag-0 weight), so ``S/A = G √(d f/c)``;
      ``t² = RMS_HALF · ε``.

    ``d`` is the impulse response's opposite-sign mode (``memory``, the normaliser's own
    memory) where one was measured, and the form whose predicted ``S/A`` is closer (in log) is
    taken; without one only the plain form can be told apart (``d`` from ``S/A``). Under a
    detected schedule ``S`` (read at the first step) is first referred to the learning rate at
    which ``A`` was read (after ``W`` steps): ``schedule_ratios`` are the schedule's value
    there (:func:`at_probe`: measured at ``W`` by the black box, else the last value within the
    horizon) over its value at the clipping probe's step, as each form would read it
    (:func:`schedule_ratios`). If the resulting curve
    matches the adaptation probe (``RMS_FIT_TOL``), the first update's saturation is the
    normaliser's own and no clipping is added (RMSProp and Adam are sign-like from a fresh
    state). Otherwise (or without a saturating first update) ``ε`` is the fitted bend and ``d``
    is ``memory`` or ``RMS_DECAY``. Every number is referred to the operating point of the
    probe that reads it, so the chain's updates have the optimizer's size.

    Returns:
        ``{"decay", "eps", "learning_rate", "bias_correction", "explains_clipping",
        "fit_error"}``, or ``None`` when the adaptation curve has fewer than two usable points.
    """
    m = np.asarray(ada.get("magnitudes") or [], np.float64)
    arms = ada.get("lr_vs_magnitude") or {}
    arm = "pos" if (ada.get("slope_pos") or 0) <= (ada.get("slope_neg") or 0) else "neg"
    a = np.abs(np.asarray([np.nan if x is None else x for x in arms.get(arm, [])], float))
    if a.size != m.size:
        return None
    ok = np.isfinite(a) & (a > 0) & (m > 0)
    if ok.sum() < 2:
        return None
    m, a = m[ok], a[ok]
    big_a, e, err = _rms_curve_fit(m, a)
    w = int(warmup or 0)

    def fill(d: float) -> float:  # the share of ν that W steps of g* fill: 1 − d^W
        return 1.0 - d**w if w else 1.0

    def debias(d: float) -> float:  # bias correction at the probe's step: 1 − d^{W+1}
        return 1.0 - d ** (w + 1) if w else 1.0

    decay = memory if memory is not None else RMS_DECAY
    out = {"decay": decay, "eps": e * decay * fill(decay)}
    out |= {"bias_correction": False, "explains_clipping": False}
    thr = float(clip.get("threshold") or np.inf)
    pos, neg = clip.get("asymptote_pos"), clip.get("asymptote_neg")
    sat = 0.5 * abs(float(neg) - float(pos)) if pos is not None and neg is not None else 0.0
    lr = None
    if clip.get("detected") and np.isfinite(thr) and sat > 0:
        ratio, ratio_d = (sat * r / big_a for r in schedule_ratios)
        if memory is None:
            d = _plain_decay(ratio**2, fill)
            form = {"decay": d, "bias_correction": False}
            lr_form = big_a * ratio * math.sqrt(1.0 - d)  # the first update's size, S √(1−d)
        else:
            plain = math.sqrt(memory * fill(memory) / (1.0 - memory))
            debiased = gain * math.sqrt(memory * fill(memory) / debias(memory))
            corrected = debiased > 0 and abs(math.log(ratio_d / debiased)) < abs(
                math.log(ratio / plain)
            )
            form = {"decay": memory, "bias_correction": corrected}
            lr_form = None
        d = form["decay"]
        eps = thr**2 / RMS_HALF * (1.0 if form["bias_correction"] else 1.0 - d)
        err_sat = _rms_error(m, a, big_a, eps / (d * fill(d)))
        if err_sat <= max(RMS_FIT_TOL, err):
            out = {**form, "eps": eps, "explains_clipping": True}
            err, lr = err_sat, lr_form
    d = out["decay"]
    c = debias(d) if out["bias_correction"] else 1.0
    out["learning_rate"] = float(lr if lr is not None else big_a * math.sqrt(d * fill(d) / c))
    out["eps"] = max(float(out["eps"]), EPS_FLOOR)
    out["fit_error"] = float(err)
    out["decay"] = float(d)
    return out


def _plain_decay(target: float, fill: Callable[[float], float]) -> float:
    """``d`` with ``d·fill(d)/(1−d) = target`` (bisection; increasing in ``d``), at most ``D_MAX``.

    Past ``D_MAX`` the normaliser forgets nothing over the probe's ``W`` steps (an accumulator,
    Adagrad): any ``d`` that close to 1 gives the same chain once its learning rate is set
    from the first update, so ``D_MAX`` is used.
    """
    lo, hi = 0.0, D_MAX
    if hi * fill(hi) / (1.0 - hi) <= target:
        return hi
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if mid * fill(mid) / (1.0 - mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def debias_curve(n: int, modes: tuple[list[float], list[float]] | None) -> np.ndarray:
    """``D(t) = Σ w_i/(1 − λ_i^{t+1})`` for ``t < n`` (``1`` without ``modes``).

    The gain of debiased modes at step ``t`` after zero gradients, relative to their steady
    lag-0 weight.
    """
    if modes is None:
        return np.ones(n)
    t = np.arange(n, dtype=np.float64)[:, None] + 1.0
    lam, w = (np.asarray(x, np.float64)[None] for x in modes)
    return np.sum(w / (1.0 - lam**t), axis=1)


def at_probe(
    eff: np.ndarray,
    modes: tuple[list[float], list[float]] | None,
    gain_at_warmup: float | None,
    warmup: int | None,
) -> tuple[float, float]:
    """The schedule's gain where the adaptation probe reads, plain and debiased (``/D(W)``).

    The schedule probe's gain at step ``W`` when the analysis measured it (black box:
    ``meta.gain_at_warmup``), else its last value within the horizon, where a schedule that
    has settled sits.
    """
    if gain_at_warmup is not None and warmup and math.isfinite(gain_at_warmup):
        if gain_at_warmup > 0:
            d = debias_curve(int(warmup) + 1, modes)[-1] if modes is not None else 1.0
            return float(gain_at_warmup), float(gain_at_warmup / d)
    if not eff.size:
        return math.nan, math.nan
    return float(eff[-1]), float(eff[-1] / debias_curve(eff.size, modes)[-1])


def schedule_ratios(
    eff: np.ndarray,
    step: int,
    modes: tuple[list[float], list[float]] | None,
    at_probe: tuple[float, float],
) -> tuple[float, float]:
    """The schedule's value where the adaptation probe reads over its value at ``step``.

    Plainly and with the debiased momentum's own ``D(t)`` taken out (``at_probe``:
    :func:`at_probe`); ``(1, 1)`` if a value is not positive.
    """
    end, end_d = at_probe
    if not 0 <= step < eff.size or not (eff[step] > 0 and end > 0 and end_d > 0):
        return 1.0, 1.0
    d = debias_curve(eff.size, modes)
    return float(end / eff[step]), float(end_d / (eff[step] / d[step]))


def normalised_schedule(
    eff: np.ndarray, modes: tuple[list[float], list[float]] | None, end_d: float
) -> np.ndarray:
    """A normalised chain's schedule multiplier: ``eff`` over the chain's own gain.

    The normaliser's learning rate ``L`` is read by the adaptation probe after ``W`` steps; so
    the multiplier is ``eff(t)/D(t)`` divided by its value there, ``end_d``
    (:func:`at_probe`), ``D(t) = Σ w_i/(1 − λ_i^{t+1})`` being what debiased modes (``modes``;
    ``D = 1`` without) add on their own at step ``t`` after zero gradients. It tends to 1 when
    the schedule has settled within the probe's horizon; a schedule still moving there ends
    at its value over the value at ``W``. (The gain after zero gradients is ``1/ε`` territory
    for a normaliser, whose ``ε`` the probes read only roughly: only its shape is used.)
    """
    ratio = eff / debias_curve(eff.size, modes)
    if ratio.size and end_d > 0 and math.isfinite(end_d):
        return ratio / end_d
    return ratio / ratio[-1] if ratio.size and ratio[-1] != 0 else ratio
