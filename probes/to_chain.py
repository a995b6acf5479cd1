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
   itself is fitted by at most two real modes with non-negative weights
   (:func:`probes.modes.real_modes`): the lag-0 gain is the measured one and the steady gain the
   fit's, rather than one mode's. Under a normaliser the dominant mode stays a trace.
3. **learning rate and schedule** → ``optax.scale_by_learning_rate`` with the dominant mode's
   ``α`` (the learned update has no built-in minus sign; ``α > 0`` means descent, and
   ``scale_by_learning_rate`` supplies the minus). If a schedule was detected, ``α`` is
   multiplied by ``α_eff(t) / α_eff(h*)``: the probed effective learning rate along the
   autonomous dynamics, divided by its value at the convergence point, so that the multiplier
   tends to 1 and the steady-state learning rate is the mode's ``α``. It is interpolated
   piecewise-linearly between knots (:func:`lopt.chain.interpolated_schedule`) and, after the
   last probed step, approaches 1 geometrically at the rate of the probed tail. Under a
   normaliser whose schedule was read on its step along a constant gradient, the multiplier's
   shape is that step over the chain's own step there without a schedule.
4. **adaptation** (only if detected, and not if the detected damping alone accounts for it: the
   adaptation probe's step from ``g*`` to 0 is a gradient change the damping reacts to) →
   ``optax.scale_by_rms`` before the momentum, with every number read where its probe reads it
   (:func:`probes.normaliser.rms_from_probes`): the learning rate after it and ``ε/d`` from the
   adaptation curve, the decay ``d`` and ``ε`` from the first update's saturation, or ``d`` from
   an impulse-response mode against descent (the normaliser's memory, left out of the
   momentum). When the first update is already full-sized (Adam), both the normaliser and the
   momentum are debiased; when the normaliser explains the first update's saturation, no
   clipping is added. The adaptation probe reads after ``W`` steps; where the black box also
   measured the schedule's gain there (``meta.gain_at_warmup``), a schedule still moving past
   its horizon is referred to it, so the chain's learning rate is the horizon's.
5. **oscillation damping** (only if detected; a mechanism beyond the paper's four, see
   :class:`probes.detectors.Damping`) → :func:`lopt.chain.damp_oscillations` first in the chain,
   with the probed ``κ`` (the gradient amplitude where gradients that flip sign every step lose
   half their gain relative to persistent ones; the transform has exactly that half-point) and
   the probed memory ``ρ`` (how fast the damping builds up from a fresh state; ``DAMP_DECAY``
   for analyses that lack it); where the steady reading found none, the ``κ`` and ``ρ`` read
   from the first steps (``analysis.damping_transient``, :mod:`probes.transient`) if that
   reading detected damping.

6. **bias** (only if detected, :mod:`probes.bias`) → :func:`lopt.chain.offset_gradient` with the
   probed ``g₀`` in front of everything, so that the chain's update vanishes where the
   optimizer's does; a bias whose update vanishes nowhere in the probed range is left out (a
   note says so).

