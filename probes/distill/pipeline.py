"""Distillation of a run: the chain, its identified and re-tuned variants, and how they fare.

:func:`distill_analysis` turns an analysis of a run's learned optimizer into a chain
(:func:`~probes.distill.chain_from_analysis`), evaluates it on the held-out problems of
``RUN/eval.json`` (same key, same number of problems, same horizon), compares it with the
learned optimizer and the best tuned baseline problem by problem, and reports the fraction of
the learned optimizer's gain it recovers, ``(best_baseline − distilled)/(best_baseline −
learned)``, with a 95% paired bootstrap interval over problems (fixed seed,
:mod:`probes.distill.stats`). Two variants are reported next to it,
clearly labelled: *identified* (:func:`~probes.distill.identify_chain`: every number fitted to
the learned optimizer's own updates, no loss used; its structure is the detected one, or it
with oscillation damping or a sign-agreement gain added when that describes the updates
better) and *re-tuned*
(:func:`~probes.distill.retune_chain`: every number tuned on the loss of training problems,
never the held-out ones, starting from the detected or the identified chain, whichever
scores better on the re-tuning's validation problems). The three
answer different questions: do the probed numbers describe the optimizer, do numbers fitted to
its behaviour, and can the structure match it at all.

:func:`distill_run` is the run directory's entry point (``lopt distill RUN``): it re-uses
``RUN/analysis.json`` while it still describes the run (:func:`probes.runs.saved_analysis`),
analyses again otherwise, and writes ``RUN/distill.json``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
import optax
from tqdm.auto import tqdm

from lopt import rundir
from lopt.baselines import baseline
from lopt.chain import META_KEYS, build_chain, chain_code, number_code
from lopt.evaluation import Evaluation, heldout_key
from lopt.run import Run, evaluate_run
from lopt.unroll import evaluate, per_problem_metric, summarize
from probes.distill.attribution import attribute
from probes.distill.identify import IdentifyConfig, identify_chain
from probes.distill.retune import RetuneConfig, retune_chain, retune_cost, validation_scores
from probes.distill.stats import BootstrapConfig, fraction_report, mean_sem
from probes.faithfulness_words import identified_rest_sentence
from probes.runs import analyze_run, check_analysis, coordinatewise, saved_analysis
from probes.to_chain import DistillError, chain_from_analysis
from probes.words import addition_name, attribution_sentence, identified_added_sentence

#: ``distill.json`` schema. 2: the re-tuned variant tunes every number (``notes.retune`` holds
#: its validation curve, not a grid; ``results.distilled_retuned`` has no factors).
SCHEMA = "lopt.distill/2"


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """What :func:`distill_analysis` computes besides the detected chain, and how hard.

    Attributes:
        identify: the identification's settings; ``None`` skips the identified variant.
        retune: the re-tuning's settings; ``None`` skips the re-tuned variant. It is also
            skipped (and ``notes["retune"]`` says why) when :func:`~probes.distill.retune_cost`
            exceeds ``retune.budget``, as for the classifier families' nets at the defaults.
        bootstrap: the bootstrap of the recovered fractions' intervals.
        attribute: with an identified chain whose numbers differ from the probed ones (a
            fitted round was selected), also evaluate the one-mechanism exchanges between it
            and the probed chain (:mod:`probes.distill.attribution`; two held-out evaluations
            per mechanism) and report them as ``attribution``.

    Example:
        >>> quick = DistillConfig(identify=IdentifyConfig(rounds=2), retune=None)
    """

    identify: IdentifyConfig | None = dataclasses.field(default_factory=IdentifyConfig)
    retune: RetuneConfig | None = dataclasses.field(default_factory=RetuneConfig)
    bootstrap: BootstrapConfig = dataclasses.field(default_factory=BootstrapConfig)
    attribute: bool = True


@dataclasses.dataclass
class Distillation:
    """A distilled optimizer and how it fares (see :func:`distill_analysis`).

    Attributes:
        chain: the chain (JSON-able list of dicts); :func:`lopt.build_chain` rebuilds ``tx``.
        tx: the optax transformation.
        chain_retuned: the chain with every number tuned on the loss of training problems
            (:func:`~probes.distill.retune_chain`; the structure of its start) or ``None``.
        tx_retuned: its transformation or ``None``.
        chain_identified: the chain with its numbers identified from the learned optimizer's
            updates (:func:`~probes.distill.identify_chain`; the detected structure, or it with
            damping or a sign-agreement gain added) or ``None``.
        tx_identified: its transformation or ``None``.
        results: ``learned``, ``best_baseline``, ``distilled``, ``distilled_retuned``,
            ``distilled_identified``.
        gain, significant, fraction, fraction_retuned, fraction_identified, reason: see
            :func:`~probes.distill.fraction_report`.
        curves: per-step mean and s.e.m. of ``f_t/f_0`` for the distilled chains.
        attribution: the one-mechanism exchanges between the probed and the identified chain
            (:func:`attribute`) or ``None``.
        notes: how the numbers were derived, the identification and re-tuning records,
            evaluation settings.
    """

    chain: list[dict[str, Any]]
    tx: optax.GradientTransformation
    chain_retuned: list[dict[str, Any]] | None = None
    tx_retuned: optax.GradientTransformation | None = None
    chain_identified: list[dict[str, Any]] | None = None
    tx_identified: optax.GradientTransformation | None = None
    results: dict[str, Any] = dataclasses.field(default_factory=dict)
    gain: dict[str, float] | None = None
    significant: bool = False
    fraction: dict[str, Any] | None = None
    fraction_retuned: dict[str, Any] | None = None
    fraction_identified: dict[str, Any] | None = None
    reason: str | None = None
    curves: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)
    attribution: list[dict[str, Any]] | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``distill.json`` dict (schema :data:`SCHEMA`; strict JSON, no NaN)."""

        def code(chain: list[dict[str, Any]] | None) -> str | None:
            return None if chain is None else chain_code(chain)

        out = {
            "schema": SCHEMA,
            "chain": self.chain,
            "optax_code": chain_code(self.chain),
            "chain_retuned": self.chain_retuned,
            "optax_code_retuned": code(self.chain_retuned),
            "chain_identified": self.chain_identified,
            "optax_code_identified": code(self.chain_identified),
            "results": self.results,
            "gain": self.gain,
            "significant": self.significant,
            "fraction": self.fraction,
            "fraction_retuned": self.fraction_retuned,
            "fraction_identified": self.fraction_identified,
            "reason": self.reason,
            "curves": self.curves,
            "attribution": self.attribution,
            "notes": self.notes,
        }
        return rundir.plain(out)


