"""The report's sign-agreement section: the step after histories of agreeing and flipping signs.

Reads :class:`probes.agreement.Agreement` (``analysis.json`` ``agreement``) and draws ``R(p)``,
the gain after a history whose sign flips with probability ``p`` over a fresh one, at the
reported amplitude, with the rule's band and the switch rate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from probes.agreement import FACTOR
from probes.report.sections import Builder, mechanism_section, num_row
from probes.values import finite, floats


def agreement_figure(g: Mapping[str, Any]) -> Any:
    """``R(p)`` against the flip rate (log ``R`` axis for a wide range), the rule's band, ``p*``."""
    from probes import figures

    fig, (ax,) = figures.figure(width=5.6, height=3.9)
    p, r = floats(g.get("rates")), floats(g.get("ratios"))
    ok = np.isfinite(p) & np.isfinite(r) & (r > 0)
    ax.plot(p[ok], r[ok], color=figures.color("learned"), lw=2.0, marker="o", ms=4)
    ax.axhline(1.0, color=figures.GREY, lw=0.8)
    for level in (FACTOR, 1.0 / FACTOR):
        ax.axhline(level, color=figures.GREY, lw=0.8, ls=":")
    switch = finite(g.get("switch_rate"))
    if switch is not None:
        ax.axvline(switch, color=figures.NEG, lw=1.2, ls="--", label=f"switch p* ≈ {switch:.2f}")
        ax.legend(loc="best")
    if ok.any() and np.max(r[ok]) / np.min(r[ok]) > 10:
        ax.set_yscale("log")
    ax.set_xlabel("probability that the gradient's sign flips per step, p")
    ax.set_ylabel("step after the history / fresh step")
    amp = finite(g.get("amplitude"))
    ax.set_title(f"After {g.get('history')} steps of ±{amp:.2g}" if amp else "After the history")
    return fig


def agreement_section(b: Builder, a: Mapping[str, Any]) -> dict | None:
    """The sign-agreement section (``None`` for analyses without the reading)."""
    g = a.get("agreement")
    if not g:
        return None
    rows = (
        ("agreeing", "step after agreeing signs (p < ½), relative to a fresh one"),
        ("disagreeing", "step after flipping signs (p > ½), relative to a fresh one"),
        ("switch_rate", "p*: flip rate where the step stops growing"),
        ("amplitude", "gradient size |g| of the histories"),
    )
    nums = [num_row(key, label, finite(g.get(key))) for key, label in rows]
    figs = []
    if g.get("rates") and g.get("ratios"):
        figs.append(
            b.add(
                "agreement",
                agreement_figure(g),
                f"The step in response to a gradient after {g.get('history')} steps of random "
                "signs that flip with probability p, relative to the step from a fresh state (a "
                "learning-rate schedule divided out). A linear or memoryless optimizer stays at "
                "1 (solid); a step size that follows sign agreement rises above the dotted band "
                "for agreeing histories (small p) and falls below it for flipping ones.",
                "agreement",
                False,
            )
        )
    lead = (
        "Beyond the paper's four mechanisms: does the step size follow whether successive "
        "gradients agree in sign? Rprop and delta-bar-delta grow the step while the sign holds "
        "and shrink it when it flips; the switch rate p* is the flip rate where the two balance."
    )
    return mechanism_section("agreement", "Sign agreement", g, lead, nums, figs)
