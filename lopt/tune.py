"""Tuning the hand-designed baselines on a task family: a vectorised grid search.

:func:`tune` trains every candidate hyperparameter setting on the same ``num_problems``
training problems with the shared inner loop (:func:`lopt.unroll`), ``vmap``-ped over
candidates and over problems, so a search stage is one batched run and one compilation.
Candidates are processed in chunks of a fixed size (one jitted function, called once per
chunk) so that large networks stay within memory. Two stages: a coarse log grid, then a
finer grid around the best point (see :class:`lopt.SearchSpace`).

Selection uses the meta-objective by default: the mean over problems of ``mean_t f_t / f_0``
(:func:`lopt.normalized_loss`). A candidate with any non-finite loss on any problem is
rejected (its metric is ``inf``), whatever its other losses.

Shapes: ``C`` candidates, ``B`` problems, ``T`` steps.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from lopt.baselines import SearchSpace, baseline, baseline_names, search_space
from lopt.unroll import Summary, evaluate, init_inner, normalized_loss, summarize, unroll

#: Selection metrics: ``normalized`` (mean normalised loss, the meta-objective), ``log``
#: (mean over problems of ``log(mean_t f_t / f_0)``, less dominated by the hardest problems),
#: ``final`` (mean loss after the last update).
METRICS = ("normalized", "log", "final")

#: Memory allowed for one chunk of candidates when ``chunk_size`` is not given.
DEFAULT_MEMORY_BUDGET = 2 * 2**30


class TuneResult(NamedTuple):
    """What :func:`tune` found.

    Attributes:
        name: the baseline.
        hyperparams: the chosen hyperparameters (Python floats).
        tx: the optax transformation built from them.
        metric: the chosen candidate's training metric.
        metric_name: which metric (see :data:`METRICS`).
        grid: every candidate tried, for plots: ``{hyperparameter: values[C], "stage":
            int[C] (0 coarse, 1 refinement), "metric": float[C] (inf if rejected),
            "diverged": int[C] (problems with a non-finite loss)}``.
        num_problems: training problems per candidate.
        num_steps: updates per problem.
        at_edge: the chosen learning rate is at the edge of the coarse grid, so the grid may
            be too narrow.
        heldout: the held-out :class:`lopt.Summary`, when ``eval_key`` was given.
    """

    name: str
    hyperparams: dict[str, float]
    tx: optax.GradientTransformation
    metric: float
    metric_name: str
    grid: dict[str, np.ndarray]
    num_problems: int
    num_steps: int
    at_edge: bool
    heldout: Summary | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (non-finite numbers become ``None``; no ``tx``)."""

        def num(x):
            x = float(x)
            return x if math.isfinite(x) else None

        out = {
            "optimizer": self.name,
            "hyperparams": dict(self.hyperparams),
            "metric_name": self.metric_name,
            "train_metric": num(self.metric),
            "num_problems": self.num_problems,
            "num_steps": self.num_steps,
            "at_edge": bool(self.at_edge),
            "grid": {
                k: [int(x) for x in v] if v.dtype.kind in "iu" else [num(x) for x in v]
                for k, v in self.grid.items()
            },
        }
        if self.heldout is not None:
            out["heldout"] = self.heldout.to_json()
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TuneResult:
        """Rebuilds a result written by :meth:`to_json` (``tx`` from the hyperparameters).

        ``None`` metrics (rejected candidates) become ``inf`` again; the held-out summary, if
        any, is not restored.
        """

        def arr(v):
            if all(isinstance(x, int) for x in v):
                return np.asarray(v, np.int64)
            return np.asarray([math.inf if x is None else x for x in v], np.float64)

        hyperparams = {k: float(v) for k, v in d["hyperparams"].items()}
        metric = d.get("train_metric")
        return cls(
            name=d["optimizer"],
            hyperparams=hyperparams,
            tx=baseline(d["optimizer"], **hyperparams),
            metric=math.inf if metric is None else float(metric),
            metric_name=d["metric_name"],
            grid={k: arr(v) for k, v in d.get("grid", {}).items()},
            num_problems=int(d["num_problems"]),
            num_steps=int(d["num_steps"]),
            at_edge=bool(d["at_edge"]),
        )


@functools.partial(jax.jit, static_argnames=("name", "num_steps"))
def _run_chunk(family, hyper, keys, *, name, num_steps):
    """Trains every problem in ``keys[B]`` with every candidate in ``hyper`` (``{k: [C]}``).

    Returns per-candidate, per-problem ``(normalised loss, final loss, all finite)``, each
    ``[C, B]``: the losses themselves never leave the device.
    """

    def one_candidate(hp):
        # Built inside the vmapped function: the hyperparameters are traced scalars.
        tx = optax.with_extra_args_support(baseline(name, **hp))

        def one_problem(k):
            return unroll(tx, family, init_inner(tx, family, k), num_steps)[1]

        losses = jax.vmap(one_problem)(keys)  # [B, T]
        finite = jnp.all(jnp.isfinite(losses), axis=-1)
        return normalized_loss(losses), losses[:, -1], finite

    return jax.vmap(one_candidate)(hyper)


