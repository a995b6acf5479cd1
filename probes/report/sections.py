"""The report's sections: the results table and the clipping, schedule and damping sections.

A section is a dict (``id``, ``title``, ``detected``, ``lead``, ``numbers``, ``figures``,
``notes``) that :mod:`probes.report.page` renders and :mod:`probes.report.pipeline` stores in
``report.json``; :class:`Builder` draws and writes its figures. The momentum, adaptation and
distillation sections have their own modules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from probes.values import finite, floats, plain
from probes.words import buildup_text, fmt, range_name
from probes.words import label as display_name

#: Words that depend on what was analysed: a learned optimizer's own cell (``source ==
#: "cell"``) or a black-box optax transformation (``"optax"``), which learned nothing.
WORDING: dict[str, dict[str, str]] = {
    "cell": {
        "summary_heading": "What the optimizer learned",
        "dominant_mode": "the learned dominant mode",
        "dominant_label": "dominant (learned)",
    },
    "optax": {
        "summary_heading": "What the optimizer does",
        "dominant_mode": "the optimizer's dominant mode",
        "dominant_label": "dominant mode",
    },
}


def wording(source: Any) -> dict[str, str]:
    """:data:`WORDING` for an analysis's ``source`` (the black-box words for any other)."""
    return WORDING.get(str(source), WORDING["optax"])


class Builder:
    """Collects sections, numbers and figures while the report is assembled."""

    def __init__(self, out_dir: Path):
        from probes import figures

        self.fig = figures
        self.dir = out_dir / "figures"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.figures: list[dict[str, Any]] = []
        self.pngs: dict[str, bytes] = {}

    def add(self, name: str, fig: Any, caption: str, section: str, white_box: bool) -> dict:
        """Writes ``figures/NAME.png`` and returns its entry in ``report.json``'s ``figures``."""
        from lopt.rundir import atomic_write

        data = self.fig.png(fig)
        rel = f"figures/{name}.png"
        atomic_write(self.dir / f"{name}.png", lambda f: f.write(data))
        self.pngs[rel] = data
        w, h = fig.get_size_inches()
        entry = {
            "file": rel,
            "caption": caption,
            "section": section,
            "white_box": white_box,
            "wide": bool(w / h > 1.8),
        }
        self.figures.append(entry)
        return entry


def num_row(key: str, label: str, value: Any, display: str | None = None) -> dict[str, Any]:
    """One row of a section's numbers table: ``key``, ``label``, ``value`` and ``display``."""
    return {"key": key, "label": label, "value": plain(value), "display": display or fmt(value)}


def loss_section(b: Builder, res: dict | None, distill: Mapping | None) -> dict | None:
    """The loss curves of the results (``eval.json``, and ``distill.json``'s chains)."""
    if res is None:
        return None
    panels = []
    for i, h in enumerate(res["horizons"]):
        curves = {}
        for r in h["rows"]:
            if r["curve_mean"]:
                curves[r["name"]] = {
                    "mean": r["curve_mean"],
                    "sem": r["curve_sem"] or [],
                    "label": display_name(r["name"]),
                }
        if i == 0 and distill:
            for name, c in (distill.get("curves") or {}).items():
                if isinstance(c, Mapping) and c.get("mean"):
                    key = name if str(name).startswith("distilled") else f"distilled ({name})"
                    label = key.replace("distilled_retuned", "distilled, re-tuned").replace(
                        "distilled_identified", "distilled, identified"
                    )
                    curves[key] = {"mean": c["mean"], "sem": c.get("sem") or [], "label": label}
        if curves:
            mult = f" ({h['multiple']:.0f}× horizon)" if h.get("multiple") else ""
            panels.append({"title": f"{h['steps']} steps{mult}", "curves": curves})
    figs = []
    if panels:
        figs.append(
            b.add(
                "loss_curves",
                b.fig.loss_curves(panels),
                f"Normalised loss f_t/f_0 (log scale), mean ± s.e.m. over {res.get('num_problems')}"
                " held-out problems. Look for the learned curve (blue) below the tuned baselines"
                " early on, and whether it keeps improving at twice the training horizon.",
                "results",
                False,
            )
        )
    return {"figures": figs}


