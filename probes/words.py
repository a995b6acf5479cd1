"""Analysis results in plain words: the command line's lines and the report's sentences.

:func:`describe` gives one line per mechanism as ``probes analyze`` prints it;
:func:`summary_sentences`, :func:`results_sentence` and :func:`distill_sentence` write the
report's plain-language summary from the numbers (an ``Analysis.to_json()`` dict, the results
table of ``eval.json``, ``distill.json``); :func:`fmt`, :func:`pm` and :func:`slope` format the
numbers the report's tables show.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lopt.chain import AGREEMENT_BOUND
from probes.detectors import SPARING_TOLERANCE, damping_reference
from probes.transient import FLOOR as TRANSIENT_FLOOR
from probes.transient import GAIN as TRANSIENT_GAIN
from probes.values import finite

#: How the report names the optimizers of ``eval.json``.
NAMES = {
    "learned": "learned",
    "momentum": "momentum",
    "rmsprop": "RMSProp",
    "adam": "Adam",
    "sgd": "SGD",
}


# ----------------------------------------------------------------------------- numbers


def fmt(x: Any, spec: str = ".3g") -> str:
    """``x`` formatted with ``spec`` and a real minus sign; ``∞`` or ``–`` when not finite."""
    v = finite(x)
    if v is None:
        return "∞" if isinstance(x, float) and math.isinf(x) else "–"
    return format(v, spec).replace("-", "−")


def slope(x: Any) -> str:
    """A log-log slope: two significant digits, and ``0`` for float noise (``|s| < 5e-4``)."""
    v = finite(x)
    return "–" if v is None else ("0" if abs(v) < 5e-4 else fmt(v, ".2g"))


def pm(mean: Any, sem: Any, spec: str = ".4f") -> str:
    """``mean ± sem`` (``diverged`` for a ``None`` mean, no ``±`` without a finite s.e.m.)."""
    if finite(mean) is None:
        return "diverged" if mean is None else "–"
    return f"{fmt(mean, spec)} ± {fmt(sem, spec)}" if finite(sem) is not None else fmt(mean, spec)


def label(name: str) -> str:
    """The display name of an optimizer of ``eval.json`` (``rmsprop`` -> ``RMSProp``)."""
    return NAMES.get(name, name)


def join(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def data_note(data_source: str | None) -> str:
    """`` (data: …)`` for data other than a synthetic family's own, else ``""``."""
    if not data_source or data_source == "synthetic":
        return ""
    return f" (data: {data_source})"


# ----------------------------------------------------------------------------- command line


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
            "the gain for sign-flipping gradients halves, by itself and relative to persistent "
            f"ones, at |g| ≈ {num(d['kappa'])}, building up with memory ρ ≈ "
            f"{num(d.get('memory'), '.3g')}{sparing_text(d)}"
            if d["detected"]
            else "at every |g| the gain for sign-flipping gradients keeps at least "
            f"{num(d.get('min_ratio'), '.0%')} of its small-gradient value or of the gain for "
            "persistent ones"
        )
        lines.append(
            f"oscillation damping: {'detected' if d['detected'] else 'not detected'} ({where}; "
            f"|g| {num(lo, '.2g')}–{num(hi, '.2g')})"
        )
    t = result.get("damping_transient")
    if t:
        without, with_ = finite(t.get("error_without")), finite(t.get("error_with"))
        removed = 1.0 - with_ / without if without and with_ is not None else 0.0
        verdict = "detected" if t.get("detected") else "not detected"
        lines.append(
            f"  in the first {t.get('steps')} steps: {verdict}"
            f" (a damping with κ ≈ {num(t.get('kappa'), '.2g')}, ρ ≈ {num(t.get('memory'), '.2g')}"
            f" in front of the other mechanisms removes {max(removed, 0.0):.0%} of their error on"
            f" alternating gradients, error {num(without, '.2g')} without it; the share kept of an"
            f" alternating gradient falls by {num(t.get('gate'), '.0%')} as it grows)"
        )
    b = result.get("bias")
    if b:
        g0, u0 = finite(b.get("stall_gradient")), finite(b.get("update_at_zero"))
        if g0 is not None:
            where = f"it vanishes at g ≈ {num(g0)}" + (
                "" if b["detected"] else ", closer to 0 than the probe resolves"
            )
        else:
            where = "it vanishes nowhere probed" if b["detected"] else "within rounding of 0"
        lines.append(
            f"bias: {'detected' if b['detected'] else 'not detected'} (update "
            f"{num(abs(u0) if u0 == 0 else u0)} after {b.get('steps')} steps of g = 0, largest "
            f"steady update {num(b.get('reference'))}; {where})"
        )
    g = result.get("agreement")
    if g:
        switch = finite(g.get("switch_rate"))
        at = f"; switch at flip rate {switch:.2f}" if switch is not None else ""
        lines.append(
            f"sign agreement: {'detected' if g['detected'] else 'not detected'} (step after "
            f"agreeing signs ×{num(g.get('agreeing'))}, after flipping ones "
            f"×{num(g.get('disagreeing'))} of a fresh step{at}; |g| = {num(g.get('amplitude'))})"
        )
    return lines


