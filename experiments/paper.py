"""Reproduces the paper end to end: meta-train, compare with tuned baselines, analyse, report.

For each task family and each meta-training seed, into ``OUT/PRESET/TASK/seedK``:

1. meta-train the preset's GRU optimizer (``lopt meta-train``; resumes an unfinished run);
2. evaluate it against momentum, RMSProp and Adam tuned on the family, on the same 128
   held-out problems at the horizon and twice it (``eval.json``; the baselines are tuned once
   per family and shared by the seeds, since tuning is deterministic);
3. analyse its dynamics (``analysis.json``) and write the interpretation report
   (``report/index.html``);

compares the seeds of each task (``OUT/PRESET/TASK/compare/``: which mechanisms are universal),
then writes ``OUT/PRESET/results.json``, ``OUT/PRESET/results.md`` (the README's table: per
task, learned vs tuned baselines with the spread across seeds and the mechanisms detected)
and ``OUT/PRESET/figures/results.png``. Finished stages are skipped, so an interrupted run
continues where it stopped. ``--export-pretrained`` copies each task's first seed into
``lopt/_pretrained/TASK.npz`` (what :func:`lopt.pretrained` loads), with its results as
metadata.

Usage::

    python3 experiments/paper.py --task all --preset quick --seeds 3
    python3 experiments/paper.py --task linear_regression --seeds 3 --export-pretrained
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

TASKS = ("linear_regression", "rosenbrock", "two_moons", "mnist")
BASELINES = ("momentum", "rmsprop", "adam")


def _log(msg: str) -> None:
    print(msg, flush=True)


def run_seed(task: str, preset_name: str, seed: int, run: Path, tuned_cache: dict) -> dict:
    """Runs (or finishes) every stage for one seed; returns the timings of the stages run."""
    import tasks
    from lopt.evaluation import tune_baselines
    from lopt.meta_train import meta_train
    from lopt.presets import preset
    from lopt.run import evaluate_run
    from lopt.rundir import read_json

    timings: dict[str, float] = {}
    p = preset(task, preset_name)
    family = tasks.get(task, **p.task_settings)
    opt, config = p.build()
    config = dataclasses.replace(config, seed=seed)

    t = time.perf_counter()
    resume = (run / "state.npz").exists()
    result = meta_train(opt, family, config, out_dir=run, resume=resume, progress=True)
    if result.interrupted:
        raise KeyboardInterrupt
    timings["meta_train_s"] = time.perf_counter() - t

    ev_path = run / "eval.json"
    if not ev_path.exists() or read_json(ev_path).get("meta_step") != config.num_steps:
        t = time.perf_counter()
        if task not in tuned_cache:
            cache = run.parent / "tuned.json"  # shared by the seeds and by re-runs
            tuned_cache[task] = tune_baselines(family, BASELINES, progress=True, cache=cache)
        evaluate_run(run, tuned=tuned_cache[task])
        timings["evaluate_s"] = time.perf_counter() - t
        (run / "analysis.json").unlink(missing_ok=True)  # the analysis follows the weights

    if not (run / "analysis.json").exists():
        from probes.runs import analyze_run

        t = time.perf_counter()
        analyze_run(run)
        timings["analyze_s"] = time.perf_counter() - t
    return timings


def _report(run: Path) -> float | None:
    try:
        from probes import report_run
    except ImportError:  # the report module is optional for the table
        return None
    t = time.perf_counter()
    report_run(run, progress=False)
    return time.perf_counter() - t


def _mean_sd(xs: list[float | None]) -> dict[str, Any]:
    v = np.asarray([x for x in xs if x is not None], float)
    if v.size == 0:
        return {"mean": None, "sd": None, "n": 0}
    return {
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "n": int(v.size),
    }


def summarize_task(task: str, runs: list[Path]) -> dict[str, Any]:
    """Aggregates eval.json and analysis.json over the seeds of one task."""
    from lopt.rundir import read_json

    evals = [read_json(r / "eval.json") for r in runs]
    analyses = [read_json(r / "analysis.json") for r in runs]
    out: dict[str, Any] = {"task": task, "seeds": len(runs), "runs": [str(r) for r in runs]}
    out["data_source"] = evals[0]["task"].get("data_source")
    for label, key in (("horizon", str(evals[0]["horizon"])), ("horizon_2x", None)):
        if key is None:
            key = str(2 * evals[0]["horizon"])
        blocks = [e["horizons"][key] for e in evals]
        learned = [b["optimizers"]["learned"]["metric"] for b in blocks]
        h = {"steps": int(key), "learned": _mean_sd(learned), "learned_per_seed": learned}
        for name in BASELINES:
            s = blocks[0]["optimizers"][name]
            h[name] = {"metric": s["metric"], "sem": s["sem"], "hyperparams": s["hyperparams"]}
        h["beats_all"] = int(sum(bool(b.get("beats_all")) for b in blocks))
        h["best_baseline"] = blocks[0].get("best_baseline")
        bb = h["best_baseline"]
        h["diff_vs_best"] = [
            b["versus"][bb]["diff"] if bb else None for b in blocks
        ]  # learned - best, per seed
        out[label] = h
    mech: dict[str, Any] = {}
    mech["momentum"] = {
        "detected": sum(a["momentum"]["detected"] for a in analyses),
        "beta": _mean_sd([a["momentum"]["beta"] for a in analyses]),
        "timescale": _mean_sd([a["momentum"]["timescale"] for a in analyses]),
    }
    mech["clipping"] = {
        "detected": sum(a["clipping"]["detected"] for a in analyses),
        "threshold": _mean_sd(
            [a["clipping"]["threshold"] for a in analyses if a["clipping"]["detected"]]
        ),
    }
    mech["schedule"] = {
        "detected": sum(a["schedule"]["detected"] for a in analyses),
        "shapes": [a["schedule"]["shape"] for a in analyses],
    }
    mech["adaptation"] = {
        "detected": sum(a["adaptation"]["detected"] for a in analyses),
        "slope": _mean_sd([a["adaptation"]["slope"] for a in analyses]),
    }
    damp = [a.get("damping") or {} for a in analyses]  # absent from older analyses
    mech["damping"] = {
        "detected": sum(bool(d.get("detected")) for d in damp),
        "measured": sum(bool(d) for d in damp),
        "kappa": _mean_sd([d["kappa"] for d in damp if d.get("detected")]),
    }
    out["mechanisms"] = mech
    return out


def _pm(d: dict[str, Any], spec: str = ".4f") -> str:
    if d.get("mean") is None:
        return "–"
    if d["n"] > 1:
        return f"{d['mean']:{spec}} ± {d['sd']:{spec}}"
    return f"{d['mean']:{spec}}"


def markdown(results: list[dict[str, Any]], preset_name: str) -> str:
    """The README table: one row per task."""
    lines = [
        "| task | seeds | learned (mean ± sd over seeds) | momentum | RMSProp | Adam "
        "| seeds beating all | at 2× horizon: learned / best baseline | mechanisms detected |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        h, h2, m = r["horizon"], r["horizon_2x"], r["mechanisms"]
        n = r["seeds"]
        base = [
            "–" if h[b]["metric"] is None else f"{h[b]['metric']:.4f} ± {h[b]['sem']:.4f}"
            for b in BASELINES
        ]
        best2 = h2["best_baseline"]
        b2 = "–" if best2 is None else f"{h2[best2]['metric']:.4f} ({best2})"
        shapes = ", ".join(sorted(set(m["schedule"]["shapes"])))
        mech = [
            f"momentum {m['momentum']['detected']}/{n} (β {_pm(m['momentum']['beta'], '.2f')}, "
            f"τ {_pm(m['momentum']['timescale'], '.0f')} steps)",
            f"clipping {m['clipping']['detected']}/{n} "
            f"(|g| ≈ {_pm(m['clipping']['threshold'], '.2g')})",
            f"schedule {m['schedule']['detected']}/{n} ({shapes})",
            f"adaptation {m['adaptation']['detected']}/{n}",
        ]
        if "damping" in m and m["damping"].get("measured", n):
            measured = m["damping"].get("measured", n)
            mech.append(
                f"oscillation damping {m['damping']['detected']}/{n}"
                + (f" ({measured} measured)" if measured < n else "")
                + (
                    f" (κ ≈ {_pm(m['damping']['kappa'], '.2g')})"
                    if m["damping"]["detected"]
                    else ""
                )
            )
        task = r["task"] + ("*" if "fallback" in str(r.get("data_source", "")) else "")
        lines.append(
            f"| {task} | {n} | {_pm(h['learned'])} | {' | '.join(base)} | "
            f"{h['beats_all']}/{n} | {_pm(h2['learned'])} / {b2} | {'; '.join(mech)} |"
        )
    lines.append("")
    lines.append(
        f"`{preset_name}` preset; mean normalised loss on 128 held-out problems (lower is "
        "better); baselines tuned on training problems (± s.e.m. over problems); 'beating all' "
        "= lower than every tuned baseline by more than 2 s.e.m. of the paired difference."
    )
    if any("fallback" in str(r.get("data_source", "")) for r in results):
        lines.append("\\* MNIST fallback data (scikit-learn's 8×8 digits), not MNIST.")
    return "\n".join(lines)


def figure(results: list[dict[str, Any]], path: Path) -> None:
    """Learned (each seed) vs tuned baselines, one panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    colors = dict(zip(("learned", *BASELINES), sns.color_palette("deep", 4), strict=True))
    fig, axes = plt.subplots(1, len(results), figsize=(3.6 * len(results), 3.4), squeeze=False)
    for ax, r in zip(axes[0], results, strict=True):
        h = r["horizon"]
        names = ["learned", *BASELINES]
        for i, name in enumerate(names):
            if name == "learned":
                ys = [y for y in h["learned_per_seed"] if y is not None]
                ax.scatter([i] * len(ys), ys, color=colors[name], zorder=3, s=28)
            elif h[name]["metric"] is not None:
                ax.errorbar(
                    i, h[name]["metric"], yerr=2 * h[name]["sem"], fmt="o", color=colors[name]
                )
        ax.set_xticks(range(len(names)), names, rotation=20)
        ax.set_title(r["task"])
        ax.set_ylabel("mean normalised loss")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def export_pretrained(task: str, run: Path, summary: dict[str, Any], preset_name: str) -> Path:
    """Copies ``run/theta.npz`` into ``lopt/_pretrained/TASK.npz`` with its results as metadata."""
    from lopt.checkpoint import load, save

    opt, theta, meta = load(run / "theta.npz")
    dest = Path(__file__).resolve().parents[1] / "lopt" / "_pretrained" / f"{task}.npz"
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = summary["horizon"]
    learned = h["learned_per_seed"][0]
    save(
        dest,
        opt,
        theta,
        task=task,
        preset=preset_name,
        seed=int(run.name.removeprefix("seed")),
        step=meta.get("step"),
        metric=learned,
        best_baseline=h["best_baseline"],
        best_baseline_metric=h[h["best_baseline"]]["metric"] if h["best_baseline"] else None,
        beats_all=bool(
            json.loads((run / "eval.json").read_text())["horizons"][str(h["steps"])]["beats_all"]
        ),
        produced_by="experiments/paper.py --export-pretrained",
    )
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="all", help=f"one of {', '.join(TASKS)} or 'all'")
    parser.add_argument("--preset", default="quick", choices=["quick", "paper"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="runs/paper")
    parser.add_argument("--no-report", action="store_true", help="skip the HTML reports")
    parser.add_argument("--export-pretrained", action="store_true")
    args = parser.parse_args(argv)
    names = TASKS if args.task == "all" else (args.task,)
    unknown = [t for t in names if t not in TASKS]
    if unknown or args.seeds < 1:
        msg = f"unknown task {unknown[0]!r}" if unknown else "--seeds must be at least 1"
        print(f"paper.py: error: {msg}", file=sys.stderr)
        return 2

    root = Path(args.out) / args.preset
    results, timings = [], {}
    t_all = time.perf_counter()
    for task in names:
        tuned: dict[str, Any] = {}
        runs = []
        for seed in range(args.seeds):
            run = root / task / f"seed{seed}"
            _log(f"== {task} seed {seed} -> {run}")
            t = time.perf_counter()
            try:
                stages = run_seed(task, args.preset, seed, run, tuned)
            except KeyboardInterrupt:
                _log(f"interrupted; run the same command again to continue ({run})")
                return 130
            if not args.no_report:
                rt = _report(run)
                if rt is not None:
                    stages["report_s"] = rt
            stages["total_s"] = time.perf_counter() - t
            timings[f"{task}/seed{seed}"] = stages
            _log("   " + ", ".join(f"{k} {v:.0f}" for k, v in stages.items()))
            runs.append(run)
        summary = summarize_task(task, runs)
        if len(runs) > 1:  # which mechanisms are universal across the seeds
            from probes.compare import compare_runs

            cmp = compare_runs(runs, root / task / "compare")
            summary["compare"] = {"index": str(cmp.get("index")), "summary": cmp.get("summary")}
        results.append(summary)
        if args.export_pretrained:
            _log(f"   exported {export_pretrained(task, runs[0], summary, args.preset)}")

    from lopt.rundir import atomic_write, write_json

    # Merge with the tasks of earlier invocations, so the table can be built task by task.
    path = root / "results.json"
    previous = json.loads(path.read_text()) if path.exists() else {"tasks": {}, "timings": {}}
    previous["tasks"].update({r["task"]: r for r in results})
    previous["timings"].update(timings)
    previous["preset"] = args.preset
    write_json(path, previous)
    ordered = [previous["tasks"][t] for t in TASKS if t in previous["tasks"]]
    table = markdown(ordered, args.preset)
    atomic_write(root / "results.md", lambda f: f.write((table + "\n").encode()))
    figure(ordered, root / "figures" / "results.png")
    print(table)
    _log(f"done in {time.perf_counter() - t_all:.0f} s; wrote {root}/results.{{json,md}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
