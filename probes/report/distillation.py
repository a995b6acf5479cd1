"""The report's distillation section: the mechanisms as an optax chain (``distill.json``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from probes.faithfulness_words import identified_rest_sentence
from probes.report.sections import num_row
from probes.values import finite, plain
from probes.words import attribution_sentence, fmt, identified_added_sentence, pm
from probes.words import label as display_name


def _short(v: Any) -> str:
    """A compact rendering of a chain parameter (long lists and dicts are summarised)."""
    if finite(v) is not None and not isinstance(v, bool):
        return fmt(v, ".4g")
    if isinstance(v, list | tuple):
        return f"[{len(v)} values]" if len(v) > 4 else "[" + ", ".join(_short(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k}: {_short(x)}" for k, x in v.items()) + "}"
    return str(v)


def _chain_text(chain: Any) -> list[dict[str, str]]:
    """``[{"call": "trace(decay=0.913)", "mechanism": "momentum (...)"}]`` from a distill chain."""
    out = []
    for step in chain or []:
        if isinstance(step, Mapping):
            name = step.get("transform", "?")
            args = ", ".join(
                f"{k}={_short(v)}" for k, v in step.items() if k not in ("transform", "mechanism")
            )
            out.append({"call": f"{name}({args})", "mechanism": str(step.get("mechanism") or "")})
        else:
            out.append({"call": str(step), "mechanism": ""})
    return out


def _fraction_row(key: str, label: str, frac: Any) -> dict[str, Any] | None:
    if not isinstance(frac, Mapping) or finite(frac.get("mean")) is None:
        return None
    ci = list(frac.get("ci") or [None, None])[:2]
    ci += [None] * (2 - len(ci))
    shown = f"{fmt(frac.get('mean'), '.0%')} (95% CI {fmt(ci[0], '.0%')} … {fmt(ci[1], '.0%')})"
    return num_row(key, label, [frac.get("mean"), *ci], shown)


def _retune_method(distill: Mapping) -> str:
    rt = (distill.get("notes") or {}).get("retune") or {}
    if "factors" in rt:  # a distill.json from before every number was tuned
        return "global learning-rate and clip factors chosen on training problems"
    start = f", from the {rt['start']} numbers" if rt.get("start") else ""
    return f"every number tuned on the loss of training problems{start}"


def distill_section(distill: Mapping | None) -> dict | None:
    """The distillation section: chain, optax code, results and recovered fractions."""
    if not distill:
        return None
    res = distill.get("results") or {}
    rows = []
    for key, label in (
        ("learned", "learned"),
        ("best_baseline", None),
        ("distilled", "distilled"),
        ("distilled_identified", "distilled, identified"),
        ("distilled_retuned", "distilled, re-tuned"),
    ):
        r = res.get(key)
        if not isinstance(r, Mapping):
            continue
        name = label or f"best baseline ({display_name(str(r.get('name', '?')))})"
        if r.get("label"):
            name += f" ({r['label']})"
        vs = r.get("vs_best_baseline") if isinstance(r.get("vs_best_baseline"), Mapping) else {}
        rows.append(
            {
                "name": name,
                "key": key,
                "metric": finite(r.get("metric")),
                "sem": finite(r.get("sem")),
                "vs_best_baseline": plain(vs) or None,
            }
        )
    gain = distill.get("gain") or {}
    sig = distill.get("significant")
    nums = []
    if gain:
        nums.append(
            num_row(
                "gain",
                "gain of learned over best baseline",
                [gain.get("mean"), gain.get("sem")],
                pm(gain.get("mean"), gain.get("sem")),
            )
        )
    if sig is not None:
        nums.append(num_row("significant", "gain significant", bool(sig), "yes" if sig else "no"))
    notes = []
    frac = _fraction_row("fraction", "fraction of the gain recovered", distill.get("fraction"))
    if frac:
        nums.append(frac)
    elif sig is False:
        notes.append(
            "The recovered fraction is not reported: the learned optimizer does not "
            "significantly beat the best tuned baseline, so there is no gain to share."
        )
    else:
        notes.append("The recovered fraction is not reported in distill.json.")
    frac_i = _fraction_row(
        "fraction_identified",
        "fraction recovered with identified numbers",
        distill.get("fraction_identified"),
    )
    if frac_i:
        nums.append(frac_i)
    frac_r = _fraction_row(
        "fraction_retuned", "fraction recovered after re-tuning", distill.get("fraction_retuned")
    )
    if frac_r:
        nums.append(frac_r)
    for sentence in (identified_added_sentence(distill), identified_rest_sentence(distill)):
        if sentence:
            notes.append(sentence)
    exchanged = attribution_sentence(distill)
    if exchanged:
        notes.append(exchanged)
    if distill.get("reason"):
        notes.append(str(distill["reason"]))
    method = distill.get("fraction") if isinstance(distill.get("fraction"), Mapping) else {}
    if method.get("method"):
        notes.append(f"Interval of the recovered fraction: {method['method']}.")
    code = [
        ("distilled", distill.get("optax_code")),
        ("identified", distill.get("optax_code_identified")),
        ("re-tuned", distill.get("optax_code_retuned")),
    ]
    return {
        "id": "distill",
        "title": "Distillation: the mechanisms as a hand-written optimizer",
        "detected": None,
        "lead": "The detected mechanisms composed into an optax chain, evaluated on the same "
        "held-out problems (written by lopt distill): with the probed numbers as they are; "
        "identified (every number fitted to the learned optimizer's own updates, no loss "
        f"used); and re-tuned ({_retune_method(distill)}). The first two ask whether the "
        "numbers describe the optimizer, the last whether the structure can match it at all.",
        "chain": _chain_text(distill.get("chain")),
        "code": [(k, c) for k, c in code if c],
        "rows": rows,
        "numbers": nums,
        "figures": [],
        "notes": notes,
    }
