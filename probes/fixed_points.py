"""Fixed and slow points of a cell's dynamics ``h ↦ F(h, g*)`` for constant inputs ``g*``.

The search minimises ``q(h) = ½‖F(h, g*) - h‖²`` for every (input, seed) pair at once:

1. **First-order stage** (Adam on ``q``, batched over all candidates) inside one
   ``lax.while_loop`` with a *per-candidate* convergence mask: a candidate stops moving once
   ``‖F(h)-h‖∞ ≤ first_order_tol·(1+‖h‖∞)`` or ``‖∇q‖∞ ≤ grad_tol`` (a stationary point of
   ``q``: a fixed point or a slow point); the loop ends when every candidate has stopped or at
   ``first_order_steps``. Minimising ``q`` (rather than iterating ``F``) finds saddles as well
   as attractors: both are zeros of ``q``.
2. **De-duplication** on the device, per input: candidates sorted by ``q``; each joins the first
   kept representative within ``merge_tol·(1+‖h‖∞)`` (max-norm) or becomes a new one, up to
   ``max_unique`` representatives (fixed size, with a mask), so the lowest ``q`` of each
   cluster is kept and the function jits.
3. **Polish**: damped Newton on ``r(h) = F(h) - h`` with a Gauss–Newton (Cauchy point)
   fallback. Each iteration builds the dense Jacobian ``J = ∂F/∂h - I`` (forward mode, ``H``
   JVPs), tries the Newton step ``-J⁻¹r`` at lengths 1, ½, ¼ and the Cauchy point of the
   Gauss–Newton model (see :func:`polish`), and keeps the trial with the smallest ``q`` if it
   improves ``q``; chord steps re-use each LU factorisation. Newton converges quadratically
   near a regular root, so true fixed points reach
   the float32 floor ``‖F(h)-h‖∞ ≤ 10·ε·(1+‖h‖∞)``, ``ε = 2⁻²³``; the per-candidate mask stops
   a candidate at the floor or after ``stall_steps`` iterations without progress. Polishing
   only the de-duplicated representatives keeps the cubic cost of dense solves bounded
   (``N·max_unique`` systems, not ``N·S``). A second de-duplication merges representatives
   that polished to the same point (``final_merge_tol``).
4. **Classification**: ``FIXED`` at the float32 floor; otherwise ``SLOW`` if the speed
   ``‖F(h)-h‖₂ / typical_step ≤ slow_speed`` (``typical_step``: the size of a step along
   trajectories, an argument; by default the median ``‖F(s)-s‖₂`` over the seeds); else ``FAILED``.

:func:`continuation` traces a branch ``h*(g*)`` across a grid of inputs instead (warm start from
the neighbour, the same polish), flagging folds where the branch jumps: a jump out of line with
the neighbouring steps' (or a sign change of ``det(I - J_h)``, a real eigenvalue crossing +1)
*and* a solve that left the previous basin (a saddle-node bifurcation, docs/method.md, Adaptation).

Every entry point is jitted with the cell as an *argument*: a new ``theta`` re-uses the compiled
program. Shapes: ``N`` inputs, ``S`` seeds, ``K`` kept points per input, ``H`` hidden units.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from lopt.cell import Cell
from probes.canonical import canonical

FIXED, SLOW, FAILED = 0, 1, 2
KIND_NAMES = ("fixed", "slow", "failed")
EPS32 = 2.0**-23


def residual(cell: Cell, h: jax.Array, g: jax.Array) -> jax.Array:
    """``F(h, g) - h``, shape ``(H,)``."""
    return cell.step(h, g) - h


def floor(h: jax.Array) -> jax.Array:
    """The float32 floor ``10·ε·(1+‖h‖∞)`` for a residual at ``h``."""
    return 10.0 * EPS32 * (1.0 + jnp.max(jnp.abs(h), axis=-1))


def _q(cell, h, g):
    r = residual(cell, h, g)
    return 0.5 * jnp.sum(r * r)


class FixedPoints(NamedTuple):
    """Result of :func:`fixed_points` (``N`` inputs, ``S`` seeds, ``K`` kept points, ``H`` units).

    Attributes:
        inputs: the constant inputs ``g*``, ``(N,)``.
        points: de-duplicated, polished points, ``(N, K, H)`` (unused slots hold zeros).
        mask: which slots hold a point, ``(N, K)``.
        q: ``½‖F(h)-h‖²`` at each point, ``(N, K)``.
        residual: ``‖F(h)-h‖∞``, ``(N, K)``.
        floor: the float32 floor ``10·ε·(1+‖h‖∞)``, ``(N, K)``.
        speed: ``‖F(h)-h‖₂ / typical_step``, ``(N, K)``.
        kind: ``FIXED`` (0), ``SLOW`` (1) or ``FAILED`` (2), ``(N, K)`` int32.
        count: how many seeds ended in each point, ``(N, K)`` int32.
        seed_cluster: the slot each seed ended in (``-1``: dropped, more than ``K`` clusters),
            ``(N, S)`` int32.
        seed_q: ``q`` of each seed after the first-order stage, ``(N, S)``.
        first_order_steps: iterations each seed moved in the first-order stage, ``(N, S)``.
        typical_step: the step size used for ``speed`` (scalar).
    """

    inputs: jax.Array
    points: jax.Array
    mask: jax.Array
    q: jax.Array
    residual: jax.Array
    floor: jax.Array
    speed: jax.Array
    kind: jax.Array
    count: jax.Array
    seed_cluster: jax.Array
    seed_q: jax.Array
    first_order_steps: jax.Array
    typical_step: jax.Array


# ----------------------------------------------------------------------------- first order


def first_order(
    cell: Cell,
    h: jax.Array,
    g: jax.Array,
    *,
    steps: int | jax.Array = 300,
    learning_rate: float | jax.Array = 0.02,
    tol: float | jax.Array = 1e-3,
    grad_tol: float | jax.Array = 1e-6,
) -> tuple[jax.Array, jax.Array]:
    """Adam on ``q`` for a batch of candidates with per-candidate convergence masks.

    Args:
        cell: the cell.
        h: starting points, ``(M, H)``.
        g: each candidate's input, ``(M,)``.
        steps: the step cap.
        learning_rate: Adam's step size (β₁ = 0.9, β₂ = 0.99, ε = 1e-12 on ``√v``).
        tol: stop a candidate at ``‖F(h)-h‖∞ ≤ tol·(1+‖h‖∞)``.
        grad_tol: or at ``‖∇q‖∞ ≤ grad_tol`` (a stationary point of ``q``: a slow point).

    Returns:
        ``(h (M, H), iterations (M,))``: where each candidate stopped and how many steps it moved.
    """
    b1, b2 = 0.9, 0.99

    def res_grad(h, g):
        # r and ∇q = (∂F/∂h - I)ᵀ r from one forward pass and one VJP.
        r, vjp = jax.vjp(lambda x: residual(cell, x, g), h)
        return r, vjp(r)[0]

    def cond(c):
        it, _, _, _, active, _ = c
        return (it < steps) & jnp.any(active)

    def body(c):
        it, h, m, v, active, count = c
        r, grad = jax.vmap(res_grad)(h, g)
        small_r = jnp.max(jnp.abs(r), -1) <= tol * (1.0 + jnp.max(jnp.abs(h), -1))
        small_g = jnp.max(jnp.abs(grad), -1) <= grad_tol
        active = active & ~small_r & ~small_g
        m = jnp.where(active[:, None], b1 * m + (1 - b1) * grad, m)
        v = jnp.where(active[:, None], b2 * v + (1 - b2) * grad * grad, v)
        t = (count + 1).astype(h.dtype)[:, None]
        m_hat = m / jnp.maximum(1 - b1**t, EPS32)
        v_hat = v / jnp.maximum(1 - b2**t, EPS32)
        step = learning_rate * m_hat / (jnp.sqrt(v_hat) + 1e-12)
        h = jnp.where(active[:, None], h - step, h)
        count = count + active.astype(jnp.int32)
        return it + 1, h, m, v, active, count

    M = h.shape[0]
    init = (
        jnp.zeros([], jnp.int32),
        h,
        jnp.zeros_like(h),
        jnp.zeros_like(h),
        jnp.ones(M, bool),
        jnp.zeros(M, jnp.int32),
    )
    _, h, _, _, _, count = jax.lax.while_loop(cond, body, init)
    return h, count


# ----------------------------------------------------------------------------- polish


def polish(
    cell: Cell,
    h: jax.Array,
    g: jax.Array,
    *,
    steps: int | jax.Array = 20,
    stall_steps: int = 3,
    chord_steps: int = 3,
) -> jax.Array:
    """Damped Newton on ``r(h) = F(h, g) - h`` for a batch of candidates, masked per candidate.

    Each iteration builds the dense Jacobian ``J = ∂F/∂h - I`` in forward mode (``H`` JVPs),
    LU-solves the Newton step ``d = -J⁻¹r`` and tries ``h + d``, ``h + d/2``, ``h + d/4`` and the
    Cauchy point of the Gauss–Newton model, ``h - (‖Jᵀr‖²/‖JJᵀr‖²) Jᵀr`` (the exact minimiser
    of ``½‖r + J s‖²`` along steepest descent of ``q``: the trust-region fallback when ``J`` is
    near-singular, e.g. close to a fold). The trial with the smallest ``q`` is kept if it
    decreases ``q``. A candidate stops at the float32 floor or after ``stall_steps`` iterations
    without a decrease (float32 noise reached, or a slow point: a local minimum of ``q > 0``).

    Args:
        cell: the cell.
        h: starting points, ``(M, H)``.
        g: inputs, ``(M,)``.
        steps: iteration cap.
        stall_steps: see above.
        chord_steps: after each Newton step, this many chord steps re-use its LU factors
            (each accepted only if it decreases ``q``).

    Returns:
        Polished points, ``(M, H)``.
    """
    H = h.shape[-1]
    eye = jnp.eye(H, dtype=h.dtype)
    fractions = jnp.array([1.0, 0.5, 0.25], h.dtype)

    def one(h, g):
        r = residual(cell, h, g)
        J = jax.jacfwd(cell.step)(h, g) - eye
        lu = jax.scipy.linalg.lu_factor(J)
        d_newton = jax.scipy.linalg.lu_solve(lu, -r)
        d_newton = jnp.where(jnp.all(jnp.isfinite(d_newton)), d_newton, 0.0)
        grad = J.T @ r
        Jg = J @ grad
        d_cauchy = -(grad @ grad) / jnp.maximum(Jg @ Jg, 1e-30) * grad
        trials = jnp.concatenate([h + fractions[:, None] * d_newton, (h + d_cauchy)[None]])
        qs = jax.vmap(lambda x: _q(cell, x, g))(trials)
        qs = jnp.where(jnp.isfinite(qs), qs, jnp.inf)
        best = jnp.argmin(qs)
        h, q = trials[best], qs[best]

        # Chord steps re-use the factorisation (Shamanskii's method): a forward pass and two
        # triangular solves each, O(H²) instead of the O(H³) Jacobian.
        def chord(_, c):
            h, q = c
            x = h + jax.scipy.linalg.lu_solve(lu, -residual(cell, h, g))
            qx = _q(cell, x, g)
            ok = jnp.isfinite(qx) & (qx < q)
            return jnp.where(ok, x, h), jnp.where(ok, qx, q)

        return jax.lax.fori_loop(0, chord_steps, chord, (h, q))

    def at_floor(h):
        r = jax.vmap(lambda h, g: residual(cell, h, g))(h, g)
        return jnp.max(jnp.abs(r), -1) <= floor(h)

    def cond(c):
        it, _, active, _ = c
        return (it < steps) & jnp.any(active)

    def body(c):
        it, h, active, stall = c
        q_old = jax.vmap(lambda h, g: _q(cell, h, g))(h, g)
        h_new, q_new = jax.vmap(one)(h, g)
        better = q_new < q_old
        h = jnp.where((active & better)[:, None], h_new, h)
        stall = jnp.where(better, 0, stall + 1)
        active = active & ~at_floor(h) & (stall < stall_steps)
        return it + 1, h, active, stall

    M = h.shape[0]
    init = (jnp.zeros([], jnp.int32), h, ~at_floor(h), jnp.zeros(M, jnp.int32))
    return jax.lax.while_loop(cond, body, init)[1]


# ----------------------------------------------------------------------------- de-duplication


def deduplicate(
    points: jax.Array, q: jax.Array, valid: jax.Array, *, tol: float | jax.Array, size: int
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Greedy clustering of candidates for one input, lowest ``q`` first (jittable).

    Candidates are visited in order of increasing ``q``; each joins the first kept
    representative within ``tol·(1+‖h‖∞)`` (max-norm distance) or, if there is room, becomes a
    new representative. So every cluster is represented by its lowest-``q`` member.

    Args:
        points: candidates, ``(S, H)``.
        q: their ``q``, ``(S,)``.
        valid: which candidates take part, ``(S,)`` bool.
        tol: relative merge distance.
        size: ``K``, the number of representatives kept.

    Returns:
        ``(rep_index (K,), rep_mask (K,), assignment (S,), counts (K,))``: the index of each
        representative among the candidates, which slots are used, each candidate's slot (``-1``
        if dropped or invalid) and the cluster sizes.
    """
    S = points.shape[0]
    order = jnp.argsort(jnp.where(valid, q, jnp.inf))

    def body(i, c):
        reps, nrep, assign = c
        j = order[i]
        x = points[j]
        rep_pts = points[reps]
        dist = jnp.max(jnp.abs(rep_pts - x), -1)
        close = (jnp.arange(size) < nrep) & (dist <= tol * (1.0 + jnp.max(jnp.abs(x))))
        first = jnp.argmax(close)
        new = ~jnp.any(close) & (nrep < size) & valid[j]
        slot = jnp.where(jnp.any(close), first, jnp.where(new, nrep, -1))
        slot = jnp.where(valid[j], slot, -1)
        reps = jnp.where(new, reps.at[nrep].set(j), reps)
        nrep = nrep + new.astype(jnp.int32)
        assign = assign.at[j].set(slot)
        return reps, nrep, assign

    reps, nrep, assign = jax.lax.fori_loop(
        0, S, body, (jnp.zeros(size, jnp.int32), jnp.zeros([], jnp.int32), jnp.full(S, -1))
    )
    rep_mask = jnp.arange(size) < nrep
    counts = jnp.sum(assign[:, None] == jnp.arange(size)[None, :], axis=0).astype(jnp.int32)
    return reps, rep_mask, assign.astype(jnp.int32), counts