def agreement_phrase(g: Mapping[str, Any]) -> str:
    """The summary sentence of an ``agreement`` result dict (:mod:`probes.agreement`)."""
    up, down = finite(g.get("agreeing")), finite(g.get("disagreeing"))
    amp, switch = finite(g.get("amplitude")), finite(g.get("switch_rate"))
    if not g.get("detected") or up is None or down is None:
        hi = max((x for x in map(finite, g.get("agreeing_by_amplitude") or []) if x), default=None)
        most = (
            f" (after agreeing gradients its step is at most ×{hi:.2g} a fresh one)" if hi else ""
        )
        return f"Sign agreement: not detected{most}."
    where = f" at |g| ≈ {amp:.2g}" if amp is not None else ""
    cross = (
        f"; it grows below a flip rate of about {switch:.2f} and shrinks above it"
        if switch is not None
        else ""
    )
    return (
        f"Sign agreement: after gradients that keep their sign its step is ×{up:.2g} a fresh "
        f"one, after gradients that flip ×{down:.2g}{where}{cross} (a step size that follows "
        "the agreement of successive gradients, as in Rprop). The chain from the probed numbers "
        "has no entry for it (no probe reads how fast the step follows the signs), so it leaves "
        "this part of the behaviour unexplained; identification (lopt distill) can add one, "
        "lopt.chain.scale_by_agreement, with numbers fitted to the updates."
    )


def bias_phrase(b: Mapping[str, Any]) -> str | None:
    """The summary sentence of a detected ``bias`` result dict (``None``: not detected)."""
    u0, ref = finite(b.get("update_at_zero")), finite(b.get("reference"))
    if not b.get("detected") or u0 is None:
        return None
    share = f", {abs(u0) / ref:.2%} of its largest steady update" if ref else ""
    head = (
        "Bias: its update does not vanish with the gradient (after "
        f"{b.get('steps')} steps of a zero gradient it still steps by {u0:.2g}{share})"
    )
    g0, pct = finite(b.get("stall_gradient")), finite(b.get("stall_percentile"))
    if g0 is None:
        return head + "; it vanishes nowhere in the probed range: the optimizer drifts."
    final = finite(b.get("final_gradient"))
    share_txt = (
        f"; {pct:.0f}% of the gradient entries met in training are that small or smaller"
        if pct is not None
        else ""
    ) + (f" (the median entry at the last step is {final:.2g})" if final is not None else "")
    return (
        f"{head}. It vanishes at g ≈ {g0:.2g} instead: a parameter comes to rest only where its "
        f"gradient entry is {g0:.2g}, not at a minimum{share_txt}."
    )


def transient_damping_phrase(t: Mapping[str, Any]) -> str:
    """What the first steps of alternating gradients say (a ``damping_transient`` dict)."""
    k, lo, hi = t.get("steps"), *(t.get("amplitudes") or (None, None))
    without, with_ = finite(t.get("error_without")), finite(t.get("error_with"))
    where = f"gradients alternating in sign, |g| {fmt(lo, '.2g')}–{fmt(hi, '.2g')}"
    if without is None or with_ is None:
        return f"first {k} steps: not measured."
    removed = 1.0 - with_ / without if without > 0 else 0.0
    if t.get("detected"):
        return (
            f"In its first {k} steps it damps oscillations: a damping with κ ≈ "
            f"{fmt(t.get('kappa'), '.2g')} and memory ρ ≈ {fmt(t.get('memory'), '.2g')} in front "
            f"of the other mechanisms removes {removed:.0%} of their error on {where} "
            "(the distilled chain carries it)."
        )
    if without < TRANSIENT_FLOOR:
        return (
            f"In its first {k} steps the other mechanisms reproduce it on {where} (error "
            f"{without:.2g}): no damping to find."
        )
    why = f"at least {TRANSIENT_GAIN:.0%} counts"
    if removed >= TRANSIENT_GAIN:
        why = "but it keeps about the same share of an alternating gradient at every amplitude"
    return (
        f"Nor in its first {k} steps: a damping in front of the other mechanisms removes "
        f"{max(removed, 0.0):.0%} of their error on {where} ({why})."
    )


