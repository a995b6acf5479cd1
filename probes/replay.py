"""Recording what an optimizer meets and does on a task, and replaying a transformation on it.

:func:`record` trains problems of a family with an optimizer and keeps, at chosen coordinates,
the gradients, parameters, losses and updates of every step; :func:`replay` feeds another
transformation (a distilled chain, or the optimizer itself) the very gradients recorded, open
loop, and returns its updates. The faithfulness score (:mod:`probes.faithfulness`), the
identification of a chain's numbers (:mod:`probes.distill.identify`) and the memory along
trajectories (:mod:`probes.memory_along`) are built on them.

Shapes: P problems, T steps, C coordinates kept per problem.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from lopt.unroll import init_inner, unroll

#: Seed of the training problems whose trajectories the chain replays (not the held-out key).
TRAJECTORY_SEED = 3


def replay(tx: optax.GradientTransformation, seq: Mapping[str, jax.Array]) -> jax.Array:
    """``tx``'s updates, open loop, on a recorded sequence ``{"g", "p", "f"}`` ([T, C])."""
    tx = optax.with_extra_args_support(tx)

    def body(state, x):
        u, state = tx.update(x["g"], state, x["p"], value=x["f"])
        return state, u

    return jax.lax.scan(body, tx.init(seq["p"][0]), seq)[1]


def coordinates(num_params: int, keep: int | None) -> np.ndarray:
    """``keep`` coordinates evenly spaced in ``num_params`` flattened parameters (all: None)."""
    keep = num_params if keep is None else min(num_params, keep)
    return np.unique(np.linspace(0, num_params - 1, keep).round().astype(np.int32))


def record(
    tx: optax.GradientTransformation,
    family: Any,
    keys: jax.Array,
    idx: np.ndarray,
    num_steps: int | None = None,
) -> dict[str, jax.Array]:
    """What ``tx`` meets and does on the problems drawn from ``keys``, at coordinates ``idx``.

    Returns ``{"g", "p", "f", "u"}``: gradients, parameters, losses and updates, ``[P, T, C]``
    (``f``: ``[P, T]``).
    """
    tx = optax.with_extra_args_support(tx)
    num_steps = family.num_steps if num_steps is None else num_steps

    def pick(r):
        return {
            "g": ravel_pytree(r.grads)[0][idx],
            "p": ravel_pytree(r.params)[0][idx],
            "f": r.loss,
            "u": ravel_pytree(r.updates)[0][idx],
        }

    def one(k):
        return unroll(tx, family, init_inner(tx, family, k), num_steps, record=pick)[1]

    return jax.vmap(one)(keys)