def _summary(losses: np.ndarray) -> tuple[dict[str, Any], dict[str, Any], np.ndarray]:
    s = summarize(losses)
    metric = {"metric": s.metric, "sem": s.sem, "final": s.final, "diverged": s.diverged}
    curve = {"mean": list(map(float, s.curve_mean)), "sem": list(map(float, s.curve_sem))}
    return metric, curve, per_problem_metric(losses)


def _speaker(progress: bool) -> Callable[[str], None]:
    def say(msg: str) -> None:
        if progress:
            print(f"distill: {msg}", file=sys.stderr, flush=True)

    return say


def distill_analysis(
    analysis: Mapping[str, Any],
    run: Run | str | os.PathLike,
    config: DistillConfig = DistillConfig(),
    *,
    progress: bool = True,
) -> Distillation:
    """Distils an analysis of a run's learned optimizer into an optax chain and evaluates it.

    Builds the chain (:func:`~probes.distill.chain_from_analysis`), optionally identifies its
    numbers from the learned optimizer's updates (:func:`~probes.distill.identify_chain`; no
    loss involved), optionally tunes every number on the loss of training problems, starting
    from the detected or the identified numbers, whichever scores better on the re-tuning's
    validation problems (:func:`~probes.distill.validation_scores`; the detected ones when
    nothing was identified; then :func:`~probes.distill.retune_chain`, on problems drawn from
    the tuning key of the momentum baseline in :func:`lopt.evaluation.tune_baselines`), and
    evaluates the learned optimizer, the best tuned baseline of ``RUN/eval.json`` (with its
    recorded hyperparameters; the file is written by :func:`lopt.run.evaluate_run` if missing)
    and the chains on the same held-out problems as ``eval.json`` (:func:`lopt.heldout_key`,
    its number of problems, its horizon).

    Args:
        analysis: the probes' result for the run's ``theta.npz`` (``analysis.json``);
            :func:`distill_run` makes sure it is current.
        run: the run directory.
        config: the variants and their settings (:class:`DistillConfig`).
        progress: print progress lines to stderr.

    Returns:
        A :class:`Distillation`.

    Raises:
        DistillError: if the run cannot be distilled (an analysis without the four mechanisms,
            an evaluation without a best baseline).
        OSError: if the run directory or its files are missing.
    """
    say = _speaker(progress)
    identify, retune = config.identify, config.retune
    run = run if isinstance(run, Run) else Run(run)
    family = run.family
    if run.file("eval.json").exists():
        ev = rundir.read_json(run.file("eval.json"))
        Evaluation.from_json(ev, source=str(run.file("eval.json")))  # one line if malformed
    else:
        say("no eval.json: tuning and evaluating the baselines (lopt evaluate)")
        ev = evaluate_run(run.path, progress=progress)
    horizon = int(ev.get("horizon") or family.num_steps)
    block = (ev.get("horizons") or {}).get(str(horizon))
    if not block or not block.get("best_baseline"):
        raise DistillError(f"{run.file('eval.json')}: no best baseline at horizon {horizon}")
    best = block["best_baseline"]
    best_hp = block["optimizers"][best].get("hyperparams") or {}
    num_problems = int(ev.get("num_problems") or 128)
    try:
        best_tx = baseline(best, **best_hp)
    except (ValueError, TypeError) as e:
        field = f"horizons.{horizon}.best_baseline"
        raise DistillError(f"{run.file('eval.json')}: {field}: {e}") from None

    chain, notes = chain_from_analysis(analysis)
    tx = build_chain(chain)
    opt, theta, _ = run.checkpoint()
    chain_id = tx_id = None
    if identify is not None:
        say("identifying the chain's numbers from the learned optimizer's updates")
        if not coordinatewise(opt, theta):
            notes["identify"] = {
                "note": "not identified: the learned optimizer has no Cell (it is not "
                "coordinate-wise), so replaying it on recorded gradients is not exact"
            }
        else:
            chain_id, notes["identify"] = identify_chain(
                chain, opt.optimizer(theta), family, identify, num_steps=horizon, say=say
            )
        if chain_id is not None:
            tx_id = build_chain(chain_id)
        else:
            say(f"identification skipped: {notes['identify']['note']}")
    chain_rt = tx_rt = None
    if retune is not None:
        # The momentum baseline's tuning key in lopt.evaluation.tune_baselines (its problems
        # are resampled per step here); never the held-out key.
        retune_key = jax.random.fold_in(jax.random.key(0), 0)
        identified = chain_id is not None and notes["identify"].get("selected_round", 0) > 0
        start, start_chain, start_scores = "detected", chain, None
        steps, problems = retune.steps, retune.num_problems
        cost = retune_cost(family, horizon, retune)
        if retune.budget is not None and cost > retune.budget:
            notes["retune"] = {
                "note": f"not re-tuned by default: {steps} steps × {problems} problems of "
                f"this family cost {cost:.2g} coordinate-steps (budget {retune.budget:.2g}); "
                "choose fewer with lopt distill --retune-steps/--retune-problems",
                "cost": cost,
            }
        else:
            if identified:
                # start from whichever of the probed and the identified numbers scores better
                # on the re-tuning's own validation problems (training problems)
                say("scoring the detected and the identified numbers on validation problems")
                detected_score, identified_score = validation_scores(
                    [chain, chain_id], family, retune_key, retune, num_steps=horizon
                )
                start_scores = {"detected": detected_score, "identified": identified_score}
                if identified_score < detected_score:
                    start, start_chain = "identified", chain_id
            say(
                f"re-tuning every number of the chain on training problems (from the {start} "
                f"numbers; {steps} steps × {problems} problems)"
            )
            bar = tqdm(
                total=-(-steps // retune.every),  # validation rounds
                desc="re-tune",
                unit="round",
                file=sys.stderr,
                dynamic_ncols=True,
                disable=not progress,
            )
            chain_rt, notes["retune"] = retune_chain(
                start_chain,
                family,
                retune_key,
                retune,
                num_steps=horizon,
                progress=lambda done, total: bar.update(done - bar.n),
            )
            bar.close()
            notes["retune"].update(start=start, key="fold_in(key(0), 0)", cost=cost)
            if start_scores is not None:
                notes["retune"]["start_scores"] = start_scores
        if chain_rt is not None:
            tx_rt = build_chain(chain_rt)
        else:
            say(f"re-tuning skipped: {notes['retune']['note']}")
    key = heldout_key()
    optimizers = {"learned": opt.optimizer(theta), best: best_tx, "distilled": tx}
    if tx_id is not None:
        optimizers["distilled_identified"] = tx_id
    if tx_rt is not None:
        optimizers["distilled_retuned"] = tx_rt
    metrics, curves, per = {}, {}, {}
    for name, t in optimizers.items():
        say(f"evaluating {name} on {num_problems} held-out problems, {horizon} steps")
        metrics[name], curves[name], per[name] = _summary(
            np.asarray(evaluate(t, family, key, num_problems, horizon))
        )
    recorded = block["optimizers"]["learned"].get("metric")
    if recorded is not None and not math.isclose(
        metrics["learned"]["metric"], recorded, rel_tol=1e-3
    ):
        say(
            f"warning: learned metric {metrics['learned']['metric']:.5g} differs from "
            f"eval.json's {recorded:.5g}"
        )
    rep = fraction_report(
        per["learned"],
        per[best],
        per["distilled"],
        per.get("distilled_retuned"),
        per.get("distilled_identified"),
        config.bootstrap,
    )
    attribution = None
    # nothing to exchange when identification kept the probed numbers (selected round 0)
    if config.attribute and chain_id is not None and notes["identify"].get("selected_round"):
        attribution = attribute(
            chain,
            chain_id,
            family,
            key,
            num_problems,
            horizon,
            per["learned"],
            per[best],
            fractions=rep["significant"],
            bootstrap=config.bootstrap,
            say=say,
            known=[(chain, per["distilled"]), (chain_id, per["distilled_identified"])],
        )
        if not attribution:
            notes["attribution"] = (
                "no exchanges: the probed and the identified chain do not have the same "
                "transforms one to one"
            )
    results = {
        "learned": metrics["learned"],
        "best_baseline": {"name": best, **metrics[best], "hyperparameters": best_hp},
        "distilled": metrics["distilled"],
        "distilled_retuned": metrics.get("distilled_retuned"),
        "distilled_identified": metrics.get("distilled_identified"),
    }
    for name in ("distilled", "distilled_retuned", "distilled_identified"):
        if name in per:
            d = per[best] - per[name]
            results[name]["vs_best_baseline"] = (
                dict(zip(("mean", "sem"), mean_sem(d), strict=True))
                if np.all(np.isfinite(d))
                else None
            )
            dl = per[name] - per["learned"]
            results[name]["vs_learned"] = (
                dict(zip(("mean", "sem"), mean_sem(dl), strict=True))
                if np.all(np.isfinite(dl))
                else None
            )
    if tx_rt is not None:
        results["distilled_retuned"]["label"] = (
            f"every number tuned on the loss of training problems, not held-out ones, from the "
            f"{notes['retune']['start']} numbers"
        )
    if tx_id is not None:
        added = addition_name(notes["identify"].get("added"))
        added = f", {added} added" if added else ""
        results["distilled_identified"]["label"] = (
            f"numbers fitted to the learned optimizer's updates{added}; no loss used"
        )
    notes["evaluation"] = {
        "key": "lopt.heldout_key()",
        "num_problems": num_problems,
        "horizon": horizon,
        "gain": "paired difference best_baseline − learned (mean normalised loss)",
    }
    return Distillation(
        chain=chain,
        tx=tx,
        chain_retuned=chain_rt,
        tx_retuned=tx_rt,
        chain_identified=chain_id,
        tx_identified=tx_id,
        results=results,
        gain=rep["gain"],
        significant=rep["significant"],
        fraction=rep["fraction"],
        fraction_retuned=rep["fraction_retuned"],
        fraction_identified=rep["fraction_identified"],
        reason=rep["reason"],
        curves={
            k: curves[k]
            for k in ("distilled", "distilled_retuned", "distilled_identified")
            if k in curves
        },
        notes=notes,
        attribution=attribution,
    )


def distill_run(
    run: Run | str | os.PathLike,
    config: DistillConfig = DistillConfig(),
    *,
    progress: bool = True,
    key_seed: int = 0,
) -> dict[str, Any]:
    """Distils a run directory (``lopt distill RUN``) and writes ``RUN/distill.json`` atomically.

    ``RUN/analysis.json`` is re-used while it still describes the run
    (:func:`probes.runs.saved_analysis`: newer than ``theta.npz``, written by this version's
    probes, drawn with ``key_seed``); otherwise the learned optimizer is analysed again and the
    file rewritten (:func:`probes.runs.analyze_run`). Then :func:`distill_analysis`. The file
    also names the run's task and its data source
    (``config.json``).

    Args:
        run: the run directory.
        config: the variants and their settings (:class:`DistillConfig`).
        progress: print progress lines to stderr.
        key_seed: the trajectory seed of the analysis (``probes report --seed``).

    Returns:
        The ``distill.json`` dict.

    Raises:
        DistillError: as :func:`distill_analysis`.
        OSError: if the run directory or its files are missing.
    """
    run = run if isinstance(run, Run) else Run(run)
    run.check()  # config.json and theta.npz, sizes included, before anything is computed
    analysis, why = saved_analysis(run, key_seed=key_seed)
    if analysis is not None:
        check_analysis(analysis, run.file("analysis.json"), partial=True)
    if analysis is None:
        _speaker(progress)(f"{why}: analysing the learned optimizer (probes analyze)")
        analysis = analyze_run(run, key_seed=key_seed)
    result = distill_analysis(analysis, run, config, progress=progress).to_json()
    task = run.config.get("task") or {}
    result["task"] = {"name": task.get("name"), "data_source": task.get("data_source")}
    rundir.write_json(run.file("distill.json"), result)
    return result


def format_report(result: Mapping[str, Any]) -> str:
    """Plain-text summary of a ``distill.json`` dict: chain, table, fraction."""
    lines = ["distilled chain:"]
    for e in result["chain"]:
        params = ", ".join(
            f"{k}={number_code(v)}"
            if isinstance(v, int | float)
            else f"{k}=[{', '.join(number_code(x) for x in v)}]"
            if isinstance(v, list)
            else f"{k}=<{len(v['steps'])} knots>"
            for k, v in e.items()
            if k not in ("transform", *META_KEYS) and v is not None
        )
        lines.append(f"  {e['transform']}({params})  # {e.get('mechanism', '')}")
    lines.append(
        f"  = {result['optax_code'][:200]}{'…' if len(result['optax_code']) > 200 else ''}"
    )
    r = result["results"]
    lines.append(f"{'optimizer':<30} {'metric':>8} {'± s.e.m.':>9}  vs best baseline")
    rows = [
        ("learned", r["learned"]),
        (f"best baseline ({r['best_baseline']['name']})", r["best_baseline"]),
        ("distilled", r["distilled"]),
    ]
    if r.get("distilled_identified"):
        rows.append(("distilled, identified", r["distilled_identified"]))
    if r.get("distilled_retuned"):
        rows.append(("distilled, re-tuned", r["distilled_retuned"]))
    for name, s in rows:
        m = "inf" if s["metric"] is None else f"{s['metric']:.4f}"
        e = "-" if s["sem"] is None else f"{s['sem']:.4f}"
        v = s.get("vs_best_baseline")
        vs = "" if v is None else f"{v['mean']:+.4f} ± {v['sem']:.4f}"
        lines.append(f"{name:<30} {m:>8} {e:>9}  {vs}")
    for key, label in (
        ("identified", "identified (numbers fitted to the learned optimizer's updates, no loss)"),
        ("retuned", f"re-tuned ({(r.get('distilled_retuned') or {}).get('label', '')})"),
    ):
        code = result.get(f"optax_code_{key}")
        if code:
            lines.append(f"  {label}:")
            lines.append(f"    {code[:200]}{'…' if len(code) > 200 else ''}")
    g = result["gain"]
    if g is not None:
        lines.append(
            f"learned gain over the best baseline: {g['mean']:.4f} ± {g['sem']:.4f} "
            f"({'significant' if result['significant'] else 'not significant'})"
        )
    for label, key in (
        ("distilled", "fraction"),
        ("identified", "fraction_identified"),
        ("re-tuned", "fraction_retuned"),
    ):
        f = result.get(key)
        if f is not None:
            lines.append(
                f"fraction of the gain recovered ({label}): {f['mean']:.1%} "
                f"(95% CI {f['ci'][0]:.1%} … {f['ci'][1]:.1%})"
            )
    if result.get("reason"):
        lines.append(f"fraction: n/a ({result['reason']})")
    lines += _attribution_lines(result.get("attribution"))
    said = attribution_sentence(result, listing=False)
    if said:
        lines.append(said)
    for sentence in (identified_added_sentence(result), identified_rest_sentence(result)):
        if sentence:
            lines.append(sentence)
    return "\n".join(lines)


def _attribution_lines(rows: Any) -> list[str]:
    """The one-mechanism exchanges of ``distill.json`` as text lines (none without them)."""
    if not rows:
        return []

    def shown(cell: Any) -> str:
        if not isinstance(cell, Mapping):
            return "-"
        f, m = cell.get("fraction"), cell.get("metric")
        if isinstance(f, Mapping):
            return f"{f['mean']:.1%}"
        return "diverged" if m is None else f"{m:.4f}"

    fractions = any(
        isinstance(r.get(d), Mapping) and isinstance(r[d].get("fraction"), Mapping)
        for r in rows
        for d in ("identified_here_only", "probed_here_only")
    )
    what = "fraction of the gain recovered" if fractions else "metric"
    lines = [f"one mechanism's numbers exchanged between the two chains ({what}):"]
    lines.append(
        f"  {'mechanism':<26} {'probed, this identified':>24} {'identified, this probed':>24}"
    )
    for r in rows:
        lines.append(
            f"  {r['transform']:<26} {shown(r.get('identified_here_only')):>24} "
            f"{shown(r.get('probed_here_only')):>24}"
        )
    return lines