# ----------------------------------------------------------------------------- all at once


def _stats(cell, points, g, typical_step):
    r = jax.vmap(lambda h: residual(cell, h, g))(points)
    rinf = jnp.max(jnp.abs(r), -1)
    fl = floor(points)
    speed = jnp.linalg.norm(r, axis=-1) / typical_step
    return 0.5 * jnp.sum(r * r, -1), rinf, fl, speed


@functools.partial(jax.jit, static_argnames=("max_unique", "stall_steps"))
def _fixed_points(
    cell,
    inputs,
    seeds,
    typical_step,
    first_order_steps,
    learning_rate,
    first_order_tol,
    grad_tol,
    polish_steps,
    merge_tol,
    final_merge_tol,
    slow_speed,
    *,
    max_unique,
    stall_steps,
):
    N, S, H = seeds.shape
    g_all = jnp.broadcast_to(inputs[:, None], (N, S)).reshape(-1)
    flat = seeds.reshape(N * S, H)
    if typical_step is None:
        steps0 = jnp.linalg.norm(jax.vmap(lambda h, g: residual(cell, h, g))(flat, g_all), axis=-1)
        typical_step = jnp.maximum(jnp.median(steps0), EPS32)
    h1, iters = first_order(
        cell,
        flat,
        g_all,
        steps=first_order_steps,
        learning_rate=learning_rate,
        tol=first_order_tol,
        grad_tol=grad_tol,
    )
    h1 = h1.reshape(N, S, H)
    q1 = jax.vmap(lambda hs, g: jax.vmap(lambda h: _q(cell, h, g))(hs))(h1, inputs)
    finite = jnp.isfinite(q1) & jnp.all(jnp.isfinite(h1), -1)
    dedup = functools.partial(deduplicate, tol=merge_tol, size=max_unique)
    reps, rep_mask, assign, _ = jax.vmap(dedup)(h1, q1, finite)
    rep_pts = jnp.take_along_axis(h1, reps[:, :, None], axis=1)  # (N, K, H)
    g_rep = jnp.broadcast_to(inputs[:, None], (N, max_unique)).reshape(-1)
    polished = polish(
        cell, rep_pts.reshape(-1, H), g_rep, steps=polish_steps, stall_steps=stall_steps
    ).reshape(N, max_unique, H)
    qp = jax.vmap(lambda hs, g: jax.vmap(lambda h: _q(cell, h, g))(hs))(polished, inputs)
    ok = rep_mask & jnp.isfinite(qp)
    # Second pass: representatives that polished onto the same point merge.
    dedup2 = functools.partial(deduplicate, tol=final_merge_tol, size=max_unique)
    reps2, mask2, assign2, _ = jax.vmap(dedup2)(polished, qp, ok)
    points = jnp.take_along_axis(polished, reps2[:, :, None], axis=1)
    points = jnp.where(mask2[:, :, None], points, 0.0)
    # seed -> first slot -> final slot
    seed_cluster = jnp.where(
        assign >= 0, jnp.take_along_axis(assign2, jnp.maximum(assign, 0), 1), -1
    )
    count = jnp.sum(seed_cluster[:, :, None] == jnp.arange(max_unique), axis=1).astype(jnp.int32)
    q, rinf, fl, speed = jax.vmap(lambda p, g: _stats(cell, p, g, typical_step))(points, inputs)
    kind = jnp.where(rinf <= fl, FIXED, jnp.where(speed <= slow_speed, SLOW, FAILED))
    kind = jnp.where(mask2, kind, FAILED).astype(jnp.int32)
    return FixedPoints(
        inputs=inputs,
        points=points,
        mask=mask2,
        q=q,
        residual=rinf,
        floor=fl,
        speed=speed,
        kind=kind,
        count=count,
        seed_cluster=seed_cluster.astype(jnp.int32),
        seed_q=q1,
        first_order_steps=iters.reshape(N, S),
        typical_step=jnp.asarray(typical_step, jnp.float32),
    )