# ----------------------------------------------------------------------------- report


def schedule_phrase(s: Mapping[str, Any]) -> str:
    """The schedule's shape in words, from a ``schedule`` result dict."""
    shape, peak = s.get("shape"), s.get("peak_step")
    n = len(s.get("effective_lr") or [])
    fall = finite(s.get("fall"))
    what = "its step size" if s.get("measure") == "step size" else "α_eff"
    if s.get("constant_gradient_measure", s.get("measure")) != s.get("measure"):
        what = "α_eff and its step along a constant gradient"  # the smaller of their changes
    falls = f" ({what}: falls by {fall:.0%} over {n} steps)" if fall is not None and n else ""
    if shape == "warm-up-then-decay":
        return f"warms up over {peak} steps then decays{falls}"
    if shape == "warm-up":
        return f"warms up over {peak} steps (no decay within {n} steps)"
    if shape == "decay":
        return f"decays its learning rate from the first step{falls}"
    return f"learning-rate schedule not detected ({what}: no shared rise or fall of 5%)"


def range_name(d: Mapping[str, Any]) -> str:
    """Which gradient range a ``damping`` result was decided on (training or probed)."""
    training = str(d.get("gradient_range_source") or "").startswith("training")
    return "the training range" if training else "the probed range"


def buildup_steps(memory: Any, horizon: Any) -> tuple[float | None, bool]:
    """The build-up timescale ``1/(1−ρ)`` of a damping memory ``ρ``, capped at the probe.

    Returns ``(steps, beyond)``: ``steps`` is ``1/(1−ρ)`` (``None`` for no usable ``ρ``), or the
    probe's ``horizon`` with ``beyond`` true when ``1/(1−ρ)`` exceeds it: a probe of ``T`` steps
    cannot tell a build-up longer than ``T`` steps apart from any other.
    """
    rho, T = finite(memory), finite(horizon)
    if rho is None or not 0 <= rho < 1:
        return None, False
    steps = 1.0 / (1.0 - rho)
    return (float(T), True) if T is not None and T > 0 and steps > T else (steps, False)


def buildup_text(memory: Any, horizon: Any) -> str:
    """``about 12 steps`` or ``longer than the 200-step probe`` (see :func:`buildup_steps`)."""
    steps, beyond = buildup_steps(memory, horizon)
    if steps is None:
        return "–"
    return f"longer than the {steps:.0f}-step probe" if beyond else f"about {steps:.0f} steps"


def damping_dip(d: Mapping[str, Any]) -> dict[str, Any] | None:
    """Where the relative gain ``R`` of a ``damping`` result dips lowest within its range.

    Returns ``{"ratio": R, "amplitude": a, "nyquist": N, "dc": G₀(a)/G₀_ref}`` at the smallest
    finite ``R`` inside ``gradient_range`` (``N`` the sign-flipping gain relative to its
    small-amplitude reference, ``dc`` the persistent gain likewise; the reference is the
    detector's, :func:`probes.detectors.damping_reference`), or ``None`` without the arrays.
    """
    amps, ratio = d.get("amplitudes") or [], d.get("ratio") or []
    dc, ny = d.get("dc_gain") or [], d.get("nyquist_gain") or []
    if not (len(amps) == len(ratio) == len(dc) == len(ny)) or not amps:
        return None
    rows = [tuple(finite(x) for x in row) for row in zip(amps, ratio, dc, ny, strict=True)]
    ok = [r for r in rows if None not in r and r[2] > 0 and r[3] > 0]
    if not ok:
        return None
    lo, hi = (finite(x) for x in (list(d.get("gradient_range") or []) + [None, None])[:2])
    ref = damping_reference([r[0] for r in ok], [True] * len(ok), ok[0][0] if lo is None else lo)
    dc0 = float(np.median([ok[i][2] for i in ref]))
    ny0 = float(np.median([ok[i][3] for i in ref]))
    inside = [
        r
        for r in ok
        if (lo is None or r[0] >= lo * (1 - 1e-6)) and (hi is None or r[0] <= hi * (1 + 1e-6))
    ]
    if not inside:
        return None
    a, r, g0, gp = min(inside, key=lambda x: x[1])
    return {"ratio": r, "amplitude": a, "nyquist": gp / ny0, "dc": g0 / dc0}


