"""The report's bias section: the update at zero gradient, the gradient where it vanishes.

Reads :class:`probes.bias.Bias` (``analysis.json`` ``bias``) and draws the steady update
``U(g)`` after ``W`` steps of each constant gradient, around ``g = 0``; with
``faithfulness.steady_update`` (:mod:`probes.steady_update`), also the probed chain's update
beside the optimizer's after the task's horizon.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from probes.report.sections import Builder, mechanism_section, num_row
from probes.steady_update import TOLERANCE
from probes.values import finite, floats
from probes.words import fmt


def steady_updates_figure(
    gradients: Any, updates: Any, *, update_at_zero: float | None, stall: float | None
) -> Any:
    """``U(g)`` against ``g`` (symmetric-log axes), ``U(0)`` and the zero ``g₀`` marked."""
    from probes import figures

    fig, (ax,) = figures.figure(width=5.6, height=3.9)
    g, u = floats(gradients), floats(updates)
    ok = np.isfinite(g) & np.isfinite(u)
    ax.plot(g[ok], u[ok], color=figures.color("learned"), lw=2.0, marker="o", ms=3)
    ax.axhline(0.0, color=figures.GREY, lw=0.8)
    ax.axvline(0.0, color=figures.GREY, lw=0.8)
    nonzero = np.sort(np.abs(g[ok & (g != 0)]))
    if nonzero.size:  # linear within the zero g0 (or, without one, the grid's first point)
        near = abs(stall) if stall else float(nonzero[0])
        ax.set_xscale("symlog", linthresh=float(max(nonzero[0], near / 3)))
    uabs = np.abs(u[ok & (u != 0)])
    if uabs.size:
        lin = abs(update_at_zero) if update_at_zero else float(np.min(uabs))
        ax.set_yscale("symlog", linthresh=max(lin, float(np.min(uabs))))
    if update_at_zero is not None:
        ax.plot(
            0.0,
            update_at_zero,
            "o",
            ms=8,
            color=figures.NEG,
            mec="white",
            label=f"update at g = 0: {update_at_zero:.2g}",
        )
    if stall is not None:
        ax.axvline(
            stall, color=figures.NEG, lw=1.2, ls="--", label=f"update vanishes at g = {stall:.2g}"
        )
    if update_at_zero is not None or stall is not None:
        ax.legend(loc="best")
    ax.set_xlabel("constant gradient g")
    ax.set_ylabel("update after the steady steps")
    ax.set_title("Steady update around g = 0")
    return fig


def chain_steady_figure(su: Mapping[str, Any]) -> Any:
    """The optimizer's and the chain's update after ``T`` constant gradients, and their ratio."""
    from probes import figures

    fig, (ax, rx) = figures.figure(ncols=2, width=9.6, height=3.9)
    g = floats(su.get("gradients"))
    lo = (floats(su.get("training_range")).tolist() + [np.nan])[0]
    for name, key, label, ls in (
        ("learned", "optimizer", "optimizer", "-"),
        ("distilled", "chain", "chain (probed numbers)", "--"),
    ):
        u = floats(su.get(key))
        ok = np.isfinite(g) & np.isfinite(u) if u.shape == g.shape else np.zeros(g.shape, bool)
        ax.plot(
            g[ok], u[ok], color=figures.color(name), lw=2.0, ls=ls, marker="o", ms=3, label=label
        )
    r = floats(su.get("ratio"))
    ok = np.isfinite(g) & np.isfinite(r) if r.shape == g.shape else np.zeros(g.shape, bool)
    for side in (g < 0, g > 0):  # each sign on its own: no line across the unread middle
        rx.plot(
            g[ok & side], r[ok & side], color=figures.color("distilled"), lw=2.0, marker="o", ms=3
        )
    tol = finite(su.get("tolerance"))
    tol = TOLERANCE if tol is None else tol
    for y in (1.0, 1 + tol, 1 / (1 + tol)):
        rx.axhline(y, color=figures.GREY, lw=0.8, ls="-" if y == 1.0 else ":")
    small = np.abs(g[np.isfinite(g) & (g != 0)])
    for axis in (ax, rx):
        axis.axvline(0.0, color=figures.GREY, lw=0.8)
        if small.size:
            axis.set_xscale("symlog", linthresh=float(np.nanmin(small)))
        if np.isfinite(lo) and lo > 0:  # below the training range: shaded
            axis.axvspan(-lo, lo, color=figures.GREY, alpha=0.12, lw=0)
        axis.set_xlabel("constant gradient g")
    ax.axhline(0.0, color=figures.GREY, lw=0.8)
    ax.set_ylabel(f"update after {su.get('steps')} steps")
    ax.set_title("Under a constant gradient")
    ax.legend(loc="best")
    rx.set_ylabel("chain / optimizer")
    rx.set_title(f"Ratio (dotted: a factor {1 + tol:.3g})")
    return fig


def bias_section(b: Builder, a: Mapping[str, Any]) -> dict | None:
    """The bias section (``None`` for analyses without a bias reading)."""
    bias = a.get("bias")
    if not bias:
        return None
    u0, g0 = finite(bias.get("update_at_zero")), finite(bias.get("stall_gradient"))
    ref = finite(bias.get("reference"))
    nums = [
        num_row("update_at_zero", f"update after {bias.get('steps')} steps of g = 0", u0),
        num_row(
            "share",
            "the same, relative to the largest steady update",
            abs(u0) / ref if u0 is not None and ref else None,
            fmt(abs(u0) / ref, ".2%") if u0 is not None and ref else "–",
        ),
        num_row("stall_gradient", "g₀: where the steady update vanishes", g0),
    ]
    pct, final = finite(bias.get("stall_percentile")), finite(bias.get("final_gradient"))
    if pct is not None:
        nums.append(
            num_row(
                "stall_percentile", "training gradient entries with |g| ≤ |g₀|", pct, f"{pct:.0f}%"
            )
        )
    if final is not None:
        nums.append(num_row("final_gradient", "median gradient entry at the last step", final))
    figs = []
    if bias.get("gradients") and bias.get("updates"):
        figs.append(
            b.add(
                "bias_steady_update",
                steady_updates_figure(
                    bias["gradients"],
                    bias["updates"],
                    update_at_zero=u0,
                    stall=g0 if bias.get("detected") else None,
                ),
                "The update after the steady steps of a constant gradient g from a fresh state, "
                "against g. A hand-designed optimizer's curve passes through 0 at g = 0; where it "
                "crosses 0 elsewhere (dashed), training comes to rest with every gradient entry "
                "there instead of at a minimum.",
                "bias",
                False,
            )
        )
    su = (a.get("faithfulness") or {}).get("steady_update")
    if isinstance(su, Mapping) and su.get("gradients") and su.get("ratio"):
        figs.append(
            b.add(
                "chain_steady_update",
                chain_steady_figure(su),
                f"Left: the update after the task's {su.get('steps')} steps of a constant "
                "gradient g from a fresh state, for the optimizer and for the chain of the "
                "detected mechanisms with their probed numbers. Right: their ratio where the "
                "optimizer's update is resolved. Where the ratio leaves the dotted band inside "
                "the training range (unshaded), the chain leaves that part of the optimizer's "
                "update function unexplained.",
                "bias",
                False,
            )
        )
    lead = (
        "Beyond the paper's four mechanisms: does the update vanish when the gradient does? "
        "An optimizer that still steps at zero gradient can come to rest only where the "
        "gradient cancels that step, g₀ (on a quadratic its loss then plateaus above the "
        "minimum), or, if the update vanishes nowhere, never."
    )
    return mechanism_section("bias", "Bias", bias, lead, nums, figs)
