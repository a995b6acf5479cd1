"""The report's momentum section: the dominant mode, the eigenmodes, the impulse response."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from probes.faithfulness_words import memory_along_sentence
from probes.report.impulse import FIT_TOLERANCE, fit_curve, impulse_caption, impulse_fit
from probes.report.sections import Builder, mechanism_section, num_row, wording
from probes.values import complex_array, finite, floats
from probes.words import fmt


def momentum_section(b: Builder, a: Mapping, ev: Mapping | None, res: dict | None) -> dict:
    """The momentum section: numbers, states near ``h*``, slow mode, eigenvalues, (β, α)."""
    m = a.get("momentum") or {}
    source = a.get("source")
    nums = [
        num_row("beta", "β (dominant mode)", m.get("beta"), fmt(m.get("beta"), ".4g")),
        num_row("alpha", "α (its learning rate)", m.get("alpha"), fmt(m.get("alpha"), ".4g")),
        num_row(
            "timescale",
            "timescale −1/ln β (steps)",
            m.get("timescale"),
            fmt(m.get("timescale"), ".3g"),
        ),
        num_row(
            "share",
            "share of the fitted steady response (G / Σ G_i over the fitted modes)",
            m.get("share"),
            fmt(m.get("share"), ".0%"),
        ),
        num_row("is_real", "dominant mode real", m.get("is_real"), str(m.get("is_real"))),
        num_row(
            "sign_change_level",
            "envelope at its first sign change (complex pair)",
            m.get("sign_change_level"),
            fmt(m.get("sign_change_level"), ".2%"),
        ),
        num_row(
            "point_kind", "where it was measured", m.get("point_kind"), str(m.get("point_kind"))
        ),
    ]
    ma = (a.get("faithfulness") or {}).get("memory_along") or {}
    mem = floats(ma.get("memory") or [])
    mem = mem[np.isfinite(mem)]
    if mem.size:
        nums.append(
            num_row(
                "memory_along",
                f"memory along training (Σ_k r_k / r_0 over {ma.get('lags')} lags, per start)",
                ma["memory"],
                f"{fmt(mem.min())} … {fmt(mem.max())}",
            )
        )
        nums.append(
            num_row(
                "memory_convergence",
                "the same at the convergence point",
                ma.get("convergence_memory"),
                fmt(ma.get("convergence_memory"), ".3g"),
            )
        )
    fit = impulse_fit(m, a.get("meta"))
    if fit["measured_steady"] is not None:
        nums += [
            num_row(
                "share_measured",
                "share of the measured steady response (G / −Σ_k r_k)",
                fit["share_measured"],
                fmt(fit["share_measured"], ".0%"),
            ),
            num_row(
                "measured_steady",
                f"measured steady response −Σ_k r_k ({fit['num_lags']} lags)",
                fit["measured_steady"],
            ),
            num_row("fitted_steady", "fitted steady response Σ G_i", fit["fitted_steady"]),
        ]
    if fit["fit_judged"]:
        lag = fit["fit_lag"]
        nums.append(
            num_row(
                "fit_lag",
                f"fit within {FIT_TOLERANCE:.0%} of the measured response up to lag",
                # the last lag where the fit holds; None if it holds at none
                fit["num_lags"] - 1 if lag is None else (lag - 1 if lag > 0 else None),
                f"all {fit['num_lags']} lags"
                if lag is None
                else ("none (off from lag 0)" if lag == 0 else str(lag - 1)),
            )
        )
    if fit["tail_decay"] is not None:
        nums.append(
            num_row(
                "tail_decay",
                "measured decay per step at long lags"
                + (" (≠ slowest fitted mode)" if fit["tail_differs"] else ""),
                fit["tail_decay"],
                fmt(fit["tail_decay"], ".4g"),
            )
        )
    fe, fa = complex_array(m.get("fit_eigenvalues")), complex_array(m.get("fit_alphas"))
    eigs, alphas = complex_array(m.get("eigenvalues")), complex_array(m.get("alphas"))
    if source == "cell" and alphas.size:
        total = np.real(np.nansum(alphas))
        nums.append(num_row("sum_alpha", "Σα_i over eigenmodes (= α_eff(h*))", total))
        nums.append(
            num_row("sum_abs_alpha", "Σ|α_i| (cancellation)", float(np.nansum(np.abs(alphas))))
        )
    conv = (ev or {}).get("convergence") or {}
    if conv:
        nums.append(
            num_row(
                "slow_eigenvalue",
                "slowest real eigenvalue at h*",
                complex_array([conv.get("slow_eigenvalue")])[0].real,
            )
        )
        nums.append(
            num_row("spectral_radius", "spectral radius at h*", conv.get("spectral_radius"))
        )
    opt = (ev or {}).get("optimum")
    if opt:
        nums.append(
            num_row("optimum_beta", "heavy-ball optimum β*", opt["beta"], fmt(opt["beta"], ".4g"))
        )
        nums.append(
            num_row(
                "optimum_alpha", "heavy-ball optimum α*", opt["alpha"], fmt(opt["alpha"], ".4g")
            )
        )
    tuned = None
    for h in (res or {}).get("horizons", [])[:1]:
        for r in h["rows"]:
            hp = r["hyperparams"]
            if r["name"] == "momentum" and "momentum" in hp and "learning_rate" in hp:
                tuned = {"alpha": hp["learning_rate"], "beta": hp["momentum"]}
    figs = []
    st = (ev or {}).get("states")
    if st:
        figs.append(
            b.add(
                "momentum_states",
                b.fig.state_trajectories(
                    np.asarray(st["lines"], float),
                    np.asarray(st["fixed_point"], float),
                    np.asarray(st["start"], float),
                    st["explained_ratio"],
                ),
                f"Hidden states of {st['num_coords']} coordinates × {st['num_problems']} problems, "
                "projected on their first two principal components and coloured by step. Look "
                "for the trajectories leaving h0 (circle) and settling on the convergence point "
                "h* (star), the "
                f"fixed point at g = 0 ({conv.get('kind', '?')}).",
                "momentum",
                True,
            )
        )
    sm = (ev or {}).get("slow_mode")
    if sm and sm.get("updates"):
        lam = complex_array([sm.get("eigenvalue")])[0]
        figs.append(
            b.add(
                "momentum_update_functions",
                b.fig.update_functions(
                    sm["gradients"],
                    np.asarray(sm["updates"], float),
                    sm["amounts"],
                    title=f"U(h* + a·v, g) along the slow mode (λ = {lam.real:.3g})",
                    amount_label="amount a along v",
                    reference_slope=-finite(conv.get("alpha_eff") or 0.0),
                ),
                "Update functions at states displaced from h* along the slowest eigenvector v. "
                "Momentum shows up as curves shifted up or down (the state carries a velocity that "
                "adds to the update) with nearly the same slope.",
                "momentum",
                True,
            )
        )
    if source == "cell" and eigs.size:
        dom = (
            complex(m["beta"], 0.0)
            if m.get("detected") and finite(m.get("beta")) is not None
            else None
        )
        figs.append(
            b.add(
                "momentum_eigenvalues",
                b.fig.eigenvalues(eigs, alphas, fe[np.abs(fe) > 0] if fe.size else None, dom),
                "Eigenvalues λ_i of ∂F/∂h at the convergence point, coloured by the mode's "
                "learning "
                "rate α_i. Each mode is a momentum component with β_i = λ_i; look for real modes "
                "close to (but inside) the unit circle, and for large α_i of opposite signs that "
                "cancel (the squares are the modes fitted to the actual response).",
                "momentum",
                True,
            )
        )
    resp = m.get("impulse_response") or (a.get("meta") or {}).get("impulse_response") or []
    r = floats(resp)
    if fit["sign_like"]:
        nums.append(
            num_row(
                "flip_counts",
                "steps an opposite impulse flips the update's sign, per impulse amplitude "
                "(β is read from their growth with the amplitude's log)",
                r,
                ", ".join(fmt(x, ".0f") for x in r) or "n/a",
            )
        )
    elif r.size:
        fitted = fit_curve(fa, fe, r.size)
        along = list(zip(ma.get("starts") or [], ma.get("response") or [], strict=False))
        figs.append(
            b.add(
                "momentum_impulse_response",
                b.fig.impulse_response(r, fitted, along),
                "How much a unit gradient at step t moves the update at step t + k "
                + ("(linearised at h*). " if source == "cell" else "(measured by autodiff). ")
                + "Heavy-ball momentum gives a straight line on this log scale, α βᵏ; the dashed "
                "curve is the fit by at most two exponential modes."
                + (
                    " Thin lines: the same response along the optimizer's own training "
                    "trajectories, from steps " + ", ".join(str(x) for x, _ in along) + " (later "
                    "starts lighter); lines flatter than the thick one mean a longer memory "
                    "while it trains."
                    if along
                    else ""
                )
                + impulse_caption(fit),
                "momentum",
                False,
            )
        )
    modes = []
    for lam, al in zip(fe, fa, strict=False):
        if abs(lam.imag) <= 1e-9 and abs(lam) > 0:
            modes.append({"beta": lam.real, "alpha": al.real, "kind": "fit"})
    if source == "cell":
        for lam, al in zip(eigs, alphas, strict=False):
            if abs(lam.imag) <= 1e-6 * max(1.0, abs(lam)) and np.isfinite(al.real):
                modes.append({"beta": lam.real, "alpha": al.real, "kind": "eig"})
    points = []
    if m.get("detected") and finite(m.get("beta")) is not None:
        points.append(
            {
                "beta": m["beta"],
                "alpha": m["alpha"],
                "label": wording(source)["dominant_label"],
                "color": b.fig.color("learned"),
                "marker": "*",
            }
        )
    if tuned:
        points.append(
            {**tuned, "label": "tuned momentum", "color": b.fig.color("momentum"), "marker": "D"}
        )
    if opt:
        points.append(
            {
                "beta": opt["beta"],
                "alpha": opt["alpha"],
                "label": "optimum (α*, β*)",
                "color": b.fig.NEG,
                "marker": "X",
            }
        )
    if modes or points:
        cap = "Momentum modes as (β, α) pairs: a heavy-ball optimizer is one point. "
        if opt:
            cap += (
                f"The cross marks Polyak's optimal heavy-ball parameters for this family, "
                f"β* = {opt['beta']:.3g}, α* = {opt['alpha']:.3g} (Hessian eigenvalues in "
                f"[{opt['mu']:.2g}, {opt['L']:.2g}] over {opt['num_problems']} sampled "
                f"problems). Look for how close {wording(source)['dominant_mode']} lands."
            )
        else:
            cap += (
                f"Look for where {wording(source)['dominant_mode']} lands relative to tuned "
                "momentum."
            )
        figs.append(
            b.add("momentum_alpha_beta", b.fig.alpha_beta(modes, points), cap, "momentum", False)
        )
    lead = (
        "Linearising the optimizer around the state it converges to splits it into modes, each "
        "a heavy-ball momentum term with decay β and learning rate α "
        "(docs/method.md, Linearisation). "
        if source == "cell"
        else "The response of the update to a single gradient impulse, fitted with exponential "
        "modes: each mode is a heavy-ball momentum term with decay β and learning rate α. "
    )
    said = memory_along_sentence(ma)
    notes = [said] if said else []
    return mechanism_section("momentum", "Momentum", m, lead, nums, figs, notes=notes)
