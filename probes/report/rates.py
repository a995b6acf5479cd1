"""The report's learning rates, reconciled: every learning-rate-like number and how they relate.

An analysis measures the optimizer's gain per unit gradient in several places: the first update
at the fresh state ``h0`` (``α_eff(h0)``, the clipping probe's slope at ``g = 0``, step 0 of the
schedule), the latest gradient's gain at the convergence point ``h*`` (``α_eff(h*) = −r_0 =
Σ_i α_i`` over the eigenmodes, the schedule's last step), the total response to a persistent
gradient (``Σ_i Re α_i/(1−λ_i)``, the measured ``−Σ_k r_k``), the dominant mode's ``α``; the
tuned baselines and the distilled chain have their own. :func:`lr_reconciliation` collects them
with their definitions and checks the identities that tie them; :func:`rates_section` renders
it. Nothing is hard-coded: every number is read from ``analysis.json``, ``eval.json`` and
``distill.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from probes.modes import steady_gains
from probes.report.impulse import is_sign_like
from probes.values import complex_array, finite, floats
from probes.words import fmt

#: An identity "holds" when its two sides differ by at most this fraction of the larger.
TOLERANCE = 0.05


def _first_horizon(evaluation: Mapping | None) -> Mapping:
    """The optimizers of ``eval.json`` at its own horizon (else the shortest one)."""
    hs = (evaluation or {}).get("horizons")
    if not isinstance(hs, Mapping) or not hs:
        return {}
    keys = sorted(hs, key=lambda k: float(k))
    base = finite((evaluation or {}).get("horizon"))
    key = next((k for k in keys if base is not None and float(k) == base), keys[0])
    return (hs[key] or {}).get("optimizers") or {}


def _chain_numbers(distill: Mapping | None) -> dict[str, float | None]:
    """The distilled chain's learning rate, schedule ends and mode weights (``distill.json``)."""
    out: dict[str, float | None] = {"lr": None, "first": None, "last": None, "weights": None}
    out["steady_factor"] = None
    weights, factor, known = 1.0, 1.0, True
    for step in (distill or {}).get("chain") or []:
        if not isinstance(step, Mapping):
            continue
        t = step.get("transform")
        if t == "scale_by_learning_rate":
            out["lr"] = finite(step.get("learning_rate"))
            vals = floats((step.get("schedule") or {}).get("values") or [])
            out["first"] = float(vals[0]) if vals.size else 1.0
            out["last"] = float(vals[-1]) if vals.size else 1.0
        elif t == "momentum_modes":
            w, d = floats(step.get("weights")), floats(step.get("decays"))
            weights, factor = float(w.sum()), float((w / (1.0 - d)).sum())
        elif t == "trace":
            factor = 1.0 / (1.0 - float(step.get("decay") or 0.0))
        elif t not in ("offset_gradient", "soft_clip", "clip", "clip_by_global_norm"):
            known = False  # a transform whose gain at g = 0 is not read here
    if out["lr"] is not None and known:
        out["weights"] = weights
        out["steady_factor"] = factor
    return out


def _value(quantity: str, definition: str, value: Any) -> dict[str, Any]:
    return {"quantity": quantity, "definition": definition, "value": finite(value)}


