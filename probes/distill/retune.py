"""Re-tuning: every number of a chain tuned on the loss of training problems.

:func:`retune_chain` keeps the structure and tunes its numbers on the paper's meta-objective by
Adam on the exact meta-gradient. It answers whether the structure (the detected one, or the
identification's) can match the learned optimizer at all, whatever the probes or the
identification made of its numbers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from lopt.chain import build_chain
from lopt.unroll import init_inner, normalized_loss, unroll
from probes.distill.free_numbers import decode, encode, free_numbers, relabel


@dataclasses.dataclass(frozen=True)
class RetuneConfig:
    """How :func:`retune_chain` tunes, and the cost above which distillation skips it.

    Attributes:
        steps: Adam steps on the loss (rounded up to a multiple of ``every``).
        num_problems: training problems (the same at every step).
        learning_rate: Adam's initial learning rate (cosine-decayed to a tenth), in the
            coordinates of :mod:`probes.distill.free_numbers`.
        every: validation interval in steps.
        validation: validation problems.
        chunk: problems differentiated at once (bounds memory).
        budget: the largest :func:`retune_cost` (coordinate-steps) distillation runs;
            ``None``: any (the setting for numbers a user chose).

    Raises:
        ValueError: if ``steps``, ``num_problems``, ``every``, ``validation`` or ``chunk`` is
            below 1.
    """

    steps: int = 600
    num_problems: int = 256
    learning_rate: float = 0.01
    every: int = 25
    validation: int = 256
    chunk: int = 32
    budget: float | None = 2e8

    def __post_init__(self):
        if min(self.steps, self.every, self.num_problems, self.validation, self.chunk) < 1:
            raise ValueError(
                "re-tuning: steps, every, num_problems, validation and chunk must be >= 1"
            )


def retune_cost(
    family: Any, num_steps: int | None = None, config: RetuneConfig = RetuneConfig()
) -> float:
    """The cost of :func:`retune_chain` in coordinate-steps.

    ``steps × num_problems × horizon × parameters`` (the validation runs, forward only, are
    left out). Deterministic, and proportional to the work for a quadratic or Rosenbrock problem
    (``linear_regression`` at the defaults, 1.5·10⁸, takes about 25 s here). A net with data
    costs more per coordinate-step (a forward and backward pass over its batch), so for nets
    the count is low; distillation compares it with ``config.budget``.

    Args:
        family: the task family.
        num_steps: updates per problem (default: the family's).
        config: the re-tuning settings (``steps`` and ``num_problems`` count).

    Returns:
        The cost.
    """
    horizon = family.num_steps if num_steps is None else num_steps
    return float(config.steps) * config.num_problems * horizon * family.num_params()


def _chain_metric(chain, free, unravel, family, num_steps):
    def metric(z, k):
        tx = optax.with_extra_args_support(build_chain(decode(chain, free, unravel(z))))
        return normalized_loss(unroll(tx, family, init_inner(tx, family, k), num_steps)[1])

    return metric


def _scorer(metric, keys, chunk):
    """``z -> `` the mean of ``metric(z, k)`` over ``keys`` (infinite if any is not finite)."""

    def score(z):
        m = jax.lax.map(lambda k: metric(z, k), keys, batch_size=chunk)
        return jnp.where(jnp.all(jnp.isfinite(m)), jnp.mean(m), jnp.inf)

    return score


def _validation_keys(key: jax.Array, config: RetuneConfig) -> jax.Array:
    # training problems set aside for validation: never the held-out key, never the steps' own
    return jax.random.split(jax.random.fold_in(key, 1_000_000), config.validation)


def validation_scores(
    chains: Sequence[Sequence[Mapping[str, Any]]],
    family: Any,
    key: jax.Array,
    config: RetuneConfig = RetuneConfig(),
    *,
    num_steps: int | None = None,
) -> list[float]:
    """Each chain's score on :func:`retune_chain`'s validation problems (lower is better).

    The score is the mean normalised loss over ``config.validation`` training problems drawn
    from ``key`` exactly as :func:`retune_chain` draws its validation problems, infinite if any
    problem's loss is not finite: the same function of the chain's numbers, in the same
    coordinates (:func:`probes.distill.free_numbers.encode`), as re-tuning's score at its start,
    so a chain's score here is ``validation_metric[0]`` of re-tuning from it. It chooses where
    re-tuning starts without looking at the held-out problems.

    Args:
        chains: chains to compare (e.g. the detected and the identified one; their structures
            may differ).
        family: the task family.
        key: the training key given to :func:`retune_chain`.
        config: the re-tuning settings (``validation`` and ``chunk`` count).
        num_steps: updates per problem (default: the family's).

    Returns:
        One score per chain.
    """
    num_steps = family.num_steps if num_steps is None else num_steps
    keys = _validation_keys(key, config)
    out = []
    for chain in chains:
        free = free_numbers(chain)
        z0, unravel = ravel_pytree(encode(chain, free))
        metric = _chain_metric(chain, free, unravel, family, num_steps)
        score = float(jax.jit(_scorer(metric, keys, config.chunk))(z0))
        out.append(score if math.isfinite(score) else math.inf)
    return out


def retune_chain(
    chain: Sequence[Mapping[str, Any]],
    family: Any,
    key: jax.Array,
    config: RetuneConfig = RetuneConfig(),
    *,
    num_steps: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[dict[str, Any]] | None, dict[str, Any]]:
    """Tunes every number of the chain on the loss, on training problems (never held-out ones).

    The structure stays; the numbers :func:`probes.distill.identify_chain` fits (clip and
    damping scales, decays, sign-agreement gains and rates, the learning rate, an exponent ``γ``
    on the schedule's multipliers, relative to the starting chain's) are tuned, in the same log
    / logit / linear coordinates, to minimise the paper's meta-objective, the mean normalised
    loss ``mean_t f_t/f_0``, by Adam (cosine-decayed learning rate) on its exact gradient
    through the whole inner run (full BPTT). Every step trains the same ``num_problems``
    problems, ``split(fold_in(key, 0))``, ``chunk`` at a time (memory): with a fixed sample, as
    :func:`lopt.tune` uses, the objective is deterministic and Adam settles instead of wandering
    with the sample (a handful of numbers does not overfit a few hundred problems; the
    validation below checks). Gradients are taken problem by problem: a problem whose loss or
    gradient is not finite is left out of that step (counted in ``notes["masked"]``); the
    others' mean is clipped to norm 1, formed so that gradients near the float32 limit (a
    problem that blows up without overflowing) cannot overflow it; a step with no usable
    problem, or whose update is not finite, leaves the numbers and Adam's state unchanged.

    Every ``every`` steps, and at the start, the chain is scored on ``validation`` other
    training problems, ``split(fold_in(key, 1_000_000))``, by the mean normalised loss
    (infinite if any problem's loss is not finite, :func:`lopt.tune` 's rule); the best scoring
    numbers are kept, so the result is never worse there than the starting chain.

    Args:
        chain: the chain to start from (the identified one, or the detected one).
        family: the task family.
        key: the training key (never the held-out key).
        config: steps, problems, Adam's learning rate, validation (:class:`RetuneConfig`,
            whose field names the text above uses; its ``budget`` is not used here).
        num_steps: updates per problem (default: the family's).
        progress: called as ``progress(done, total)`` from inside the compiled loop after each
            validation round (a host callback; the arithmetic is the same without it).

    Returns:
        ``(chain, notes)``: the tuned chain (same structure, plain floats; the starting chain if
        no step scores better) and a record (validation curve, selected step, masked problems,
        schedule exponents, settings); ``(None, {"note": why})`` when the chain has no number
        to tune or every candidate, the start included, diverges on a validation problem.
    """
    num_steps = family.num_steps if num_steps is None else num_steps
    steps, every, learning_rate = config.steps, config.every, config.learning_rate
    num_problems, validation, chunk = config.num_problems, config.validation, config.chunk
    free = free_numbers(chain)
    if not free:
        return None, {"note": "the chain has no number to tune"}
    z0, unravel = ravel_pytree(encode(chain, free))
    metric = _chain_metric(chain, free, unravel, family, num_steps)

    def mean_clipped(g, ok, n):
        # the mean of the usable problems' gradients, clipped to norm 1; gradients of problems
        # that blow up without overflowing reach 1e37, so the mean is formed in units of the
        # largest entry and nothing is squared or summed at its full size (no inf, no 0·inf)
        g = jnp.where(ok[:, None], g, 0.0)
        top = jnp.max(jnp.abs(g))
        top = jnp.where(top > 0, top, 1.0)
        mean = jnp.sum(g / top, 0) / jnp.maximum(n, 1)
        norm = jnp.linalg.norm(mean)
        return mean * jnp.minimum(top, 1.0 / jnp.where(norm > 0, norm, 1.0))

    rounds = -(-steps // every)
    meta = optax.adam(optax.cosine_decay_schedule(learning_rate, rounds * every, alpha=0.1))
    train_keys = jax.random.split(jax.random.fold_in(key, 0), num_problems)
    val_keys = _validation_keys(key, config)

    score = _scorer(metric, val_keys, chunk)

    def step(carry, _):
        z, s = carry
        m, g = jax.lax.map(lambda k: jax.value_and_grad(metric)(z, k), train_keys, batch_size=chunk)
        ok = jnp.isfinite(m) & jnp.all(jnp.isfinite(g), axis=1)
        n = jnp.sum(ok)
        u, s_new = meta.update(mean_clipped(g, ok, n), s, z)
        moved = (n > 0) & jnp.all(jnp.isfinite(u))
        z = jnp.where(moved, optax.apply_updates(z, u), z)
        s = jax.tree.map(lambda a, b: jnp.where(moved, a, b), s_new, s)
        return (z, s), num_problems - n

    @jax.jit
    def run(z):
        def one_round(carry, r):
            carry, masked = jax.lax.scan(step, carry, r * every + jnp.arange(every))
            if progress is not None:
                jax.debug.callback(lambda i: progress(int(i) + 1, rounds), r)
            return carry, (carry[0], score(carry[0]), jnp.sum(masked))

        _, (zs, scores, masked) = jax.lax.scan(one_round, (z, meta.init(z)), jnp.arange(rounds))
        return zs, scores, masked, score(z)

    zs, scores, masked, start = (np.asarray(x) for x in run(z0))
    curve = np.concatenate([[start], scores])
    best = int(np.argmin(curve))
    notes = {
        "method": "every number tuned on the mean normalised loss of training problems by Adam "
        "on the exact meta-gradient (full BPTT), clipped to norm 1; best validation score kept",
        "validation_metric": [float(x) if np.isfinite(x) else None for x in curve],
        "validation_steps": [r * every for r in range(rounds + 1)],
        "selected_step": best * every,
        "masked": int(masked.sum()),
        "schedule_exponent": {},
        "steps": rounds * every,
        "num_problems": num_problems,
        "validation_problems": validation,
        "learning_rate": learning_rate,
    }
    if not np.isfinite(curve[best]):
        return None, {**notes, "note": "every candidate diverged on a validation problem"}
    if best == 0:
        return [dict(e) for e in chain], {**notes, "note": "no step beat the starting numbers"}
    tuned, gamma = relabel(chain, free, unravel(zs[best - 1]), "numbers tuned on the loss")
    return tuned, {**notes, "schedule_exponent": gamma}
