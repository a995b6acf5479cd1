"""Report assembly: :func:`write_report` (an analysis to a page) and :func:`report_run` (a run).

Shapes: ``B`` problems, ``T`` steps, ``H`` hidden units.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from probes.analysis_result import Analysis
from probes.faithfulness_words import faithfulness_sentence, memory_along_sentence
from probes.report.adaptation import adaptation_section
from probes.report.agreement import agreement_section
from probes.report.bias import bias_section
from probes.report.distillation import distill_section
from probes.report.evidence import as_dict, progress_lines, white_box_evidence
from probes.report.momentum import momentum_section
from probes.report.page import report_page
from probes.report.rates import rates_section
from probes.report.sections import (
    Builder,
    clipping_section,
    damping_section,
    loss_section,
    results_table,
    schedule_section,
)
from probes.values import plain
from probes.words import (
    data_note,
    distill_sentence,
    headline_sentences,
    results_sentence,
    summary_sentences,
)

SCHEMA = "probes.report/1"


def write_report(
    analysis: Any,
    out_dir: str | os.PathLike,
    *,
    evaluation: Mapping[str, Any] | None = None,
    evidence: Mapping[str, Any] | None = None,
    distill: Mapping[str, Any] | None = None,
    title: str | None = None,
) -> dict[str, Any]:
    """Writes ``out_dir/index.html``, ``out_dir/report.json`` and ``out_dir/figures/*.png``.

    Args:
        analysis: a :class:`probes.Analysis` or its ``to_json()`` dict.
        out_dir: the report directory (created).
        evaluation: an ``eval.json`` dict (``lopt.eval/1``): results table and loss curves.
        evidence: :func:`white_box_evidence` for the white-box figures (cells only).
        distill: a ``distill.json`` dict (``lopt.distill/1`` or ``/2``): the distillation
            section.
        title: page title.

    Returns:
        The ``report.json`` dict (``"schema": "probes.report/1"``).

    Raises:
        ValueError: ``analysis`` is malformed (one line naming the result and field).

    Example:
        >>> import optax, probes
        >>> rep = probes.write_report(probes.analyze_optax(optax.sgd(0.1, momentum=0.9)), "out")
        >>> rep["summary"][0]
        'Momentum with β ≈ 0.90 (timescale ≈ 9 steps) carries 100% of its response.'
    """
    from lopt.rundir import atomic_write, write_json

    a = as_dict(analysis)
    Analysis.from_json(a)  # a malformed analysis fails here, naming the field
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ev = dict(evidence) if evidence else None
    if ev is not None:
        ev = plain(ev)
    b = Builder(out)
    res = results_table(evaluation)
    loss = loss_section(b, res, distill)
    rates = rates_section(a, evaluation, distill)
    sections = [
        momentum_section(b, a, ev, res),
        clipping_section(b, a),
        schedule_section(b, a),
        rates,
        adaptation_section(b, a, ev),
    ]
    for extra in (damping_section(b, a), bias_section(b, a), agreement_section(b, a)):
        if extra:
            sections.append(extra)
    dsec = distill_section(distill)
    if dsec:
        sections.append(dsec)
    # Figures left over from an earlier report would not be on the page: remove them.
    written = {Path(f["file"]).name for f in b.figures}
    for old in (out / "figures").glob("*.png"):
        if old.name not in written:
            old.unlink()
    if title is None:
        task = (evaluation or {}).get("task", {}) if evaluation else {}
        name = task.get("name")
        title = (
            (
                "What the learned optimizer learned"
                if a.get("source") == "cell"
                else "What the optimizer does (black box)"
            )
            + (f" on {name}" if name else "")
            + data_note(task.get("data_source"))
        )
    results_json = None
    if res:
        results_json = {
            **res,
            "horizons": [
                {
                    **h,
                    "rows": [
                        {k: v for k, v in r.items() if not k.startswith("curve")} for r in h["rows"]
                    ],
                }
                for h in res["horizons"]
            ],
        }
    distilled = distill_sentence(distill) if distill else None
    faithful = faithfulness_sentence(a["faithfulness"]) if a.get("faithfulness") else None
    along = (a.get("faithfulness") or {}).get("memory_along") or {}
    # in the summary only when it changes the reading of the momentum
    moving = memory_along_sentence(along) if along.get("state_dependent") else None
    report = {
        "schema": SCHEMA,
        "title": title,
        "source": a.get("source"),
        "white_box": bool(ev) and a.get("source") == "cell",
        "summary": (
            (headline_sentences(res, a.get("bias")) if res else [])
            + ([faithful] if faithful else [])
            + ([moving] if moving else [])
            + summary_sentences(a)
            + ([distilled] if distilled else [])
        ),
        "faithfulness": plain(a.get("faithfulness")),
        "results_sentence": results_sentence(res) if res else None,
        "results": results_json,
        "mechanisms": {
            s["id"]: {
                "detected": s.get("detected"),
                "numbers": {
                    n["key"]: {"label": n["label"], "value": n["value"], "display": n["display"]}
                    for n in s["numbers"]
                },
                "notes": s.get("notes") or [],
                **(
                    {"chain": s["chain"], "code": dict(s.get("code") or []), "rows": s["rows"]}
                    if s["id"] == "distill"
                    else {}
                ),
            }
            for s in sections
            if s["id"] != "learning_rates"
        },
        "learning_rates": plain(rates["reconciliation"]),
        "figures": b.figures,
        "analysis": plain(a),
        "evidence": ev,
        "distill": plain(distill) if distill else None,
    }
    report = plain(report)
    page = report_page(report, sections, loss["figures"] if loss else [], res, b.pngs, b.fig.color)
    data = page.encode("utf-8")
    atomic_write(out / "index.html", lambda f: f.write(data))
    write_json(out / "report.json", report)
    return report


def report_run(
    run: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    progress: bool = True,
    seed: int = 0,
) -> Path:
    """Writes the interpretation report of a meta-training run directory (``RUN/report/``).

    Loads ``theta.npz`` and the task family from ``config.json``; re-uses ``analysis.json`` when
    it is newer than ``theta.npz`` (else runs :func:`probes.analyze` and writes it, as
    ``probes analyze`` does); computes :func:`white_box_evidence` when the optimizer has a cell;
    adds ``eval.json`` and ``distill.json`` when present.

    Args:
        run: the run directory.
        out: the report directory (default ``RUN/report``).
        progress: print one line per stage (to stderr).
        seed: key for the recorded trajectories.

    Returns:
        The path of ``index.html``.
    """
    import jax

    from lopt.checkpoint import load
    from lopt.evaluation import family_from_config
    from lopt.rundir import read_json

    stage = progress_lines(progress)
    run = Path(run)
    out = run / "report" if out is None else Path(out)
    cfg = read_json(run / "config.json")
    opt, theta, _ = load(run / "theta.npz")
    family = family_from_config(cfg)
    stage(f"loaded {run} ({family.name})")
    from probes.runs import analyze_run, saved_analysis

    analysis, why = saved_analysis(run, key_seed=seed)
    stage(why)
    if analysis is None:
        stage("analysing the optimizer (writes analysis.json)")
        analysis = analyze_run(run, key_seed=seed, progress=stage)
    try:
        parsed = Analysis.from_json(analysis)
    except ValueError as e:
        raise ValueError(f"{run / 'analysis.json'}: {e}") from None
    evidence = None
    try:
        cell = opt.cell(theta)
    except TypeError:
        cell = None
        stage("no cell (black box): behavioural figures only")
    if cell is not None and parsed.source == "cell":
        evidence = white_box_evidence(
            cell, analysis, family=family, key=jax.random.key(seed), progress=stage
        )
    evaluation = read_json(run / "eval.json") if (run / "eval.json").exists() else None
    distill = read_json(run / "distill.json") if (run / "distill.json").exists() else None
    stage("drawing figures and writing the report")
    task = cfg.get("task") or {}
    title = (
        f"{run.resolve().name}: what the learned optimizer learned"
        + (f" on {task['name']}" if task.get("name") else "")
        + data_note(task.get("data_source"))
    )
    write_report(
        analysis, out, evaluation=evaluation, evidence=evidence, distill=distill, title=title
    )
    stage(f"done: {out / 'index.html'}")
    return out / "index.html"