def lr_reconciliation(
    analysis: Mapping[str, Any],
    evaluation: Mapping[str, Any] | None = None,
    distill: Mapping[str, Any] | None = None,
    tolerance: float = TOLERANCE,
) -> dict[str, Any]:
    """Every learning-rate-like number of a report, its definition and the identities between.

    Args:
        analysis: an analysis's ``to_json()`` dict.
        evaluation: ``eval.json`` (tuned baselines' hyperparameters), optional.
        distill: ``distill.json`` (the chain's learning rate and schedule), optional.
        tolerance: relative difference under which an identity holds.

    Returns:
        ``{"values": {key: {"quantity", "definition", "value"}}, "relations": [...]}``; each
        relation has ``key``, ``left``/``right`` (value keys), their values, ``kind``
        (``"identity"``: the two are the same quantity measured two ways; ``"comparison"``: the
        learned optimizer against a tuned baseline), ``ratio`` (left/right) and ``holds``
        (``|left − right| ≤ tolerance·max(|left|, |right|)``; ``None`` when a side is missing).
        Values the inputs lack are ``None`` (and their relations' ``holds`` is ``None``).
        ``sign_like`` is true for a sign-like update (:func:`probes.report.impulse.is_sign_like`):
        its update does not scale with the gradient, so every gain per unit gradient (slopes at
        ``g = 0``, the schedule's, the impulse response's, the modes', the damping probe's) is
        ``None``.
    """
    a = analysis
    m, meta = a.get("momentum") or {}, a.get("meta") or {}
    v: dict[str, dict[str, Any]] = {}
    lr = floats((a.get("schedule") or {}).get("effective_lr") or [])
    r = floats(m.get("impulse_response") or meta.get("impulse_response") or [])
    eigs, alphas = complex_array(m.get("eigenvalues")), complex_array(m.get("alphas"))
    where = "eigenmodes of ∂F/∂h at h*" if a.get("source") == "cell" else "fitted modes"

    sign_like = is_sign_like(m)
    if sign_like:  # flip counts, |u|/|g| at one background, slopes of 0: no gains per gradient
        r, eigs, alphas, lr = np.zeros(0), np.zeros(0, complex), np.zeros(0, complex), np.zeros(0)

    v["alpha_eff_h0"] = _value(
        "α_eff(h0)",
        "−∂U/∂g at g = 0 from the fresh state h0: the first update's gain",
        None if sign_like else meta.get("alpha_eff_h0"),  # a sign's slope: 0
    )
    slope = None if sign_like else finite((a.get("clipping") or {}).get("slope0"))
    v["clip_slope0"] = _value(
        "−∂U/∂g at g = 0 (clipping)",
        "minus the clipping probe's slope of U(h0, g) at g = 0",
        None if slope is None else -slope,
    )
    ok = np.isfinite(lr)
    v["schedule_first"] = _value(
        "schedule, step 0", "α_eff along h_{t+1} = F(h_t, 0) at step 0", lr[0] if lr.size else None
    )
    v["schedule_peak"] = _value(
        "schedule, peak",
        "largest |α_eff| along the autonomous dynamics",
        np.max(np.abs(lr[ok])) if ok.any() else None,
    )
    v["schedule_last"] = _value(
        f"schedule, step {max(lr.size - 1, 0)}",
        "α_eff at the schedule probe's last step (near h* when it converges there)",
        lr[-1] if lr.size else None,
    )
    v["alpha_eff_star"] = _value(
        "α_eff(h*)",
        "−r_0: the latest gradient's gain at the convergence point (impulse response, lag 0)",
        -r[0] if r.size else None,
    )
    v["sum_alpha"] = _value(
        "Σ_i α_i", f"Σ Re α_i over the {where}", np.real(np.sum(alphas)) if alphas.size else None
    )
    v["dominant_alpha"] = _value(
        "α (dominant mode)",
        "the dominant mode's own learning rate: one term of Σ_i α_i",
        None if sign_like else m.get("alpha"),
    )
    beta = finite(m.get("beta"))
    alpha = None if sign_like else finite(m.get("alpha"))
    v["dominant_steady"] = _value(
        "α/(1−β) (dominant mode)",
        "the dominant mode's response to a persistent gradient",
        alpha / (1.0 - beta) if alpha is not None and beta is not None and beta < 1 else None,
    )
    g = steady_gains(eigs, alphas) if eigs.size and eigs.size == alphas.size else np.zeros(0)
    v["steady_gain"] = _value(
        "Σ_i Re α_i/(1−λ_i)",
        f"steady gain over the {where}: the total response to a persistent gradient",
        float(np.sum(g)) if g.size and np.all(np.isfinite(g)) else None,
    )
    v["measured_steady"] = _value(
        "−Σ_k r_k",
        f"the measured impulse response summed over its {r.size} lags",
        -np.nansum(r) if r.size else None,
    )
    dc = floats((a.get("damping") or {}).get("dc_gain") or [])
    v["dc_gain"] = _value(
        "persistent gain (damping probe)",
        "update per unit of a constant small gradient after the damping probe's steps from h0",
        dc[0] if dc.size and not sign_like else None,
    )

    opts = _first_horizon(evaluation)
    hp = (opts.get("momentum") or {}).get("hyperparams") or {}
    t_lr, t_beta = finite(hp.get("learning_rate")), finite(hp.get("momentum"))
    v["tuned_momentum_lr"] = _value(
        "tuned momentum: lr", "heavy ball's α (optax.sgd(lr, momentum=β)): its lag-0 gain", t_lr
    )
    v["tuned_momentum_beta"] = _value("tuned momentum: β", "heavy ball's decay", t_beta)
    v["tuned_momentum_steady"] = _value(
        "tuned momentum: lr/(1−β)",
        "heavy ball's response to a persistent gradient",
        t_lr / (1.0 - t_beta) if t_lr is not None and t_beta is not None and t_beta < 1 else None,
    )
    for name in ("adam", "rmsprop"):
        h = (opts.get(name) or {}).get("hyperparams") or {}
        v[f"tuned_{name}_lr"] = _value(
            f"tuned {name}: lr",
            "step per normalised gradient (parameter units, not a gain per unit gradient): "
            "not comparable with the others",
            h.get("learning_rate"),
        )

    ch = _chain_numbers(distill)
    w = ch["weights"]
    v["chain_lr"] = _value(
        "distilled chain: learning_rate", "scale_by_learning_rate's learning rate", ch["lr"]
    )
    v["chain_first"] = _value(
        "distilled chain at step 0",
        "learning_rate × schedule multiplier at step 0 × Σ mode weights",
        ch["lr"] * ch["first"] * w if ch["lr"] is not None and w is not None else None,
    )
    v["chain_last"] = _value(
        "distilled chain, last schedule knot",
        "learning_rate × last schedule multiplier × Σ mode weights",
        ch["lr"] * ch["last"] * w if ch["lr"] is not None and w is not None else None,
    )
    v["chain_steady"] = _value(
        "distilled chain, steady gain",
        "learning_rate × last multiplier × Σ w_i/(1−λ_i)",
        ch["lr"] * ch["last"] * ch["steady_factor"]
        if ch["lr"] is not None and ch["steady_factor"] is not None
        else None,
    )

    relations = []
    for key, left, right, kind in (
        ("h0_clip", "alpha_eff_h0", "clip_slope0", "identity"),
        ("h0_schedule", "alpha_eff_h0", "schedule_first", "identity"),
        ("clip_schedule", "clip_slope0", "schedule_first", "identity"),
        ("h0_chain", "schedule_first", "chain_first", "identity"),
        ("star_sum", "alpha_eff_star", "sum_alpha", "identity"),
        ("star_schedule", "alpha_eff_star", "schedule_last", "identity"),
        ("star_chain", "alpha_eff_star", "chain_last", "identity"),
        ("steady_measured", "steady_gain", "measured_steady", "identity"),
        ("steady_dc", "measured_steady", "dc_gain", "identity"),
        ("steady_chain", "steady_gain", "chain_steady", "identity"),
        ("star_tuned", "alpha_eff_star", "tuned_momentum_lr", "comparison"),
        ("steady_tuned", "steady_gain", "tuned_momentum_steady", "comparison"),
    ):
        x, y = v[left]["value"], v[right]["value"]
        both = x is not None and y is not None
        scale = max(abs(x), abs(y)) if both else 0.0
        relations.append(
            {
                "key": key,
                "kind": kind,
                "left": left,
                "right": right,
                "left_value": x,
                "right_value": y,
                "ratio": x / y if both and y != 0 else None,
                "holds": bool(abs(x - y) <= tolerance * scale) if both else None,
            }
        )
    return {"values": v, "relations": relations, "tolerance": tolerance, "sign_like": sign_like}