A **sign-like** update (the clipping probe's ``sign_like``) is written as
``[optax.trace(β)] → optax.scale_by_sign → step size`` (:func:`_sign_chain`).

Mechanisms that were not detected are left out; without momentum the learning rate is
``α_eff(h*)`` (plain, possibly scheduled, SGD).

The constants below are part of the mapping (what a detected mechanism becomes), not settings
of how hard to work: ``distill.json`` does not record them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lopt.chain import HALF_SLOPE, build_chain
from probes.detectors import SPARING_TOLERANCE
from probes.modes import IMAG_TOL, real_modes
from probes.normaliser import (
    at_probe,
    normalisation_memory,
    normalised_schedule,
    rms_from_probes,
    schedule_ratios,
)
from probes.values import finite_prefix

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
    eff = finite_prefix(sch.get("effective_lr"))  # the same rule as every probed curve
    scheduled = sch.get("detected") and eff.size and eff[-1] > 0
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
            sp = damping.get("sparing")
            if sp is not None and math.isfinite(float(sp)):
                notes["damping_sparing"] = float(sp)
                if not 1 / SPARING_TOLERANCE <= float(sp) <= SPARING_TOLERANCE:
                    # the transform scales persistent and alternating gradients alike
                    read += (
                        f"; the optimizer's damping keeps {float(sp):.2g} times as large a share "
                        "of a persistent gradient as of an alternating one, this transform the "
                        "same share"
                    )
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
        return _with_bias(analysis, chain, notes)

    lr = alpha_star
    meta = analysis.get("meta") or {}
    warmup, gain_at_warmup = meta.get("warmup"), meta.get("gain_at_warmup")
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
        ratios = (1.0, 1.0)
        if sch.get("detected") and eff:  # S (first step) referred to where A is read (W)
            one = ([float(mom["beta"])], [1.0]) if mom.get("detected") else None
            e = finite_prefix(eff)
            at = at_probe(e, modes or one, gain_at_warmup, warmup)
            ratios = schedule_ratios(e, int(clip.get("step") or 0), modes or one, at)
        rms = rms_from_probes(ada, clip, normalisation_memory(mom), gain, warmup, ratios)
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
        if _ringing(mom) and modes is not None and not adapting:
            top = max(decays)  # the detectors' timescale, τ = −1/ln λ (0 for a direct term)
            slow = -1.0 / math.log(top) if top > 0 else 0.0
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
    e = finite_prefix(eff)
    if sch.get("detected") and alpha_star and e.size:
        if rms is None:
            mult = e / alpha_star
        else:
            at = at_probe(e, debias_weights, gain_at_warmup, warmup)
            mult = normalised_schedule(e, debias_weights, at[1])
            # the probed step includes a detected bias's drift, so the chain run does too
            biased = _with_bias(analysis, list(chain), {"detected": {}})[0]
            shape = _step_shape(sch, biased, lr, meta.get("gradient_scale"))
            if shape is not None:  # the shape from the step, the level at the end as before
                mult = shape / shape[-1] * mult[-1]
                notes["schedule_shape_from"] = "step along a constant gradient"
        entry["schedule"] = _schedule(mult)
        entry["mechanism"] = f"learning rate with a {sch.get('shape')} schedule" + (
            " (its shape from the step along a constant gradient)"
            if notes.get("schedule_shape_from")
            else ""
        )
    chain.append(entry)
    return _with_bias(analysis, chain, notes)


def _step_shape(
    sch: Mapping[str, Any], chain: list[dict[str, Any]], lr: float, scale: Any
) -> np.ndarray | None:
    """A normaliser chain's schedule shape read on the step along a constant gradient.

    Where the schedule's second curve is the optimizer's step ``|u_t|`` after ``t`` steps of
    the constant gradient ``b`` (``meta.gradient_scale``; a normaliser,
    :func:`probes.detectors.detect_schedule`), the multiplier that makes the chain take that
    step is the curve over the chain's own step there without a schedule (its normaliser's
    and debiased momentum's build-up): ``|u_t|/|u_t^chain|``, over the curves' common finite
    prefix. ``None`` where the curve is the gain, or the ratio is not finite and positive.
    """
    if sch.get("constant_gradient_measure") != "step size":
        return None
    step = finite_prefix(sch.get("constant_gradient_lr"))
    if not step.size or scale is None or not float(scale) > 0:
        return None
    tx = build_chain([*chain, {"transform": "scale_by_learning_rate", "learning_rate": lr}])

    def body(state, g):
        u, state = tx.update(g, state, jnp.zeros(()))
        return state, u

    gs = jnp.full(step.size, float(scale), jnp.float32)
    own = np.abs(np.asarray(jax.lax.scan(body, tx.init(jnp.zeros(())), gs)[1], np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.abs(step) / own
    return ratio if np.all(np.isfinite(ratio)) and np.all(ratio > 0) else None


def _with_bias(
    analysis: Mapping[str, Any], chain: list[dict[str, Any]], notes: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The chain with a detected bias's ``offset_gradient`` in front (step 6), and the notes."""
    bias = analysis.get("bias")
    if not isinstance(bias, Mapping):
        return chain, notes
    notes["detected"]["bias"] = bool(bias.get("detected"))
    g0 = bias.get("stall_gradient")
    if not bias.get("detected"):
        return chain, notes
    if g0 is None or not math.isfinite(float(g0)):
        notes["bias"] = "the update vanishes nowhere in the probed range: a drift no chain carries"
        return chain, notes
    entry = {
        "transform": "offset_gradient",
        "offset": float(g0),
        "mechanism": f"bias (the update vanishes at g = {float(g0):.4g}, not at 0)",
    }
    return [entry, *chain], notes


#: Modes with ``|α_i|`` below this fraction of ``Σ|α|`` carry no weight and are left out.
MODE_TOL = 1e-6


def _response_modes(
    mom: Mapping[str, Any], *, drop_opposite: bool = False
) -> tuple[list[float], list[float]] | None:
    """The fitted real modes ``(λ_i, α_i/Σα)`` when more than one carries weight, else ``None``.

    The weights are relative to ``Σα_i``, the response at lag 0, which the learning-rate entry
    carries. When a mode that carries weight rings (complex) or alternates, two real modes
    fitted to the measured response (:func:`_modes_from_response`); under a normaliser
    (``drop_opposite``) ``None`` instead, so the dominant mode becomes a single ``trace``.
    ``None`` also when a mode is unstable or ``Σα ≤ 0``.
    """
    pairs = _weighted_modes(mom)
    if drop_opposite:  # the normalisation's own memory, which scale_by_rms carries
        pairs = [(lam, a) for lam, a in pairs if a.real > 0]
    if len(pairs) < 2:
        return None
    if any(not abs(lam) < 1.0 for lam, _ in pairs):
        return None
    if any(_rings(lam) for lam, _ in pairs):
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


def _modes_from_response(response: Any) -> tuple[list[float], list[float]] | None:
    """Two real modes ``(λ_i, w_i/Σw)`` fitted to an impulse response, else ``None``.

    :func:`probes.modes.real_modes` on the descent-signed response (``−impulse_response``,
    finite prefix); modes with no weight are left out. ``None`` when the response is missing,
    shorter than three lags, or not descent at lag 0.
    """
    r = -finite_prefix(response or [])
    if r.size < 3 or not r[0] > 0:
        return None
    fit = real_modes(r)
    if fit is None:
        return None
    lams, w = fit
    keep = w > MODE_TOL * w.sum()
    return [float(x) for x in lams[keep]], [float(x) for x in w[keep] / w.sum()]


def _weighted_modes(mom: Mapping[str, Any]) -> list[tuple[complex, complex]]:
    """The fitted ``(λ_i, α_i)`` carrying weight: ``|α_i|`` above ``MODE_TOL`` of ``Σ|α|``.

    ``[]`` when the fit is malformed (eigenvalues and weights of different lengths).
    """
    lams, alphas = mom.get("fit_eigenvalues") or [], mom.get("fit_alphas") or []
    if len(lams) != len(alphas):
        return []
    pairs = [(complex(*lam), complex(*a)) for lam, a in zip(lams, alphas, strict=True)]
    scale = sum(abs(a) for _, a in pairs)
    return [(lam, a) for lam, a in pairs if abs(a) > MODE_TOL * scale]


def _rings(lam: complex) -> bool:
    """A complex or alternating mode: no trace can carry it."""
    return abs(lam.imag) > IMAG_TOL or lam.real < 0.0


def _ringing(mom: Mapping[str, Any]) -> bool:
    """Whether a fitted mode with weight is complex or alternating."""
    return any(_rings(lam) for lam, _ in _weighted_modes(mom))
