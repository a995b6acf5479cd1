"""From an analysis to a chain: the probes' findings written as optax transformations.

:func:`chain_from_analysis` reads what the probes detected in a learned optimizer
(``analysis.json``, see :mod:`probes.analysis`) and writes it down as a chain of ordinary
transformations (:mod:`lopt.chain`), each one a mechanism of the paper (Maheswaranathan et al.,
2021, §5):

1. **clipping** → :func:`lopt.chain.soft_clip` of the *gradient*, ``g ↦ g / (1 + |g|/c)``, with
   ``c = threshold / (√2 − 1)``. Why a saturating map and not ``optax.clip``: the probes define
   the threshold as the gradient where the slope of ``U(h0, g)`` has halved.
   A hard clip at that threshold drops the slope to 0 there and saturates at ``α·threshold``,
   about half of the asymptotes the learned update actually reaches; this map has slope
   ``1/(1 + |g|/c)²``, which halves exactly at ``(√2 − 1)c``, and saturates at ``±c`` (times the
   learning rate). On the quickstart GRU it puts the asymptote at ``9.0 × 1.72 = 15.5``, the
   measured ``U(h0, −∞)``. Both maps are scored against the measured ``U(h0, g)`` (relative
   RMS error over the range of training gradients) and the better one is used; the scores are
   recorded in ``distill.json`` (``clip_fit``).
2. **momentum** → ``optax.trace(decay=β)`` with the dominant fitted mode's ``β`` when one real
   mode carries the impulse response; :func:`lopt.chain.momentum_modes` with every fitted mode
   (weights ``α_i/Σα``) when several real ones do. When a fitted mode that carries weight rings
   (complex) or alternates (negative), no trace can carry it: the measured impulse response
   itself is fitted by two real modes with non-negative weights (:func:`_modes_from_response`),
   so that the chain's lag-0 and steady gains are the measured ones rather than one mode's.
3. **learning rate and schedule** → ``optax.scale_by_learning_rate`` with the dominant mode's
   ``α`` (the learned update has no built-in minus sign; ``α > 0`` means descent, and
   ``scale_by_learning_rate`` supplies the minus). If a schedule was detected, ``α`` is
   multiplied by ``α_eff(t) / α_eff(h*)``: the probed effective learning rate along the
   autonomous dynamics, divided by its value at the convergence point, so that the multiplier
   tends to 1 and the steady-state learning rate is the mode's ``α``. It is interpolated
   piecewise-linearly between knots (:func:`lopt.chain.interpolated_schedule`) and, after the
   last probed step, approaches 1 geometrically at the rate of the probed tail.
4. **adaptation** (only if detected, and not if the detected damping alone accounts for it: the
   adaptation probe's step from ``g*`` to 0 is a gradient change the damping reacts to) →
   ``optax.scale_by_rms`` before the momentum, with every number read where its probe reads it
   (:func:`_rms_from_probes`): the learning rate after it and ``ε/d`` from the adaptation curve,
   the decay ``d`` and ``ε`` from the first update's saturation, or ``d`` from an impulse-response
   mode against descent (the normaliser's memory, left out of the momentum). When the first
   update is already full-sized (Adam), both the normaliser and the momentum are debiased; when
   the normaliser explains the first update's saturation, no clipping is added.
5. **oscillation damping** (only if detected; a mechanism beyond the paper's four, see
   :class:`probes.detectors.Damping`) → :func:`lopt.chain.damp_oscillations` first in the chain,
   with the probed ``κ`` (the gradient amplitude where gradients that flip sign every step lose
   half their gain relative to persistent ones; the transform has exactly that half-point) and
   the probed memory ``ρ`` (how fast the damping builds up from a fresh state; ``DAMP_DECAY``
   for analyses that lack it); where the steady reading found none, the ``κ`` and ``ρ`` read
   from the first steps (``analysis.damping_transient``, :mod:`probes.transient`) if that
   reading detected damping.

A **sign-like** update (the clipping probe's ``sign_like``) is written as
``[optax.trace(β)] → optax.scale_by_sign → step size`` (:func:`_sign_chain`).

Mechanisms that were not detected are left out; without momentum the learning rate is
``α_eff(h*)`` (plain, possibly scheduled, SGD).

The constants below are part of the mapping (what a detected mechanism becomes), not settings
of how hard to work: ``distill.json`` does not record them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from lopt.chain import HALF_SLOPE

#: Schedule knots are kept until piecewise-linear interpolation is within this relative error.
KNOT_TOL = 2e-3
#: :func:`lopt.chain.damp_oscillations`' memory in a distilled chain when the analysis has no
#: measured ``damping.memory`` (analyses written before the probe measured it).
DAMP_DECAY = 0.8


class DistillError(ValueError):
    """A run or analysis cannot be distilled (missing or unusable analysis / evaluation)."""


def _knots(values: np.ndarray, tol: float = KNOT_TOL) -> list[int]:
    """Fewest greedy knots whose linear interpolation stays within ``tol`` (relative)."""
    n = len(values)
    if n <= 2:
        return list(range(n))
    scale = max(float(np.max(np.abs(values))), 1e-30)
    knots, i = [0], 0
    while i < n - 1:
        j = i + 1
        while j + 1 < n:
            t = np.arange(i, j + 2)
            line = np.interp(t, [i, j + 1], [values[i], values[j + 1]])
            if np.max(np.abs(line - values[i : j + 2])) > tol * scale:
                break
            j += 1
        knots.append(j)
        i = j
    return knots


def _finite_prefix(eff: Any) -> np.ndarray:
    """The probed curve (``None`` as ``nan``) up to its first non-finite value."""
    e = np.asarray([np.nan if x is None else x for x in eff or []], np.float64)
    return e if np.all(np.isfinite(e)) else e[: int(np.argmax(~np.isfinite(e)))]


def _schedule(mult: np.ndarray) -> dict[str, Any]:
    """A chain's ``schedule`` entry: the multiplier's knots and its tail ratio."""
    knots = _knots(mult)
    return {
        "steps": knots,
        "values": [float(mult[k]) for k in knots],
        "tail_ratio": _tail_ratio(mult),
    }


def _tail_ratio(m: np.ndarray, window: int = 10) -> float:
    """Per-step ratio of ``m_t − 1`` over the last ``window`` steps, clipped to ``[0, 1]``.

    ``0`` (jump to 1 after the last knot) when the tail does not approach 1 monotonically.
    """
    if len(m) <= window:
        return 0.0
    a, b = m[-1 - window] - 1.0, m[-1] - 1.0
    if a == 0 or b / a <= 0:
        return 0.0
    return float(min(1.0, (b / a) ** (1.0 / window)))


def _clip_fit(clipping: Mapping[str, Any]) -> dict[str, Any] | None:
    """Scores ``soft_clip`` and ``optax.clip`` against the measured ``U(h0, g)``.

    Both are scaled by the measured slope at 0 (``U ≈ slope0 · map(g)``) after removing
    ``U(h0, 0)`` (a bias the chain does not model), over the range of training gradients (the
    histogram's edges; the whole grid if there is none). Returns relative RMS errors.
    """
    g = np.asarray(clipping.get("gradients") or [], np.float64)
    u = np.asarray([np.nan if x is None else x for x in clipping.get("updates") or []], np.float64)
    slope0, thr = clipping.get("slope0"), clipping.get("threshold")
    if g.size == 0 or g.size != u.size or not slope0 or not thr:
        return None
    edges = np.asarray(clipping.get("histogram_edges") or [], np.float64)
    lim = float(np.max(np.abs(edges))) if edges.size else float(np.max(np.abs(g)))
    sel = (np.abs(g) <= lim) & np.isfinite(u)
    if sel.sum() < 3:
        return None
    g, u = g[sel], u[sel] - np.interp(0.0, g[sel], u[sel])
    c = thr / HALF_SLOPE
    models = {"soft_clip": g / (1.0 + np.abs(g) / c), "clip": np.clip(g, -thr, thr)}
    norm = max(float(np.sqrt(np.mean(u**2))), 1e-30)
    err = {k: float(np.sqrt(np.mean((slope0 * v - u) ** 2)) / norm) for k, v in models.items()}
    return {"range": lim, "relative_rms_error": err, "chosen": min(err, key=err.get)}


#: The adaptation probe's fall counts as the damping's own response (no ``scale_by_rms``) when
#: every measured ``α_eff(|g*|)/α_eff(|g*|₀)`` is at least this fraction of the damping's
#: prediction ``1/(1 + √(1−ρ)|g*|/(2κ))``.
DAMPING_EXPLAINS = 0.8


def _adaptation_explained_by_damping(ada: Mapping[str, Any], damp: Mapping[str, Any]) -> bool:
    """Whether the adaptation probe's fall is what the detected damping alone produces.

    The probe reads ``α_eff`` at ``g = 0`` from the state reached under a constant ``g*``: for
    :func:`lopt.chain.damp_oscillations` that step is a half-change of ``g*/2`` on top of
    ``e ≈ 0``, so the damping scales ``α_eff`` by ``1/(1 + √(1−ρ)|g*|/(2κ))``. RMSProp-like
    adaptation falls further (as ``1/|g*|``).
    """
    m = np.asarray(ada.get("magnitudes") or [], np.float64)
    arms = ada.get("lr_vs_magnitude") or {}
    kappa, rho = float(damp["scale"]), float(damp["decay"])
    predicted = 1.0 / (1.0 + math.sqrt(1.0 - rho) * m / (2.0 * kappa))
    ok_any = False
    for arm in ("pos", "neg"):
        a = np.abs(np.asarray([np.nan if x is None else x for x in arms.get(arm, [])], float))
        if a.size != m.size or a.size < 2 or not np.isfinite(a[0]) or a[0] <= 0:
            continue
        ratio = a / a[0]
        ok = np.isfinite(ratio)
        if np.any(ratio[ok] < DAMPING_EXPLAINS * predicted[ok] / predicted[0]):
            return False
        ok_any = True
    return ok_any


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


def _normalisation_memory(mom: Mapping[str, Any]) -> float | None:
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


def _rms_from_probes(
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
    which ``A`` was read (after ``W`` steps, where the schedule sits at its last value):
    ``schedule_ratios`` are the schedule's last value over its value at the clipping probe's
    step, as each form would read it (:func:`_schedule_ratios`). If the resulting curve
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


def _debias_curve(n: int, modes: tuple[list[float], list[float]] | None) -> np.ndarray:
    """``D(t) = Σ w_i/(1 − λ_i^{t+1})`` for ``t < n`` (``1`` without ``modes``).

    The gain of debiased modes at step ``t`` after zero gradients, relative to their steady
    lag-0 weight.
    """
    if modes is None:
        return np.ones(n)
    t = np.arange(n, dtype=np.float64)[:, None] + 1.0
    lam, w = (np.asarray(x, np.float64)[None] for x in modes)
    return np.sum(w / (1.0 - lam**t), axis=1)


def _schedule_ratios(
    eff: np.ndarray, step: int, modes: tuple[list[float], list[float]] | None
) -> tuple[float, float]:
    """The schedule's last value over its value at ``step``, plainly and debiased.

    The second takes the debiased momentum's own ``D(t)`` out; ``(1, 1)`` if either value is
    not positive.
    """
    if not 0 <= step < eff.size or not (eff[step] > 0 and eff[-1] > 0):
        return 1.0, 1.0
    d = _debias_curve(eff.size, modes)
    return float(eff[-1] / eff[step]), float((eff[-1] / d[-1]) / (eff[step] / d[step]))


def _normalised_schedule(
    eff: np.ndarray, modes: tuple[list[float], list[float]] | None
) -> np.ndarray:
    """A normalised chain's schedule multiplier: ``eff`` over the chain's own gain, ``→ 1``.

    The normaliser's learning rate ``L`` is read by the adaptation probe after ``W`` steps,
    past the schedule probe's horizon, where a schedule sits at its last value; so the
    multiplier is ``eff(t)/D(t)`` divided by its last value, ``D(t) = Σ w_i/(1 − λ_i^{t+1})``
    being what debiased modes (``modes``; ``D = 1`` without) add on their own at step ``t``
    after zero gradients. (The gain after zero gradients is ``1/ε`` territory for a
    normaliser, whose ``ε`` the probes read only roughly: only its shape is used.)
    """
    ratio = eff / _debias_curve(eff.size, modes)
    return ratio / ratio[-1] if ratio.size and ratio[-1] != 0 else ratio


def _sign_chain(
    mom: Mapping[str, Any], clip: Mapping[str, Any], sch: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """A sign-like update as ``[trace(β)] → scale_by_sign → step``.

    The step is the first update's size (half the gap between its asymptotes) or, under a
    detected schedule, the last probed step size, and the schedule is the probed step size over
    it; momentum (read from how long an opposite
    impulse flips the update's sign) goes inside the sign, as in signum and Lion.
    """
    out: list[dict[str, Any]] = []
    timescale = f"{float(mom.get('timescale') or 0):.3g} steps"
    if mom.get("detected"):
        out.append(
            {
                "transform": "trace",
                "decay": float(mom["beta"]),
                "mechanism": f"momentum inside the sign (timescale {timescale})",
            }
        )
    out.append({"transform": "scale_by_sign", "mechanism": "saturating update: sign-like"})
    pos, neg = clip.get("asymptote_pos"), clip.get("asymptote_neg")
    step = 0.5 * abs(float(neg) - float(pos)) if pos is not None and neg is not None else 0.0
    eff = np.asarray([np.nan if x is None else x for x in sch.get("effective_lr") or []], float)
    scheduled = sch.get("detected") and eff.size and np.all(np.isfinite(eff)) and eff[-1] > 0
    if scheduled:  # the step settles at the schedule's last value (its tail approaches it)
        step = float(eff[-1])
    entry: dict[str, Any] = {
        "transform": "scale_by_learning_rate",
        "learning_rate": step,
        "schedule": None,
        "mechanism": "step size",
    }
    if scheduled:
        entry["schedule"] = _schedule(eff / step)
        entry["mechanism"] = f"step size with a {sch.get('shape')} schedule"
    out.append(entry)
    return out


def chain_from_analysis(
    analysis: Mapping[str, Any], *, clip_form: str = "auto"
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Turns an ``Analysis.to_json()`` dict into a chain (see the module docstring).

    Args:
        analysis: the probes' result (``analysis.json``).
        clip_form: ``"auto"`` (the map closer to the measured ``U(h0, g)``), ``"soft_clip"``
            or ``"clip"``.

    Returns:
        ``(chain, notes)``: the chain (JSON-able) and what was derived how (JSON-able).

    Raises:
        DistillError: if the analysis lacks the four mechanisms.
    """
    for k in ("momentum", "clipping", "schedule", "adaptation"):
        if not isinstance(analysis.get(k), Mapping):
            raise DistillError(f"analysis has no {k!r} result; re-run 'probes analyze'")
    mom, clip, sch, ada = (analysis[k] for k in ("momentum", "clipping", "schedule", "adaptation"))
    notes: dict[str, Any] = {
        "detected": {
            k: bool(analysis[k].get("detected"))
            for k in ("momentum", "clipping", "schedule", "adaptation")
        }
    }
    chain: list[dict[str, Any]] = []
    damping = analysis.get("damping")
    transient, read = analysis.get("damping_transient"), ""
    if isinstance(damping, Mapping) and not damping.get("detected"):
        if isinstance(transient, Mapping) and transient.get("detected"):
            damping = {"detected": True, "kappa": transient["kappa"], "memory": transient["memory"]}
            notes["damping_from"] = f"the first {transient.get('steps')} steps"
            read = f", read from the first {transient.get('steps')} steps"
    if isinstance(damping, Mapping):
        notes["detected"]["damping"] = bool(damping.get("detected"))
        kappa, memory = damping.get("kappa"), damping.get("memory")
        if damping.get("detected") and kappa is not None and math.isfinite(float(kappa)):
            measured = memory is not None and 0.0 <= float(memory) < 1.0
            chain.append(
                {
                    "transform": "damp_oscillations",
                    "scale": float(kappa),
                    "decay": float(memory) if measured else DAMP_DECAY,
                    "mechanism": f"oscillation damping (gain for sign-flipping gradients "
                    f"halves at |g| = {float(kappa):.4g}{read})",
                }
            )

    # α_eff at the convergence point: the impulse response at lag 0 (= Σ α_i), else the end of
    # the schedule probe, else the slope of U(h0, g) at 0.
    resp = [x for x in (mom.get("impulse_response") or []) if x is not None]
    fit_alphas = mom.get("fit_alphas") or []
    eff = sch.get("effective_lr") or []
    if resp:
        alpha_star, src = -float(resp[0]), "impulse response at lag 0"
    elif fit_alphas:
        alpha_star, src = float(sum(a[0] for a in fit_alphas)), "sum of fitted α_i"
    elif eff and eff[-1] is not None:
        alpha_star, src = float(eff[-1]), "end of the schedule probe"
    else:
        alpha_star, src = -float(clip.get("slope0") or 0.0), "slope of U(h0, g) at 0"
    notes["alpha_eff_steady"] = {"value": alpha_star, "source": src}
    if clip.get("sign_like"):
        chain += _sign_chain(mom, clip, sch)
        return chain, notes

    lr = alpha_star
    damp_entry = chain[0] if chain and chain[0]["transform"] == "damp_oscillations" else None
    # A damping read from the first steps only cannot explain the steady adaptation probe.
    explained = (
        damp_entry is not None
        and "damping_from" not in notes
        and _adaptation_explained_by_damping(ada, damp_entry)
    )
    notes["adaptation_from_damping"] = explained
    adapting = bool(ada.get("detected")) and not explained
    # With a normaliser in the chain, a mode opposing Σα is the normaliser's memory, not momentum.
    modes = _response_modes(mom, drop_opposite=adapting)
    # The dominant mode's share of the lag-0 gain (a trace carries that mode alone); with a
    # normaliser, of the modes kept.
    ref = alpha_star
    if adapting:
        ref = sum(a[0] for a in mom.get("fit_alphas") or [] if a[0] > 0) or alpha_star
    trace_alpha = float(mom.get("alpha") or 0.0) / ref if ref else 1.0
    if not mom.get("detected"):
        gain = 1.0
    elif modes is not None:
        gain = sum(w / (1.0 - lam) for lam, w in zip(*modes, strict=True))
    else:
        gain = trace_alpha / (1.0 - float(mom["beta"]))
    rms = None
    if adapting:
        warmup = (analysis.get("meta") or {}).get("warmup")
        ratios = (1.0, 1.0)
        if sch.get("detected") and eff:
            one = ([float(mom["beta"])], [1.0]) if mom.get("detected") else None
            ratios = _schedule_ratios(_finite_prefix(eff), int(clip.get("step") or 0), modes or one)
        rms = _rms_from_probes(ada, clip, _normalisation_memory(mom), gain, warmup, ratios)
    notes["normalisation"] = rms
    if clip.get("detected") and clip.get("threshold") and not (rms and rms["explains_clipping"]):
        thr = float(clip["threshold"])
        fit = _clip_fit(clip)
        notes["clip_fit"] = fit
        form = clip_form if clip_form != "auto" else (fit["chosen"] if fit else "soft_clip")
        if form == "soft_clip":
            chain.append(
                {
                    "transform": "soft_clip",
                    "scale": thr / HALF_SLOPE,
                    "mechanism": f"clipping (slope halves at the detected |g| = {thr:.4g})",
                }
            )
        elif form == "clip":
            chain.append(
                {
                    "transform": "clip",
                    "max_delta": thr,
                    "mechanism": f"clipping at the detected |g| = {thr:.4g}",
                }
            )
        else:
            raise ValueError(f"clip_form must be auto, soft_clip or clip, got {clip_form!r}")
    debias = bool(rms and rms["bias_correction"])
    if rms is not None:
        entry = {"transform": "scale_by_rms", "decay": rms["decay"], "eps": rms["eps"]}
        if debias:
            entry["bias_correction"] = True
        entry["mechanism"] = "adaptation (α_eff falls with |g*|)" + (
            ", which also saturates the first update" if rms["explains_clipping"] else ""
        )
        chain.append(entry)
        lr = rms["learning_rate"]
    timescale = f"{float(mom.get('timescale') or 0):.3g} steps"
    debias_weights = None
    if mom.get("detected") and (modes is not None or debias):
        decays, weights = modes if modes is not None else ([float(mom["beta"])], [1.0])
        entry = {"transform": "momentum_modes", "decays": decays, "weights": weights}
        if debias:
            entry["debias"] = True
            debias_weights = (decays, weights)
        if _ringing(mom) and modes is not None:
            slow = 1.0 / (1.0 - max(decays))
            entry["mechanism"] = (
                f"momentum (the measured impulse response as real modes, slowest timescale "
                f"{slow:.3g} steps: the fitted modes ring)"
            )
        else:
            entry["mechanism"] = (
                f"momentum (dominant mode, timescale {timescale}) and the other fitted modes of "
                "the impulse response"
                if len(decays) > 1
                else f"momentum (timescale {timescale})"
            ) + (", debiased as the normaliser is" if debias else "")
        chain.append(entry)
        if modes is None:
            lr *= trace_alpha
    elif mom.get("detected"):
        chain.append(
            {
                "transform": "trace",
                "decay": float(mom["beta"]),
                "mechanism": f"momentum (dominant mode, timescale {timescale})",
            }
        )
        lr *= trace_alpha
    entry: dict[str, Any] = {
        "transform": "scale_by_learning_rate",
        "learning_rate": lr,
        "schedule": None,
        "mechanism": "learning rate",
    }
    e = _finite_prefix(eff)
    if sch.get("detected") and alpha_star and e.size:
        mult = e / alpha_star if rms is None else _normalised_schedule(e, debias_weights)
        entry["schedule"] = _schedule(mult)
        entry["mechanism"] = f"learning rate with a {sch.get('shape')} schedule"
    chain.append(entry)
    return chain, notes


#: Fitted modes whose eigenvalue has an imaginary part above this are left out of
#: ``momentum_modes`` (an oscillating mode is not a trace).
IMAG_TOL = 1e-6
#: Modes with ``|α_i|`` below this fraction of ``Σ|α|`` carry no weight and are left out.
MODE_TOL = 1e-6


def _response_modes(
    mom: Mapping[str, Any], *, drop_opposite: bool = False
) -> tuple[list[float], list[float]] | None:
    """The fitted real modes ``(λ_i, α_i/Σα)`` when more than one carries weight, else ``None``.

    The weights are relative to ``Σα_i``, the response at lag 0, which the learning-rate entry
    carries; ``None`` (a single ``trace``) when a mode is complex or unstable, or ``Σα ≤ 0``.
    """
    lams, alphas = mom.get("fit_eigenvalues") or [], mom.get("fit_alphas") or []
    if len(lams) != len(alphas):
        return None
    pairs = [(complex(*lam), complex(*a)) for lam, a in zip(lams, alphas, strict=True)]
    scale = sum(abs(a) for _, a in pairs)
    pairs = [(lam, a) for lam, a in pairs if abs(a) > MODE_TOL * scale]
    if drop_opposite:  # the normalisation's own memory, which scale_by_rms carries
        pairs = [(lam, a) for lam, a in pairs if a.real > 0]
    if len(pairs) < 2:
        return None
    if any(not abs(lam) < 1.0 for lam, _ in pairs):
        return None
    if any(abs(lam.imag) > IMAG_TOL or lam.real < 0.0 for lam, _ in pairs):
        # a ringing (complex) or alternating mode is no trace: the measured response is
        # written as real modes instead, when it is not itself adapting's normaliser memory
        if drop_opposite:
            return None
        # the measured response, or (black box, which keeps none) the fitted modes' own
        k = np.arange(RESPONSE_LAGS)
        fitted = [-sum((a * lam**j).real for lam, a in pairs) for j in k]
        return _modes_from_response(mom.get("impulse_response") or fitted)
    total = sum(a.real for _, a in pairs)
    if total <= 0:
        return None
    return [lam.real for lam, _ in pairs], [a.real / total for _, a in pairs]


#: Lags of the response written from the fitted modes when the analysis keeps none (black box).
RESPONSE_LAGS = 200
#: Decays :func:`_modes_from_response` chooses from: 0 (a direct term) and timescales
#: ``1/(1 − λ)`` from 1.05 to 1000 steps, evenly in their logarithm.
RESPONSE_GRID = np.concatenate([[0.0], 1.0 - np.logspace(-0.02, -3.0, 150)])


def _modes_from_response(response: Any) -> tuple[list[float], list[float]] | None:
    """Two real modes ``(λ_i, w_i/Σw)`` fitted to a measured impulse response, else ``None``.

    The descent-signed response ``r_k`` (``−impulse_response``, finite prefix) is fitted by
    ``w_1 λ_1^k + w_2 λ_2^k`` with both decays on :data:`RESPONSE_GRID` and both weights
    non-negative, by least squares over every lag. ``None`` when the response is missing,
    shorter than three lags, or not descent at lag 0.
    """
    r = -_finite_prefix(response or [])
    if r.size < 3 or not r[0] > 0:
        return None
    powers = RESPONSE_GRID[:, None] ** np.arange(r.size)[None, :]  # [grid, lags]
    gram, proj = powers @ powers.T, powers @ r
    i, j = np.triu_indices(RESPONSE_GRID.size, 1)
    det = gram[i, i] * gram[j, j] - gram[i, j] ** 2
    ok = det > 1e-12 * gram[i, i] * gram[j, j]
    det = np.where(ok, det, 1.0)
    wi = (gram[j, j] * proj[i] - gram[i, j] * proj[j]) / det
    wj = (gram[i, i] * proj[j] - gram[i, j] * proj[i]) / det
    ok &= (wi >= 0) & (wj >= 0)
    # residual r·r − 2 w·p + wᵀGw, compared over the admissible pairs
    sse = -2 * (wi * proj[i] + wj * proj[j])
    sse += wi**2 * gram[i, i] + 2 * wi * wj * gram[i, j] + wj**2 * gram[j, j]
    if not ok.any():
        return None
    k = int(np.argmin(np.where(ok, sse, np.inf)))
    lams = [float(RESPONSE_GRID[i[k]]), float(RESPONSE_GRID[j[k]])]
    w = np.array([wi[k], wj[k]])
    keep = w > MODE_TOL * w.sum()
    weights = [float(x) for x in w[keep] / w.sum()]
    return [lam for lam, kept in zip(lams, keep, strict=True) if kept], weights


def _ringing(mom: Mapping[str, Any]) -> bool:
    """Whether a fitted mode with weight is complex or alternating (no trace can carry it)."""
    lams, alphas = mom.get("fit_eigenvalues") or [], mom.get("fit_alphas") or []
    pairs = [(complex(*lam), complex(*a)) for lam, a in zip(lams, alphas, strict=False)]
    scale = sum(abs(a) for _, a in pairs)
    return any(
        abs(a) > MODE_TOL * scale and (abs(lam.imag) > IMAG_TOL or lam.real < 0.0)
        for lam, a in pairs
    )