def _verdict(rel: Mapping[str, Any], tolerance: float) -> str:
    """``equal (within 0.3%)`` / ``differ: 23.8 vs 36.5 (ratio 0.65)``."""
    x, y = rel["left_value"], rel["right_value"]
    if rel["holds"] is None:
        return "not measured"
    diff = abs(x - y) / max(abs(x), abs(y)) if max(abs(x), abs(y)) > 0 else 0.0
    if rel["holds"]:
        return f"{'equal' if rel['kind'] == 'identity' else 'close'} within {diff:.1%}"
    word = "differ" if rel["kind"] == "identity" else "ratio"
    return f"{word}: {fmt(x, '.4g')} vs {fmt(y, '.4g')} (ratio {fmt(rel['ratio'], '.3g')})"


def rates_section(
    analysis: Mapping[str, Any],
    evaluation: Mapping[str, Any] | None = None,
    distill: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The "Learning rates, reconciled" section: one table of values, one of relations."""
    rec = lr_reconciliation(analysis, evaluation, distill)
    vals = rec["values"]
    shown = {k: x for k, x in vals.items() if x["value"] is not None}
    value_rows = [[x["quantity"], fmt(x["value"], ".4g"), x["definition"]] for x in shown.values()]
    rel_rows = [
        [
            f"{vals[r['left']]['quantity']} ≟ {vals[r['right']]['quantity']}",
            r["kind"],
            _verdict(r, rec["tolerance"]),
        ]
        for r in rec["relations"]
        if r["holds"] is not None
    ]
    lead = (
        "The same optimizer has several learning rates, each a gain per unit gradient measured "
        "somewhere else: at the fresh state h0 (the first step), at the convergence point h* "
        "(the latest gradient's weight), or summed over time (a persistent gradient's total "
        "response, which heavy ball writes lr/(1−β)). Identities hold when the two sides agree "
        f"within {rec['tolerance']:.0%}; the fair comparison with tuned momentum is the steady "
        "gain against lr/(1−β)."
    )
    if rec["sign_like"]:
        lead += (
            " This update is sign-like: its size does not scale with the gradient, so it has no "
            "gain per unit gradient (its slopes are 0 and its steady gains undefined); only the "
            "baselines' and the chain's numbers are listed."
        )
    return {
        "id": "learning_rates",
        "title": "Learning rates, reconciled",
        "detected": None,
        "lead": lead,
        "numbers": [],
        "figures": [],
        "notes": [],
        "tables": [
            {"header": ["quantity", "value", "definition"], "rows": value_rows},
            {"header": ["relation", "kind", "agreement"], "rows": rel_rows},
        ],
        "reconciliation": rec,
    }