def fixed_points(
    cell: Cell,
    inputs: ArrayLike,
    seeds: ArrayLike,
    *,
    typical_step: float | None = None,
    max_unique: int = 8,
    first_order_steps: int = 300,
    learning_rate: float = 0.02,
    first_order_tol: float = 1e-3,
    grad_tol: float = 1e-6,
    polish_steps: int = 20,
    stall_steps: int = 3,
    merge_tol: float = 2e-2,
    final_merge_tol: float = 1e-4,
    slow_speed: float = 1e-2,
) -> FixedPoints:
    """Fixed and slow points of ``h ↦ F(h, g*)`` for every input ``g*`` from every seed at once.

    See the module docstring for the algorithm (Adam with per-candidate masks, on-device
    de-duplication, Newton polish to the float32 floor, classification).

    Args:
        cell: the cell (an argument of the compiled function: new parameters, no recompilation).
        inputs: constant inputs ``g*``, ``(N,)``.
        seeds: starting states, ``(S, H)`` (shared by all inputs) or ``(N, S, H)``; visited
            states plus noise are good seeds.
        typical_step: ``‖h_{t+1} - h_t‖₂`` typical along trajectories; speeds are relative to it.
            Default: the median ``‖F(s, g*) - s‖₂`` over the seeds.
        max_unique: ``K``, distinct points kept (and polished) per input.
        first_order_steps: cap on Adam iterations.
        learning_rate: Adam step size.
        first_order_tol: a candidate stops at ``‖F(h)-h‖∞ ≤ first_order_tol·(1+‖h‖∞)``.
        grad_tol: or at ``‖∇q‖∞ ≤ grad_tol``.
        polish_steps: cap on Newton iterations.
        stall_steps: a polished candidate stops after this many iterations without progress.
        merge_tol: relative max-norm distance merging first-order candidates (loose: they are
            only converged to ``first_order_tol``; slow modes stretch the distance by
            ``1/(1-|λ|)``).
        final_merge_tol: relative distance merging polished points.
        slow_speed: a point not at the floor with ``speed ≤ slow_speed`` is ``SLOW``, else
            ``FAILED``.

    Returns:
        A :class:`FixedPoints`.

    Example:
        >>> import jax, jax.numpy as jnp, probes
        >>> from probes.reference import random_gru_cell
        >>> cell = random_gru_cell(jax.random.key(0), 8)
        >>> fp = probes.fixed_points(cell, jnp.zeros(1), 0.1 * jnp.ones((4, 8)))
        >>> bool(fp.kind[0, 0] == 0)
        True
    """
    inputs = jnp.asarray(inputs, jnp.float32).reshape(-1)
    seeds = jnp.asarray(seeds, jnp.float32)
    if seeds.ndim == 2:
        seeds = jnp.broadcast_to(seeds, (inputs.shape[0], *seeds.shape))
    if seeds.ndim != 3 or seeds.shape[0] != inputs.shape[0]:
        raise ValueError(f"seeds must be (S, H) or (N, S, H) with N = {inputs.shape[0]}")
    f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
    return _fixed_points(
        canonical(cell),
        inputs,
        seeds,
        None if typical_step is None else f32(typical_step),
        jnp.int32(first_order_steps),
        f32(learning_rate),
        f32(first_order_tol),
        f32(grad_tol),
        jnp.int32(polish_steps),
        f32(merge_tol),
        f32(final_merge_tol),
        f32(slow_speed),
        max_unique=min(int(max_unique), seeds.shape[1]),
        stall_steps=int(stall_steps),
    )


