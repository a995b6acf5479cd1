"""Learned optimizer versus tuned baselines, on the same held-out problems.

:func:`compare` evaluates any set of optax optimizers on ``num_problems`` problems drawn from
one fixed evaluation key (so every optimizer sees the same problems and the comparison is
paired), at the family's horizon and at twice it (generalisation beyond the training horizon).
:func:`lopt.run.evaluate_run` does that for a meta-training run directory and writes ``eval.json``.

"Beats" is decided on paired differences: for each problem, the learned optimizer's mean
normalised loss minus the baseline's; the learned optimizer beats the baseline if the mean
difference is below ``-2`` standard errors of that difference. Problems on which a run
diverged are counted apart (see :func:`paired`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax
from tqdm.auto import tqdm

import tasks
from lopt import rundir
from lopt.tune import TuneResult, tune
from lopt.unroll import evaluate, per_problem_metric, summarize

EVAL_SCHEMA = "lopt.eval/1"
DEFAULT_BASELINES = ("momentum", "rmsprop", "adam")
TUNED_SCHEMA = "lopt.tuned/1"
#: Seed of :func:`heldout_key`.
HELDOUT_SEED = 1_000_003


def heldout_key() -> jax.Array:
    """The fixed key of the held-out evaluation problems (pass it to :func:`lopt.evaluate`).

    Tuning keys are derived as ``fold_in(key(seed), 0)`` by the command line, which never
    equals this key, so held-out problems are never tuned on; every optimizer evaluated with
    this key sees the same problems, so comparisons are paired.
    """
    return jax.random.key(HELDOUT_SEED)


def paired(learned: np.ndarray, baseline: np.ndarray) -> dict[str, Any]:
    """Paired comparison of two per-problem metrics (``learned - baseline``).

    The mean difference and its s.e.m. are over the problems on which both runs are finite. A
    problem on which only the baseline diverged counts for the learned optimizer
    (``baseline_diverged``); one on which only the learned optimizer diverged counts against
    it (``learned_diverged``). The learned optimizer beats the baseline when it diverged on no
    problem the baseline survived and the mean difference over the finite pairs is below ``-2``
    s.e.m.; with fewer than two finite pairs (no s.e.m.), when the baseline diverged somewhere
    and the learned optimizer is lower on every finite pair.
    """
    learned, baseline = np.asarray(learned), np.asarray(baseline)
    ok_l, ok_b = np.isfinite(learned), np.isfinite(baseline)
    d = learned[ok_l & ok_b] - baseline[ok_l & ok_b]
    out = {
        "finite_pairs": int(len(d)),
        "learned_diverged": int(np.sum(~ok_l & ok_b)),
        "baseline_diverged": int(np.sum(ok_l & ~ok_b)),
    }
    if len(d) < 2:
        beats = out["learned_diverged"] == 0 and out["baseline_diverged"] > 0 and np.all(d < 0)
        diff = float(d[0]) if len(d) else None
        return {"diff": diff, "diff_sem": None, "beats": bool(beats), **out}
    sem = float(np.std(d, ddof=1) / np.sqrt(len(d)))
    beats = out["learned_diverged"] == 0 and np.mean(d) < -2 * sem
    return {"diff": float(np.mean(d)), "diff_sem": sem, "beats": bool(beats), **out}


def _summary_json(losses: np.ndarray) -> dict[str, Any]:
    return summarize(losses).to_json()


def compare(
    optimizers: Mapping[str, optax.GradientTransformation],
    family: tasks.TaskFamily,
    *,
    learned: str | None = None,
    key: jax.Array | None = None,
    num_problems: int = 128,
    horizons: Sequence[int] | None = None,
    hyperparams: Mapping[str, Mapping[str, float]] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluates ``optimizers`` on the same held-out problems and compares them.

    Args:
        optimizers: name -> optax transformation.
        family: the task family.
        learned: the name of the optimizer compared against all others (paired differences).
        key: the evaluation key; defaults to :func:`lopt.heldout_key`.
        num_problems: held-out problems.
        horizons: inner-step counts to evaluate at; default ``(T, 2T)`` with ``T`` the
            family's ``num_steps``.
        hyperparams: name -> hyperparameters, recorded with the results.
        progress: show a progress bar.

    Returns:
        A JSON-able dict: ``{"horizons": {str(T): {"optimizers": {name: summary},
        "versus": {baseline: paired}, "best_baseline": name}}}`` where each summary is
        :meth:`Summary.to_json` plus ``hyperparams``.
    """
    key = heldout_key() if key is None else key
    horizons = tuple(horizons or (family.num_steps, 2 * family.num_steps))
    out: dict[str, Any] = {"num_problems": num_problems, "learned": learned, "horizons": {}}
    jobs = [(t, n) for t in horizons for n in optimizers]
    per: dict[tuple[int, str], np.ndarray] = {}
    bar = tqdm(jobs, desc="evaluate", disable=not progress, dynamic_ncols=True)
    for t, name in bar:
        bar.set_postfix_str(f"{name} T={t}")
        losses = np.asarray(evaluate(optimizers[name], family, key, num_problems, t))
        per[t, name] = losses
    for t in horizons:
        block: dict[str, Any] = {"optimizers": {}, "versus": {}}
        for name in optimizers:
            s = _summary_json(per[t, name])
            s["hyperparams"] = dict((hyperparams or {}).get(name, {}))
            block["optimizers"][name] = s
        if learned is not None:
            mine = per_problem_metric(per[t, learned])
            others = [n for n in optimizers if n != learned]
            for name in others:
                block["versus"][name] = paired(mine, per_problem_metric(per[t, name]))
            finite = {n: block["optimizers"][n]["metric"] for n in others}
            finite = {n: m for n, m in finite.items() if m is not None}
            block["best_baseline"] = min(finite, key=finite.get) if finite else None
            block["beats_all"] = bool(others) and all(block["versus"][n]["beats"] for n in others)
        out["horizons"][str(t)] = block
    return out


