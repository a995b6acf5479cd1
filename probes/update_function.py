"""The update function ``U(h, g) = readout(F(h, g))`` and the effective learning rate.

``α_eff(h) = -∂U/∂g |_{g=0}`` by autodiff. SGD with learning rate ``α`` has
``U = -α g`` and ``α_eff = α`` everywhere. Perturbations of ``h`` along given directions
(principal components, slow eigenvectors) show how the state reshapes the update.

Every function is jitted with the cell as an argument. Shapes: ``H`` hidden units, ``G``
gradient values, ``D`` directions, ``A`` perturbation amounts.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from lopt.cell import Cell
from probes.canonical import canonical


def update(cell: Cell, h: jax.Array, g: jax.Array) -> jax.Array:
    """``U(h, g) = readout(step(h, g))`` for one state and one scalar gradient."""
    return cell.readout(cell.step(h, g))


def _alpha(cell, h):
    return -jax.grad(lambda g: update(cell, h, g))(jnp.zeros([], jnp.float32))


def _secant_alpha(cell, h, delta):
    return -(update(cell, h, delta) - update(cell, h, -delta)) / (2.0 * delta)


@jax.jit
def _update_function(cell, h, gs):
    return jax.vmap(lambda g: update(cell, h, g))(gs)


@jax.jit
def _slope(cell, h, gs):
    return jax.vmap(jax.grad(lambda g: update(cell, h, g)))(gs)


@jax.jit
def _effective_lr(cell, hs):
    return jax.vmap(lambda h: _alpha(cell, h))(hs)


@jax.jit
def _effective_lr_or_secant(cell, hs, delta):
    def one(h):
        a = _alpha(cell, h)
        return jnp.where(jnp.isfinite(a), a, _secant_alpha(cell, h, delta))

    return jax.vmap(one)(hs)


def update_function(cell: Cell, h: ArrayLike, gs: ArrayLike) -> jax.Array:
    """``U(h, g)`` over a grid of gradients.

    Args:
        cell: the cell.
        h: one state ``(H,)`` or a batch ``(B, H)``.
        gs: gradients, ``(G,)``.

    Returns:
        Updates ``(G,)`` or ``(B, G)``.

    Example:
        >>> import jax.numpy as jnp, lopt, probes
        >>> sgd = lopt.hand_designed.sgd(0.1)
        >>> u = probes.update_function(sgd, jnp.zeros(1), jnp.array([1.0, 2.0]))
        >>> [round(float(x), 6) for x in u]
        [-0.1, -0.2]
    """
    cell = canonical(cell)
    h = jnp.asarray(h, jnp.float32)
    gs = jnp.asarray(gs, jnp.float32).reshape(-1)
    if h.ndim == 1:
        return _update_function(cell, h, gs)
    return jax.vmap(lambda x: _update_function(cell, x, gs))(h)


def update_slope(cell: Cell, h: ArrayLike, gs: ArrayLike) -> jax.Array:
    """``∂U/∂g`` at each gradient in ``gs`` for the state ``h (H,)``; shape ``(G,)``."""
    return _slope(
        canonical(cell), jnp.asarray(h, jnp.float32), jnp.asarray(gs, jnp.float32).reshape(-1)
    )


@jax.jit
def _effective_lr_or_hair(cell, hs, hair):
    def one(h):
        a = _alpha(cell, h)
        side = jax.vmap(jax.grad(lambda g: update(cell, h, g)))(jnp.stack([hair, -hair]))
        return jnp.where(jnp.isfinite(a), a, -jnp.mean(side))

    return jax.vmap(one)(hs)


def effective_lr(
    cell: Cell, h: ArrayLike, *, secant: float | None = None, hair: float | None = None
) -> jax.Array:
    """``α_eff(h) = -∂U/∂g`` at ``g = 0`` by autodiff.

    Args:
        cell: the cell.
        h: a state ``(H,)`` or states ``(..., H)``.
        secant: if given, where the derivative is not finite (e.g. Adam at ``ν = 0``, where
            ``√ν`` has an infinite slope) use the secant ``-(U(h, δ) - U(h, -δ))/(2δ)`` with
            ``δ = secant`` instead.
        hair: if given (instead of ``secant``), where the derivative is not finite use the
            mean of the derivatives at ``±hair``: for a hair far below ``ε`` this is Adam's
            ``1/ε`` gain at rest, which a secant over a wider step would miss.

    Returns:
        ``α_eff`` with the batch shape of ``h``.
    """
    cell = canonical(cell)
    h = jnp.asarray(h, jnp.float32)
    flat = h.reshape(-1, h.shape[-1])
    if hair is not None:
        out = _effective_lr_or_hair(cell, flat, jnp.float32(hair))
    elif secant is None:
        out = _effective_lr(cell, flat)
    else:
        out = _effective_lr_or_secant(cell, flat, jnp.float32(secant))
    return out.reshape(h.shape[:-1])


def perturbed_states(h: ArrayLike, directions: ArrayLike, amounts: ArrayLike) -> jax.Array:
    """``h + a·d`` for every direction ``d`` (rows of ``directions``, ``(D, H)``) and amount ``a``.

    Returns:
        States ``(D, A, H)``. Directions are used as given (normalise them first if needed;
        complex eigenvectors: pass their real and imaginary parts).
    """
    h = jnp.asarray(h, jnp.float32)
    d = jnp.asarray(directions, jnp.float32).reshape(-1, h.shape[-1])
    a = jnp.asarray(amounts, jnp.float32).reshape(-1)
    return h + a[None, :, None] * d[:, None, :]


def update_function_along(
    cell: Cell, h: ArrayLike, directions: ArrayLike, amounts: ArrayLike, gs: ArrayLike
) -> jax.Array:
    """``U(h + a·d, g)`` for every direction ``d``, amount ``a`` and gradient ``g``.

    Returns:
        Updates ``(D, A, G)``.
    """
    states = perturbed_states(h, directions, amounts)
    D, A, H = states.shape
    return update_function(cell, states.reshape(D * A, H), gs).reshape(D, A, -1)


def effective_lr_along(
    cell: Cell, h: ArrayLike, directions: ArrayLike, amounts: ArrayLike
) -> jax.Array:
    """``α_eff(h + a·d)`` for every direction and amount; shape ``(D, A)``."""
    return effective_lr(cell, perturbed_states(h, directions, amounts))
