"""Analysis results in plain words: one line per mechanism, as the command line prints them."""

from __future__ import annotations

from typing import Any


def describe(result: dict[str, Any]) -> list[str]:
    """One plain line per mechanism from an ``Analysis.to_json()`` dict."""

    def num(x: Any, spec: str = ".3g") -> str:
        return "?" if x is None else format(x, spec)

    m, c, s, a = (result[k] for k in ("momentum", "clipping", "schedule", "adaptation"))
    pair = (
        f", a complex pair whose response keeps its sign down to "
        f"{num(100 * (m.get('sign_change_level') or 0.0), '.2g')}% of its envelope"
        if m.get("is_real") is False
        else ""
    )
    lines = [
        f"momentum: {'detected' if m['detected'] else 'not detected'} (dominant mode β = "
        f"{num(m['beta'])}, α = {num(m['alpha'])}, timescale {num(m['timescale'])} steps, "
        f"{num(m['share'], '.0%')} of the fitted impulse response{pair})",
        f"clipping: {'detected' if c['detected'] else 'not detected'} (threshold |g| ≈ "
        f"{num(c['threshold'])}; update saturates at {num(c['asymptote_neg'])} for g → -∞ and "
        f"{num(c['asymptote_pos'])} for g → +∞)",
        f"schedule: {'detected' if s['detected'] else 'not detected'} (shape {s['shape']}, "
        f"peak at step {s['peak_step']})",
        f"adaptation: {'detected' if a['detected'] else 'not detected'} (log-log slope of the "
        f"effective learning rate against |g*|: {num(a['slope'])})",
    ]
    for arm, branch in sorted((a.get("branches") or {}).items(), reverse=True):
        folds = ", ".join(num(m) for m in branch.get("fold_magnitudes") or [])
        segs = "; ".join(
            f"|g*| {num(seg['magnitude_range'][0], '.2g')}–{num(seg['magnitude_range'][1], '.2g')}"
            f" ({num(seg['training_fraction'], '.0%')} of training gradients): slope "
            f"{num(seg['slope'], '.2f')}"
            for seg in branch.get("segments") or []
            if seg["stop"] - seg["start"] > 1
        )
        sign = "g* > 0" if arm == "pos" else "g* < 0"
        lines.append(
            f"  {sign}: " + (f"folds at |g*| ≈ {folds}; " if folds else "no fold; ") + segs
        )
    d = result.get("damping")
    if d:
        lo, hi = d.get("gradient_range") or (None, None)
        where = (
            f"gain for sign-flipping gradients, relative to persistent ones, halves at |g| ≈ "
            f"{num(d['kappa'])}, building up with memory ρ ≈ {num(d.get('memory'), '.3g')}"
            if d["detected"]
            else "the gain for sign-flipping gradients, relative to persistent ones, never falls "
            f"below {num(d.get('min_ratio'), '.0%')}"
        )
        lines.append(
            f"oscillation damping: {'detected' if d['detected'] else 'not detected'} ({where}; "
            f"|g| {num(lo, '.2g')}–{num(hi, '.2g')})"
        )
    return lines
