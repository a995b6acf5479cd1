"""The inner loop: one routine that trains a problem with an optax optimizer.

:func:`unroll` is shared by meta-training (differentiated, possibly truncated), by
:func:`evaluate` and the baselines' tuning, and by the probes' trajectory recording, so every
part of the toolkit sees the same inner training.

Shapes: ``B`` problems, ``T`` steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt.networks import PRODUCT
from tasks import TaskFamily


class InnerState(NamedTuple):
    """Everything one problem's inner training carries from step to step.

    Attributes:
        task: the problem (from ``family.sample``).
        params: current parameters.
        opt_state: the optimizer's state.
        key: the problem's data key; step ``t`` uses ``fold_in(key, t)`` for its minibatch.
        step: inner steps taken so far, ``int32``.
    """

    task: Any
    params: Any
    opt_state: Any
    key: jax.Array
    step: jax.Array


class StepRecord(NamedTuple):
    """What one inner step saw; :func:`unroll`'s ``record`` function picks from it."""

    loss: jax.Array
    params: Any  # before the update
    grads: Any
    updates: Any
    opt_state: Any  # after the update


def init_inner(tx: optax.GradientTransformation, family: TaskFamily, key: jax.Array) -> InnerState:
    """Draws a problem and its starting point from ``key`` and initialises ``tx`` on it."""
    k_task, k_init, k_data = jax.random.split(key, 3)
    task = family.sample(k_task)
    params = family.init(task, k_init)
    return InnerState(task, params, tx.init(params), k_data, jnp.zeros([], jnp.int32))


def record_loss(rec: StepRecord) -> jax.Array:
    """The default record: the loss before each update."""
    return rec.loss


def unroll(
    tx: optax.GradientTransformationExtraArgs,
    family: TaskFamily,
    state: InnerState,
    num_steps: int,
    *,
    record: Callable[[StepRecord], Any] = record_loss,
    checkpoint: bool = False,
    save_products: bool = False,
) -> tuple[InnerState, Any]:
    """Runs ``num_steps`` inner updates of one problem with ``lax.scan``.

    Each step evaluates the loss and gradient at the current parameters, calls
    ``tx.update(grads, opt_state, params, value=loss)`` and applies the update.

    Args:
        tx: the optimizer (wrap plain optax transformations with
            ``optax.with_extra_args_support``; :func:`evaluate` does it for you).
        family: the task family (``loss`` is taken from it).
        state: where to start (from :func:`init_inner` or an earlier unroll).
        num_steps: number of updates.
        record: maps each step's :class:`StepRecord` to what is stacked over steps.
        checkpoint: rematerialise the scan body in the backward pass (``jax.checkpoint``), so
            differentiating a long unroll stores only the carry per step.
        save_products: with ``checkpoint``, also store the learned optimizer's matrix
            products with its state (``lopt.networks.PRODUCT``) rather than recompute them:
            :func:`product_floats` more floats per coordinate and step, and a quarter fewer
            FLOPs for a GRU (the recurrent matmuls run three times per step instead of four).

    Returns:
        ``(final_state, records)`` with records stacked along a leading ``T`` axis.
    """

    def body(s: InnerState, _):
        loss, grads = jax.value_and_grad(family.loss, argnums=1)(
            s.task, s.params, jax.random.fold_in(s.key, s.step)
        )
        updates, opt_state = tx.update(grads, s.opt_state, s.params, value=loss)
        params = optax.apply_updates(s.params, updates)
        out = record(StepRecord(loss, s.params, grads, updates, opt_state))
        return InnerState(s.task, params, opt_state, s.key, s.step + 1), out

    if checkpoint:
        policy = jax.checkpoint_policies.save_only_these_names(PRODUCT) if save_products else None
        body = jax.checkpoint(body, policy=policy)
    return jax.lax.scan(body, state, length=num_steps)


def product_floats(tx: optax.GradientTransformation) -> int:
    """Floats per coordinate and step that ``save_products`` stores for ``tx``.

    The total size of the values named :data:`lopt.networks.PRODUCT` in one traced update of
    a single coordinate: ``3H`` for the GRU optimizer, ``4H`` for the LSTM, ``H`` for the tanh
    RNN, 0 for optimizers without them (the MLP optimizer, any optax optimizer).
    """
    tx = optax.with_extra_args_support(tx)
    params = jnp.zeros([1], jnp.float32)

    def update(g):
        return tx.update(g, tx.init(params), params)

    return _named_size(jax.make_jaxpr(update)(params).jaxpr)