def sparing_text(d: Mapping[str, Any]) -> str:
    """``; under ±a alternating it keeps 74% of a persistent gradient's gain ...`` or ``""``.

    Said only when the sparing departs from 1 by more than :data:`SPARING_TOLERANCE`: the
    distilled chain's damping (``lopt.chain.damp_oscillations``) scales both alike.
    """
    kept, sp = finite(d.get("persistent_kept")), finite(d.get("sparing"))
    a = finite(d.get("buildup_amplitude"))
    if kept is None or sp is None or a is None or 1 / SPARING_TOLERANCE <= sp <= SPARING_TOLERANCE:
        return ""
    what = (
        "it spares persistent gradients"
        if sp > 1
        else "it damps persistent gradients more than alternating ones"
    )
    return (
        f"; {what}: with ±{a:.2g} alternating on top of a small persistent gradient it keeps "
        f"{kept:.2g} of the persistent gradient's gain and {kept / sp:.2g} of the alternating "
        f"one's (sparing {sp:.2g}; the chain's damp_oscillations keeps the same share of both)"
    )


def damping_phrase(d: Mapping[str, Any]) -> str:
    """The summary sentence of a ``damping`` result dict.

    Not detected, it states the rule's measure: ``max(R, N)`` stays above ``min_ratio``, ``R``
    the sign-flipping gain relative to the persistent one and ``N`` the sign-flipping gain
    relative to its small-gradient value; when ``R`` alone dips below 50%, that it is because
    the persistent gain rises there. A build-up timescale is capped at the probe's horizon.
    """
    kappa, low = finite(d.get("kappa")), finite(d.get("min_ratio"))
    if d.get("detected") and kappa is not None:
        low_txt = f", down to {low:.0%} within {range_name(d)}" if low is not None else ""
        mem = finite(d.get("memory"))
        mem_txt = ""
        if mem is not None and 0.5 <= mem < 1:
            horizon = len(d.get("buildup") or []) or None
            mem_txt = f"; the damping builds up over {buildup_text(mem, horizon)}"
        elif mem is not None and mem < 0.5:
            mem_txt = "; the damping sets in within a step or two"
        return (
            "Damps oscillations: for gradients that flip sign every step its gain, relative to "
            f"persistent gradients, halves at |g| ≈ {kappa:.2g}{low_txt}{mem_txt}"
            f"{sparing_text(d)}."
        )
    keep = f" stays above {low:.0%}" if low is not None else " does not fall far enough"
    out = (
        f"Oscillation damping: not detected; within {range_name(d)} max(R, N){keep}, where R is "
        "the gain for sign-flipping gradients relative to that for persistent ones and N the "
        "sign-flipping gain relative to its small-gradient value"
    )
    dip = damping_dip(d)
    if dip is not None and dip["ratio"] < 0.5 and dip["dc"] > 1:
        out += (
            f"; R alone dips to {dip['ratio']:.0%} at |g| ≈ {dip['amplitude']:.2g} because the "
            f"persistent gain rises there (×{dip['dc']:.2g}) while N stays at "
            f"{dip['nyquist']:.0%}"
        )
    return out + "."


