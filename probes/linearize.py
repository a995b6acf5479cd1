"""Linearisation at a fixed point: every eigenmode is a momentum component.

Around ``(h*, g=0)``: ``δh' = J_h δh + J_g g`` with ``J_h = ∂F/∂h = R Λ Lᴴ`` and ``J_g = ∂F/∂g``;
the update is read out linearly, ``δU = ∇readout(h*)·δh'`` (the gradient of the readout at
``h*`` includes any output scale). Mode ``i`` then behaves like heavy-ball momentum with

* ``β_i = λ_i`` (decay per step), timescale ``τ_i = -1/ln|λ_i|`` steps,
* ``α_i = -(∇readout·r_i)(l_iᴴ J_g)`` (its learning rate), so ``Δx_t = -Σ_i α_i Σ_k λ_i^k g_{t-k}``.

Right/left eigenvectors come from ``jax.lax.linalg.eig(..., compute_left_eigenvectors=True)``
(LAPACK ``geev``; CPU) and are normalised so that ``l_iᴴ r_i = 1`` (biorthogonal, no pseudo
inverse). Identities (tested): ``Σ α_i = α_eff(h*)`` and the steady response to a small constant
gradient ``δ`` is ``ΔU/δ = -Σ α_i/(1-λ_i)``. Complex modes come in conjugate pairs whose ``α``
are conjugate too; ``pair`` links them.

Shapes: ``H`` hidden units (modes).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from lopt.cell import Cell
from probes.canonical import canonical


class Linearization(NamedTuple):
    """Modes of a cell linearised at ``h*`` (sorted by ``|λ|``, largest first; ``H`` modes).

    Attributes:
        h: the point, ``(H,)``.
        g: the input it was linearised at.
        J_h: ``∂F/∂h``, ``(H, H)``.
        J_g: ``∂F/∂g``, ``(H,)``.
        readout_grad: ``∇readout`` at ``F(h*, g)``, ``(H,)``.
        eigenvalues: ``λ_i`` (complex), ``(H,)``; ``β_i = λ_i``.
        right: ``R``, columns ``r_i``, ``(H, H)`` complex.
        left: ``L``, columns ``l_i`` with ``l_iᴴ r_i = 1``, ``(H, H)`` complex.
        alpha: ``α_i`` (complex; real for real modes), ``(H,)``.
        timescale: ``τ_i = -1/ln|λ_i|`` (``inf`` at ``|λ| = 1``, ``0`` at ``λ = 0``), ``(H,)``.
        pair: index of the conjugate partner of a complex mode, ``-1`` for a real mode, ``(H,)``.
        alpha_eff: ``-∂U/∂g`` at ``(h*, g)`` by autodiff.
    """

    h: jax.Array
    g: jax.Array
    J_h: jax.Array
    J_g: jax.Array
    readout_grad: jax.Array
    eigenvalues: jax.Array
    right: jax.Array
    left: jax.Array
    alpha: jax.Array
    timescale: jax.Array
    pair: jax.Array
    alpha_eff: jax.Array


@jax.jit
def _linearize(cell, h, g):
    J_h = jax.jacfwd(cell.step, argnums=0)(h, g)
    J_g = jax.jacfwd(cell.step, argnums=1)(h, g)
    readout_grad = jax.grad(cell.readout)(cell.step(h, g))
    alpha_eff = -jax.grad(lambda x: cell.readout(cell.step(h, x)))(g)
    w, vl, vr = jax.lax.linalg.eig(
        J_h, compute_left_eigenvectors=True, compute_right_eigenvectors=True
    )
    # geev: u_iᴴ A = λ_i u_iᴴ. Scale each left vector so that l_iᴴ r_i = 1.
    dots = jnp.sum(jnp.conj(vl) * vr, axis=0)
    vl = vl / jnp.conj(dots)[None, :]
    order = jnp.argsort(-jnp.abs(w), stable=True)
    w, vl, vr = w[order], vl[:, order], vr[:, order]
    alpha = -(readout_grad.astype(vr.dtype) @ vr) * (jnp.conj(vl).T @ J_g.astype(vl.dtype))
    mag = jnp.abs(w)
    timescale = jnp.where(
        mag >= 1.0, jnp.inf, jnp.where(mag <= 0.0, 0.0, -1.0 / jnp.log(jnp.maximum(mag, 1e-30)))
    )
    return J_h, J_g, readout_grad, w, vr, vl, alpha, timescale, alpha_eff


def _pairs(w: np.ndarray) -> np.ndarray:
    """Index of each complex eigenvalue's conjugate partner (``-1`` for real ones)."""
    w = np.asarray(w)
    scale = max(1.0, float(np.max(np.abs(w)))) if w.size else 1.0
    tol = 1e-5 * scale
    pair = np.full(w.shape[0], -1, np.int32)
    for i in range(w.shape[0]):
        if abs(w[i].imag) <= tol or pair[i] >= 0:
            continue
        candidates = [
            j for j in range(w.shape[0]) if j != i and pair[j] < 0 and abs(w[j].imag) > tol
        ]
        if candidates:
            j = min(candidates, key=lambda j: abs(w[j] - np.conj(w[i])))
            pair[i], pair[j] = j, i
    return pair