# ----------------------------------------------------------------------------- continuation


class Branch(NamedTuple):
    """A branch ``h*(g*)`` traced by :func:`continuation` (``N`` inputs, ``H`` units).

    Attributes:
        inputs: the inputs in the order traced, ``(N,)``.
        points: the point found at each input, ``(N, H)``.
        residual: ``‖F(h)-h‖∞``, ``(N,)``.
        kind: ``FIXED``/``SLOW``/``FAILED`` (speed relative to ``typical_step``), ``(N,)``.
        jump: ``‖h_i - h_{i-1}‖∞`` (0 at the start), ``(N,)``.
        det_sign: sign of ``det(I - J_h)`` at each point (``+1`` at every stable point), ``(N,)``.
        fold: the branch jumps between ``i-1`` and ``i`` (see :func:`continuation`), ``(N,)``.
        jump_ratio: the jump per unit input, ``jump_i/|g_i - g_{i-1}|``, over the median of the
            same at the neighbouring steps (``≈ 1`` along a smooth branch), ``(N,)``.
        left_basin: solving at ``g_{i-1}`` from ``h_i`` does not lead back to ``h_{i-1}``: the
            two points lie on different branches, ``(N,)``.
        relaxed: the warm-started Newton solve failed and the point was found by iterating
            the dynamics first (the branch ended), ``(N,)``.
    """

    inputs: jax.Array
    points: jax.Array
    residual: jax.Array
    kind: jax.Array
    jump: jax.Array
    det_sign: jax.Array
    fold: jax.Array
    jump_ratio: jax.Array
    left_basin: jax.Array
    relaxed: jax.Array