def mechanism_section(
    key: str,
    title: str,
    result: Mapping,
    lead: str,
    nums: list,
    figs: list,
    notes: Sequence[str] = (),
) -> dict:
    """One mechanism's section of the page: its detector's verdict, numbers and figures."""
    return {
        "id": key,
        "title": title,
        "detected": bool(result.get("detected")),
        "lead": lead,
        "numbers": nums,
        "figures": figs,
        "notes": list(notes),
    }


def results_table(evaluation: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The comparison table from an ``eval.json`` dict (``lopt.eval/1``), robust to gaps."""
    if not evaluation or not isinstance(evaluation.get("horizons"), Mapping):
        return None
    learned = evaluation.get("learned", "learned")
    base_h = finite(evaluation.get("horizon"))
    horizons = []
    for key in sorted(evaluation["horizons"], key=lambda k: float(k)):
        block = evaluation["horizons"][key] or {}
        rows = []
        optimizers = dict(block.get("optimizers") or {})
        names = sorted(optimizers, key=lambda n: (n != learned, list(optimizers).index(n)))
        for name in names:
            o = optimizers[name]
            v = (block.get("versus") or {}).get(name) or {}
            diff = finite(v.get("diff"))
            rows.append(
                {
                    "name": name,
                    "metric": finite(o.get("metric")),
                    "sem": finite(o.get("sem")),
                    "final": finite(o.get("final")),
                    "diverged": o.get("diverged"),
                    "hyperparams": plain(o.get("hyperparams") or {}),
                    # Shown as baseline − learned: positive means the learned optimizer is better.
                    "diff_baseline_minus_learned": None if diff is None else -diff,
                    "diff_sem": finite(v.get("diff_sem")),
                    "learned_better": v.get("beats") if v else None,
                    # problems where only the learned optimizer diverged (rule "better" out)
                    "learned_diverged": v.get("learned_diverged") if v else None,
                    "curve_mean": o.get("curve_mean"),
                    "curve_sem": o.get("curve_sem"),
                }
            )
        steps = int(float(key))
        mult = steps / base_h if base_h else None
        horizons.append(
            {
                "steps": steps,
                "multiple": mult,
                "best_baseline": block.get("best_baseline"),
                "beats_all": block.get("beats_all"),
                "rows": rows,
            }
        )
    return {
        "learned": learned,
        "num_problems": evaluation.get("num_problems"),
        "task": (evaluation.get("task") or {}).get("name"),
        "data_source": (evaluation.get("task") or {}).get("data_source"),
        "horizons": horizons,
    }


def clipping_section(b: Builder, a: Mapping) -> dict:
    """The clipping section: the update function at ``h0`` and its threshold."""
    c = a.get("clipping") or {}
    nums = [
        num_row(
            "threshold",
            "threshold |g| (slope halves)",
            c.get("threshold"),
            fmt(c.get("threshold"), ".3g"),
        ),
        num_row("threshold_pos", "threshold for g > 0", c.get("threshold_pos")),
        num_row("threshold_neg", "threshold for g < 0", c.get("threshold_neg")),
        num_row("asymptote_pos", "U(h0, +g_max)", c.get("asymptote_pos")),
        num_row("asymptote_neg", "U(h0, −g_max)", c.get("asymptote_neg")),
        num_row("slope0", "slope ∂U/∂g at g = 0", c.get("slope0")),
    ]
    counts = np.asarray(c.get("histogram_counts") or [], float)
    edges = np.asarray(c.get("histogram_edges") or [], float)
    if counts.size and edges.size == counts.size + 1:
        centres = 0.5 * (edges[1:] + edges[:-1])
        thr = finite(c.get("threshold"))
        if thr is not None and counts.sum() > 0:
            frac = float(counts[np.abs(centres) > thr].sum() / counts.sum())
            nums.append(
                num_row(
                    "fraction_beyond_threshold",
                    "training gradients beyond the threshold",
                    frac,
                    f"{frac:.1%}",
                )
            )
    g = floats(c.get("gradients") or [])
    figs = []
    if g.size:
        gmax = float(np.nanmax(np.abs(g)))
        thr = [t for t in (finite(c.get("threshold_pos")), finite(c.get("threshold_neg"))) if t]
        span = float(np.max(np.abs(edges))) if edges.size else 0.0
        xlim = max([3 * t for t in thr] + [span]) if (thr or span) else gmax
        xlim = min(xlim, gmax) or gmax
        figs.append(
            b.add(
                "clipping_update_function",
                b.fig.clipping(
                    g,
                    c.get("updates") or [],
                    slope0=finite(c.get("slope0")) or 0.0,
                    threshold_pos=finite(c.get("threshold_pos")),
                    threshold_neg=finite(c.get("threshold_neg")),
                    hist_counts=counts if counts.size else None,
                    hist_edges=edges if edges.size else None,
                    xlim=xlim,
                ),
                "The first update as a function of the gradient (blue) against the linear update "
                "with the same slope at g = 0 (dotted), over the histogram of gradients seen in "
                "training (grey). Clipping shows as the curve bending away from the line and "
                "flattening; dashed lines mark where its slope has halved.",
                "clipping",
                False,
            )
        )
    lead = (
        "Clipping is read from the update function at the initial state, U(h0, g): its "
        "slope at large |g| falls well below its slope at g = 0 (docs/method.md, Clipping)."
    )
    return mechanism_section("clipping", "Gradient clipping", c, lead, nums, figs)


def schedule_section(b: Builder, a: Mapping) -> dict:
    """The schedule section: ``α_eff`` along the autonomous dynamics."""
    s = a.get("schedule") or {}
    lr = floats(s.get("effective_lr") or [])
    nums = [
        num_row("shape", "shape", s.get("shape"), str(s.get("shape"))),
        num_row("peak_step", "peak step", s.get("peak_step"), str(s.get("peak_step"))),
        num_row("rise", "rise before the peak", s.get("rise"), fmt(s.get("rise"), ".0%")),
        num_row("fall", "fall after the peak", s.get("fall"), fmt(s.get("fall"), ".0%")),
    ]
    if s.get("constant_gradient_measure") == "step size" and s.get("measure") != "step size":
        nums.append(
            num_row(
                "constant_gradient_measure",
                "second curve",
                s.get("constant_gradient_measure"),
                "step along a constant gradient",
            )
        )
    steps = s.get("measure") == "step size"
    what = "step size |u|" if steps else "α_eff"
    if lr.size and np.isfinite(lr).any():
        nums.append(num_row("alpha_eff_first", f"{what} at step 0", lr[0]))
        nums.append(num_row("alpha_eff_peak", f"{what} at the peak", np.nanmax(np.abs(lr))))
        nums.append(num_row("alpha_eff_last", f"{what} at step {lr.size - 1}", lr[-1]))
    figs = []
    if lr.size:
        curve = (
            "The step size |u_t| of this sign-like update (its slope −∂U/∂g is 0) for a gradient "
            "of the typical scale after t zero gradients from its initial state."
            if steps
            else "The effective learning rate α_eff = −∂U/∂g at g = 0 while the optimizer runs on "
            "zero gradients from its initial state."
        )
        figs.append(
            b.add(
                "schedule_alpha_eff",
                b.fig.schedule(
                    lr,
                    peak=s.get("peak_step"),
                    shape=str(s.get("shape")),
                    ylabel="step size |u_t|" if steps else None,
                ),
                curve + " A rise is a warm-up, a fall a decay: the schedule the optimizer carries "
                "in its state, independent of the problem.",
                "schedule",
                False,
            )
        )
    lead = (
        "A schedule is read along the autonomous dynamics h_{t+1} = F(h_t, 0): how the "
        "optimizer's learning rate changes with time alone (docs/method.md, Schedule)."
    )
    return mechanism_section("schedule", "Learning-rate schedule", s, lead, nums, figs)


def damping_section(b: Builder, a: Mapping) -> dict | None:
    """The oscillation-damping section (``None`` for analyses without it)."""
    d = a.get("damping")
    if not d:
        return None
    amps = floats(d.get("amplitudes") or [])
    gr = d.get("gradient_range")
    rng = tuple(float(x) for x in gr) if gr and all(x is not None for x in gr) else None
    nums = [
        num_row("kappa", "κ: relative gain halves at |g|", d.get("kappa"), fmt(d.get("kappa"))),
        num_row(
            "min_ratio",
            f"smallest max(R, N) in {range_name(d)}",
            d.get("min_ratio"),
            fmt(d.get("min_ratio"), ".0%"),
        ),
    ]
    mem = finite(d.get("memory"))
    if mem is not None:
        nums.append(
            num_row(
                "memory",
                "memory ρ of its build-up (timescale 1/(1−ρ) steps)",
                mem,
                f"{mem:.3g} ({buildup_text(mem, len(d.get('buildup') or []) or None)})"
                if mem < 1
                else fmt(mem),
            )
        )
    sp = finite(d.get("sparing"))
    if sp is not None:
        nums.append(
            num_row(
                "persistent_kept",
                "persistent gain kept with ±a_m alternating on top",
                d.get("persistent_kept"),
                fmt(d.get("persistent_kept"), ".2g"),
            )
        )
        nums.append(
            num_row(
                "sparing",
                "sparing: persistent share kept over alternating share kept (1: both alike)",
                sp,
                fmt(sp, ".3g"),
            )
        )
    dc = floats(d.get("dc_gain") or [])
    ny = floats(d.get("nyquist_gain") or [])
    if dc.size and np.isfinite(dc[0]) and np.isfinite(ny[0]):
        nums.append(num_row("dc_gain_small", "persistent gain, smallest amplitude", dc[0]))
        nums.append(num_row("nyquist_gain_small", "sign-flipping gain, smallest amplitude", ny[0]))
    if rng:
        nums.append(
            num_row(
                "gradient_range",
                "range where it is decided",
                list(rng),
                f"{rng[0]:.2g} – {rng[1]:.2g}",
            )
        )
    figs = []
    if amps.size:
        figs.append(
            b.add(
                "damping_gains",
                b.fig.damping(
                    amps,
                    dc,
                    ny,
                    d.get("ratio") or [],
                    kappa=finite(d.get("kappa")),
                    gradient_range=rng,
                    buildup=d.get("buildup") or None,
                    buildup_fit=d.get("buildup_fit") or None,
                    memory=finite(d.get("memory")),
                    buildup_amplitude=finite(d.get("buildup_amplitude")),
                    range_label="training |g|" if "training" in range_name(d) else "probed |g|",
                ),
                "Left: the steady update per unit gradient for a constant gradient a (blue) and "
                "for a gradient alternating +a, −a (red), at the end of the probe's sequences "
                "from the initial state (200 steps unless set otherwise). Middle: their ratio "
                "relative to its small-amplitude value (the median over the three smallest "
                "amplitudes below the shaded range). "
                "Momentum, clipping, RMSProp and Adam keep it at 1; it falls when the "
                "optimizer damps gradients that keep changing sign. The shaded band is the "
                "range where detection is decided (training gradients when known). Right (when "
                "detected): "
                "the sign-flipping gain step by step from a fresh state at a ≈ 3κ, relative to "
                "a tiny amplitude, and the damping memory ρ fitted to it.",
                "damping",
                False,
            )
        )
    lead = (
        "Beyond the paper's four mechanisms: does the optimizer take smaller steps on gradients "
        "that flip sign every step (stiff directions, where a large learning rate oscillates) "
        "than on gradients that persist (flat directions)? Damping of this kind lets it use a "
        "learning rate above the linear stability limit of its stiffest directions."
    )
    return mechanism_section("damping", "Oscillation damping", d, lead, nums, figs)