def summary_sentences(a: Mapping[str, Any]) -> list[str]:
    """Plain-language sentences, one per mechanism, generated from the analysis numbers.

    Folds and the slopes between them are the analysis's (``adaptation.branches``), the same
    numbers ``probes analyze`` prints.
    """
    m, c, s, ad = (a.get(k) or {} for k in ("momentum", "clipping", "schedule", "adaptation"))
    out = []
    beta, tau, share = finite(m.get("beta")), finite(m.get("timescale")), finite(m.get("share"))
    resp = "response" if a.get("source") == "optax" else "linearised response"
    if m.get("detected") and beta is not None:
        t = f" (timescale ≈ {tau:.0f} steps)" if tau is not None else ""
        sh = f" carries {share:.0%} of its {resp}" if share is not None else ""
        pair = ""
        if m.get("is_real") is False:
            pair = " (a complex pair whose response stays monotone while it decays)"
        out.append(f"Momentum with β ≈ {beta:.2f}{t}{sh}{pair}.")
    else:
        why = ""
        if beta is not None and share is not None:
            why = f" (dominant mode β ≈ {beta:.2f}, {share:.0%} of the {resp})"
        out.append(f"Momentum: not detected{why}.")
    thr = finite(c.get("threshold"))
    if c.get("detected") and thr is not None:
        out.append(f"Clips updates beyond |g| ≈ {thr:.2g}.")
    else:
        out.append("Gradient clipping: not detected within the probed range.")
    sched = schedule_phrase(s)
    out.append(sched[0].upper() + sched[1:] + ".")
    ad_slope = finite(ad.get("slope"))
    sl = f" (log-log slope {slope(ad_slope)})" if ad_slope is not None else ""
    if ad.get("detected"):
        out.append(f"Adapts its learning rate: α_eff falls as gradients grow{sl}.")
    else:
        extra = ""
        for name in ("pos", "neg"):
            segs = ((ad.get("branches") or {}).get(name) or {}).get("segments") or []
            after = next((x for x in segs[1:] if (finite(x.get("slope")) or 0.0) <= -0.2), None)
            if after is not None:
                extra = (
                    f"; past a fold at |g*| ≈ {after['magnitude_range'][0]:.2g} its fixed points "
                    f"jump to a second branch where it does fall (slope {after['slope']:.2g})"
                )
                break
        out.append(
            "Learning-rate adaptation: not detected; its learning rate does not fall as "
            f"gradients grow{sl}{extra}."
        )
    d, t = a.get("damping") or {}, a.get("damping_transient") or {}
    if d:  # one sentence per mechanism: a first-steps damping joins the steady reading's
        out.append(
            damping_phrase(d) + (" " + transient_damping_phrase(t) if t.get("detected") else "")
        )
    bias = bias_phrase(a.get("bias") or {})
    if bias:
        out.append(bias)
    if (a.get("agreement") or {}).get("detected"):
        out.append(agreement_phrase(a["agreement"]))
    return [x.replace("-0", "−0").replace(" -", " −") for x in out]


def distill_sentence(distill: Mapping[str, Any]) -> str | None:
    """One summary line: how much of the gain the distilled chains recover (``distill.json``)."""
    parts = []
    added = addition_name(identified_addition(distill))
    for key, how in (
        ("fraction", "with the probed numbers"),
        (
            "fraction_identified",
            "with numbers fitted to its updates" + (f" (and {added} added)" if added else ""),
        ),
        ("fraction_retuned", "with numbers tuned on training problems"),
    ):
        f = distill.get(key)
        if isinstance(f, Mapping) and finite(f.get("mean")) is not None:
            ci = [finite(x) for x in list(f.get("ci") or [])[:2]]
            band = f" (95% CI {ci[0]:.0%} … {ci[1]:.0%})" if len(ci) == 2 and None not in ci else ""
            parts.append(f"{how} {f['mean']:.0%}{band}")
    if not parts:
        return None
    steps = [
        str(e.get("mechanism", e.get("transform", "?"))).split(" (")[0]
        for e in distill.get("chain") or []
        if isinstance(e, Mapping)
    ]
    best = ((distill.get("results") or {}).get("best_baseline") or {}).get("name")
    over = f" over tuned {label(str(best))}" if best else ""
    chain = f" ({' → '.join(steps)})" if steps else ""
    return (
        f"Written as an optax chain{chain}, the mechanisms recover this share of its gain{over}: "
        + "; ".join(parts)
        + "."
    )


#: A sign-agreement side whose rate times the farthest the log-gain can be from its target
#: (from 0 or from the other side's target, each within ``±ln 10⁴``) is below this moves the
#: gain by less than 1% per step: the words call that side idle rather than quote a target
#: the gain never approaches.
AGREEMENT_IDLE = 0.01


def addition_name(added: str | None) -> str | None:
    """How sentences name what identification added (``notes.identify.added``)."""
    return {"damping": "oscillation damping", "sign agreement": "a sign-agreement gain"}.get(
        added or ""
    )


