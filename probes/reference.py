"""Dynamical systems with known answers, written as :class:`lopt.Cell` s.

They validate the probes (tests) and feed the benchmarks until a meta-trained optimizer is at
hand. Every cell keeps its parameters as pytree leaves, so cells of one kind share compiled code.

* :func:`linear_cell`: ``h' = W h + b g``, ``Δx = wᵀh' + c``; its fixed point at input ``g*`` is
  ``(I - W)⁻¹ b g*`` exactly and its Jacobians are ``W`` and ``b``.
* :func:`saddle_cell`: ``h' = (tanh(k h₀), a h₁)``; fixed points at ``h₀ ∈ {0, ±x*}`` with
  ``x* = tanh(k x*)``: the origin is a saddle (eigenvalues ``k > 1`` and ``a < 1``), the other two
  are attractors.
* :func:`random_gru_cell`: the learned optimizer's own GRU with random weights, for shapes and
  speed.

Shapes: ``H`` hidden units.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lopt.cell import Cell, make_cell
from lopt.rnn import RNNOptimizer


def _param_init_state(p):
    return p["h0"]


def _linear_step(p, h, g):
    return p["W"] @ h + p["b"] * g


def _linear_readout(p, h):
    return p["w"] @ h + p["c"]


def linear_cell(W: jax.Array, b: jax.Array, w: jax.Array, c: float = 0.0, h0=None) -> Cell:
    """A linear RNN ``h' = W h + b g`` read out by ``Δx = wᵀh' + c``.

    Args:
        W: recurrent matrix, ``(H, H)``.
        b: input weights, ``(H,)``.
        w: readout weights, ``(H,)``.
        c: readout bias.
        h0: initial state, ``(H,)``; zeros by default.

    Returns:
        The cell.
    """
    W = jnp.asarray(W, jnp.float32)
    h0 = jnp.zeros(W.shape[0], jnp.float32) if h0 is None else jnp.asarray(h0, jnp.float32)
    params = {
        "W": W,
        "b": jnp.asarray(b, jnp.float32),
        "w": jnp.asarray(w, jnp.float32),
        "c": jnp.asarray(c, jnp.float32),
        "h0": h0,
    }
    return make_cell(params, _param_init_state, _linear_step, _linear_readout)


def _saddle_step(p, h, g):
    return jnp.stack([jnp.tanh(p["k"] * h[0] + g), p["a"] * h[1] + g])


def _saddle_readout(p, h):
    return -p["lr"] * (h[0] + h[1])


def saddle_cell(k: float = 2.0, a: float = 0.5, lr: float = 0.1) -> Cell:
    """``h' = (tanh(k h₀ + g), a h₁ + g)``; at ``g = 0`` the origin is a saddle.

    For ``k > 1`` the first coordinate has three fixed points ``0, ±x*`` (``x* = tanh(k x*)``); the
    origin has eigenvalues ``(k, a)`` (a saddle for ``a < 1``), ``(±x*, 0)`` have eigenvalues
    ``(k (1 - x*²), a)`` (attractors).
    """
    params = {
        "k": jnp.float32(k),
        "a": jnp.float32(a),
        "lr": jnp.float32(lr),
        "h0": jnp.zeros(2, jnp.float32),
    }
    return make_cell(params, _param_init_state, _saddle_step, _saddle_readout)


def random_gru_cell(
    key: jax.Array,
    hidden_size: int = 16,
    *,
    recurrent_gain: float = 0.9,
    input_gain: float = 1.0,
    readout_gain: float = 0.1,
) -> Cell:
    """The learned optimizer's own GRU (:class:`lopt.RNNOptimizer`) with random weights.

    Unlike a freshly initialised optimizer (zero readout, zero ``h0``: inert), its dynamics
    and readout are both non-trivial. Recurrent matrices are ``N(0, gain²/H)`` (spectral
    radius ≈ gain), input weights ``N(0, input_gain²)``, biases ``N(0, 0.1²)`` except the
    update gate's ``+1`` (a mildly slow memory, like trained GRUs), readout
    ``N(0, readout_gain²/H)``, ``h0`` ``N(0, 0.1²)``.
    """
    ks = jax.random.split(key, 5)
    H = hidden_size
    opt = RNNOptimizer(hidden_size=H)
    bias = 0.1 * jax.random.normal(ks[2], (3 * H,))
    theta = {
        "rnn": {
            "gru": {  # gates [u, r, c] side by side (lopt.networks)
                "w_h": recurrent_gain / jnp.sqrt(H) * jax.random.normal(ks[0], (H, 3 * H)),
                "w_i": input_gain * jax.random.normal(ks[1], (1, 3 * H)),
                "b": bias.at[:H].add(1.0),
            }
        },
        "readout": {
            "w": readout_gain / jnp.sqrt(H) * jax.random.normal(ks[3], (H,)),
            "b": jnp.float32(0.0),
        },
        "h0": 0.1 * jax.random.normal(ks[4], (H,)),
    }
    return opt.cell(theta)
