"""Several learned optimizers side by side: which mechanisms are universal, which idiosyncratic.

:func:`compare_runs` reads each run's analysis (``RUN/analysis.json``, computed with
:func:`probes.runs.analyze_run` and written there if missing) and, when present, its evaluation
(``RUN/eval.json``), and writes to ``out_dir``:

* ``compare.json`` (schema ``probes.compare/1``): one table row per run (detected mechanisms
  and their numbers, fixed-point structure at ``g* = 0``, held-out results), and a summary:
  mechanisms detected in every run (*universal*), in some (*idiosyncratic*, with the runs), in
  none, and the spread (mean, standard deviation, range) of momentum ``β``, ``α``, the clip
  threshold and the schedule's peak step across the runs that show them;
* ``figures/*.png`` (seaborn on Agg, via :mod:`probes.figures`): the ``α``–``β`` spectra of every
  run overlaid (fitted modes, dominant mode starred) next to the raw eigenvalues of the
  linearisation in the complex plane; the effective-learning-rate schedules; the update
  functions ``U(h0, g)``;
* ``index.html``: self-contained (the PNGs are embedded as base64 data URIs).

Typical uses: a GRU, an LSTM and a vanilla RNN trained on one task, or several seeds of one
configuration. The default ``out_dir`` is ``compare/`` inside the runs' common parent directory
(e.g. ``runs/compare`` for ``runs/a runs/b``); the ``probes compare`` command passes its own
``--out`` (default ``./compare``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from probes.detectors import MECHANISMS
from probes.report.page import Html, concat, document, figure, figure_grid, header, html, table
from probes.values import complex_array, finite, floats
from probes.words import fmt, slope

SCHEMA = "probes.compare/1"


def _names(runs: Sequence[Path]) -> list[str]:
    """Short unique names: the directory names, with parents added where they collide."""
    parts = [r.resolve().parts for r in runs]
    depth = 1
    while True:
        names = [os.path.join(*p[-depth:]) for p in parts]
        if len(set(names)) == len(names) or depth >= max(len(p) for p in parts):
            break
        depth += 1
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n} ({seen[n]})")
    return out


def _config(run: Path) -> dict | None:
    """``config.json`` for display (optimizer and task), checked for the fields shown."""
    from lopt.run import Run
    from lopt.rundir import CheckpointError

    path = run / "config.json"
    if not path.exists():
        return None
    cfg = Run(run).config
    for key, fields in (("optimizer", ("type", "cell")), ("task", ("name", "data_source"))):
        part = cfg.get(key)
        if part is not None and not isinstance(part, Mapping):
            raise CheckpointError(f"{path}: {key}: expected an object, got {part!r:.80}")
        for f in fields:
            v = (part or {}).get(f)
            if v is not None and not isinstance(v, str):
                raise CheckpointError(f"{path}: {key}.{f}: expected a string, got {v!r:.80}")
    hidden = (cfg.get("optimizer") or {}).get("hidden_size")
    if hidden is not None and (isinstance(hidden, bool) or not isinstance(hidden, int)):
        got = f"{hidden!r:.80}"
        raise CheckpointError(f"{path}: optimizer.hidden_size: expected an integer, got {got}")
    return cfg


def _load(run: Path) -> tuple[dict[str, Any], str, dict | None, dict | None]:
    from lopt.evaluation import Evaluation
    from lopt.rundir import read_json

    if not run.is_dir():
        raise ValueError(f"{run}: no such run directory")
    from probes.runs import analyze_run, check_analysis, saved_analysis

    cfg = _config(run)
    ev = read_json(run / "eval.json") if (run / "eval.json").exists() else None
    if ev is not None:
        Evaluation.from_json(ev, source=str(run / "eval.json"))  # one line if malformed
    analysis, why = saved_analysis(run, key_seed=None)  # an analysis drawn with any seed
    if analysis is not None:
        source = "analysis.json"
    elif (run / "theta.npz").exists():
        from lopt.run import Run

        Run(run).check()
        analysis, source = analyze_run(run), f"computed ({why}; written to analysis.json)"
    elif (run / "analysis.json").exists():  # nothing to analyse again: use it, and say so
        analysis, source = read_json(run / "analysis.json"), f"analysis.json ({why})"
    else:
        raise ValueError(f"{run}: neither analysis.json nor theta.npz")
    check_analysis(analysis, run / "analysis.json")
    return analysis, source, ev, cfg


def _fixed_points(a: Mapping[str, Any]) -> dict[str, Any]:
    meta = a.get("meta") or {}
    eigs = complex_array((a.get("momentum") or {}).get("eigenvalues"))
    ok = eigs[np.isfinite(eigs)]
    if ok.size:
        i = int(np.argmax(np.abs(ok)))
        dom, radius = ok[i], float(np.abs(ok[i]))
    else:
        dom, radius = None, None
    return {
        "at_zero": meta.get("fixed_points_at_zero"),
        "linearized_at": meta.get("linearized_at") or (a.get("momentum") or {}).get("point_kind"),
        "dominant_eigenvalue": None if dom is None else [float(dom.real), float(dom.imag)],
        "spectral_radius": radius,
        "stable": None if radius is None else bool(radius < 1.0),
    }


def _eval_row(ev: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not ev:
        return None
    horizon = str(ev.get("horizon") or next(iter(ev.get("horizons") or {}), ""))
    block = (ev.get("horizons") or {}).get(horizon)
    if not block:
        return None
    opts = block.get("optimizers") or {}
    best = block.get("best_baseline")
    learned = opts.get("learned") or {}
    return {
        "horizon": int(horizon),
        "learned_metric": finite(learned.get("metric")),
        "learned_sem": finite(learned.get("sem")),
        "best_baseline": best,
        "best_baseline_metric": finite((opts.get(best) or {}).get("metric")) if best else None,
        "beats_all": block.get("beats_all"),
    }


def _row(name: str, a: Mapping[str, Any], ev: Mapping | None, cfg: Mapping | None) -> dict:
    m, c, s, d, o, b = (a.get(k) or {} for k in MECHANISMS)
    # a damping the steady probe misses but the first steps show (probes.transient) counts
    first = not o.get("detected") and bool((a.get("damping_transient") or {}).get("detected"))
    kappa = (a["damping_transient"] if first else o).get("kappa")
    opt = (cfg or {}).get("optimizer") or {}
    return {
        "run": name,
        "optimizer": opt.get("cell") or opt.get("type"),
        "hidden_size": opt.get("hidden_size") or (a.get("meta") or {}).get("hidden_size"),
        "momentum": {
            "detected": bool(m.get("detected")),
            "beta": finite(m.get("beta")),
            "alpha": finite(m.get("alpha")),
            "timescale": finite(m.get("timescale")),
            "share": finite(m.get("share")),
        },
        "clipping": {
            "detected": bool(c.get("detected")),
            "threshold": finite(c.get("threshold")),
            "asymptote_pos": finite(c.get("asymptote_pos")),
            "asymptote_neg": finite(c.get("asymptote_neg")),
        },
        "schedule": {
            "detected": bool(s.get("detected")),
            "shape": s.get("shape"),
            "peak_step": s.get("peak_step"),
        },
        "adaptation": {"detected": bool(d.get("detected")), "slope": finite(d.get("slope"))},
        # absent from analyses written before the damping probe existed: not measured
        "damping": {
            "detected": bool(o.get("detected")) or first,
            "kappa": finite(kappa),
            "first_steps": first,
            "measured": bool(o),
        },
        # absent from analyses written before the bias probe existed: not measured
        "bias": {
            "detected": bool(b.get("detected")),
            "stall_gradient": finite(b.get("stall_gradient")),
            "update_at_zero": finite(b.get("update_at_zero")),
            "measured": bool(b),
        },
        "fixed_points": _fixed_points(a),
        "eval": _eval_row(ev),
    }


def _spread(values: list[float | None]) -> dict[str, Any] | None:
    v = np.asarray([x for x in values if x is not None], float)
    if not v.size:
        return None
    return {
        "values": [float(x) for x in v],
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
    }


def summarize(table: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Universal / idiosyncratic / absent mechanisms and the spread of their numbers.

    Args:
        table: the rows of :func:`compare_runs` (``run`` and one dict per mechanism).

    Returns:
        ``{"universal": [...], "idiosyncratic": {mechanism: [runs]}, "absent": [...],
        "spread": {...}, "text": [sentences]}``.
    """
    # A mechanism some runs' analyses do not measure (older analysis.json) is left out of the
    # classification rather than counted as absent there.
    unmeasured = {
        k: [r["run"] for r in table if not r[k].get("measured", True)] for k in MECHANISMS
    }
    mechs = [k for k in MECHANISMS if not unmeasured[k]]
    det = {k: [r["run"] for r in table if r[k]["detected"]] for k in MECHANISMS}
    n = len(table)
    universal = [k for k in mechs if n and len(det[k]) == n]
    idio = {k: det[k] for k in mechs if 0 < len(det[k]) < n}
    absent = [k for k in mechs if not det[k]]

    def among(mech: str, field: str) -> dict | None:
        return _spread([r[mech][field] for r in table if r[mech]["detected"]])

    spread = {
        "momentum_beta": among("momentum", "beta"),
        "momentum_alpha": among("momentum", "alpha"),
        "clipping_threshold": among("clipping", "threshold"),
        "schedule_peak_step": among("schedule", "peak_step"),
        "adaptation_slope": _spread([r["adaptation"]["slope"] for r in table]),
        "damping_kappa": among("damping", "kappa"),
        "bias_stall_gradient": among("bias", "stall_gradient"),
    }
    shapes = sorted({r["schedule"]["shape"] for r in table if r["schedule"]["detected"]})
    text = [
        f"{n} runs. Universal (detected in every run): {', '.join(universal) or 'none'}.",
    ]
    for k, runs in idio.items():
        text.append(f"Idiosyncratic: {k} only in {', '.join(runs)}.")
    if absent:
        text.append(f"Detected in no run: {', '.join(absent)}.")
    for k, runs in unmeasured.items():
        if runs:
            text.append(
                f"{k} not measured in {', '.join(runs)} (analysis.json from an older version; "
                "re-run probes analyze)."
            )
    b = spread["momentum_beta"]
    if b:
        tau = [-1 / np.log(x) for x in b["values"] if 0 < x < 1]
        tau_txt = f" (timescales {min(tau):.3g}–{max(tau):.3g} steps)" if tau else ""
        text.append(
            f"Momentum β = {b['mean']:.3g} ± {b['std']:.2g} (range {b['min']:.3g}–"
            f"{b['max']:.3g}){tau_txt}."
        )
    t = spread["clipping_threshold"]
    if t:
        text.append(
            f"Clip threshold |g| = {t['mean']:.3g} ± {t['std']:.2g} (range {t['min']:.3g}–"
            f"{t['max']:.3g})."
        )
    if shapes:
        text.append(f"Schedule shapes: {', '.join(shapes)}.")
    k = spread["damping_kappa"]
    if k:
        first = [r["run"] for r in table if r["damping"].get("first_steps")]
        text.append(
            f"Oscillation damping halves the sign-flipping gain at |g| = {k['mean']:.3g} ± "
            f"{k['std']:.2g} (range {k['min']:.3g}–{k['max']:.3g})"
            + (f"; read from the first steps only in {', '.join(first)}." if first else ".")
        )
    g0 = spread["bias_stall_gradient"]
    if g0:
        size = np.abs(g0["values"])
        signs = sorted({"negative" if v < 0 else "positive" for v in g0["values"]})
        text.append(
            f"The update vanishes at a gradient entry |g₀| = {size.min():.2g}–{size.max():.2g} "
            f"({' or '.join(signs)}) instead of at 0 (a bias)."
        )
    fps = [r["fixed_points"]["at_zero"] for r in table]
    stable = [r["fixed_points"]["stable"] for r in table]
    text.append(
        "Fixed points at g* = 0 per run: "
        + ", ".join(f"{r['run']}: {fp}" for r, fp in zip(table, fps, strict=True))
        + (
            "; all linearisations stable (spectral radius < 1)."
            if stable and all(x is True for x in stable)
            else "."
        )
    )
    return {
        "universal": universal,
        "idiosyncratic": idio,
        "absent": absent,
        "unmeasured": {k: v for k, v in unmeasured.items() if v},
        "spread": spread,
        "text": text,
    }