def identified_addition(distill: Mapping[str, Any]) -> str | None:
    """What identification added to the chain: ``"damping"``, ``"sign agreement"`` or ``None``.

    Read from ``distill.json``'s notes; files written before agreement could be added say
    only ``damping_added``.
    """
    ident = (distill.get("notes") or {}).get("identify") or {}
    if "added" in ident:
        return ident["added"] if ident["added"] in ("damping", "sign agreement") else None
    return "damping" if ident.get("damping_added") else None


def _agreement_sides(entry: Mapping[str, Any]) -> list[str]:
    """How a ``scale_by_agreement`` entry moves its gain while signs agree and while they flip."""
    bound = math.log(AGREEMENT_BOUND)
    logs = [finite(entry.get(k)) for k in ("agreeing", "disagreeing")]
    logs = [max(-bound, min(bound, math.log(v))) if v is not None and v > 0 else None for v in logs]
    sides = []
    for j, (gain, rate, when) in enumerate(
        (("agreeing", "rise", "agree in sign"), ("disagreeing", "fall", "flip"))
    ):
        r = finite(entry.get(rate))
        # the log-gain lies between 0 and the two targets: the farthest it can be from this
        # side's target bounds the pull of this side's rate
        pull = (
            r * max(abs(logs[j]), abs(logs[j] - logs[1 - j]))
            if r is not None and None not in logs
            else None
        )
        if pull is not None and pull < AGREEMENT_IDLE:  # the target is then irrelevant
            sides.append(f"barely moved while they {when} (rate {fmt(r)} per step)")
        else:
            sides.append(
                f"toward ×{fmt(entry.get(gain))} while they {when} (a share {fmt(r)} of the "
                "way per step)"
            )
    return sides


def identified_added_sentence(distill: Mapping[str, Any]) -> str | None:
    """Says so when identification added a mechanism the probes did not put in the chain."""
    ident = (distill.get("notes") or {}).get("identify") or {}
    added = identified_addition(distill)
    entries = [e for e in distill.get("chain_identified") or [] if isinstance(e, Mapping)]
    if added == "damping":  # the added damping: first, or behind a bias's offset
        entry = next((e for e in entries if e.get("transform") != "offset_gradient"), None)
        if entry is None or entry.get("transform") != "damp_oscillations":
            return None
        what = (
            "oscillation damping in front of the chain (κ = "
            f"{fmt(entry.get('scale'))}, memory ρ = {fmt(entry.get('decay'))})"
        )
    elif added == "sign agreement":  # the detected chain never has one
        entry = next((e for e in entries if e.get("transform") == "scale_by_agreement"), None)
        if entry is None:
            return None
        what = (
            "a gain that follows the signs of successive gradients, in front of the chain's "
            "linear stage ("
            + "; ".join(_agreement_sides(entry))
            + f"; κ = {fmt(entry.get('scale'))})"
        )
    else:
        return None
    errors: dict[str, float] = {}
    for c in ident.get("candidates") or []:
        v = finite(c.get("validation_error"))
        if v is not None:
            errors[c["structure"]] = min(v, errors.get(c["structure"], math.inf))
    plain, extended = errors.get("detected"), errors.get(f"detected + {added}")
    than = f" ({fmt(extended)} against {fmt(plain)})" if plain and extended else ""
    return (
        f"Identification added {what}, which the detected chain lacks: with it the chain's "
        f"imitation error on validation problems is lower{than}."
    )


#: The mechanism a chain transform stands for, in sentences.
TRANSFORM_NAMES = {
    "offset_gradient": "bias",
    "damp_oscillations": "damping",
    "scale_by_agreement": "sign agreement",
    "soft_clip": "clipping",
    "clip": "clipping",
    "trace": "momentum",
    "momentum_modes": "momentum",
    "scale_by_rms": "normaliser",
    "scale_by_sign": "sign",
    "scale_by_learning_rate": "learning rate",
}


