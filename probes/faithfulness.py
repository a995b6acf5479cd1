"""Faithfulness: do the mechanisms read off an optimizer reproduce what it does?

An analysis names mechanisms (momentum, clipping, schedule, adaptation, damping) and reads a
number off each. Composed as a chain of optax transformations
(:func:`probes.to_chain.chain_from_analysis`, the probed numbers as they are, no loss used), they
should behave like the optimizer itself.
:func:`faithfulness` measures how closely, in two ways:

* **updates** (teacher forcing): the optimizer is run on ``num_problems`` training problems of
  the family; the chain is fed the very gradients the optimizer met and its updates are compared
  with the optimizer's, ``e = √(Σ (u_chain − u)² / Σ u²)`` per problem (over steps and
  coordinates). ``e = 0`` is a perfect description, ``e = 1`` is as far off as making no
  update at all. The error is also split by where it sits (the **residual**): early, middle and
  late thirds of the horizon (a schedule's territory) and gradients below and above the
  clipping threshold (clipping's), each as its share of ``Σ (u_chain − u)²``. A share far above
  the part's share of ``Σ u²`` says which behaviour the vocabulary leaves unexplained.
* **loss curve** (closed loop): the chain and the optimizer each train the 128 held-out
  problems of :func:`lopt.heldout_key` (the evaluation's, so the optimizer's metric equals
  ``eval.json``'s); the mean normalised losses and the relative distance between the two mean
  curves, ``Σ_t |c̄_t − ℓ̄_t| / Σ_t ℓ̄_t``.
* **steady update** (open loop): the chain's update after ``T`` steps (the horizon) of each
  constant gradient of the bias probe's grid, over the optimizer's, within the training range
  (:mod:`probes.steady_update`): where the two update functions part, and by how much.

Shapes: P problems, T steps, C coordinates kept per problem.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import optax

from lopt.chain import build_chain
from lopt.evaluation import heldout_key
from lopt.unroll import Summary, evaluate, summarize
from probes.memory_along import chain_gain_along, memory_along
from probes.replay import TRAJECTORY_SEED, coordinates, record, replay
from probes.steady_update import compare_steady_update
from probes.to_chain import chain_from_analysis

__all__ = [
    "TRAJECTORY_SEED",
    "Faithfulness",
    "coordinates",
    "faithfulness",
    "record",
    "replay",
]


@dataclasses.dataclass(frozen=True)
class Faithfulness:
    """How well the detected mechanisms, with their probed numbers, reproduce the optimizer.

    Attributes:
        chain: the composed mechanisms (a :func:`lopt.build_chain` list).
        update_error: median over problems of the relative RMS error of the chain's updates
            on the optimizer's own gradients (0: exact; 1: no better than no update; NaN when
            the optimizer made no finite non-zero update on any problem).
        update_error_range: its 10th and 90th percentiles over problems.
        residual: where the squared update error sits: ``{"steps": {"early", "middle",
            "late"}, "gradients": {"below_threshold", "above_threshold"}}``, each
            ``{"error_share", "update_share"}`` (``gradients`` only when clipping was detected).
        loss_learned: the optimizer's mean normalised loss on the held-out problems.
        loss_chain: the chain's (``None`` when it diverged on a problem).
        curve_error: relative L1 distance between the two mean normalised loss curves.
        num_problems: training problems whose trajectories were replayed.
        num_steps: the horizon.
        memory_along: the optimizer's gain and memory along these trajectories beside the
            convergence point's (:func:`probes.memory_along.memory_along`), with the chain's
            steady gain on the same trajectories and its ratio to the optimizer's
            (:func:`probes.memory_along.chain_gain_along`), or ``None``.
        steady_update: the chain's update after the horizon's steps of each constant gradient
            of the bias probe's grid beside the optimizer's, and their ratio over the training
            range (:func:`probes.steady_update.compare_steady_update`; ``None`` when the
            optimizer is not coordinate-wise or the analysis has no grid).
    """

    chain: list[dict[str, Any]]
    update_error: float
    update_error_range: tuple[float, float]
    residual: dict[str, dict[str, dict[str, float]]]
    loss_learned: float | None
    loss_chain: float | None
    curve_error: float | None
    num_problems: int
    num_steps: int
    memory_along: dict[str, Any] | None = None
    steady_update: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (``analysis.json``'s ``faithfulness``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Faithfulness:
        """The inverse of :meth:`to_json`."""
        fields = {f.name for f in dataclasses.fields(cls)}
        # absent from analyses written before they were read
        optional = {"memory_along", "steady_update"}
        missing = fields - set(d) - optional
        if missing:
            raise ValueError(f"faithfulness: missing field(s) {', '.join(sorted(missing))}")
        return cls(**{k: d[k] for k in fields if k in d})


def _shares(sq_err: np.ndarray, sq_u: np.ndarray, masks: dict[str, np.ndarray]) -> dict:
    total_e, total_u = max(float(sq_err.sum()), 1e-30), max(float(sq_u.sum()), 1e-30)
    return {
        name: {
            "error_share": float(sq_err[m].sum() / total_e),
            "update_share": float(sq_u[m].sum() / total_u),
        }
        for name, m in masks.items()
    }


def faithfulness(
    analysis: Mapping[str, Any],
    tx: optax.GradientTransformation,
    family: Any,
    *,
    num_problems: int = 32,
    coords: int = 256,
    heldout_problems: int = 128,
    coordinatewise: bool = True,
) -> Faithfulness:
    """Scores the mechanisms of ``analysis``, with their probed numbers, against ``tx`` itself.

    Args:
        analysis: the probes' result (``Analysis.to_json()`` or ``analysis.json``).
        tx: the optimizer that was analysed (a learned optimizer's ``optimizer(theta)``, or
            any optax transformation).
        family: the task family whose problems the optimizer is replayed and evaluated on.
        num_problems: training problems whose trajectories are replayed.
        coords: coordinates kept per problem (evenly spaced in the flattened parameters).
        heldout_problems: held-out problems for the loss curves.
        coordinatewise: whether ``tx`` treats every coordinate alone (a learned optimizer with
            a cell; most optax transformations); the memory along training and the steady
            update are read only then.

    Returns:
        A :class:`Faithfulness`.
    """
    chain, _ = chain_from_analysis(analysis)
    chain_tx = build_chain(chain)
    idx = coordinates(family.num_params(), coords)
    keys = jax.random.split(jax.random.key(TRAJECTORY_SEED), num_problems)
    seqs = jax.jit(lambda k: record(tx, family, k, idx))(keys)
    u_chain = jax.jit(jax.vmap(lambda s: replay(chain_tx, s)))(seqs)
    along = memory_along(tx, seqs, analysis, coordinatewise=coordinatewise)
    if along is not None:
        along.update(chain_gain_along(chain_tx, seqs, analysis, along))
    steady = None
    if coordinatewise:
        steady = compare_steady_update(tx, chain_tx, analysis, family.num_steps, seqs["g"])
    u, g = np.asarray(seqs["u"], np.float64), np.asarray(seqs["g"], np.float64)
    sq_err, sq_u = (np.asarray(u_chain, np.float64) - u) ** 2, u**2
    ok = np.isfinite(sq_err).all((1, 2)) & np.isfinite(sq_u).all((1, 2)) & (sq_u.sum((1, 2)) > 0)
    sq_err, sq_u, g = sq_err[ok], sq_u[ok], g[ok]
    if not len(sq_err):  # an inert optimizer (untrained, zero readout): nothing to describe
        per_problem = np.full(1, np.nan)
    else:
        per_problem = np.sqrt(sq_err.sum((1, 2)) / sq_u.sum((1, 2)))
    steps = np.arange(family.num_steps)[None, :, None] * np.ones_like(g)
    thirds = np.minimum(3 * steps // family.num_steps, 2)
    residual = {
        "steps": _shares(
            sq_err, sq_u, {name: thirds == i for i, name in enumerate(("early", "middle", "late"))}
        )
    }
    clip = analysis.get("clipping") or {}
    if clip.get("detected") and np.isfinite(clip.get("threshold") or np.nan):
        above = np.abs(g) > float(clip["threshold"])
        residual["gradients"] = _shares(
            sq_err, sq_u, {"below_threshold": ~above, "above_threshold": above}
        )
    summaries = {
        name: summarize(evaluate(opt, family, heldout_key(), heldout_problems, family.num_steps))
        for name, opt in (("learned", tx), ("chain", chain_tx))
    }
    learned, mine = summaries["learned"], summaries["chain"]

    def metric(s: Summary) -> float | None:
        return float(s.metric) if np.isfinite(s.metric) else None

    curve_error = None
    if np.isfinite(learned.curve_mean).all() and np.isfinite(mine.curve_mean).all():
        lm, cm = learned.curve_mean, mine.curve_mean
        curve_error = float(np.abs(cm - lm).sum() / max(lm.sum(), 1e-30))
    return Faithfulness(
        chain=chain,
        update_error=float(np.median(per_problem)),
        update_error_range=(
            float(np.percentile(per_problem, 10)),
            float(np.percentile(per_problem, 90)),
        ),
        residual=residual,
        loss_learned=metric(learned),
        loss_chain=metric(mine),
        curve_error=curve_error,
        num_problems=int(ok.sum()),
        num_steps=family.num_steps,
        memory_along=along,
        steady_update=steady,
    )