# ----------------------------------------------------------------------------- figures


def _figures(names: Sequence[str], analyses: Sequence[Mapping[str, Any]]) -> dict[str, bytes]:
    from probes import figures as F

    out: dict[str, bytes] = {}
    palette = __import__("seaborn").color_palette("colorblind", max(len(names), 3)).as_hex()
    names = [F.literal(n) for n in names]  # run directories may hold "$" (mathtext)

    # α–β spectra: fitted modes (α against β) and raw eigenvalues in the complex plane.
    fig, (ax1, ax2) = F.figure(2, width=10.5, height=4.4)
    th = np.linspace(0, 2 * np.pi, 720)
    ax2.plot(np.cos(th), np.sin(th), color=F.GREY, lw=1, ls="--")
    for name, a, col in zip(names, analyses, palette, strict=False):
        m = a.get("momentum") or {}
        lam, al = complex_array(m.get("fit_eigenvalues")), complex_array(m.get("fit_alphas"))
        if lam.size and lam.size == al.size:
            ax1.scatter(lam.real, al.real, s=50, color=col, ec="#333333", lw=0.5, label=name)
        if finite(m.get("beta")) is not None and finite(m.get("alpha")) is not None:
            ax1.plot(m["beta"], m["alpha"], "*", ms=15, color=col, mec="#222222", mew=0.6)
        eig = complex_array(m.get("eigenvalues"))
        if eig.size:
            ax2.scatter(eig.real, eig.imag, s=22, color=col, alpha=0.75, label=name)
    ax1.axhline(0, color=F.GREY, lw=0.8)
    ax1.set_xlabel("β (mode eigenvalue)")
    ax1.set_ylabel("α (mode learning rate)")
    ax1.set_title("Fitted momentum modes (★ dominant)")
    ax1.legend(loc="best")
    ax2.set_aspect("equal")
    ax2.set_xlim(-1.15, 1.15)
    ax2.set_ylim(-1.15, 1.15)
    ax2.set_xlabel("Re λ")
    ax2.set_ylabel("Im λ")
    ax2.set_title("Eigenvalues at the convergence point")
    out["spectra"] = F.png(fig)

    # Schedules: α_eff along the autonomous dynamics.
    fig, (ax,) = F.figure(1, width=6.4, height=3.9)
    for name, a, col in zip(names, analyses, palette, strict=False):
        e = floats((a.get("schedule") or {}).get("effective_lr"))
        if e.size:
            ax.plot(np.arange(e.size), e, color=col, lw=1.8, label=name)
    ax.set_xlabel("step t (zero gradients from h0)")
    ax.set_ylabel("α_eff(h_t)")
    ax.set_title("Learning-rate schedules")
    ax.legend(loc="best")
    out["schedules"] = F.png(fig)

    # Update functions U(h0, g).
    fig, (ax,) = F.figure(1, width=6.4, height=3.9)
    for name, a, col in zip(names, analyses, palette, strict=False):
        c = a.get("clipping") or {}
        g, u = floats(c.get("gradients")), floats(c.get("updates"))
        if g.size and g.size == u.size:
            ax.plot(g, u, color=col, lw=1.8, label=name)
            t = finite(c.get("threshold"))
            if c.get("detected") and t is not None:
                ax.axvline(-t, color=col, lw=0.8, ls=":")
    ax.set_xscale("symlog", linthresh=1e-3)
    ax.set_xlabel("gradient g")
    ax.set_ylabel("U(h0, g)")
    ax.set_title("Update functions at h0 (dotted: −threshold)")
    ax.legend(loc="best")
    out["update_functions"] = F.png(fig)
    return out


