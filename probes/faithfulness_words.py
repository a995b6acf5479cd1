"""Sentences on faithfulness: memory and gain along training, steady update, coming to rest."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from probes.memory_along import TOLERANCE as MEMORY_TOLERANCE
from probes.steady_update import TOLERANCE as STEADY_TOLERANCE
from probes.values import finite


def memory_along_sentence(ma: Any) -> str | None:
    """The memory along training trajectories against the convergence point's, or ``None``."""
    if not isinstance(ma, Mapping):
        return None
    pairs = [
        (s, finite(m)) for s, m in zip(ma.get("starts") or [], ma.get("memory") or [], strict=False)
    ]
    pairs = [(s, m) for s, m in pairs if m is not None]
    if not pairs:
        return None
    mem = [m for _, m in pairs]
    divided = ", the detected schedule divided out" if ma.get("schedule_divided") else ""
    span = f"{min(mem):.2g}–{max(mem):.2g}" if len(mem) > 1 else f"{mem[0]:.2g}"
    where = f"steps {pairs[0][0]}–{pairs[-1][0]}" if len(pairs) > 1 else f"step {pairs[0][0]}"
    text = (
        f"Along its own training trajectories its response to a gradient, summed over "
        f"{ma.get('lags')} steps, is {span} times its immediate step (its memory, from {where}"
        f"{divided})"
    )
    m0 = finite(ma.get("convergence_memory"))
    if m0 is None:
        why = ma.get("not_compared")
        return text + (f"; not compared with the convergence point ({why})." if why else ".")
    if ma.get("state_dependent"):
        return text + (
            f", against {m0:.2g} at the convergence point where momentum is read: its memory "
            "depends on its state, which one momentum read at one state does not carry."
        )
    tol = finite(ma.get("tolerance")) or MEMORY_TOLERANCE
    return text + (
        f", within a factor {1 + tol:.3g} of the convergence point's {m0:.2g}: the momentum "
        "read there holds along training."
    )


def gain_along_sentence(ma: Any) -> str | None:
    """The chain's steady gain along training against the optimizer's, when they differ.

    ``None`` when there is no ratio, or when it is within a factor ``1 + TOLERANCE`` of 1 (the
    memory-along tolerance): the chain then steps as far as the optimizer where it trains.
    """
    if not isinstance(ma, Mapping):
        return None
    r = finite(ma.get("gain_ratio"))
    tol = finite(ma.get("tolerance")) or MEMORY_TOLERANCE
    if r is None or (1 / (1 + tol) <= r <= 1 + tol):
        return None
    pairs = [
        (s, finite(c), finite(o))
        for s, c, o in zip(
            ma.get("starts") or [],
            ma.get("chain_gain") or [],
            ma.get("steady_gain") or [],
            strict=False,
        )
    ]
    ratios = [c / o for _, c, o in pairs if c is not None and o is not None and o > 0]
    span = f" ({min(ratios):.2g}–{max(ratios):.2g} over the starts)" if len(ratios) > 1 else ""
    return (
        f"along the optimizer's training trajectories the chain moves {r:.2g}× as far as the "
        f"optimizer per persistent change of gradient{span}"
    )


def _num(x: float) -> str:
    """``x`` to three significant figures, with a true minus sign."""
    return f"{x:.3g}".replace("-", "−")


