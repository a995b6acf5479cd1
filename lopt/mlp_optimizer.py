"""A per-parameter MLP learned optimizer (the design of learned_optimization's ``MLPLOpt``).

Metz et al., *Tasks, stability, architecture, and compute: training more effective learned
optimizers* (2020, arXiv 2009.11243), and the ``learned_optimization`` library's small MLP
optimizer. It is included for comparison with the wider literature: its features (momenta at
several timescales, a second moment, the parameter value, a step embedding, normalised per
tensor) are hand-designed statistics, so it is *not* a pure per-coordinate recurrence and
offers no :class:`~lopt.cell.Cell`; the probes treat it as a black box.

For each scalar parameter ``p`` with gradient ``g`` at step ``t`` (``t`` counts applied steps)::

    m_k ← β_k m_k + (1-β_k) g            for every decay β_k in ``momentum_decays``
    v   ← ρ v + (1-ρ) g²                 ``ρ = rms_decay``
    features = [g, p, m_1..m_K, √v, g/√(v+ε), m_1/√(v+ε)..m_K/√(v+ε)]
    each feature is divided by the root mean square of that feature over its tensor
    step embedding: tanh(t / τ_j) for τ_j in ``timescales`` (shared by all coordinates)
    (d, a) = MLP(features ++ embedding)
    Δx = d · exp(exp_mult · a) · step_mult     # added to p; no built-in minus sign

The small multipliers (``exp_mult = step_mult = 1e-3`` by default, as in learned_optimization)
keep the untrained optimizer's steps tiny and let meta-training grow them smoothly.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from lopt import networks
from lopt.base import MAX_HIDDEN_SIZE, LearnedOptimizer
from lopt.cell import flatten_tree, unflatten_like

_EPS = 1e-8  # inside √(v + ε)
_NORM_EPS = 1e-6  # inside the per-tensor rms normaliser


class MLPOptimizerState(NamedTuple):
    """State of :meth:`MLPOptimizer.optimizer`.

    Attributes:
        count: number of updates applied (skipped steps excluded), ``int32``.
        momentum: ``(K, P)`` float32 accumulators, one row per decay, leaves flattened in
            ``jax.tree.leaves`` order.
        rms: ``(P,)`` float32 second-moment accumulator.
        skipped: number of steps skipped because a gradient was not finite, ``int32``.
    """

    count: jax.Array
    momentum: jax.Array
    rms: jax.Array
    skipped: jax.Array


def _floats(name: str, values: Any, *, low: float, high: float) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of numbers, got {values!r}") from None
    if not out or not all(low < v < high for v in out):
        raise ValueError(
            f"{name} must be non-empty with every value in ({low}, {high}), got {values!r}"
        )
    return out


class MLPOptimizer(LearnedOptimizer):
    """Per-parameter MLP learned optimizer with momentum/rms features and a step embedding.

    Args:
        hidden_sizes: widths of the MLP's hidden layers (ReLU).
        momentum_decays: decays ``β_k`` of the momentum accumulators.
        rms_decay: decay ``ρ`` of the second-moment accumulator.
        timescales: ``τ_j`` of the step embedding ``tanh(t/τ_j)``.
        exp_mult: multiplies the magnitude head inside the exponential.
        step_mult: overall step size; ``optimizer(theta, output_scale=...)`` overrides it.

    Raises:
        ValueError: an argument is out of range.

    Example:
        >>> import jax, jax.numpy as jnp, lopt
        >>> opt = lopt.MLPOptimizer()
        >>> tx = opt.optimizer(opt.init(jax.random.key(0)))
        >>> params = {"w": jnp.ones(3)}
        >>> updates, state = tx.update(params, tx.init(params), params)
    """

    type_name = "mlp"

    def __init__(
        self,
        hidden_sizes: tuple[int, ...] | list[int] = (32, 32),
        momentum_decays: tuple[float, ...] | list[float] = (0.5, 0.9, 0.99, 0.999),
        rms_decay: float = 0.999,
        timescales: tuple[float, ...] | list[float] = (1.0, 10.0, 100.0, 1000.0, 10000.0),
        exp_mult: float = 1e-3,
        step_mult: float = 1e-3,
    ):
        sizes = tuple(hidden_sizes) if isinstance(hidden_sizes, (list, tuple)) else None
        if (
            sizes is None
            or not all(
                isinstance(s, int) and not isinstance(s, bool) and 0 < s <= MAX_HIDDEN_SIZE
                for s in sizes
            )
            or len(sizes) > 64
        ):
            raise ValueError(
                f"hidden_sizes must be at most 64 ints in [1, {MAX_HIDDEN_SIZE}], "
                f"got {hidden_sizes!r}"
            )
        self.hidden_sizes = sizes
        self.momentum_decays = _floats("momentum_decays", momentum_decays, low=0.0, high=1.0)
        (self.rms_decay,) = _floats("rms_decay", [rms_decay], low=0.0, high=1.0)
        self.timescales = _floats("timescales", timescales, low=0.0, high=math.inf)
        (self.exp_mult,) = _floats("exp_mult", [exp_mult], low=0.0, high=math.inf)
        (self.step_mult,) = _floats("step_mult", [step_mult], low=0.0, high=math.inf)
        k = len(self.momentum_decays)
        self.num_features = 4 + 2 * k + len(self.timescales)
        # only the initialiser: the step applies the weights in its own (F, P) form
        self._init, _ = networks.mlp((*sizes, 2), self.num_features)

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments plus ``"type": "mlp"``."""
        return {
            "type": self.type_name,
            "hidden_sizes": list(self.hidden_sizes),
            "momentum_decays": list(self.momentum_decays),
            "rms_decay": self.rms_decay,
            "timescales": list(self.timescales),
            "exp_mult": self.exp_mult,
            "step_mult": self.step_mult,
        }

    def init(self, key: jax.Array) -> dict[str, Any]:
        """Draws ``theta = {"mlp": <MLP params>}`` (haiku's default initialisers)."""
        return {"mlp": self._init(key)}

    def cell(self, theta: Any):
        """Always raises: this optimizer has no per-coordinate Cell.

        Raises:
            TypeError: its features are per-tensor statistics, not a pure per-coordinate
                recurrence, so the probes treat it as a black box
                (``probes.analyze_optax(opt.optimizer(theta), ...)``).
        """
        del theta
        raise TypeError(
            "MLPOptimizer has no cell: its features are per-tensor statistics, not a "
            "per-coordinate recurrence; probe it as a black box via its optax optimizer"
        )

    def optimizer(
        self, theta: Any, *, output_scale: float | jax.Array | None = None
    ) -> optax.GradientTransformationExtraArgs:
        """The optax transformation defined by ``theta``.

        ``update`` needs ``params`` (the parameter value is a feature). A step whose gradient
        has a NaN or infinity is skipped whole (zero update, accumulators unchanged, counted in
        ``state.skipped``), as for :func:`lopt.cell_optimizer`.

        Args:
            theta: meta-parameters.
            output_scale: overrides ``step_mult``; injectable with ``optax.inject_hyperparams``.
        """
        step_mult = self.step_mult if output_scale is None else output_scale
        decays = jnp.asarray(self.momentum_decays, jnp.float32)
        rho = self.rms_decay
        timescales = jnp.asarray(self.timescales, jnp.float32)
        exp_mult = self.exp_mult

        def init_fn(params):
            size = sum(x.size for x in jax.tree.leaves(params))
            # Distinct arrays for the counters, so the state can be donated to a jitted step.
            return MLPOptimizerState(
                count=jnp.zeros([], jnp.int32),
                momentum=jnp.zeros((decays.shape[0], size), jnp.float32),
                rms=jnp.zeros((size,), jnp.float32),
                skipped=jnp.zeros([], jnp.int32),
            )

        def update_fn(updates, state, params=None, *, value=None, **extra_args):
            del value, extra_args
            leaves = jax.tree.leaves(updates)
            if not leaves:
                return updates, state
            if params is None:
                raise ValueError("MLPOptimizer's update needs params (a feature of the MLP)")
            g = flatten_tree(updates)
            p = flatten_tree(params)
            finite = jnp.all(jnp.isfinite(g))
            # Zero a bad gradient before use so no NaN reaches the features (or meta-gradients).
            g = jnp.where(finite, g, 0.0)
            # Features are rows of an (F, P) array: the MLP then runs as (H, F) @ (F, P)
            # products, the faster layout on XLA:CPU (lopt.networks.mlp_columns).
            m = decays[:, None] * state.momentum + (1.0 - decays)[:, None] * g
            v = rho * state.rms + (1.0 - rho) * g * g
            inv_rms = jax.lax.rsqrt(v + _EPS)
            features = [g[None], p[None], m, jnp.sqrt(v)[None], (g * inv_rms)[None], m * inv_rms]
            # Normalise each feature by its root mean square over the tensor it belongs to, so
            # the features are O(1) whatever the scale of each layer. Built tensor by tensor
            # (static slices, a reduction, the scaled rows), so XLA writes the normalised rows
            # once: building all rows first and scaling them after wrote and read them twice,
            # 1.25x the step time at 10^5 parameters (docs/performance.md).
            parts, offset = [], 0
            for x in leaves:
                part = jnp.concatenate([f[:, offset : offset + x.size] for f in features], axis=0)
                mean_sq = jnp.mean(part * part, axis=1)
                parts.append(part * jax.lax.rsqrt(mean_sq + _NORM_EPS)[:, None])
                offset += x.size
            rows = jnp.concatenate(parts, axis=1)
            # The step embedding is the same for every coordinate: it enters the first layer's
            # bias instead of being broadcast to (P, len(timescales)).
            embed = jnp.tanh(state.count.astype(jnp.float32) / timescales)
            out = networks.mlp_columns(theta["mlp"], rows, embed)
            scale = jnp.asarray(step_mult, jnp.float32)
            delta = out[0] * jnp.exp(exp_mult * out[1]) * scale
            delta = jnp.where(finite, delta, 0.0)
            new_state = MLPOptimizerState(
                count=jnp.where(finite, optax.safe_increment(state.count), state.count),
                momentum=jnp.where(finite, m, state.momentum),
                rms=jnp.where(finite, v, state.rms),
                skipped=jnp.where(finite, state.skipped, optax.safe_increment(state.skipped)),
            )
            return unflatten_like(delta, updates), new_state

        return optax.GradientTransformationExtraArgs(init_fn, update_fn)