def tune_baselines(
    family: tasks.TaskFamily,
    names: Sequence[str] = DEFAULT_BASELINES,
    *,
    key: jax.Array | None = None,
    progress: bool = False,
    cache: str | Path | None = None,
) -> dict[str, Any]:
    """Tunes each baseline on training problems (a key apart from the held-out one).

    Args:
        family: the task family.
        names: baseline names.
        key: the tuning key (default ``jax.random.key(0)``, folded with each baseline's index).
        progress: show a progress bar.
        cache: a JSON file (schema ``lopt.tuned/1``). Tuning is deterministic, so when the file
            exists and records the same family (name, settings and data source), baselines and
            key, the
            results are read from it instead of tuned again; otherwise they are tuned and the
            file is (re)written atomically. Tuning the 3 baselines on ``two_moons`` takes about
            9 minutes on 2 CPU cores, which is what this saves on a re-run.

    Returns:
        ``{name: lopt.TuneResult}``.
    """
    key = jax.random.key(0) if key is None else key
    ident = {
        "task": {
            "name": family.name,
            "settings": family.settings(),
            # e.g. MNIST files found later through LOPT_DATA_DIR: same settings, other data.
            "data_source": getattr(family, "data_source", "synthetic"),
        },
        "baselines": list(names),
        "key": np.asarray(jax.random.key_data(key)).tolist(),
    }
    if cache is not None and Path(cache).exists():
        try:
            stored = rundir.read_json(cache)
        except rundir.CheckpointError:
            stored = {}
        if (
            isinstance(stored, dict)
            and stored.get("schema") == TUNED_SCHEMA
            and stored.get("identity") == ident
        ):
            try:
                return {n: TuneResult.from_json(stored["results"][n]) for n in names}
            except (KeyError, TypeError, ValueError):
                pass  # an entry edited or cut short: tune afresh and rewrite the file
    out = {}
    bar = tqdm(names, desc="tune baselines", disable=not progress, dynamic_ncols=True)
    for name in bar:
        bar.set_postfix_str(name)
        out[name] = tune(name, family, jax.random.fold_in(key, len(out)))
    if cache is not None:
        results = {n: rundir.plain(r.to_json()) for n, r in out.items()}
        rundir.write_json(cache, {"schema": TUNED_SCHEMA, "identity": ident, "results": results})
    return out


#: Bounds on a run's task family, checked before anything is built from ``config.json``:
#: inner steps per problem (evaluation unrolls twice this) and scalar parameters per problem.
MAX_STEPS = 10**6
MAX_PARAMS = 2**26


def family_from_config(cfg: Mapping[str, Any]) -> tasks.TaskFamily:
    """Rebuilds the task family recorded in a run's ``config.json``, its sizes checked.

    Raises:
        lopt.CheckpointError: one line naming the field (``task.name``, ``task.settings``,
            ``task.settings.num_steps``, ...) that is missing, malformed or out of bounds
            (:data:`MAX_STEPS` inner steps, :data:`MAX_PARAMS` parameters per problem).
    """

    def bad(field: str, problem: str) -> rundir.CheckpointError:
        return rundir.CheckpointError(f"{field}: {problem}")

    task = cfg.get("task") if isinstance(cfg, Mapping) else None
    if not isinstance(task, Mapping):
        raise bad("task", f"expected an object with name and settings, got {task!r:.80}")
    name, settings = task.get("name"), task.get("settings", {})
    if not isinstance(name, str):
        raise bad("task.name", f"expected a task family name, got {name!r:.80}")
    if not isinstance(settings, Mapping):
        raise bad("task.settings", f"expected an object, got {settings!r:.80}")
    try:
        family = tasks.get(name, **settings)
    except (ValueError, TypeError) as e:
        field = "task.name" if name not in tasks.names() else "task.settings"
        raise bad(field, str(e)) from None
    steps = family.num_steps
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise bad("task.settings.num_steps", f"expected 1 to {MAX_STEPS:,}, got {steps!r}")
    size = family.num_params()
    if not 1 <= size <= MAX_PARAMS:
        raise bad(
            "task.settings",
            f"{size:,} parameters per problem (the bound is {MAX_PARAMS:,})",
        )
    return family