def _named_size(jaxpr: Any) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "name" and eqn.params.get("name") == PRODUCT:
            total += sum(math.prod(v.aval.shape) for v in eqn.outvars)
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                inner = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr's Jaxpr, or a Jaxpr
                if hasattr(inner, "eqns"):
                    total += _named_size(inner)
    return total


def evaluate(
    tx: optax.GradientTransformation,
    family: TaskFamily,
    key: jax.Array,
    num_problems: int = 128,
    num_steps: int | None = None,
) -> jax.Array:
    """Trains ``num_problems`` problems drawn from ``key`` with ``tx`` and returns their losses.

    The same ``key`` gives the same problems (and minibatches) for every optimizer, so
    results are paired. Diverged runs keep their non-finite values.

    Args:
        tx: any optax transformation.
        family: the task family.
        key: picks the held-out problems.
        num_problems: how many problems (``B``).
        num_steps: updates per problem (``T``); defaults to ``family.num_steps``.

    Returns:
        ``losses[B, T]``: the loss before each update, so ``losses[:, 0]`` is ``f₀``.
    """
    num_steps = family.num_steps if num_steps is None else num_steps
    if num_problems < 1 or num_steps < 1:
        raise ValueError(
            f"need num_problems >= 1 and num_steps >= 1, got {num_problems}, {num_steps}"
        )
    tx = optax.with_extra_args_support(tx)

    @jax.jit
    def run(family, keys):
        def one(k):
            return unroll(tx, family, init_inner(tx, family, k), num_steps)[1]

        return jax.vmap(one)(keys)

    return run(family, jax.random.split(key, num_problems))


def normalized_loss(losses: jax.Array) -> jax.Array:
    """Per-problem ``mean_t f_t / f_0``, the paper's meta-objective; ``losses[..., T]``."""
    return jnp.mean(losses / losses[..., :1], axis=-1)


class Summary(NamedTuple):
    """Summary of a ``losses[B, T]`` array (see :func:`summarize`)."""

    metric: float
    sem: float
    final: float
    final_sem: float
    diverged: int
    curve_mean: np.ndarray
    curve_sem: np.ndarray

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (non-finite numbers become ``None``)."""

        def num(x):
            x = float(x)
            return x if np.isfinite(x) else None

        return {
            "metric": num(self.metric),
            "sem": num(self.sem),
            "final": num(self.final),
            "final_sem": num(self.final_sem),
            "diverged": int(self.diverged),
            "curve_mean": [num(x) for x in self.curve_mean],
            "curve_sem": [num(x) for x in self.curve_sem],
        }


def _mean_sem(x: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    n = x.shape[axis]
    sem = np.std(x, axis=axis, ddof=1) / np.sqrt(n) if n > 1 else np.zeros_like(np.mean(x, axis))
    return np.mean(x, axis=axis), sem


def per_problem_metric(losses: np.ndarray) -> np.ndarray:
    """Per-problem mean normalised loss ``mean_t f_t/f_0`` (``inf`` for diverged problems)."""
    losses = np.asarray(losses, np.float64)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        m = np.mean(losses / losses[:, :1], axis=1)
    return np.where(np.all(np.isfinite(losses), axis=1), m, np.inf)


def summarize(losses: jax.Array) -> Summary:
    """The headline numbers of an evaluation.

    ``metric`` is the mean over problems of ``mean_t f_t / f_0`` (the meta-objective), with its
    standard error; ``final`` the mean last loss. A problem counts as *diverged* if any of its
    losses is non-finite; then ``metric`` and ``final`` are infinite rather than hiding it. The
    curves are the per-step mean and s.e.m. of the normalised loss ``f_t / f_0``.
    """
    losses = np.asarray(losses, np.float64)
    finite = np.all(np.isfinite(losses), axis=1)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        metric, sem = _mean_sem(per_problem_metric(losses))
        norm = losses / losses[:, :1]
        final = np.where(finite, losses[:, -1], np.inf)
        final_mean, final_sem = _mean_sem(final)
    # Curves describe the runs that stayed finite; `diverged` says how many did not.
    if finite.any():
        curve_mean, curve_sem = _mean_sem(norm[finite])
    else:
        curve_mean = curve_sem = np.full(losses.shape[1], np.nan)
    if not finite.all():
        sem = final_sem = np.inf
    return Summary(
        float(metric),
        float(sem),
        float(final_mean),
        float(final_sem),
        int((~finite).sum()),
        curve_mean,
        curve_sem,
    )