def attribution_sentence(distill: Mapping[str, Any], listing: bool = True) -> str | None:
    """The one-mechanism exchanges of ``distill.json`` in words (``attribution``), or ``None``.

    Without ``listing`` only the sentence naming the costliest probed numbers (for a caller that
    shows the exchanges as a table).
    """

    def frac(cell: Any) -> float | None:
        f = cell.get("fraction") if isinstance(cell, Mapping) else None
        return finite(f.get("mean")) if isinstance(f, Mapping) else None

    rows = [r for r in distill.get("attribution") or [] if isinstance(r, Mapping)]
    parts, costs = [], []
    ident = finite((distill.get("fraction_identified") or {}).get("mean"))
    for r in rows:
        name = TRANSFORM_NAMES.get(str(r.get("transform")), str(r.get("transform", "?")))
        if r.get("probed_here_only") is None:
            name += " (added by identification)"
        a, b = frac(r.get("identified_here_only")), frac(r.get("probed_here_only"))
        if a is None and b is None:
            continue
        parts.append(f"{name} {fmt_pct(a)} / {fmt_pct(b)}")
        if b is not None and ident is not None:
            costs.append((ident - b, name, b))
    if not parts:
        return None
    said = []
    if listing:
        said.append(
            "Exchanging one mechanism's numbers between the probed and the identified chain "
            "(share of the gain recovered by the probed chain with that mechanism identified / "
            f"by the identified chain with that mechanism probed): {'; '.join(parts)}. The "
            "learning rate stays the receiving chain's, so exchanging the momentum also changes "
            "the steady step."
        )
    if costs:
        cost, name, b = max(costs)
        if cost > 0:
            said.append(
                f"The {name}'s probed numbers cost the identified chain the most "
                f"({ident:.0%} → {b:.0%})."
            )
    return " ".join(said) or None


def fmt_pct(x: float | None) -> str:
    """``x`` as a whole percentage, or ``n/a``."""
    return "n/a" if x is None else f"{x:.0%}"


def results_sentence(res: Mapping[str, Any]) -> str:
    """Which tuned baselines the learned optimizer beats at each horizon (the results table)."""
    parts = []
    for h in res["horizons"]:
        won = [label(r["name"]) for r in h["rows"] if r["learned_better"]]
        lost = [label(r["name"]) for r in h["rows"] if r["learned_better"] is False]
        mult = h.get("multiple")
        when = (
            f"at the training horizon ({h['steps']} steps)"
            if mult == 1
            else (f"at {mult:.3g}× it ({h['steps']} steps)" if mult else f"at {h['steps']} steps")
        )
        s = f"{when} it beats {join(won) if won else 'no tuned baseline'}"
        if won and lost:
            s += f" but not {join(lost)}"
        parts.append(s)
    task = f" {res['task']}" if res.get("task") else ""
    n = f"{res['num_problems']} " if res.get("num_problems") else ""
    return (
        f"On {n}held-out{task} problems{data_note(res.get('data_source'))} (mean normalised loss, "
        "paired differences > 2 s.e.m.), " + "; ".join(parts) + "."
    )


def headline_sentences(res: Mapping[str, Any], bias: Mapping[str, Any] | None = None) -> list[str]:
    """The result first: the learned optimizer against the best tuned baseline.

    A second sentence says when it plateaus: its final loss far above the baseline's although
    it wins on the average over the horizon; with a detected ``bias`` (an analysis's) whose
    update vanishes at some ``g₀``, it points to it.
    """
    h = next((h for h in res["horizons"] if h.get("multiple") == 1), res["horizons"][0])
    rows = {r["name"]: r for r in h["rows"]}
    mine, best = rows.get(res.get("learned", "learned")), rows.get(h.get("best_baseline"))
    if not mine or not best or mine["metric"] is None or best["metric"] is None:
        return []
    verdict = "beats every tuned baseline" if h.get("beats_all") else "does not beat them all"
    out = [
        f"Result: over {h['steps']} steps the learned optimizer's mean normalised loss is "
        f"{mine['metric']:.3g}, against {best['metric']:.3g} for the best tuned baseline "
        f"({label(best['name'])}); it {verdict}."
    ]
    lf, bf = finite(mine.get("final")), finite(best.get("final"))
    if lf is not None and bf is not None and lf > 10 * max(bf, 1e-30):
        out.append(
            f"It plateaus: its final loss, {lf:.2g}, stays far above {label(best['name'])}'s "
            f"{bf:.2g}; it wins on the average over the horizon, not at the end."
        )
        bias = bias or {}
        g0 = finite(bias.get("stall_gradient"))
        if bias.get("detected") and g0 is not None:
            out[-1] = out[-1][:-1] + (
                f" (its update vanishes at a gradient entry of {g0:.2g}, not 0: see Bias)."
            )
    return out