@dataclasses.dataclass(frozen=True)
class HorizonResult:
    """The comparison at one horizon of an ``eval.json`` (``Evaluation.horizons[T]``).

    Attributes:
        steps: the horizon (inner steps).
        optimizers: name -> summary (``metric``, ``sem``, ``final``, ``diverged``, ``curve``,
            ... of :meth:`lopt.Summary.to_json`) and its ``hyperparams``.
        versus: baseline name -> :func:`paired` comparison with the learned optimizer.
        best_baseline: the baseline with the lowest metric (``None``: all diverged, or no
            learned optimizer was compared).
        beats_all: whether the learned optimizer beats every baseline.
    """

    steps: int
    optimizers: Mapping[str, Mapping[str, Any]]
    versus: Mapping[str, Mapping[str, Any]]
    best_baseline: str | None
    beats_all: bool | None

    def metric(self, name: str) -> float | None:
        """Mean normalised loss of ``name`` (``None``: diverged, or not evaluated)."""
        return (self.optimizers.get(name) or {}).get("metric")


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """A run's ``eval.json`` (schema ``lopt.eval/1``), read once and checked.

    Every consumer (the command line, the report, the distillation, the comparison of runs)
    reads it through :meth:`read` or :meth:`from_json`, so a malformed file is one clear error
    naming the file and the field.

    Attributes:
        horizon: the training horizon; ``horizons[horizon]`` is the headline comparison.
        horizons: steps -> :class:`HorizonResult` (the horizon and twice it).
        num_problems: held-out problems per optimizer.
        learned: the learned optimizer's name in ``optimizers``.
        task: ``name``, ``settings`` and ``data_source`` of the evaluated family.
        meta_step: the meta-step of the run's ``theta.npz``.
        selected_step: the meta-step of the evaluated theta (validation may select an
            earlier one than ``meta_step``).
    """

    horizon: int
    horizons: Mapping[int, HorizonResult]
    num_problems: int
    learned: str | None
    task: Mapping[str, Any]
    meta_step: int | None = None
    selected_step: int | None = None

    @property
    def main(self) -> HorizonResult:
        """The comparison at the training horizon."""
        return self.horizons[self.horizon]

    @classmethod
    def from_json(cls, d: Any, *, source: str = "eval.json") -> Evaluation:
        """Checks and wraps an ``eval.json`` dict.

        Every field a consumer reads is checked for its type (numbers, counts >= 0, names of
        evaluated optimizers); fields a hand-written or older file leaves out are allowed.

        Raises:
            lopt.CheckpointError: one line ``SOURCE: FIELD: what is wrong``.
        """

        def need(ok: bool, field: str, what: str, value: Any = None) -> None:
            if not ok:
                got = "nothing" if value is None else f"{value!r:.80}"
                raise rundir.CheckpointError(
                    f"{source}: malformed field {field!r}: expected {what}, got {got}"
                )

        def at(field: str, key: str) -> str:
            return f"{field}.{key}" if field else key

        def number(m: Mapping, key: str, field: str) -> None:
            v = m.get(key)
            ok = v is None or (isinstance(v, int | float) and not isinstance(v, bool))
            need(ok, at(field, key), "a number or null", v)

        def count(m: Mapping, key: str, field: str) -> None:
            v = m.get(key)
            ok = v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0)
            need(ok, at(field, key), "a count (an integer >= 0)", v)

        def flag(m: Mapping, key: str, field: str) -> None:
            v = m.get(key)
            need(v is None or isinstance(v, bool), at(field, key), "true, false or null", v)

        def numbers(m: Mapping, key: str, field: str) -> None:
            v = m.get(key)
            ok = v is None or (
                isinstance(v, list)
                and all(
                    x is None or (isinstance(x, int | float) and not isinstance(x, bool)) for x in v
                )
            )
            need(ok, at(field, key), "a list of numbers", v)

        need(isinstance(d, Mapping), "(top level)", "a JSON object", type(d).__name__)
        raw = d.get("horizons")
        need(isinstance(raw, Mapping) and bool(raw), "horizons", "an object of horizons", raw)
        horizons = {}
        for key, block in raw.items():
            field = f"horizons.{key}"
            need(key.isdigit() and 0 < int(key) <= 2 * MAX_STEPS, field, "a horizon", key)
            need(isinstance(block, Mapping), field, "an object", block)
            opts = block.get("optimizers")
            need(isinstance(opts, Mapping), f"{field}.optimizers", "an object", opts)
            for name, summary in opts.items():
                f = f"{field}.optimizers.{name}"
                need(isinstance(summary, Mapping), f, "an object", summary)
                for k in ("metric", "sem", "final", "final_sem"):
                    number(summary, k, f)
                count(summary, "diverged", f)
                numbers(summary, "curve_mean", f)
                numbers(summary, "curve_sem", f)
                hp = summary.get("hyperparams", {})
                need(isinstance(hp, Mapping), f"{f}.hyperparams", "an object", hp)
                for k in hp:
                    number(hp, k, f"{f}.hyperparams")
            versus = block.get("versus", {})
            need(isinstance(versus, Mapping), f"{field}.versus", "an object", versus)
            for name, v in versus.items():
                f = f"{field}.versus.{name}"
                need(isinstance(v, Mapping), f, "an object", v)
                need(name in opts, f, "an evaluated optimizer", name)
                number(v, "diff", f)
                number(v, "diff_sem", f)
                flag(v, "beats", f)
                for k in ("finite_pairs", "learned_diverged", "baseline_diverged"):
                    count(v, k, f)
            best = block.get("best_baseline")
            ok = best is None or (isinstance(best, str) and best in opts)
            need(ok, f"{field}.best_baseline", "an evaluated baseline", best)
            flag(block, "beats_all", field)
            horizons[int(key)] = HorizonResult(int(key), opts, versus, best, block.get("beats_all"))
        horizon = d.get("horizon", min(horizons))
        ok = isinstance(horizon, int) and not isinstance(horizon, bool) and horizon in horizons
        need(ok, "horizon", "one of the horizons", horizon)
        problems = d.get("num_problems")
        ok = problems is None or (isinstance(problems, int) and not isinstance(problems, bool))
        need(ok and (problems is None or problems >= 1), "num_problems", "a count >= 1", problems)
        learned = d.get("learned")
        ok = learned is None or (
            isinstance(learned, str) and all(learned in h.optimizers for h in horizons.values())
        )
        need(ok, "learned", "an evaluated optimizer", learned)
        task = d.get("task") or {}
        need(isinstance(task, Mapping), "task", "an object", task)
        for k in ("name", "data_source"):
            v = task.get(k)
            need(v is None or isinstance(v, str), f"task.{k}", "a string", v)
        count(d, "meta_step", "")
        count(d, "selected_step", "")
        return cls(
            horizon=horizon,
            horizons=horizons,
            num_problems=problems,
            learned=learned,
            task=task,
            meta_step=d.get("meta_step"),
            selected_step=d.get("selected_step", d.get("meta_step")),
        )

    @classmethod
    def read(cls, path: str | Path) -> Evaluation:
        """Reads ``path`` (an ``eval.json``, or a run directory holding one)."""
        path = Path(path)
        path = path / "eval.json" if path.is_dir() else path
        return cls.from_json(rundir.read_json(path), source=str(path))


