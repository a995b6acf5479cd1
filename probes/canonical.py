"""Canonical cells: one compiled program per kind of cell."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from lopt.cell import Cell


def _constant(h0: jax.Array) -> jax.Array:
    return h0


def canonical(cell: Cell) -> Cell:
    """``cell`` with ``init_state`` replaced by a module-level ``Partial`` over its value.

    A ``Partial``'s function is part of the pytree structure, so factories that build a fresh
    closure for ``init_state`` on every call (``lopt.hand_designed`` does) would otherwise make
    every new cell a new jit cache key. ``step`` and ``readout`` built by :func:`lopt.make_cell` are
    ``Partial``s already; plain functions (which :func:`lopt.cell_optimizer` accepts too) are
    wrapped in one, so a jitted probe can take them as an argument (a new function object is
    then a new compilation, as it would be for any closure).
    """
    step, readout = (f if isinstance(f, Partial) else Partial(f) for f in cell[1:])
    if isinstance(cell.init_state, Partial) and cell.init_state.func is _constant:
        return cell._replace(step=step, readout=readout)
    h0 = jnp.asarray(cell.init_state(), jnp.float32)
    return Cell(Partial(_constant, h0), step, readout)