def _aval_bytes(jaxpr) -> int:
    """Bytes of every intermediate in a jaxpr and its sub-jaxprs (an upper bound on memory)."""
    total = 0
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            aval = getattr(v, "aval", None)
            if hasattr(aval, "shape") and hasattr(aval, "dtype"):
                total += int(np.prod(aval.shape, dtype=np.int64)) * aval.dtype.itemsize
        for p in eqn.params.values():
            for sub in p if isinstance(p, list | tuple) else (p,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    total += _aval_bytes(inner)
    return total


def _auto_chunk(name: str, family, key: jax.Array, num_problems: int, budget: int) -> int:
    """Candidates per chunk so that one chunk's intermediates fit in ``budget`` bytes."""
    space = search_space(name)
    hp = {k: float(v[0]) for k, v in space.coarse().items()}

    def one_step(k):
        tx = optax.with_extra_args_support(baseline(name, **hp))
        return unroll(tx, family, init_inner(tx, family, k), 1)

    per_run = _aval_bytes(jax.make_jaxpr(one_step)(key).jaxpr)
    return max(1, budget // max(1, per_run * num_problems))


def _score(norm: np.ndarray, final: np.ndarray, finite: np.ndarray, metric: str):
    """Per-candidate metric (``inf`` if any problem diverged) and diverged-problem count."""
    diverged = np.sum(~finite, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if metric == "normalized":
            score = np.mean(norm, axis=-1)
        elif metric == "log":
            score = np.mean(np.log(norm), axis=-1)
        else:
            score = np.mean(final, axis=-1)
    score = np.where((diverged > 0) | ~np.isfinite(score), np.inf, score)
    return score, diverged


def _run_stage(name, family, keys, cands, num_steps, chunk, progress, desc):
    """Evaluates the candidates ``{k: values[C]}`` in chunks of ``chunk`` (last one padded)."""
    n = len(next(iter(cands.values())))
    pad = -n % chunk
    padded = {k: np.concatenate([v, np.repeat(v[-1:], pad)]) for k, v in cands.items()}
    outs = []
    starts = range(0, n + pad, chunk)
    for s in tqdm(starts, desc=desc, leave=False, disable=not progress):
        hp = {k: jnp.asarray(v[s : s + chunk], jnp.float32) for k, v in padded.items()}
        outs.append(_run_chunk(family, hp, keys, name=name, num_steps=num_steps))
    norm, final, finite = (np.concatenate([np.asarray(o[i]) for o in outs])[:n] for i in range(3))
    return norm.astype(np.float64), final.astype(np.float64), finite


def _positive_int(label: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{label} must be a positive int, got {value!r}")
    return int(value)


def tune(
    name: str,
    family,
    key: jax.Array,
    *,
    num_problems: int = 32,
    num_steps: int | None = None,
    metric: str = "normalized",
    space: SearchSpace | None = None,
    refine: bool = True,
    vectorize: bool = True,
    chunk_size: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    eval_key: jax.Array | None = None,
    eval_problems: int = 128,
    progress: bool = False,
) -> TuneResult:
    """Tunes baseline ``name`` on ``family`` by a two-stage grid search.

    Every candidate trains the same problems, ``jax.random.split(key, num_problems)``
    (exactly those :func:`lopt.evaluate` draws from ``key``). The candidate with the lowest
    metric wins; candidates with any non-finite loss are rejected.

    Args:
        name: ``sgd``, ``momentum``, ``rmsprop`` or ``adam``.
        family: the task family.
        key: picks the training problems (keep it apart from the held-out key).
        num_problems: training problems per candidate (``B``).
        num_steps: updates per problem; defaults to ``family.num_steps``.
        metric: the selection metric, one of :data:`METRICS`.
        space: the search space; defaults to :func:`lopt.search_space` ``(name)``.
        refine: run the refinement stage around the best coarse point.
        vectorize: ``vmap`` over candidates (chunks of ``chunk_size``); ``False`` runs one
            candidate at a time (same compiled program with one candidate; for comparison).
        chunk_size: candidates per batched call (the last chunk of a stage is padded, so
            every call has the same shape and compiles once); by default the refinement
            grid's size, or fewer if they would not fit in ``memory_budget`` bytes (estimated
            from the inner step's intermediates).
        memory_budget: bytes for one chunk when ``chunk_size`` is ``None``.
        eval_key: if given, also evaluate the winner on ``eval_problems`` held-out problems
            drawn from this key (:func:`lopt.evaluate` + :func:`lopt.summarize`).
        eval_problems: number of held-out problems.
        progress: show a progress bar over chunks.

    Returns:
        A :class:`TuneResult`.

    Raises:
        ValueError: for an unknown optimizer or metric, bad sizes, or if every candidate
            diverged.

    Example:
        >>> import jax, lopt, tasks
        >>> family = tasks.get("linear_regression")
        >>> res = lopt.tune("momentum", family, jax.random.key(0))  # doctest: +SKIP
        >>> res.hyperparams  # doctest: +SKIP
        {'learning_rate': 3.16..., 'momentum': 0.9}
    """
    space = search_space(name) if space is None else space
    if space.name != name:
        raise ValueError(f"search space is for {space.name!r}, not {name!r}")
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of: {', '.join(METRICS)}")
    for attr in ("sample", "init", "loss", "num_steps"):
        if not hasattr(family, attr):
            raise ValueError(f"family must be a task family (tasks.get), got {family!r}")
    num_problems = _positive_int("num_problems", num_problems)
    num_steps = _positive_int("num_steps", family.num_steps if num_steps is None else num_steps)
    eval_problems = _positive_int("eval_problems", eval_problems)
    if not space.learning_rates or (space.other and not space.other_values):
        raise ValueError(f"search space for {name!r} is empty")
    keys = jax.random.split(key, num_problems)
    if not vectorize:
        chunk = 1
    elif chunk_size is None:
        chunk = _auto_chunk(name, family, keys[0], num_problems, int(memory_budget))
        # One chunk size for both stages means one compilation per tuning. The refinement
        # grid is the smaller stage: the coarse one then takes a few chunks of its size.
        n_refine = len(space.refine_lr_log10) * (len(space.refine_other_log10) or 1)
        chunk = min(chunk, n_refine if refine else len(space.coarse()["learning_rate"]))
    else:
        chunk = _positive_int("chunk_size", chunk_size)

    names = ["learning_rate"] + ([space.other] if space.other else [])
    grid: dict[str, list[np.ndarray]] = {k: [] for k in [*names, "stage", "metric", "diverged"]}

    def run(stage: int, cands: dict[str, np.ndarray]) -> None:
        n = len(cands["learning_rate"])
        desc = f"{name} {'coarse' if stage == 0 else 'refine'}"
        norm, final, finite = _run_stage(
            name, family, keys, cands, num_steps, chunk, progress, desc
        )
        score, diverged = _score(norm, final, finite, metric)
        for k in names:
            grid[k].append(cands[k])
        grid["stage"].append(np.full(n, stage, np.int64))
        grid["metric"].append(score)
        grid["diverged"].append(diverged.astype(np.int64))

    def best() -> tuple[int, dict[str, np.ndarray]]:
        flat = {k: np.concatenate(v) for k, v in grid.items()}
        i = int(np.argmin(flat["metric"]))
        if not np.isfinite(flat["metric"][i]):
            raise ValueError(
                f"tuning {name} on {getattr(family, 'name', family)!r}: every candidate "
                f"diverged; widen the search space toward smaller learning rates"
            )
        return i, flat

    run(0, space.coarse())
    if refine:
        i, flat = best()
        centre = {k: float(flat[k][i]) for k in names}
        cands = space.refine(centre)
        seen = np.stack([flat[k] for k in names], axis=1)
        new = np.stack([cands[k] for k in names], axis=1)
        keep = ~np.any(np.all(np.isclose(new[:, None], seen[None], rtol=1e-9), -1), -1)
        if keep.any():
            run(1, {k: v[keep] for k, v in cands.items()})
    i, flat = best()
    hyperparams = {k: float(flat[k][i]) for k in names}
    tx = baseline(name, **hyperparams)
    lr = hyperparams["learning_rate"]
    at_edge = bool(
        lr <= min(space.learning_rates) * (1 + 1e-9) or lr >= max(space.learning_rates) * (1 - 1e-9)
    )
    heldout = None
    if eval_key is not None:
        heldout = summarize(evaluate(tx, family, eval_key, eval_problems, num_steps))
    return TuneResult(
        name=name,
        hyperparams=hyperparams,
        tx=tx,
        metric=float(flat["metric"][i]),
        metric_name=metric,
        grid=flat,
        num_problems=num_problems,
        num_steps=num_steps,
        at_edge=at_edge,
        heldout=heldout,
    )


__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "METRICS",
    "TuneResult",
    "baseline_names",
    "tune",
]