def format_table(result: Mapping[str, Any] | Evaluation) -> str:
    """A plain-text table of an :func:`compare` result or evaluation (one block per horizon)."""
    ev = result if isinstance(result, Evaluation) else Evaluation.from_json(result)
    lines = []
    for t, block in ev.horizons.items():
        lines.append(f"horizon {t} steps, {ev.num_problems} held-out problems")
        lines.append(
            f"  {'optimizer':<10} {'metric':>10} {'± s.e.m.':>9} {'final loss':>11} "
            f"{'diverged':>8}  {'vs learned':>22}  hyperparameters"
        )
        for name, s in block.optimizers.items():
            metric = "inf" if s.get("metric") is None else f"{s['metric']:.4f}"
            sem = "-" if s.get("sem") is None else f"{s['sem']:.4f}"
            final = "inf" if s.get("final") is None else f"{s['final']:.3g}"
            v = block.versus.get(name)
            if v is None:
                vs = ""
            elif v.get("diff") is None:
                vs = "beaten (diverged)" if v.get("beats") else "diverged runs"
            else:
                verdict = "beaten" if v.get("beats") else "not beaten"
                if v.get("learned_diverged"):
                    verdict += f" (learned diverged on {v['learned_diverged']})"
                dsem = "-" if v.get("diff_sem") is None else f"{v['diff_sem']:.4f}"
                vs = f"{-v['diff']:+.4f}±{dsem} {verdict}"
            hp = ", ".join(f"{k}={val:.3g}" for k, val in s.get("hyperparams", {}).items())
            lines.append(
                f"  {name:<10} {metric:>10} {sem:>9} {final:>11} {s.get('diverged', '-'):>8}  "
                f"{vs:>22}  {hp}"
            )
    return "\n".join(lines)
