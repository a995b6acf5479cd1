"""Oscillation damping read from the first steps of alternating gradients.

The damping probe (:class:`probes.detectors.Damping`) decides on steady gains, after 200 steps
of a gradient alternating ``±a`` from a fresh state. An optimizer can damp such gradients only
while it is fresh (a learned optimizer makes most of its progress in a problem's first steps),
which the steady gains do not see. This probe reads the damping where it acts: the optimizer's
updates for ``g_t = (−1)ᵗ a`` over the first ``K`` steps from a fresh state (less its updates for
``g = 0``, a bias no chain models), at ``A`` amplitudes over the range of training gradients,
are compared with those of the chain of the *other* detected mechanisms
(:func:`probes.to_chain.chain_from_analysis`) with :func:`lopt.chain.damp_oscillations` in
front. ``κ`` (a log grid a decade either side of the range) and the memory ``ρ`` are chosen to
minimise the relative squared error averaged over amplitudes.

**Rule.** Damping is detected here when the fitted damping removes at least ``GAIN`` of the
chain's error on these sequences, that error is at least ``FLOOR`` (an error the chain
already explains to a percent leaves nothing to find), and the optimizer's own share of an
alternating gradient kept, beside a persistent one of the same amplitude over the same steps
(the ratio of their updates' norms), falls by at least ``GATE`` from some amplitude to a larger
one. A damping is a gate on the gradient's size; an optimizer that keeps the same share at every
amplitude (a linear filter, an elementwise clip or sign in front of one, or a scale-free
normaliser such as NovoGrad's) has nothing for it to explain, whatever error the chain of the
other readings leaves. On the battery's optimizers without damping it detects nothing; the rule
uses no loss and no training trajectory.

Shapes: ``K`` steps, ``A`` amplitudes, ``G`` grid points.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lopt.chain import build_chain
from probes.to_chain import chain_from_analysis

#: Steps of the alternating sequences (``K``).
STEPS = 20
#: Amplitudes over the range of training gradients (``A``).
AMPLITUDES = 10
#: Memories ``ρ`` of the grid (``κ`` has ``KAPPAS`` values).
DECAYS = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9)
KAPPAS = 31
#: Share of the chain's error the damping must remove, and the least error worth explaining.
GAIN = 0.25
FLOOR = 0.01
#: How far the kept share of an alternating gradient must fall as the amplitude grows.
GATE = 0.1


@dataclasses.dataclass(frozen=True)
class TransientDamping:
    """The damping read from the first ``steps`` steps of alternating gradients.

    Attributes:
        detected: the fitted damping removes at least ``GAIN`` of the chain's error, which is at
            least ``FLOOR``, and ``gate`` is at least ``GATE``.
        kappa: the fitted ``κ`` of :func:`lopt.chain.damp_oscillations`.
        memory: the fitted ``ρ``.
        error_without: the chain's relative squared error on the sequences (mean over amplitudes).
        error_with: the same with the fitted damping in front.
        steps: ``K``.
        amplitudes: the smallest and largest ``a``.
        gate: the largest relative fall, from one amplitude to a larger one, of the share of an
            alternating gradient the optimizer keeps beside a persistent one (``nan`` in files
            written before it was read).
    """

    detected: bool
    kappa: float
    memory: float
    error_without: float
    error_with: float
    steps: int
    amplitudes: tuple[float, float]
    gate: float = float("nan")

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (non-finite numbers as ``None``)."""
        d = dataclasses.asdict(self)
        d["amplitudes"] = list(self.amplitudes)
        return {
            k: (v if not isinstance(v, float) or np.isfinite(v) else None) for k, v in d.items()
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TransientDamping:
        """The reading from its :meth:`to_json` dict; ``ValueError`` if malformed."""
        try:
            return cls(
                bool(d["detected"]),
                float(d["kappa"] if d["kappa"] is not None else np.nan),
                float(d["memory"] if d["memory"] is not None else np.nan),
                float(d["error_without"] if d["error_without"] is not None else np.nan),
                float(d["error_with"] if d["error_with"] is not None else np.nan),
                int(d["steps"]),
                (float(d["amplitudes"][0]), float(d["amplitudes"][1])),
                float(d["gate"] if d.get("gate") is not None else np.nan),
            )
        except (KeyError, TypeError, IndexError, ValueError) as e:
            raise ValueError(f"analysis.damping_transient: malformed ({e})") from None


def _less_rest(run: Callable, seqs: jax.Array) -> jax.Array:
    """``(K, N)``: ``run``'s updates for each column of ``seqs`` less its updates for ``g = 0``."""
    n = seqs.shape[1]
    both = jax.vmap(run, in_axes=1, out_axes=1)(jnp.concatenate([seqs, jnp.zeros_like(seqs)], 1))
    return both[:, :n] - both[:, n:]


def _alternating(amps: jax.Array, steps: int) -> jax.Array:
    """``(K, A)``: ``g_t = (−1)ᵗ a`` for each amplitude."""
    return ((-1.0) ** jnp.arange(steps, dtype=jnp.float32))[:, None] * amps


def _flips(run: Callable, amps: jax.Array, steps: int) -> jax.Array:
    """``(K, A)``: ``run``'s updates for ``(−1)ᵗ a`` less its updates for ``g = 0``."""
    return _less_rest(run, _alternating(amps, steps))


#: Compiled programs kept for repeated analyses of the same optimizer (``analyze_optax``).
PROGRAM_CACHE = 16


@functools.lru_cache(maxsize=PROGRAM_CACHE)
def _target_program(run: Callable, steps: int, amps: tuple[float, ...]) -> Callable:
    """``() -> ((K, A), (K, A))``: ``run``'s flip updates and those for a persistent ``a``.

    Both less its updates for ``g = 0``; compiled once per ``run``.
    """
    a = jnp.asarray(amps, jnp.float32)

    def both():
        u = _less_rest(run, jnp.concatenate([_alternating(a, steps), jnp.ones((steps, 1)) * a], 1))
        return u[:, : a.size], u[:, a.size :]

    return jax.jit(both)


def gate(flips: np.ndarray, persistent: np.ndarray) -> float:
    """The largest relative fall of ``‖flips‖/‖persistent‖`` from one amplitude to a larger one.

    Args:
        flips: ``(K, A)`` updates for ``±a`` alternating (less those for ``g = 0``), the
            amplitudes in increasing order.
        persistent: the same for a constant ``a``.

    Returns:
        ``max_{i<j} (k_i − k_j)/k_i`` over the amplitudes where the share ``k`` is finite and
        positive; 0 where fewer than two are.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        kept = np.linalg.norm(flips, axis=0) / np.linalg.norm(persistent, axis=0)
    kept = kept[np.isfinite(kept) & (kept > 0)]
    if kept.size < 2:
        return 0.0
    return float(np.max(1.0 - kept / np.maximum.accumulate(kept)))


@functools.lru_cache(maxsize=PROGRAM_CACHE)
def _chain_programs(runner: Callable, chain_json: str, steps: int, amps: tuple[float, ...]):
    """``(plain, fit)``: the chain's flip updates, compiled once per chain.

    ``plain() -> (K, A)`` without damping; ``fit(grid (G, 2)) -> (G, K, A)`` with each
    ``(κ, ρ)`` of the grid in front.
    """
    chain = json.loads(chain_json)
    a = jnp.asarray(amps, jnp.float32)

    def with_damping(kr):
        damp = {"transform": "damp_oscillations", "scale": kr[0], "decay": kr[1]}
        return _flips(runner(build_chain([damp, *chain])), a, steps)

    plain = jax.jit(lambda: _flips(runner(build_chain(chain)), a, steps))
    return plain, jax.jit(lambda grid: jax.lax.map(with_damping, grid))


def read_transient_damping(
    run: Callable[[jax.Array], jax.Array],
    analysis: Mapping[str, Any],
    runner: Callable[[Any], Callable[[jax.Array], jax.Array]],
    gradient_range: tuple[float, float],
    *,
    steps: int = STEPS,
    cached: bool = True,
) -> TransientDamping:
    """Fits a damping in front of the other mechanisms' chain to the first ``steps`` steps.

    Args:
        run: the optimizer on one scalar coordinate, ``gs (T,) -> updates (T,)``.
        analysis: its analysis (``Analysis.to_json()``) without this reading; the chain is built
            from it with any detected damping and bias left out.
        runner: ``tx -> run`` for an optax transformation (the same form as ``run``).
        gradient_range: the smallest and largest ``|g|`` of training (amplitudes in between).
        steps: ``K``.
        cached: keep the optimizer's compiled program for the next call with the same ``run``
            (pass false for a ``run`` made afresh per call).

    Returns:
        A :class:`TransientDamping`.
    """
    lo, hi = (float(x) for x in gradient_range)
    amps = tuple(float(x) for x in np.geomspace(lo, hi, AMPLITUDES).astype(np.float32))
    # both sides are compared less their updates for g = 0: the bias stays out of the chain
    left_out = ("damping", "damping_transient", "bias")
    plain = {k: v for k, v in analysis.items() if k not in left_out}
    chain, _ = chain_from_analysis(plain)
    chain_json = json.dumps(chain, sort_keys=True)
    target_program = _target_program if cached else _target_program.__wrapped__
    target, persistent = (np.asarray(x, np.float64) for x in target_program(run, steps, amps)())
    fall = gate(target, persistent)
    norm = np.sum(target**2, 0)

    def error(u):
        u = np.asarray(u, np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            e = np.sum((u - target) ** 2, 0) / norm
        return float(np.mean(e[norm > 0])) if np.any(norm > 0) else np.nan

    grid = np.asarray(
        list(itertools.product(np.geomspace(lo / 10, hi * 10, KAPPAS), DECAYS)), np.float32
    )
    chain_plain, chain_fit = _chain_programs(runner, chain_json, steps, amps)
    without = error(chain_plain())
    errors = [error(u) for u in np.asarray(chain_fit(jnp.asarray(grid)))]
    best = int(np.nanargmin(errors)) if np.any(np.isfinite(errors)) else 0
    with_ = errors[best]
    fits = bool(np.isfinite(without) and without >= FLOOR and with_ <= (1.0 - GAIN) * without)
    return TransientDamping(
        fits and fall >= GATE,
        float(grid[best, 0]),
        float(grid[best, 1]),
        without,
        float(with_),
        int(steps),
        (lo, hi),
        fall,
    )