def _neighbour_median(x: jax.Array, window: int) -> jax.Array:
    """Median of ``x[i-window:i+window+1]`` without ``x[i]`` and without ``x[0]``, per ``i``."""
    N = x.shape[0]
    idx = (
        jnp.arange(N)[:, None]
        + jnp.concatenate([jnp.arange(-window, 0), jnp.arange(1, window + 1)])[None, :]
    )
    ok = (idx >= 1) & (idx < N)
    vals = jnp.where(ok, x[jnp.clip(idx, 0, N - 1)], jnp.nan)
    return jnp.nanmedian(vals, axis=1)


@functools.partial(jax.jit, static_argnames=("stall_steps", "window"))
def _continuation(
    cell,
    inputs,
    h_start,
    polish_steps,
    relax_steps,
    jump_factor,
    typical_step,
    slow_speed,
    *,
    stall_steps,
    window,
):
    H = h_start.shape[0]

    def newton(h, g):
        return polish(cell, h[None], g[None], steps=polish_steps, stall_steps=stall_steps)[0]

    def at_floor(h, g):
        return jnp.max(jnp.abs(residual(cell, h, g))) <= floor(h)

    def solve(h, g):
        h = newton(h, g)
        ok = at_floor(h, g)

        # Past a fold there is no root nearby: follow the dynamics to the surviving stable
        # branch (slowly near the ghost of the fold: iterate until the residual is small or
        # at the cap), then polish.
        def relax(h):
            def cond(c):
                it, x = c
                r = jnp.max(jnp.abs(residual(cell, x, g)))
                return (it < relax_steps) & (r > 1e-4 * (1.0 + jnp.max(jnp.abs(x))))

            x = jax.lax.while_loop(cond, lambda c: (c[0] + 1, cell.step(c[1], g)), (0, h))[1]
            return newton(x, g)

        return jax.lax.cond(ok, lambda h: h, relax, h), ~ok

    def body(c, g):
        h_prev, g_prev = c
        h, relaxed = solve(h_prev, g)
        # Does the new point lead back to the previous one? On one branch, Newton at g_prev
        # from h returns to h_prev; across a fold it converges on the other branch (which still
        # exists at g_prev: hysteresis) or fails.
        back = newton(h, g_prev)
        back_dist = jnp.max(jnp.abs(back - h_prev))
        r = residual(cell, h, g)
        J = jax.jacfwd(cell.step)(h, g)
        sign, _ = jnp.linalg.slogdet(jnp.eye(H, dtype=h.dtype) - J)
        jump = jnp.max(jnp.abs(h - h_prev))
        out = (h, jnp.max(jnp.abs(r)), jnp.linalg.norm(r), sign, jump, back_dist, relaxed)
        return (h, g), out

    h0, _ = solve(h_start, inputs[0])
    _, (pts, rinf, rnorm, sign, jump, back_dist, relaxed) = jax.lax.scan(
        body, (h0, inputs[0]), inputs
    )
    jump = jump.at[0].set(0.0)
    dg = jnp.abs(jnp.diff(inputs, prepend=inputs[:1]))
    rate = jnp.where(dg > 0, jump / jnp.maximum(dg, 1e-30), 0.0)
    nbr = _neighbour_median(rate, window)
    ratio = jnp.where(jnp.isfinite(nbr), rate / jnp.maximum(nbr, 1e-30), 1.0)
    ratio = ratio.at[0].set(0.0)
    left = (back_dist > 0.5 * jump) & (jump > 10.0 * floor(pts))
    left = left.at[0].set(False)
    flip = jnp.concatenate([jnp.zeros(1, bool), sign[1:] * sign[:-1] < 0])
    fold = left & ((ratio > jump_factor) | flip)
    kind = jnp.where(
        rinf <= floor(pts), FIXED, jnp.where(rnorm / typical_step <= slow_speed, SLOW, FAILED)
    )
    return Branch(inputs, pts, rinf, kind.astype(jnp.int32), jump, sign, fold, ratio, left, relaxed)


