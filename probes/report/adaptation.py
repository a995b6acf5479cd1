"""The report's adaptation section: ``α_eff`` along the S-curve of fixed points ``h*(g*)``."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from probes.report.sections import Builder, mechanism_section, num_row
from probes.values import finite, floats
from probes.words import fmt, slope

_ADAPT_KNOWN = {
    "detected",
    "magnitudes",
    "lr_vs_magnitude",
    "slope_pos",
    "slope_neg",
    "slope",
    "point_kind",
}


def fold_notes(d: Mapping, nums: list[dict]) -> list[str]:
    """Rows (appended to ``nums``) and notes for the folds of an ``adaptation`` result dict.

    Fold positions, segments and slopes are the analysis's own (``branches[arm]``): the report
    shows what ``probes analyze`` printed, never a recomputation.
    """
    notes = []
    branches = d.get("branches") or {}
    for name, label in (("pos", "g* > 0"), ("neg", "g* < 0")):
        br = branches.get(name) or {}
        folds = [finite(x) for x in br.get("fold_magnitudes") or []]
        segs = [s for s in br.get("segments") or [] if isinstance(s, Mapping)]
        if not folds:
            continue
        nums.append(
            num_row(
                f"folds_{name}",
                f"folds on the {label} arm at |g*|",
                folds,
                ", ".join(fmt(x, ".2g") for x in folds),
            )
        )
        if len(segs) > 1:
            slopes = [finite(s.get("slope")) for s in segs]
            nums.append(
                num_row(
                    f"segment_slopes_{name}",
                    f"slopes between folds ({label})",
                    slopes,
                    " / ".join(slope(x) for x in slopes),
                )
            )
        for before, after in zip(segs, segs[1:], strict=False):
            notes.append(
                f"On the {label} arm the branch of fixed points connected to the convergence "
                f"point ends in a fold at |g*| ≈ {fmt(after['magnitude_range'][0], '.2g')}; "
                f"there the state jumps to another branch, where α_eff goes from "
                f"{fmt(before.get('alpha_last'))} to {fmt(after.get('alpha_first'))} and then "
                f"has a log-log slope of {slope(after.get('slope'))} against |g*| (before the "
                f"fold: {slope(before.get('slope'))})."
            )
    return notes


def adaptation_section(b: Builder, a: Mapping, ev: Mapping | None) -> dict:
    """The adaptation section: slopes, folds, the S-curve and ``α_eff`` against ``|g*|``."""
    d = a.get("adaptation") or {}
    nums = [
        num_row(
            "slope_pos", "log-log slope, g* > 0", d.get("slope_pos"), slope(d.get("slope_pos"))
        ),
        num_row(
            "slope_neg", "log-log slope, g* < 0", d.get("slope_neg"), slope(d.get("slope_neg"))
        ),
        num_row("slope", "slope used (RMSProp: −1)", d.get("slope"), slope(d.get("slope"))),
    ]
    mags = np.asarray(d.get("magnitudes") or [], float)
    lrv = d.get("lr_vs_magnitude") or {}
    if mags.size:
        nums.append(
            num_row(
                "magnitude_range",
                "|g*| probed",
                [mags.min(), mags.max()],
                f"{fmt(mags.min())} … {fmt(mags.max())}",
            )
        )
    # Fields added by later versions of the detector: shown generically, never required.
    for k, v in d.items():
        if k not in _ADAPT_KNOWN and (isinstance(v, int | float | str | bool) or v is None):
            nums.append(num_row(k, k.replace("_", " "), v, v if isinstance(v, str) else None))
    notes = fold_notes(d, nums)
    sc = (ev or {}).get("s_curve") or {}
    arms = sc.get("arms") or {}
    for name, label in (("pos_down", "g* > 0"), ("neg_down", "g* < 0")):
        arm = arms.get(name) or {}
        back = np.asarray(arm.get("jump_back") or [], bool)
        if back.any():
            at = ", ".join(fmt(abs(x), ".2g") for x in np.asarray(arm["inputs"], float)[back])
            notes.append(
                f"Traced back from the largest |g*| (dashed, {label}), the state jumps at "
                f"|g*| ≈ {at} (▲): hysteresis of the sweep back, not a fold of the branch the "
                "analysis measured."
            )
    figs = []
    colors = {
        "pos_up": b.fig.POS,
        "pos_down": b.fig.POS,
        "neg_up": b.fig.NEG,
        "neg_down": b.fig.NEG,
    }
    order = [k for k in ("pos_up", "pos_down", "neg_up", "neg_down") if k in arms]
    arms = {k: arms[k] for k in order + [k for k in arms if k not in order]}
    if arms:
        series = []
        for name, arm in arms.items():
            g = floats(arm["inputs"])
            sgn = "g* > 0" if name.startswith("pos") else "g* < 0"
            way = "from h*, |g*| rising" if name.endswith("up") else "|g*| falling back"
            series.append(
                {
                    "inputs": g,
                    "pc": floats(arm["pc1"]),
                    "label": f"{sgn}, {way}",
                    "color": colors.get(name, b.fig.MARK),
                    "dashed": name.endswith("down"),
                    "fold": arm.get("fold") or [],
                    "jump_back": arm.get("jump_back") or [],
                }
            )
        figs.append(
            b.add(
                "adaptation_s_curve",
                b.fig.s_curve(
                    series, ylabel=f"PC 1 of h*(g*) ({sc.get('explained_ratio', 0):.0%} var.)"
                ),
                "Fixed points h*(g*) for constant gradients g*, traced by continuation from the "
                "convergence point outwards (solid) and back (dashed), on their first principal "
                "component (symmetric-log x axis). An S-shaped curve with jumps (×) and a gap "
                "between "
                "solid and dashed lines is a fold with hysteresis: two stable states for one g*. "
                "Folds (×) are those the analysis found on the rising arms; jumps on the way "
                "back (▲) show the hysteresis.",
                "adaptation",
                True,
            )
        )
    su = (ev or {}).get("s_curve_updates")
    if su and su.get("updates"):
        figs.append(
            b.add(
                "adaptation_update_functions",
                b.fig.update_functions(
                    su["gradients"],
                    np.asarray(su["updates"], float),
                    su["g_star"],
                    title="U(h*(g*), g) along the S-curve",
                    amount_label="g*",
                    log_color=True,
                ),
                "Update functions at fixed points of the S-curve (colour: the constant gradient g* "
                "that put the state there). Adaptation shows as flatter curves (a smaller slope, "
                "i.e. a smaller learning rate) at states reached with larger |g*|.",
                "adaptation",
                True,
            )
        )
    series = []
    for name, arm in arms.items():
        g = np.abs(floats(arm["inputs"]))
        series.append(
            {
                "magnitudes": g,
                "alpha": [np.nan if x is None else x for x in arm["alpha_eff"]],
                "label": ("g* > 0" if name.startswith("pos") else "g* < 0")
                + (" (rising)" if name.endswith("up") else " (falling back)"),
                "color": colors.get(name, b.fig.MARK),
                "dashed": name.endswith("down"),
            }
        )
    if mags.size:
        for k, col in (("pos", b.fig.POS), ("neg", b.fig.NEG)):
            if lrv.get(k):
                series.append(
                    {
                        "magnitudes": mags,
                        "alpha": lrv[k],
                        "style": "dots",
                        "color": col,
                        "label": f"detector, g* {'>' if k == 'pos' else '<'} 0",
                    }
                )
    alphas = [np.asarray(sr["alpha"], float) for sr in series]
    drawable = any(np.any(np.isfinite(x) & (x != 0)) for x in alphas)
    if drawable:  # log-log axes: not with α_eff = 0 everywhere (a sign-like update)
        # The guide starts where the curves are a decade before their largest |g*|.
        ref = None
        for sr in series:
            mm = np.asarray(sr["magnitudes"], float)
            aa = np.abs(np.asarray(sr["alpha"], float))
            ok = np.isfinite(mm) & np.isfinite(aa) & (mm > 0) & (aa > 0)
            if ok.any():
                at = np.nanmax(mm[ok]) / 10
                ref = float(aa[ok][np.argmin(np.abs(np.log(mm[ok] / at)))])
                break
        figs.append(
            b.add(
                "adaptation_alpha_eff",
                b.fig.adaptation_lr(series, reference=ref),
                "Effective learning rate at the steady state of each constant gradient, against "
                "|g*| (log-log). RMSProp-like adaptation falls with slope −1 (dotted guide); a "
                "flat "
                "line means no adaptation. Circles are the detector's own probes.",
                "adaptation",
                False,
            )
        )
    lead = (
        "Adaptation is read at the steady states h*(g*) of constant gradients: does the "
        "effective learning rate fall as |g*| grows, as in RMSProp (docs/method.md, Adaptation)?"
    )
    return mechanism_section("adaptation", "Learning-rate adaptation", d, lead, nums, figs, notes)
