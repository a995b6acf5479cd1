"""Hand-designed optimizers written as :class:`~lopt.cell.Cell` s.

They are ground truth for the probes: each is a per-coordinate dynamical system whose
momentum, clipping, schedule and adaptation are known in closed form. Hyperparameters are the
cell's pytree leaves, so cells that differ only in hyperparameters share compiled code.

Degenerate cases, stated once:

* ``sgd``: the state is the last gradient (``H = 1``); ``readout(h) = -α h``. It has no memory,
  so its linearisation has the single eigenvalue 0.
* ``momentum``: ``h = m``, ``m' = βm + g``, ``Δx = -α m'`` (optax's ``sgd(α, momentum=β)``).
* ``clipped_sgd``: ``h = clip(g, ±c)``; ``Δx = -α h``.
* ``scheduled_sgd``: ``h = (g, t)``; the step counter is part of the state, so the schedule is
  visible to the autonomous dynamics ``h_{t+1} = F(h_t, 0)``.
* ``rmsprop``: ``h = (g, ν)``; ``ν' = ρν + (1-ρ)g²``, ``Δx = -α g / sqrt(ν' + ε)`` (optax's form).
* ``adam``: ``h = (m, ν, t)``, optax's bias-corrected Adam; the step count is state.
* ``damped_momentum``: ``h = (m, g_prev, e, started)``; heavy-ball momentum on the gradient
  scaled by ``1/(1 + √e'/κ)``, ``e' = ρe + (1-ρ)((g - g_prev)/2)²`` (no change is counted at
  the first step, ``started = 0``): :func:`lopt.chain.damp_oscillations` followed by momentum.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp

from lopt.cell import Cell, make_cell


@functools.cache
def _zeros(size: int):
    # Cached: a Partial's function is part of the Cell's pytree structure, so a fresh closure
    # per cell would make jitted probes recompile for every new hyperparameter value.
    def init_state(params):
        del params
        return jnp.zeros((size,), jnp.float32)

    return init_state


def _f32(**kwargs):
    return {k: jnp.asarray(v, jnp.float32) for k, v in kwargs.items()}


def _sgd_step(p, h, g):
    del p, h
    return jnp.reshape(g, (1,))


def _sgd_readout(p, h):
    return -p["learning_rate"] * h[0]


def sgd(learning_rate: float) -> Cell:
    """Plain gradient descent, ``Δx = -α g``."""
    return make_cell(_f32(learning_rate=learning_rate), _zeros(1), _sgd_step, _sgd_readout)


def _momentum_step(p, h, g):
    return p["beta"] * h + g


def momentum(learning_rate: float, beta: float) -> Cell:
    """Heavy-ball momentum, ``m' = βm + g``, ``Δx = -α m'``; equals ``optax.sgd(α, momentum=β)``."""
    return make_cell(
        _f32(learning_rate=learning_rate, beta=beta), _zeros(1), _momentum_step, _sgd_readout
    )


def _clip_step(p, h, g):
    del h
    return jnp.reshape(jnp.clip(g, -p["threshold"], p["threshold"]), (1,))


def clipped_sgd(learning_rate: float, threshold: float) -> Cell:
    """Gradient descent on gradients clipped to ``[-c, c]``: ``Δx = -α clip(g, ±c)``."""
    return make_cell(
        _f32(learning_rate=learning_rate, threshold=threshold), _zeros(1), _clip_step, _sgd_readout
    )


def schedule_value(p, t):
    """``α(t) = α · min(1, (t+1)/warmup) · decay^max(0, t+1-warmup)`` at step ``t`` (0-based)."""
    t1 = t + 1.0
    warm = jnp.minimum(1.0, t1 / jnp.maximum(p["warmup_steps"], 1.0))
    decay = p["decay_rate"] ** jnp.maximum(0.0, t1 - p["warmup_steps"])
    return p["learning_rate"] * warm * decay


def _scheduled_step(p, h, g):
    del p
    return jnp.stack([g, h[1] + 1.0])


def _scheduled_readout(p, h):
    # h[1] counts the steps taken including this one; the schedule is indexed from 0.
    return -schedule_value(p, h[1] - 1.0) * h[0]


def scheduled_sgd(learning_rate: float, warmup_steps: float, decay_rate: float) -> Cell:
    """SGD with a linear warm-up over ``warmup_steps`` then exponential decay per step."""
    params = _f32(learning_rate=learning_rate, warmup_steps=warmup_steps, decay_rate=decay_rate)
    return make_cell(params, _zeros(2), _scheduled_step, _scheduled_readout)


def _rmsprop_step(p, h, g):
    nu = p["decay"] * h[1] + (1.0 - p["decay"]) * g * g
    return jnp.stack([g, nu])


def _rmsprop_readout(p, h):
    return -p["learning_rate"] * h[0] / jnp.sqrt(h[1] + p["eps"])


def rmsprop(learning_rate: float, decay: float = 0.9, eps: float = 1e-8) -> Cell:
    """RMSProp as in ``optax.rmsprop``: ``Δx = -α g / sqrt(ν' + ε)``."""
    params = _f32(learning_rate=learning_rate, decay=decay, eps=eps)
    return make_cell(params, _zeros(2), _rmsprop_step, _rmsprop_readout)


def _adam_step(p, h, g):
    m = p["b1"] * h[0] + (1.0 - p["b1"]) * g
    nu = p["b2"] * h[1] + (1.0 - p["b2"]) * g * g
    return jnp.stack([m, nu, h[2] + 1.0])


def _adam_readout(p, h):
    eps = jnp.finfo(jnp.float32).eps
    m_hat = h[0] / jnp.maximum(1.0 - p["b1"] ** h[2], eps)
    nu_hat = h[1] / jnp.maximum(1.0 - p["b2"] ** h[2], eps)
    return -p["learning_rate"] * m_hat / (jnp.sqrt(nu_hat) + p["eps"])


def adam(learning_rate: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Cell:
    """Adam as in ``optax.adam`` (bias-corrected; the step count is part of the state)."""
    params = _f32(learning_rate=learning_rate, b1=b1, b2=b2, eps=eps)
    return make_cell(params, _zeros(3), _adam_step, _adam_readout)


def _damped_step(p, h, g):
    half = jnp.where(h[3] > 0, 0.5 * (g - h[1]), 0.0)
    e = p["decay"] * h[2] + (1.0 - p["decay"]) * half * half
    # √e with a zero derivative at e = 0, so linearisations at a constant input stay finite.
    pos = e > 0
    root = jnp.where(pos, jnp.sqrt(jnp.where(pos, e, 1.0)), 0.0)
    m = p["beta"] * h[0] + g / (1.0 + root / p["kappa"])
    return jnp.stack([m, jnp.asarray(g, jnp.float32), e, jnp.ones_like(m)])


def _damped_readout(p, h):
    return -p["learning_rate"] * h[0]


def damped_momentum(learning_rate: float, beta: float, kappa: float, decay: float = 0.8) -> Cell:
    """Heavy-ball momentum behind oscillation damping with half-point ``κ`` (module docstring).

    A gradient alternating ``±a`` is scaled by ``1/(1 + a/κ)`` once ``e`` has settled; a
    constant one passes unchanged, so the steady gains are ``α/(1-β)`` (constant input) and
    ``α/((1+β)(1 + a/κ))`` (alternating input).
    """
    params = _f32(learning_rate=learning_rate, beta=beta, kappa=kappa, decay=decay)
    return make_cell(params, _zeros(4), _damped_step, _damped_readout)