def linearize(cell: Cell, h: ArrayLike, g: float = 0.0) -> Linearization:
    """Linearises ``cell`` at the state ``h`` and input ``g`` and splits it into modes.

    Args:
        cell: the cell.
        h: the point (normally a fixed point from :func:`probes.fixed_points`), ``(H,)``.
        g: the input (``0``: the convergence point).

    Returns:
        A :class:`Linearization`.

    Example:
        >>> import jax.numpy as jnp, lopt, probes
        >>> lin = probes.linearize(lopt.hand_designed.momentum(0.1, 0.9), jnp.zeros(1))
        >>> round(float(lin.eigenvalues[0].real), 4), round(float(lin.alpha[0].real), 4)
        (0.9, 0.1)
    """
    h = jnp.asarray(h, jnp.float32)
    g = jnp.asarray(g, jnp.float32)
    J_h, J_g, rg, w, vr, vl, alpha, tau, a_eff = _linearize(canonical(cell), h, g)
    return Linearization(
        h, g, J_h, J_g, rg, w, vr, vl, alpha, tau, jnp.asarray(_pairs(np.asarray(w))), a_eff
    )


def impulse_response(lin: Linearization, steps: int = 200) -> np.ndarray:
    """The linearised impulse response ``r_k = ∂U_{t+k}/∂g_t = ∇readout·J_hᵏ J_g``, ``k < steps``.

    Computed by repeated products with ``J_h`` in float64, without the eigendecomposition, so
    it stays exact where the eigenvectors are ill-conditioned (near-degenerate eigenvalues
    whose individual ``α_i`` are large and cancel). Equals ``-Σ_i α_i λ_iᵏ`` where that is well
    conditioned; heavy-ball momentum gives ``r_k = -α βᵏ``.

    Returns:
        ``(steps,)`` float64.
    """
    J_h = np.asarray(lin.J_h, np.float64)
    v = np.asarray(lin.J_g, np.float64)
    w = np.asarray(lin.readout_grad, np.float64)
    out = np.empty(int(steps), np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        for k in range(int(steps)):
            out[k] = w @ v
            v = J_h @ v
    return out


def predicted_steady_response(lin: Linearization) -> jax.Array:
    """``-Σ α_i/(1-λ_i)``: the change of the update per unit of a small constant gradient."""
    return -jnp.real(jnp.sum(lin.alpha / (1.0 - lin.eigenvalues)))


@jax.jit
def _steady(cell, h, g, delta, steps):
    x = jax.lax.fori_loop(0, steps, lambda _, x: cell.step(x, g + delta), h)
    base = jax.lax.fori_loop(0, steps, lambda _, x: cell.step(x, g), h)
    return (cell.readout(cell.step(x, g + delta)) - cell.readout(cell.step(base, g))) / delta


def steady_response(
    cell: Cell, h: ArrayLike, g: float = 0.0, *, delta: float = 1e-3, steps: int = 2000
) -> jax.Array:
    """The actual steady response: run ``steps`` steps of ``g + δ`` from ``h`` and of ``g``.

    Returns:
        ``(U_∞(g + δ) - U_∞(g))/δ``, to compare with :func:`predicted_steady_response` (valid
        for a stable fixed point and ``δ`` small enough for the linearisation to hold).
    """
    return _steady(
        canonical(cell),
        jnp.asarray(h, jnp.float32),
        jnp.float32(g),
        jnp.float32(delta),
        jnp.int32(steps),
    )