def steady_sentence(su: Any) -> str | None:
    """Where the chain's steady update parts from the optimizer's, or ``None``.

    ``None`` when nothing was compared, or when the chain's update is finite at every point
    compared and every ratio is within a factor ``1 + tolerance`` of 1
    (:mod:`probes.steady_update`): the chain then steps as the optimizer does under any
    persistent gradient of the training range.
    """
    if not isinstance(su, Mapping):
        return None
    span = su.get("ratio_range") or []
    lo, hi = (finite(x) for x in span) if len(span) == 2 else (None, None)
    at = finite(su.get("worst_gradient"))
    worst = finite(su.get("worst_ratio"))
    tol = finite(su.get("tolerance"))
    tol = STEADY_TOLERANCE if tol is None else tol
    broken = [x for x in (su.get("not_finite") or []) if finite(x) is not None]
    if at is None or (not broken and (lo is None or hi is None or worst is None)):
        return None
    if not broken and 1 / (1 + tol) <= lo and hi <= 1 + tol:
        return None
    share, seen = finite(su.get("outside_share")), finite(su.get("compared_share"))

    def pct(x: float) -> str:
        return "under 1%" if 0 < x < 0.01 else f"{x:.0%}"

    where = ""
    if share is not None:
        of = f" compared ({pct(seen)} of those in the training range)" if seen is not None else ""
        where = (
            f"; {pct(share)} of the training gradient entries{of} fall where it is off by more "
            f"than a factor {_num(1 + tol)}"
        )
    if broken:
        text = (
            f"under a constant gradient the chain's update is not finite at {len(broken)} of "
            f"the gradients compared (first at g = {_num(broken[0])})"
        )
        if lo is not None and hi is not None:
            text += f", and {_num(lo)} to {_num(hi)} times the optimizer's elsewhere"
        return text + where.replace("; ", " (", 1) + (")" if where else "")
    worst_text = (
        f"it steps the other way at g = {_num(at)}"
        if worst <= 0
        else f"{_num(worst)}× at g = {_num(at)}"
    )
    return (
        f"under a constant gradient the chain's steady step is {_num(lo)} to {_num(hi)} times "
        f"the optimizer's over the training range ({worst_text}{where})"
    )


def faithfulness_sentence(f: Mapping[str, Any]) -> str | None:
    """How well the detected mechanisms, with their probed numbers, reproduce the optimizer."""
    err = finite(f.get("update_error"))
    if err is None:
        return None
    out = (
        f"Faithfulness: composed with their probed numbers, the detected mechanisms reproduce "
        f"its updates to within {err:.0%} (relative error, median over {f.get('num_problems')} "
        "problems)"
    )
    lc, ll = finite(f.get("loss_chain")), finite(f.get("loss_learned"))
    if ll is not None:
        chain = f"{lc:.3g}" if lc is not None else "diverged"
        out += (
            f"; on held-out problems they reach a mean normalised loss of {chain} (itself {ll:.3g})"
        )
    gain = gain_along_sentence(f.get("memory_along"))
    for part in (gain, steady_sentence(f.get("steady_update"))):
        if part:
            out += f"; {part}"
    worst = [
        (v["error_share"] - v["update_share"], name)
        for part in (f.get("residual") or {}).values()
        for name, v in part.items()
    ]
    if err > 0.1 and worst:
        excess, where = max(worst)
        if excess > 0.2:
            out += (
                f"; the unexplained part sits in the {where.replace('_', ' ')} updates "
                f"({excess:+.0%} more of the error than of the updates)"
            )
    return out + "."


def identified_rest_sentence(distill: Mapping[str, Any]) -> str | None:
    """What identification's rest rule did (``notes.identify``), or ``None`` if nothing rang.

    A fitted candidate *rings* when it keeps stepping where the learned optimizer comes to rest
    (:func:`probes.distill.identify.rings`); settling candidates rank first.
    """
    ident = (distill.get("notes") or {}).get("identify") or {}
    cands = [c for c in ident.get("candidates") or [] if isinstance(c, Mapping)]
    ringing = [finite(c.get("late_rms")) for c in cands if c.get("rings")]
    rest = finite(ident.get("rest_rms"))
    if not ringing or rest is None:
        return None
    lates = [v for v in ringing if v is not None]
    span = (
        "not finite"
        if not lates
        else f"{min(lates):.3g}"
        if min(lates) == max(lates)
        else f"{min(lates):.3g}–{max(lates):.3g}"
    )
    stepping = (
        f"keep stepping where the learned optimizer comes to rest (RMS update over the last "
        f"quarter of the horizon on the median problem {span}, against its {rest:.3g})"
    )
    selected = ident.get("selected")
    if isinstance(selected, int) and 0 <= selected < len(cands) and cands[selected].get("rings"):
        return (
            f"Identification: all {len(cands)} candidates {stepping}; the identified chain is "
            "the one that replays the updates best."
        )
    where = f"{len(ringing)} of {len(cands)} candidates {stepping}"
    fits_ring = all(c.get("rings") for c in cands if c.get("round"))
    if ident.get("selected_round") == 0 and fits_ring:
        return (
            f"Identification: {where}; no fit settles, so the identified chain keeps the "
            "probed numbers."
        )
    return f"Identification: {where}; it keeps the best of those that settle."
