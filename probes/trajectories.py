"""Record what an optimizer does on problems from a family (docs/method.md, Trajectories), and PCA.

:func:`trajectories` runs :func:`lopt.unroll` with a ``record`` function that keeps, per step,
the loss and, for a fixed subsample of ``C`` coordinates, the parameters (before the update),
gradients, updates and hidden states (read from the optimizer state's ``hidden`` field with
``optax.tree.get`` when there is one). Subsampling bounds memory at ``B·T·C·H`` floats.

Shapes: ``B`` problems, ``T`` steps, ``C`` recorded coordinates, ``H`` hidden units,
``K`` principal components.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt.cell import Cell, cell_optimizer
from lopt.unroll import StepRecord, init_inner, unroll
from tasks import TaskFamily


class Trajectories(NamedTuple):
    """Recorded runs.

    Attributes:
        loss: loss before each update, ``(B, T)``.
        params: recorded coordinates before each update, ``(B, T, C)``.
        grads: their gradients, ``(B, T, C)``.
        updates: their updates, ``(B, T, C)``.
        hidden: their hidden states after each update, ``(B, T, C, H)``, or ``None``.
        initial_hidden: hidden states before the first update, ``(B, C, H)``, or ``None``.
        coords: indices of the recorded coordinates in the flattened parameters, ``(C,)``.
    """

    loss: jax.Array
    params: jax.Array
    grads: jax.Array
    updates: jax.Array
    hidden: jax.Array | None
    initial_hidden: jax.Array | None
    coords: jax.Array


def _flat(tree: Any) -> jax.Array:
    return jnp.concatenate([jnp.ravel(x).astype(jnp.float32) for x in jax.tree.leaves(tree)])


def _hidden(opt_state: Any) -> jax.Array | None:
    try:
        return optax.tree.get(opt_state, "hidden")
    except KeyError:  # several `hidden` fields: ambiguous, record none
        return None


def as_transformation(opt_or_tx: Any, theta: Any = None) -> optax.GradientTransformationExtraArgs:
    """An optax transformation from a transformation, a :class:`lopt.Cell` or ``opt``+``theta``."""
    if isinstance(opt_or_tx, Cell):
        return cell_optimizer(opt_or_tx)
    if hasattr(opt_or_tx, "optimizer") and callable(opt_or_tx.optimizer):
        if theta is None:
            raise ValueError("a learned optimizer needs `theta` to build its transformation")
        return optax.with_extra_args_support(opt_or_tx.optimizer(theta))
    if isinstance(opt_or_tx, optax.GradientTransformation):
        return optax.with_extra_args_support(opt_or_tx)
    raise TypeError(
        f"expected an optax transformation, a Cell or a learned optimizer, got {opt_or_tx!r}"
    )


def trajectories(
    opt_or_tx: Any,
    family: TaskFamily,
    key: jax.Array,
    *,
    theta: Any = None,
    num_problems: int = 8,
    num_steps: int | None = None,
    max_coords: int = 32,
) -> Trajectories:
    """Trains ``num_problems`` problems and records loss, params, grads, updates, states.

    Args:
        opt_or_tx: an optax transformation, a :class:`lopt.Cell`, or a learned optimizer (then
            pass ``theta``).
        family: the task family.
        key: draws the problems (the same key gives the same problems as :func:`lopt.evaluate`).
        theta: meta-parameters when ``opt_or_tx`` is a learned optimizer.
        num_problems: ``B``.
        num_steps: ``T``; defaults to ``family.num_steps``.
        max_coords: ``C``, at most this many coordinates (evenly spaced) are recorded.

    Returns:
        A :class:`Trajectories`.
    """
    tx = as_transformation(opt_or_tx, theta)
    num_steps = family.num_steps if num_steps is None else int(num_steps)
    keys = jax.random.split(key, num_problems)
    # The parameter count is static: evaluate the shapes of one problem abstractly.
    shapes = jax.eval_shape(lambda k: init_inner(tx, family, k).params, keys[0])
    size = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))
    coords = jnp.asarray(np.unique(np.linspace(0, size - 1, min(max_coords, size)).astype(int)))

    def record(rec: StepRecord):
        hidden = _hidden(rec.opt_state)
        out = {
            "loss": rec.loss,
            "params": _flat(rec.params)[coords],
            "grads": _flat(rec.grads)[coords],
            "updates": _flat(rec.updates)[coords],
        }
        if hidden is not None:
            out["hidden"] = hidden[coords]
        return out

    @jax.jit
    def run(family, keys):
        def one(k):
            state = init_inner(tx, family, k)
            h0 = _hidden(state.opt_state)
            _, recs = unroll(tx, family, state, num_steps, record=record)
            return recs, (None if h0 is None else h0[coords])

        return jax.vmap(one)(keys)

    recs, h0 = run(family, keys)
    return Trajectories(
        loss=recs["loss"],
        params=recs["params"],
        grads=recs["grads"],
        updates=recs["updates"],
        hidden=recs.get("hidden"),
        initial_hidden=h0,
        coords=coords,
    )


def typical_step(hidden: jax.Array) -> jax.Array:
    """Median ``‖h_{t+1} - h_t‖₂`` over problems, steps, coordinates of ``hidden (B, T, C, H)``."""
    steps = jnp.linalg.norm(jnp.diff(hidden, axis=1), axis=-1)
    return jnp.median(steps)


class PCA(NamedTuple):
    """Principal components of a cloud of states.

    Attributes:
        mean: ``(H,)``.
        components: unit directions, rows, ``(K, H)``.
        explained_variance: variance along each, ``(K,)``.
        explained_ratio: its share of the total variance, ``(K,)``.
    """

    mean: jax.Array
    components: jax.Array
    explained_variance: jax.Array
    explained_ratio: jax.Array

    def project(self, x: jax.Array) -> jax.Array:
        """Coordinates of ``x (..., H)`` on the components, ``(..., K)``."""
        return (x - self.mean) @ self.components.T


def pca(x: jax.Array, num_components: int = 3) -> PCA:
    """PCA of states ``x (..., H)`` (all leading axes are samples), by SVD of the centred data."""
    x = jnp.asarray(x, jnp.float32).reshape(-1, x.shape[-1])
    mean = jnp.mean(x, 0)
    _, s, vt = jnp.linalg.svd(x - mean, full_matrices=False)
    var = s**2 / max(x.shape[0] - 1, 1)
    k = min(num_components, vt.shape[0])
    return PCA(mean, vt[:k], var[:k], var[:k] / jnp.maximum(jnp.sum(var), 1e-30))


def across_problem_variance(hidden: jax.Array) -> jax.Array:
    """Total variance of the states across problems at each step, ``(T,)`` from ``(B, T, C, H)``.

    It shrinks as every problem converges (docs/method.md, Trajectories).
    """
    return jnp.mean(jnp.sum(jnp.var(hidden, axis=0), axis=-1), axis=-1)
