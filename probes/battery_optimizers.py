"""The battery's hand-written optimizers: white boxes of optax transformations, and cells.

:func:`optax_cell` turns a coordinate-wise optax transformation into a :class:`lopt.Cell` (the
white box of a case without a hand-written cell); :func:`two_momentum_cell` and
:func:`ringing_cell` are linear memories with two modes and with a ringing pair;
:func:`delta_bar_delta` is a sign-agreement step size on the gradient (Rprop's rule without the
sign). :mod:`probes.battery` derives each one's expected answer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from lopt.cell import Cell, make_cell


def optax_cell(tx: optax.GradientTransformation) -> Cell:
    """A coordinate-wise optax transformation as a Cell: ``h = (u, flat optax state)``.

    ``step`` runs ``tx.update`` on one scalar with the parameter held at 0 (weight decay and
    AGC see ``p = 0``) and stores the update in ``h[0]``; ``readout`` returns it. Integer
    counters travel as float32 (exact below 2^24).
    """
    p0 = jnp.zeros([], jnp.float32)
    flat0, unravel = ravel_pytree(tx.init(p0))

    def step(h, g):
        u, state = tx.update(jnp.asarray(g, jnp.float32), unravel(h[1:].astype(flat0.dtype)), p0)
        return jnp.concatenate([jnp.reshape(u, (1,)), ravel_pytree(state)[0]]).astype(jnp.float32)

    h0 = jnp.concatenate([jnp.zeros(1), flat0]).astype(jnp.float32)
    return Cell(lambda: h0, step, lambda h: h[0])


def _two_step(p, h, g):
    return jnp.stack([p["b1"] * h[0] + g, p["b2"] * h[1] + g])


def _two_readout(p, h):
    return -(p["a1"] * h[0] + p["a2"] * h[1])


def two_momentum_cell(a1: float, b1: float, a2: float, b2: float) -> Cell:
    """Two heavy-ball modes in parallel: ``m_i' = b_i m_i + g``, ``Δx = -(a1 m1' + a2 m2')``."""
    p = {k: jnp.float32(v) for k, v in dict(a1=a1, b1=b1, a2=a2, b2=b2).items()}
    return make_cell(p, lambda p: jnp.zeros(2, jnp.float32), _two_step, _two_readout)


def _ring_step(p, h, g):
    c, s = jnp.cos(p["theta"]), jnp.sin(p["theta"])
    return p["rho"] * jnp.stack([c * h[0] - s * h[1], s * h[0] + c * h[1]]) + jnp.stack([g, 0.0])


def _ring_readout(p, h):
    return -p["a"] * h[0]


def ringing_cell(a: float, rho: float, theta: float) -> Cell:
    """A momentum that rings: ``m' = ρR(θ)m + (g, 0)``, ``Δx = -a m'_0``; ``r_k = -aρ^k cos kθ``."""
    p = {k: jnp.float32(v) for k, v in dict(a=a, rho=rho, theta=theta).items()}
    return make_cell(p, lambda p: jnp.zeros(2, jnp.float32), _ring_step, _ring_readout)


def delta_bar_delta(
    lr: float, up: float, down: float, lo: float, hi: float
) -> optax.GradientTransformation:
    """A gradient step ``-lr·e^a·g`` whose log step ``a`` moves by sign agreement.

    ``a ← clip(a + up)`` when ``g`` has the previous gradient's sign, ``a - down`` when it has
    the other, unchanged when either is 0; ``e^a`` is kept in ``[lo, hi]`` and starts at 1. Written
    for the battery (delta-bar-delta's rule in Rprop's multiplicative form, on the gradient
    rather than its sign).
    """

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return (zeros, zeros)

    def update(updates, state, params=None):
        del params
        a, prev = state

        def move(g, a, p):
            s = jnp.sign(g * p)
            a = a + jnp.where(s > 0, up, jnp.where(s < 0, -down, 0.0))
            return jnp.clip(a, np.log(lo), np.log(hi))

        a = jax.tree.map(move, updates, a, prev)
        out = jax.tree.map(lambda g, a: -lr * jnp.exp(a) * g, updates, a)
        return out, (a, updates)

    return optax.GradientTransformation(init, update)