def continuation(
    cell: Cell,
    inputs: ArrayLike,
    h_start: ArrayLike,
    *,
    polish_steps: int = 20,
    relax_steps: int = 2000,
    stall_steps: int = 3,
    jump_factor: float = 4.0,
    window: int = 2,
    typical_step: float = 1.0,
    slow_speed: float = 1e-2,
) -> Branch:
    """Traces a fixed-point branch across a grid of inputs, warm-starting from the neighbour.

    At each input the previous point is polished (Newton, see :func:`polish`). If that does
    not reach the float32 floor (the branch ended at a fold), the dynamics are iterated
    (``h ← F(h, g*)``, which falls onto the surviving stable branch; at most ``relax_steps``
    times, until ``‖F(h)-h‖∞ ≤ 10⁻⁴(1+‖h‖∞)``) and polished again. Sweeping the inputs upwards
    and downwards traces both stable arms of an S-curve with their hysteresis;
    :func:`fixed_points` finds the middle (saddle) arm.

    **Folds.** A step ``i`` is a fold when both

    * its jump is out of line with its neighbours': ``jump_i/|Δg_i|`` exceeds ``jump_factor``
      times the median of the same rate over the ``window`` steps on either side (rates, not raw
      jumps, so that uneven grids, e.g. ``0`` followed by a log grid, compare fairly; a fixed
      global threshold over-fires on a log grid, where jumps grow with ``g``), or
      ``det(I - J_h)`` changes sign (a real eigenvalue crossed +1); and
    * the solve left the previous basin: Newton at ``g_{i-1}`` started from ``h_i`` does not come
      back to within half the jump of ``h_{i-1}`` (across a saddle-node fold the other branch
      still exists at ``g_{i-1}``: hysteresis). Steep but continuous stretches of a branch
      (close to a fold, before it) pass this check.

    Args:
        cell: the cell.
        inputs: inputs in the order to trace, ``(N,)``.
        h_start: a state near the branch at ``inputs[0]``, ``(H,)``.
        polish_steps: Newton iteration cap per input.
        relax_steps: cap on iterations of the dynamics after a failed polish.
        stall_steps: see :func:`polish`.
        jump_factor: ``k`` above.
        window: neighbouring steps on each side compared with each jump.
        typical_step: speeds are relative to it (see :func:`fixed_points`).
        slow_speed: speed threshold between ``SLOW`` and ``FAILED``.

    Returns:
        A :class:`Branch`.

    Example:
        >>> import jax.numpy as jnp, probes
        >>> from probes.reference import saddle_cell
        >>> br = probes.continuation(saddle_cell(k=2.0), jnp.linspace(-0.8, 0.8, 33),
        ...                          jnp.array([-1.0, 0.0]))
        >>> [round(float(g), 2) for g in br.inputs[br.fold]]
        [0.55]
    """
    f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
    return _continuation(
        canonical(cell),
        f32(inputs).reshape(-1),
        f32(h_start),
        jnp.int32(polish_steps),
        jnp.int32(relax_steps),
        f32(jump_factor),
        f32(typical_step),
        f32(slow_speed),
        stall_steps=int(stall_steps),
        window=int(window),
    )