# ----------------------------------------------------------------------------- HTML

#: Captions of the comparison's figures (``figures/NAME.png``).
CAPTIONS = {
    "spectra": "Left: the momentum modes fitted to each run's impulse response, α against β "
    "(star: the dominant mode). Right: the eigenvalues of the linearisation at each run's "
    "convergence point, with the unit circle. One colour per run.",
    "schedules": "The effective learning rate α_eff along the autonomous dynamics (zero "
    "gradients from h0): each run's schedule.",
    "update_functions": "The first update U(h0, g) against the gradient (symmetric-log x axis); "
    "dotted lines mark each clipping run's −threshold.",
}


def _html(result: Mapping[str, Any], images: Mapping[str, bytes]) -> str:
    """``index.html`` of a comparison, with the report's page engine and stylesheet."""

    def mark(d: Mapping[str, Any], text: str) -> Html:
        if d["detected"]:
            return html('<span class="better">✓</span> {}', text)
        return html('<span class="mech">✗ {}</span>', text)

    rows = []
    for r in result["table"]:
        m, c, s, a, dmp, bias = (r[k] for k in MECHANISMS)
        fp, ev = r["fixed_points"], r["eval"]
        ev_txt = (
            "–"
            if not ev
            else f"{fmt(ev['learned_metric'], '.4f')} vs {ev['best_baseline']} "
            f"{fmt(ev['best_baseline_metric'], '.4f')}"
        )
        rows.append(
            [
                r["run"],
                r["optimizer"] or "–",
                mark(m, f"β={fmt(m['beta'])}, α={fmt(m['alpha'])}"),
                mark(c, f"|g|≈{fmt(c['threshold'])}"),
                mark(s, str(s["shape"])),
                mark(a, f"slope {slope(a['slope'])}"),
                mark(
                    dmp,
                    f"κ≈{fmt(dmp['kappa'])}" + (" (first steps)" if dmp.get("first_steps") else ""),
                ),
                mark(bias, f"g₀={fmt(bias['stall_gradient'])}"),
                f"{fp['at_zero']} ({fp['linearized_at']}), ρ={fmt(fp['spectral_radius'])}",
                ev_txt,
            ]
        )
    columns = [
        "run",
        "cell",
        "momentum",
        "clipping",
        "schedule",
        "adaptation",
        "oscillation damping",
        "bias",
        "fixed points at g*=0",
        "held-out (learned vs best)",
    ]
    n = len(result["table"])
    nav = [("summary", "Summary"), ("mechanisms", "Mechanisms per run"), ("figures", "Figures")]
    body = header("Learned optimizers compared", f"{n} runs · schema {result['schema']}", nav)
    body += [
        Html('<h2 id="summary" style="border:0;margin-top:8px">Universal vs idiosyncratic</h2>'),
        html(
            '<div class="summary">{}</div>',
            concat(html("<p>{}</p>", x) for x in result["summary"]["text"]),
        ),
        Html('<h2 id="mechanisms">Mechanisms per run</h2>'),
        table(columns, rows),
        Html('<h2 id="figures">Figures</h2>'),
        figure_grid(
            [figure(png, CAPTIONS.get(k, k), wide=k == "spectra") for k, png in images.items()]
        ),
    ]
    return document("probes compare", body)


