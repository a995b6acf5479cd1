"""Meta-objectives and meta-gradient estimators.

An estimator turns ``theta`` into an estimate of ``∇θ L(θ)``, where ``L`` is a meta-objective
averaged over a batch of problems drawn from a task family. Four are provided:

* :func:`full_bptt`: the exact gradient through the whole unroll (the paper's method), with a
  rematerialised scan body so memory is one carry per step (plus, with ``save_products``, the
  optimizer's matrix products).
* :func:`truncated_bptt`: inner states persist across truncations of ``truncation`` steps;
  problems are resampled when they reach the horizon; start iterations can be staggered.
* :func:`es` and :func:`pes`: antithetic evolution strategies over ``theta`` perturbations, and
  persistent evolution strategies (Vicol et al. 2021), which stay unbiased under truncation by
  accumulating each particle's perturbations over its episode.

Each returns an :class:`Estimator` ``(init, grad)`` of pure functions:
``init(theta, key) -> state`` and
``grad(theta, state, key) -> (meta_loss, gradient, state, EstimateInfo)``.

Non-finite problems (a NaN or infinite meta-loss or meta-gradient) are masked out of the
estimate and counted in ``EstimateInfo.num_nonfinite``; the gradient is always finite (zero if
every problem was bad, with ``num_valid == 0``).

Shapes: B problems (or perturbation pairs), T inner steps, K steps per truncation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from lopt.unroll import InnerState, init_inner, unroll
from tasks import TaskFamily

OBJECTIVES = ("mean_normalized", "final", "min", "log")
# Objectives that are sums of per-step terms, so they split across truncations.
PER_STEP_OBJECTIVES = ("mean_normalized", "log")


def objective_terms(losses: jax.Array, f0: jax.Array, objective: str) -> jax.Array:
    """Per-step terms whose mean over a window is the meta-objective.

    Args:
        losses: ``f_t`` over a window, shape ``(K,)``.
        f0: the problem's initial loss (scalar); losses are normalised by it so problems of
            different scales weigh the same.
        objective: ``mean_normalized`` (``f_t/f_0``, the paper's), ``log`` (``log(f_t/f_0)``),
            ``final`` (only the last ``f_T/f_0``) or ``min`` (``min_t f_t/f_0``).

    Returns:
        Terms of shape ``(K,)`` (``final`` and ``min`` put their value in every slot, so the mean
        is the value itself).
    """
    ratio = losses / f0
    if objective == "mean_normalized":
        return ratio
    if objective == "log":
        return jnp.log(ratio + 1e-12)
    if objective == "final":
        return jnp.broadcast_to(ratio[-1], ratio.shape)
    if objective == "min":
        return jnp.broadcast_to(jnp.min(ratio), ratio.shape)
    raise ValueError(f"unknown objective {objective!r}; choose one of: {', '.join(OBJECTIVES)}")


class EstimateInfo(NamedTuple):
    """Diagnostics of one estimate (device scalars)."""

    num_valid: jax.Array
    num_nonfinite: jax.Array
    resets: jax.Array  # problems that reached their horizon and were resampled
    num_outliers: jax.Array | int = 0  # problems left out by ``outlier_threshold``


class Estimator(NamedTuple):
    """A meta-gradient estimator: ``init(theta, key)`` and ``grad(theta, state, key)``."""

    init: Callable[[Any, jax.Array], Any]
    grad: Callable[[Any, Any, jax.Array], tuple[jax.Array, Any, Any, EstimateInfo]]


def batch_constraint(sharding: Any) -> Callable[[Any], Any]:
    """A function that lays a pytree's leading (problem) axis out along ``sharding``.

    ``sharding`` is a ``NamedSharding`` over a 1-d mesh with the spec ``P("batch")``, or
    ``None`` for a single device (then the function is the identity). XLA propagates the
    layout through the vmapped unrolls, so each device trains its share of the problems and
    the mean over problems becomes an all-reduce.
    """
    if sharding is None:
        return lambda tree: tree
    return lambda tree: jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)


def all_finite(tree: Any) -> jax.Array:
    """Whether every entry of every leaf of ``tree`` is finite (a device boolean)."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


# Leaves of at most this many entries get per-problem copies when outliers are dropped (for
# the GRU all but the recurrent matrix); their per-problem gradient norm is the statistic.
SMALL_LEAF = 4096


def _masked_mean_grad(
    per_problem: Callable, theta: Any, batch: Any, outlier_threshold: float | None = None
) -> tuple:
    """Mean of ``per_problem(theta, item)`` over the finite items, and its gradient.

    The fast path differentiates the masked mean in one pass (gradients summed inside the
    backward pass). If that gradient is still non-finite (a problem with a finite loss but a
    non-finite gradient, or ``0 · inf`` in the backward pass), a second pass computes
    per-problem gradients and masks them individually; it costs ``B`` gradient-sized
    accumulators, so it only runs when needed (``lax.cond``).

    With ``outlier_threshold = κ``, a problem whose gradient is more than ``κ`` times the
    median problem's is left out of the estimate like a non-finite one. Over long unrolls a
    few problems' inner dynamics turn chaotic: their loss stays finite and ordinary but their
    meta-gradient grows by 10⁸ or more (past float32's range on some), and it swamps the
    batch. The statistic is the norm of each problem's gradient with respect to the small
    leaves of ``theta`` (at most :data:`SMALL_LEAF` entries each: for the GRU every leaf but
    the recurrent matrix ``w_h``), which get per-problem copies in the first pass at little
    cost; in the per-problem fallback it is the full gradient's norm. Outliers are masked with the
    output-side ``where`` like non-finite problems (never down-weighted: a tiny weight times
    an overflowing gradient is not small), in a second pass that runs only when there is
    one (``lax.cond``). The reported loss is the mean over every finite problem either way.

    Args:
        per_problem: ``(theta, item) -> (loss, aux)``.
        theta: meta-parameters.
        batch: a pytree with a leading ``B`` axis.
        outlier_threshold: ``κ`` above, or ``None`` (one pass, no outliers).

    Returns:
        ``(mean_loss, grad, num_used, aux, num_outliers)`` with ``aux`` stacked over problems;
        ``B - num_used - num_outliers`` problems were non-finite.
    """
    num = jax.tree.leaves(batch)[0].shape[0]
    zero = jnp.zeros([], jnp.int32)

    def masked(theta, keep):
        losses, aux = jax.vmap(per_problem, in_axes=(None, 0))(theta, batch)
        finite = jnp.isfinite(losses)
        ok = finite & keep
        # `where` on the losses: the cotangent of a masked problem is exactly zero.
        return _mean_where(losses, ok), (jnp.sum(ok), aux, _mean_where(losses, finite))

    everyone = jnp.ones([num], bool)
    if outlier_threshold is None:
        (_, (n, aux, loss)), grad = jax.value_and_grad(masked, has_aux=True)(theta, everyone)
        outliers = zero
    else:
        leaves, treedef = jax.tree.flatten(theta)
        small = _small_leaves(theta)

        def split_masked(big, copies):
            def one(copy, item):
                full = [c if s else b for s, b, c in zip(small, big, copy, strict=True)]
                return per_problem(jax.tree.unflatten(treedef, full), item)

            losses, aux = jax.vmap(one)(copies, batch)
            ok = jnp.isfinite(losses)
            return _mean_where(losses, ok), (jnp.sum(ok), aux, ok)

        big = [None if s else x for s, x in zip(small, leaves, strict=True)]
        copies = [
            jnp.broadcast_to(x, (num,) + x.shape) if s else None
            for s, x in zip(small, leaves, strict=True)
        ]
        (loss, (n, aux, finite)), (g_big, g_copies) = jax.value_and_grad(
            split_masked, argnums=(0, 1), has_aux=True
        )(big, copies)
        r = _row_norms([g for g in g_copies if g is not None])
        out = _outliers(r, finite, outlier_threshold)
        outliers = jnp.sum(out).astype(jnp.int32)
        first = jax.tree.unflatten(
            treedef,
            [jnp.sum(c, 0) if s else b for s, b, c in zip(small, g_big, g_copies, strict=True)],
        )

        def without_outliers(_):
            (_, (m, _aux, _loss)), g = jax.value_and_grad(masked, has_aux=True)(theta, ~out)
            return g, m

        grad, n = jax.lax.cond(outliers > 0, without_outliers, lambda _: (first, n), operand=None)

    def per_item(_):
        def one(item):
            (value, _aux), g = jax.value_and_grad(per_problem, has_aux=True)(theta, item)
            return value, g

        losses, grads = jax.vmap(one)(batch)
        ok = jnp.isfinite(losses) & jax.vmap(all_finite)(grads)
        if outlier_threshold is None:
            out = jnp.zeros([num], bool)
        else:
            out = _outliers(_row_norms(jax.tree.leaves(grads)), ok, outlier_threshold)
        ok = ok & ~out
        m = jnp.sum(ok)
        g = jax.tree.map(
            lambda x: (
                jnp.sum(jnp.where(ok.reshape((-1,) + (1,) * (x.ndim - 1)), x, 0.0), 0)
                / jnp.maximum(m, 1)
            ),
            grads,
        )
        # The loss is averaged over the problems with a finite loss and gradient, outliers
        # included (as the fast path reports every finite problem).
        return _mean_where(losses, ok | out), g, m, jnp.sum(out).astype(jnp.int32)

    loss, grad, n, outliers = jax.lax.cond(
        all_finite(grad), lambda _: (loss, grad, n, outliers), per_item, operand=None
    )
    return loss, grad, n, aux, outliers


def _mean_where(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of ``values`` where ``mask`` (0 if none); masked entries get a zero cotangent."""
    return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def _small_leaves(theta: Any) -> list[bool]:
    """Which leaves of ``theta`` get per-problem copies (at most :data:`SMALL_LEAF` entries)."""
    small = [x.size <= SMALL_LEAF for x in jax.tree.leaves(theta)]
    if not any(small):
        raise ValueError(
            f"outlier_threshold needs a leaf of theta with at most {SMALL_LEAF} entries "
            "(its per-problem gradient norm is the outlier statistic)"
        )
    return small


def _row_norms(leaves: list[jax.Array]) -> jax.Array:
    """Per-row (problem) Euclidean norm over ``(B, ...)`` leaves.

    Scaled by the row's largest entry, so it does not overflow while the entries are finite.
    """
    rows = [x.reshape(x.shape[0], -1) for x in leaves]
    top = jnp.max(jnp.stack([jnp.max(jnp.abs(x), 1) for x in rows]), 0)
    safe = jnp.where((top > 0) & jnp.isfinite(top), top, 1.0)
    sq = sum(jnp.sum(jnp.square(x / safe[:, None]), 1) for x in rows)
    return jnp.where(jnp.isfinite(top), safe * jnp.sqrt(sq), jnp.inf)


def _outliers(norms: jax.Array, ok: jax.Array, kappa: float) -> jax.Array:
    """Where ``norms > κ · median`` among ``ok`` (the median over the finite norms of ``ok``).

    A non-finite norm is an outlier. With no positive median (e.g. most problems have a zero
    gradient) nothing is.
    """
    med = jnp.nanmedian(jnp.where(ok & jnp.isfinite(norms), norms, jnp.nan))
    cap = kappa * jnp.where(jnp.isfinite(med) & (med > 0), med, jnp.inf)
    return ok & ~(norms <= cap)


def _check_threshold(outlier_threshold: float | None) -> None:
    if outlier_threshold is not None and not 1 <= outlier_threshold < float("inf"):
        raise ValueError(f"outlier_threshold must be >= 1 (or None), got {outlier_threshold!r}")


def _restart_optimizer(tx, inner: InnerState) -> InnerState:
    """Re-initialises the optimizer state of a problem that has not taken a step yet.

    Persistent states are carried with their gradient cut, but a problem's first window must
    still see ``tx.init`` as a function of ``theta`` (the learned initial state ``h0``), so that
    ``h0`` gets its gradient (or its ES perturbation) exactly as in an untruncated unroll.
    """
    fresh = tx.init(inner.params)
    at_start = inner.step == 0
    opt_state = jax.tree.map(lambda a, b: jnp.where(at_start, a, b), fresh, inner.opt_state)
    return inner._replace(opt_state=opt_state)


def _reset_where(done: jax.Array, fresh: Any, old: Any) -> Any:
    """Per-problem select: ``fresh`` where ``done`` (shape ``(B,)``), else ``old``."""

    def sel(a, b):
        return jnp.where(done.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)

    return jax.tree.map(sel, fresh, old)


def _check(objective: str, horizon: int, truncation: int) -> None:
    if horizon % truncation:
        raise ValueError(f"truncation ({truncation}) must divide the horizon ({horizon})")
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of: {', '.join(OBJECTIVES)}")
    if truncation < horizon and objective not in PER_STEP_OBJECTIVES:
        raise ValueError(
            f"objective {objective!r} needs the whole horizon; with truncation use one of: "
            f"{', '.join(PER_STEP_OBJECTIVES)}"
        )


def problem_keys(key: jax.Array, num_problems: int) -> jax.Array:
    """Per-slot keys; slot ``i`` draws its ``e``-th problem from ``fold_in(keys[i], e)``.

    Every estimator draws problems this way, so full BPTT on ``key`` and a truncated estimator
    initialised with ``key`` (truncation = horizon, no stagger) see the same problems.
    """
    return jax.random.split(key, num_problems)


def full_bptt(
    opt: Any,
    family: TaskFamily,
    *,
    num_problems: int,
    horizon: int,
    objective: str = "mean_normalized",
    checkpoint: bool = True,
    save_products: bool = False,
    shard: Any = None,
    outlier_threshold: float | None = None,
) -> Estimator:
    """Exact meta-gradient through ``horizon`` inner steps on fresh problems (the paper's).

    Args:
        opt: a learned optimizer (``opt.optimizer(theta)``).
        family: the task family.
        num_problems: problems per meta-step (``B``).
        horizon: inner steps per unroll (``T``).
        objective: see :func:`objective_terms`.
        checkpoint: rematerialise the scan body (memory ``O(T)`` carries instead of every
            intermediate).
        save_products: with ``checkpoint``, keep the optimizer's matrix products for the
            backward pass instead of recomputing them (see :func:`lopt.unroll`).
        shard: a ``NamedSharding`` to spread the problems over devices (see
            :func:`batch_constraint`); ``None`` on one device.
        outlier_threshold: leave out problems whose meta-gradient is more than this many
            times the median problem's (see :func:`_masked_mean_grad`); ``None``: keep all.

    Returns:
        An :class:`Estimator` with an empty state.
    """
    _check(objective, horizon, horizon)
    _check_threshold(outlier_threshold)
    constrain = batch_constraint(shard)

    def per_problem(theta, key):
        tx = opt.optimizer(theta)
        state = init_inner(tx, family, key)
        _, losses = unroll(
            tx, family, state, horizon, checkpoint=checkpoint, save_products=save_products
        )
        return jnp.mean(objective_terms(losses, losses[0], objective)), None

    def init(theta, key):
        del theta, key
        return ()

    def grad(theta, state, key):
        keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(problem_keys(key, num_problems), 0)
        loss, g, n, _, out = _masked_mean_grad(
            per_problem, theta, constrain(keys), outlier_threshold
        )
        zero = jnp.zeros([], jnp.int32)
        return loss, g, state, EstimateInfo(n, num_problems - n - out, zero, out)

    return Estimator(init, grad)


class TruncatedState(NamedTuple):
    """Persistent per-problem state of truncated estimators (leading axis ``B``)."""

    inner: InnerState
    f0: jax.Array  # each problem's initial loss, for normalisation
    episode: jax.Array  # how many problems this slot has started (for fresh keys)
    slot_key: jax.Array  # per-slot key; problem e of slot i uses fold_in(slot_key, e)


def _fresh(opt, family, theta, slot_key, episode):
    """Starts problem number ``episode`` of a slot, with its initial loss."""
    tx = opt.optimizer(theta)
    inner = init_inner(tx, family, jax.random.fold_in(slot_key, episode))
    f0 = family.loss(inner.task, inner.params, jax.random.fold_in(inner.key, 0))
    return inner, f0


def _init_slots(opt, family, theta, key, num_problems, horizon, truncation, stagger):
    slot_keys = problem_keys(key, num_problems)
    k_stagger = jax.random.fold_in(key, num_problems)
    zeros = jnp.zeros([num_problems], jnp.int32)
    inner, f0 = jax.vmap(lambda k, e: _fresh(opt, family, theta, k, e))(slot_keys, zeros)
    if stagger:
        # Burn in each slot for a random number of steps with the initial theta, so that the
        # slots are spread over the horizon and do not all reset on the same meta-step.
        offsets = truncation * jax.random.randint(
            k_stagger, [num_problems], 0, horizon // truncation
        )
        tx = opt.optimizer(theta)

        def burn(s, offset):
            def body(s, _):
                nxt, _ = unroll(tx, family, s, 1)
                return jax.tree.map(lambda a, b: jnp.where(s.step < offset, a, b), nxt, s), None

            return jax.lax.scan(body, s, length=horizon)[0]

        inner = jax.vmap(burn)(inner, offsets)
    return TruncatedState(inner, f0, zeros, slot_keys)


def _advance(opt, family, theta, state: TruncatedState, horizon: int, bad: jax.Array):
    """Resets slots that reached the horizon (or went non-finite) with fresh problems."""
    done = (state.inner.step >= horizon) | bad
    episode = state.episode + done.astype(jnp.int32)
    inner, f0 = jax.vmap(lambda k, e: _fresh(opt, family, theta, k, e))(state.slot_key, episode)
    new = TruncatedState(
        _reset_where(done, inner, state.inner),
        jnp.where(done, f0, state.f0),
        episode,
        state.slot_key,
    )
    return new, jnp.sum(done)


def truncated_bptt(
    opt: Any,
    family: TaskFamily,
    *,
    num_problems: int,
    horizon: int,
    truncation: int,
    objective: str = "mean_normalized",
    stagger: bool = True,
    checkpoint: bool = True,
    save_products: bool = False,
    shard: Any = None,
    outlier_threshold: float | None = None,
) -> Estimator:
    """Truncated backpropagation through time over persistent inner states.

    Each meta-step unrolls every problem ``truncation`` steps from where it stopped and
    differentiates the window's objective with respect to ``theta`` (the gradient through the
    incoming state is cut, which is the truncation bias). A problem that reaches ``horizon``
    steps is replaced by a fresh one. With ``truncation == horizon`` and no stagger, each
    meta-step sees fresh problems and the estimate equals :func:`full_bptt`'s for the same
    problems.

    Args:
        opt: a learned optimizer.
        family: the task family.
        num_problems: problems in flight (``B``).
        horizon: inner steps per problem before it is resampled.
        truncation: inner steps per meta-step (``K``); must divide ``horizon``.
        objective: a per-step objective (``mean_normalized`` or ``log``), unless
            ``truncation == horizon``.
        stagger: spread the problems' start iterations over the horizon at initialisation.
        checkpoint: rematerialise the scan body.
        save_products: as in :func:`full_bptt`.
        shard: a ``NamedSharding`` to spread the problems over devices; ``None`` on one.
        outlier_threshold: as in :func:`full_bptt`.

    Returns:
        An :class:`Estimator` whose state is a :class:`TruncatedState`.
    """
    _check(objective, horizon, truncation)
    _check_threshold(outlier_threshold)
    constrain = batch_constraint(shard)

    def init(theta, key):
        return constrain(
            _init_slots(opt, family, theta, key, num_problems, horizon, truncation, stagger)
        )

    def per_problem(theta, item):
        inner, f0 = item
        tx = opt.optimizer(theta)
        inner = _restart_optimizer(tx, jax.lax.stop_gradient(inner))
        # Windows never cross the horizon: truncation divides it and starts are multiples of it.
        final, losses = unroll(
            tx, family, inner, truncation, checkpoint=checkpoint, save_products=save_products
        )
        return jnp.mean(objective_terms(losses, f0, objective)), final

    def grad(theta, state, key):
        del key  # problems come from the per-slot keys, so resumed runs see the same ones
        batch = constrain((state.inner, state.f0))
        loss, g, n, final, out = _masked_mean_grad(per_problem, theta, batch, outlier_threshold)
        bad = ~jax.vmap(all_finite)(final.params)
        state = state._replace(inner=final)
        state, resets = _advance(opt, family, jax.lax.stop_gradient(theta), state, horizon, bad)
        return loss, g, constrain(state), EstimateInfo(n, num_problems - n - out, resets, out)

    return Estimator(init, grad)


class AntitheticState(NamedTuple):
    """Per-pair state of :func:`es`/:func:`pes` (leading axis ``B``)."""

    pos: TruncatedState
    neg: TruncatedState
    accumulated: Any  # PES: the sum of a pair's perturbations over its current episode


def _antithetic(
    opt, family, *, num_pairs, horizon, truncation, sigma, objective, stagger, persistent, shard
) -> Estimator:
    _check(objective, horizon, truncation)
    constrain = batch_constraint(shard)

    def init(theta, key):
        slots = _init_slots(opt, family, theta, key, num_pairs, horizon, truncation, stagger)
        acc = jax.tree.map(lambda x: jnp.zeros((num_pairs, *x.shape), x.dtype), theta)
        return constrain(AntitheticState(slots, slots, acc))

    def window(theta, inner, f0):
        tx = opt.optimizer(theta)
        final, losses = unroll(tx, family, _restart_optimizer(tx, inner), truncation)
        return jnp.mean(objective_terms(losses, f0, objective)), final

    def grad(theta, state, key):
        leaves, treedef = jax.tree.flatten(theta)
        keys = jax.random.split(key, len(leaves))
        eps = jax.tree.unflatten(
            treedef,
            [
                sigma * jax.random.normal(k, (num_pairs, *x.shape), x.dtype)
                for k, x in zip(keys, leaves, strict=True)
            ],
        )

        def pair(e, pos, neg, f0_pos, f0_neg):
            plus = jax.tree.map(jnp.add, theta, e)
            minus = jax.tree.map(jnp.subtract, theta, e)
            lp, fp = window(plus, pos, f0_pos)
            lm, fm = window(minus, neg, f0_neg)
            return lp, lm, fp, fm

        lp, lm, fp, fm = jax.vmap(pair)(
            eps, state.pos.inner, state.neg.inner, state.pos.f0, state.neg.f0
        )
        xi = jax.tree.map(jnp.add, state.accumulated, eps) if persistent else eps
        ok = jnp.isfinite(lp) & jnp.isfinite(lm)
        n = jnp.sum(ok)
        diff = jnp.where(ok, lp - lm, 0.0)
        g = jax.tree.map(
            lambda x: jnp.tensordot(diff, x, axes=1) / (2.0 * sigma**2 * jnp.maximum(n, 1)), xi
        )
        loss = jnp.sum(jnp.where(ok, 0.5 * (lp + lm), 0.0)) / jnp.maximum(n, 1)
        bad = ~ok
        pos, r = _advance(opt, family, theta, state.pos._replace(inner=fp), horizon, bad)
        neg, _ = _advance(opt, family, theta, state.neg._replace(inner=fm), horizon, bad)
        # A pair whose problem was reset starts a new episode: its accumulated noise restarts.
        done = pos.episode != state.pos.episode
        acc = jax.tree.map(
            lambda x: jnp.where(done.reshape((-1,) + (1,) * (x.ndim - 1)), 0.0, x), xi
        )
        new = constrain(AntitheticState(pos, neg, acc))
        return loss, g, new, EstimateInfo(n, num_pairs - n, r)

    return Estimator(init, grad)


def es(
    opt: Any,
    family: TaskFamily,
    *,
    num_pairs: int,
    horizon: int,
    truncation: int | None = None,
    sigma: float = 0.01,
    objective: str = "mean_normalized",
    stagger: bool = True,
    shard: Any = None,
) -> Estimator:
    """Antithetic evolution strategies: ``g ≈ Σ_i (L(θ+ε_i) - L(θ-ε_i)) ε_i / (2σ²N)``.

    With ``truncation < horizon`` the two particles of a pair persist across windows and only
    the current window's perturbation is credited, which biases the estimate (see :func:`pes`).
    """
    truncation = horizon if truncation is None else truncation
    return _antithetic(
        opt,
        family,
        num_pairs=num_pairs,
        horizon=horizon,
        truncation=truncation,
        sigma=sigma,
        objective=objective,
        stagger=stagger and truncation < horizon,
        persistent=False,
        shard=shard,
    )


def pes(
    opt: Any,
    family: TaskFamily,
    *,
    num_pairs: int,
    horizon: int,
    truncation: int,
    sigma: float = 0.01,
    objective: str = "mean_normalized",
    stagger: bool = True,
    shard: Any = None,
) -> Estimator:
    """Persistent evolution strategies (Vicol, Metz, Sohl-Dickstein 2021).

    Like truncated :func:`es`, but each pair credits the *sum* of the perturbations it has used
    since its problem started, which makes the estimate unbiased for the whole-horizon
    objective even though each meta-step unrolls only ``truncation`` steps.
    """
    return _antithetic(
        opt,
        family,
        num_pairs=num_pairs,
        horizon=horizon,
        truncation=truncation,
        sigma=sigma,
        objective=objective,
        stagger=stagger,
        persistent=True,
        shard=shard,
    )


ESTIMATORS = ("full_bptt", "tbptt", "es", "pes")


def make_estimator(name: str, opt: Any, family: TaskFamily, **kwargs: Any) -> Estimator:
    """Builds an estimator by name (``full_bptt``, ``tbptt``, ``es``, ``pes``)."""
    builders = {"full_bptt": full_bptt, "tbptt": truncated_bptt, "es": es, "pes": pes}
    if name not in builders:
        raise ValueError(f"unknown estimator {name!r}; choose one of: {', '.join(ESTIMATORS)}")
    return builders[name](opt, family, **kwargs)