def compare_runs(
    runs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike | None = None,
    *,
    progress: bool = False,
):
    """Compares the analyses of several runs and writes ``compare.json``, figures, ``index.html``.

    Args:
        runs: run directories (each with ``config.json`` and ``theta.npz``, or at least an
            ``analysis.json``); analysed with ``probes analyze`` where ``analysis.json`` is
            missing or out of date (:func:`probes.runs.saved_analysis`; written there).
        out_dir: where to write; default ``compare/`` in the runs' common parent directory.
        progress: a progress bar over the runs (analysing one takes seconds to minutes).

    Returns:
        The ``compare.json`` dict (schema ``probes.compare/1``), with ``out_dir`` and the
        paths of ``index.html`` and the figures.

    Raises:
        ValueError: no runs, or a run directory that does not exist.
    """
    from lopt.rundir import atomic_write, write_json

    paths = [Path(r) for r in runs]
    if not paths:
        raise ValueError("compare needs at least one run directory")
    if out_dir is None:
        parents = [str(p.resolve().parent) for p in paths]
        out_dir = Path(os.path.commonpath(parents)) / "compare"
    out = Path(out_dir)
    from tqdm.auto import tqdm

    with tqdm(paths, desc="runs", disable=not progress, dynamic_ncols=True) as bar:
        loaded = [_load(p) for p in bar]
    names = _names(paths)
    table = [_row(n, a, ev, cfg) for n, (a, _, ev, cfg) in zip(names, loaded, strict=True)]
    images = _figures(names, [a for a, *_ in loaded])
    for k, v in images.items():
        atomic_write(out / "figures" / f"{k}.png", lambda f, v=v: f.write(v))
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "runs": [
            {
                "name": n,
                "path": str(p),
                "analysis": src,
                "has_eval": ev is not None,
                "task": ((cfg or {}).get("task") or {}).get("name"),
                "data_source": ((cfg or {}).get("task") or {}).get("data_source"),
                "optimizer": (cfg or {}).get("optimizer"),
            }
            for n, p, (_, src, ev, cfg) in zip(names, paths, loaded, strict=True)
        ],
        "table": table,
        "summary": summarize(table),
        "figures": {k: f"figures/{k}.png" for k in images},
        "out_dir": str(out),
        "index": str(out / "index.html"),
    }
    result = json.loads(json.dumps(result, allow_nan=False))  # strict JSON, plain types
    write_json(out / "compare.json", result)
    page = _html(result, images).encode()
    atomic_write(out / "index.html", lambda f: f.write(page))
    return result
