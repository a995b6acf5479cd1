"""Chains of optax transformations written as JSON, and the transformations distillation adds.

A *chain* is a JSON list of dicts, ``{"transform": name, <parameters>}``, applied in order; the
keys ``mechanism`` and ``note`` are comments. :func:`build_chain` turns it into an optax
transformation and :func:`chain_code` into one Python expression, both from the same table
(:data:`TRANSFORMS`), so a transform is added with one entry. ``probes.distill`` writes the
mechanisms the probes find in a learned optimizer as such a chain (``distill.json``); this
module knows nothing of probes.

Besides optax's own (``clip``, ``trace``, ``scale_by_rms``, ``scale_by_learning_rate``),
these live here: :func:`offset_gradient` (a constant shift of the gradient, where a learned
optimizer's update vanishes), :func:`soft_clip` (a smooth gradient clip), :func:`damp_oscillations`
(damping of gradients that keep changing sign), :func:`scale_by_agreement` (a gain that follows
whether successive gradients agree in sign), :func:`momentum_modes` (a weighted sum of
traces) and :func:`interpolated_schedule` (a
piecewise-linear learning-rate multiplier with a geometric tail).

Example:
    >>> import lopt, optax
    >>> tx = lopt.build_chain([{"transform": "trace", "decay": 0.9},
    ...                        {"transform": "scale_by_learning_rate",
    ...                         "learning_rate": 0.1}])   # = optax.sgd(0.1, momentum=0.9)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

#: Keys of a chain entry that are comments, not parameters.
META_KEYS = ("mechanism", "note")
#: :func:`soft_clip`'s slope ``1/(1+|g|/c)²`` halves at ``|g| = HALF_SLOPE · c = (√2 − 1)c``.
HALF_SLOPE = math.sqrt(2.0) - 1.0
#: :func:`scale_by_agreement`'s gains are taken within ``[1/AGREEMENT_BOUND, AGREEMENT_BOUND]``.
AGREEMENT_BOUND = 1e4


# ----------------------------------------------------------------------------- transformations


def soft_clip(scale: float | jax.Array) -> optax.GradientTransformation:
    """Saturates each gradient entry: ``g ↦ g / (1 + |g|/c)`` (``c = scale``).

    Linear with slope 1 near 0, slope ``1/(1 + |g|/c)²`` (half at ``|g| = (√2 − 1)c``), and
    saturating at ``±c``: a smooth gradient clip. Stateless.

    Args:
        scale: ``c > 0``.

    Returns:
        The transformation.
    """

    def one(g, params):
        del params
        g32 = jnp.asarray(g, jnp.float32)
        return (g32 / (1.0 + jnp.abs(g32) / scale)).astype(jnp.asarray(g).dtype)

    return optax.stateless_with_tree_map(one)


def offset_gradient(offset: float | jax.Array) -> optax.GradientTransformation:
    """Shifts each gradient entry by a constant: ``g ↦ g − g₀`` (``g₀ = offset``).

    Whatever follows then sees ``0`` where the gradient is ``g₀``: a chain whose update
    vanishes at ``g = 0`` vanishes at ``g = g₀`` instead, and training with it stalls where
    every gradient entry is ``g₀`` rather than at a minimum. This is the *bias* of an optimizer
    whose update at zero gradient is not zero (``probes.bias``). Stateless.

    Args:
        offset: ``g₀``.

    Returns:
        The transformation.
    """

    def shift(g, params):
        del params
        return (jnp.asarray(g) - offset).astype(jnp.asarray(g).dtype)

    return optax.stateless_with_tree_map(shift)


class DampOscillationsState(NamedTuple):
    """State of :func:`damp_oscillations`: the previous input and the EMA of its changes."""

    count: jax.Array
    previous: Any
    energy: Any


def damp_oscillations(scale: float | jax.Array, decay: float = 0.8) -> optax.GradientTransformation:
    """Scales each entry down when its input keeps changing sign: ``g ↦ g / (1 + √e/κ)``.

    ``e ← decay·e + (1 − decay)·((g − g_prev)/2)²`` is a running mean of the squared
    half-change of each entry (0 at the first step), so a persistent input passes unchanged and
    an input alternating ``±a`` is scaled by ``1/(1 + a/κ)`` once ``e`` has settled: the gain for
    sign-flipping gradients, relative to persistent ones, halves at ``a = κ`` (``κ = scale``).
    This is the oscillation damping measured by :class:`probes.detectors.Damping`; AdaBelief's
    ``√EMA((g − m)²)`` denominator is a relative of it.

    Args:
        scale: ``κ > 0``.
        decay: memory of ``e`` in ``[0, 1)``.

    Returns:
        The transformation.

    Example:
        >>> import optax, lopt
        >>> tx = optax.chain(lopt.chain.damp_oscillations(0.2), optax.sgd(1.0, momentum=0.9))
    """

    def init_fn(params):
        zeros = jax.tree.map(lambda x: jnp.zeros(jnp.shape(x), jnp.float32), params)
        return DampOscillationsState(jnp.zeros([], jnp.int32), zeros, zeros)

    def update_fn(updates, state, params=None):
        del params
        first = state.count == 0

        def energy(g, prev, e):
            half = jnp.where(first, 0.0, 0.5 * (jnp.asarray(g, jnp.float32) - prev))
            return decay * e + (1.0 - decay) * half * half

        def damped(g, e):
            # √e with a zero (not infinite) derivative at e = 0: a constant input has e = 0,
            # and linear probes (jvp) around it must see the plain pass-through.
            pos = e > 0
            root = jnp.where(pos, jnp.sqrt(jnp.where(pos, e, 1.0)), 0.0)
            out = jnp.asarray(g, jnp.float32) / (1.0 + root / scale)
            return out.astype(jnp.asarray(g).dtype)

        # One tree_map per output: parameter trees may themselves hold tuples.
        e = jax.tree.map(energy, updates, state.previous, state.energy)
        out = jax.tree.map(damped, updates, e)
        previous = jax.tree.map(lambda g: jnp.asarray(g, jnp.float32), updates)
        return out, DampOscillationsState(optax.safe_increment(state.count), previous, e)

    return optax.GradientTransformation(init_fn, update_fn)


class AgreementState(NamedTuple):
    """State of :func:`scale_by_agreement`: the previous input and each entry's log-gain."""

    previous: Any
    log_gain: Any


def scale_by_agreement(
    scale: float | jax.Array,
    agreeing: float | jax.Array,
    disagreeing: float | jax.Array,
    rise: float | jax.Array,
    fall: float | jax.Array,
) -> optax.GradientTransformation:
    """A gain per entry that follows the sign agreement of successive inputs: ``g ↦ e^a·g``.

    Each step measures the agreement ``c = tanh((g/κ)·(g_prev/κ))`` (``κ = scale``;
    ``g_prev = 0`` at the first step, so ``c = 0``) and moves the log-gain ``a`` (0 at the
    start) toward ``ln agreeing`` by the share ``rise·c`` when ``c > 0``, toward
    ``ln disagreeing`` by ``fall·|c|`` when ``c < 0``; the new gain scales this step's input.
    The two gains are taken within ``[10⁻⁴, 10⁴]`` (:data:`AGREEMENT_BOUND`; the closed forms
    below hold within it), so ``a`` stays finite, between the two logarithms (and 0). An input
    of constant sign well above ``κ`` has the gain ``agreeing^(1 − (1 − rise)^(t−1))`` at step
    ``t`` (counted from 1), and one that alternates sign has
    ``disagreeing^(1 − (1 − fall)^(t−1))``. Under signs that flip with probability ``p`` (well
    above ``κ``) the mean drift of ``a`` vanishes at
    ``a* = (rise(1−p)·ln agreeing + fall·p·ln disagreeing) / (rise(1−p) + fall·p)``, so the gain
    settles near ``e^{a*}`` when the rates are small, and ``a*`` changes sign where
    ``rise(1 − p)·ln agreeing = −fall·p·ln disagreeing``. This is the mechanism
    :mod:`probes.agreement` measures (Rprop and delta-bar-delta's step sizes move by sign too,
    multiplicatively); inputs well below ``κ`` barely move ``a``.

    Args:
        scale: ``κ > 0``, the input magnitude at which agreement counts.
        agreeing: the gain approached while signs agree (``> 0``).
        disagreeing: the gain approached while they flip (``> 0``).
        rise: the share of the way to ``ln agreeing`` moved per fully agreeing step, in
            ``[0, 1]``.
        fall: the same toward ``ln disagreeing`` per fully flipping step.

    Returns:
        The transformation.

    Raises:
        ValueError: for a (concrete) rate outside ``[0, 1]``, where ``a`` would overshoot its
            target and can diverge.

    Example:
        >>> import optax, lopt
        >>> tx = optax.chain(lopt.chain.scale_by_agreement(0.1, 2.0, 0.5, 0.2, 0.2),
        ...                  optax.sgd(0.1))
    """
    for name, rate in (("rise", rise), ("fall", fall)):
        if not isinstance(rate, jax.core.Tracer) and not 0.0 <= float(rate) <= 1.0:
            raise ValueError(f"scale_by_agreement: {name} must lie in [0, 1], got {float(rate)}")

    def init_fn(params):
        zeros = jax.tree.map(lambda x: jnp.zeros(jnp.shape(x), jnp.float32), params)
        return AgreementState(zeros, zeros)

    def update_fn(updates, state, params=None):
        del params
        # the targets within [1/AGREEMENT_BOUND, AGREEMENT_BOUND]: a gain of 0 (or inf) would
        # make ln a target no rate reaches, and a fit would trade a vanishing rate for it
        bound = math.log(AGREEMENT_BOUND)
        up = jnp.clip(jnp.log(jnp.maximum(agreeing, 1e-30)), -bound, bound)
        down = jnp.clip(jnp.log(jnp.maximum(disagreeing, 1e-30)), -bound, bound)

        def log_gain(g, prev, a):
            c = jnp.tanh((jnp.asarray(g, jnp.float32) / scale) * (prev / scale))
            return (
                a + rise * jnp.maximum(c, 0.0) * (up - a) + fall * jnp.maximum(-c, 0.0) * (down - a)
            )

        a = jax.tree.map(log_gain, updates, state.previous, state.log_gain)
        out = jax.tree.map(lambda g, a: (jnp.exp(a) * g).astype(jnp.asarray(g).dtype), updates, a)
        previous = jax.tree.map(lambda g: jnp.asarray(g, jnp.float32), updates)
        return out, AgreementState(previous, a)

    return optax.GradientTransformation(init_fn, update_fn)


class MomentumModesState(NamedTuple):
    """State of :func:`momentum_modes`: one trace per mode (last axis) and the step count."""

    traces: Any
    count: jax.Array


def momentum_modes(
    decays: Sequence[float], weights: Sequence[float], debias: bool = False
) -> optax.GradientTransformation:
    """A weighted sum of traces, ``Σ_i w_i m_i`` with ``m_i ← λ_i m_i + g`` (``λ_i`` = decays).

    Its impulse response is ``Σ_i w_i λ_i^k``: a sum of decaying modes, the form the probes fit
    to an optimizer's response (:class:`probes.detectors.Momentum`). One mode with weight 1 is
    ``optax.trace(decay=λ)``; a mode with ``λ = 0`` passes the gradient through (a direct term,
    as in Nesterov momentum). With ``debias``, each trace is divided by ``1 − λ_i^t`` at step
    ``t`` (the share of its steady weight that ``t`` gradients have filled), as Adam's first
    moment is: ``momentum_modes([b1], [1 − b1], debias=True)`` is Adam's ``m̂``.

    Args:
        decays: ``λ_i`` in ``[0, 1)``.
        weights: ``w_i``, one per decay.
        debias: divide each trace by ``1 − λ_i^t``.

    Returns:
        The transformation.
    """
    if len(decays) != len(weights) or not len(decays):
        raise ValueError("momentum_modes: decays and weights must be non-empty and equally long")
    lam = jnp.asarray(decays, jnp.float32)
    w = jnp.asarray(weights, jnp.float32)

    def init_fn(params):
        return MomentumModesState(
            jax.tree.map(lambda x: jnp.zeros((*jnp.shape(x), lam.shape[0]), jnp.float32), params),
            jnp.zeros([], jnp.int32),
        )

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        traces = jax.tree.map(
            lambda m, g: lam * m + jnp.asarray(g, jnp.float32)[..., None], state.traces, updates
        )
        wt = w / (1.0 - lam ** count.astype(jnp.float32)) if debias else w
        out = jax.tree.map(lambda m, g: (m @ wt).astype(jnp.asarray(g).dtype), traces, updates)
        return out, MomentumModesState(traces, count)

    return optax.GradientTransformation(init_fn, update_fn)


def interpolated_schedule(
    learning_rate: float | jax.Array,
    steps: Sequence[int],
    values: Sequence[float],
    tail_ratio: float = 0.0,
) -> optax.Schedule:
    """``learning_rate × m(t)`` with ``m`` piecewise-linear through ``(steps, values)``.

    After the last knot ``m`` approaches 1 geometrically: ``m(t) = 1 + (m_last − 1)·ρ^(t − t_last)``
    with ``ρ = tail_ratio`` (``0``: jump to 1; ``1``: stay at ``m_last``).

    Args:
        learning_rate: the steady-state learning rate (may be a traced scalar).
        steps: increasing knot steps, starting at 0.
        values: multipliers at the knots.
        tail_ratio: ``ρ`` in ``[0, 1]``.

    Returns:
        An optax schedule (a function of the step count).
    """
    xs = jnp.asarray(steps, jnp.float32)
    ys = jnp.asarray(values, jnp.float32)
    last = float(steps[-1])

    def schedule(count):
        t = jnp.asarray(count, jnp.float32)
        inside = jnp.interp(t, xs, ys)
        tail = 1.0 + (ys[-1] - 1.0) * jnp.float32(tail_ratio) ** jnp.maximum(t - last, 0.0)
        return learning_rate * jnp.where(t <= last, inside, tail)

    return schedule


# ----------------------------------------------------------------------------- the table


def number_code(x: float) -> str:
    """``x`` as a Python literal with 6 significant digits (``0.894978``, ``1e-08``)."""
    return repr(float(f"{float(x):.6g}"))


class Transform(NamedTuple):
    """One kind of chain entry: how it is built and how it is written as Python.

    Attributes:
        build: called with the entry's parameters as keywords; returns the transformation.
        name: the callable as code names it (``"optax.trace"``, ``"lopt.chain.soft_clip"``).
        positional: required parameters written positionally, in order.
        keywords: required parameters written as ``name=value``, in order.
        optional: parameters an entry may leave out.
        code: writes an entry's parameters as a call, when the default (``name`` called with
            the required numbers, :func:`number_code`) does not fit.
    """

    build: Callable[..., optax.GradientTransformation]
    name: str
    positional: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    code: Callable[[Mapping[str, Any]], str] | None = None


def _scale_by_learning_rate(
    learning_rate: float | jax.Array, schedule: Mapping[str, Any] | None = None
) -> optax.GradientTransformation:
    if schedule is None:
        return optax.scale_by_learning_rate(learning_rate)
    s = {k: v for k, v in schedule.items() if k not in META_KEYS}
    missing = {"steps", "values"} - set(s)
    if missing or len(s["steps"]) != len(s["values"]) or not s["steps"]:
        raise ValueError("chain entry 'scale_by_learning_rate': bad schedule")
    return optax.scale_by_learning_rate(
        interpolated_schedule(learning_rate, s["steps"], s["values"], s.get("tail_ratio", 0.0))
    )


def _schedule_code(s: Mapping[str, Any], lr: str) -> str:
    steps = "[" + ", ".join(str(int(t)) for t in s["steps"]) + "]"
    values = "[" + ", ".join(number_code(v) for v in s["values"]) + "]"
    tail = number_code(s.get("tail_ratio", 0.0))
    return f"lopt.chain.interpolated_schedule({lr}, {steps}, {values}, tail_ratio={tail})"


def _list_code(xs: Sequence[float]) -> str:
    return "[" + ", ".join(number_code(x) for x in xs) + "]"


def _scale_by_learning_rate_code(params: Mapping[str, Any]) -> str:
    lr, s = number_code(params["learning_rate"]), params.get("schedule")
    if s is None:
        return f"optax.scale_by_learning_rate({lr})"
    return f"optax.scale_by_learning_rate({_schedule_code(s, lr)})"


#: Every transform a chain may name. ``scale_by_learning_rate``'s optional ``schedule`` is
#: ``{"steps", "values", "tail_ratio"}`` (:func:`interpolated_schedule`).
TRANSFORMS: dict[str, Transform] = {
    "offset_gradient": Transform(
        offset_gradient, "lopt.chain.offset_gradient", positional=("offset",)
    ),
    "clip": Transform(optax.clip, "optax.clip", positional=("max_delta",)),
    "soft_clip": Transform(soft_clip, "lopt.chain.soft_clip", positional=("scale",)),
    "damp_oscillations": Transform(
        damp_oscillations,
        "lopt.chain.damp_oscillations",
        positional=("scale",),
        keywords=("decay",),
    ),
    "scale_by_agreement": Transform(
        scale_by_agreement,
        "lopt.chain.scale_by_agreement",
        positional=("scale",),
        keywords=("agreeing", "disagreeing", "rise", "fall"),
    ),
    "trace": Transform(optax.trace, "optax.trace", keywords=("decay",)),
    "scale_by_sign": Transform(optax.scale_by_sign, "optax.scale_by_sign"),
    "momentum_modes": Transform(
        momentum_modes,
        "lopt.chain.momentum_modes",
        keywords=("decays", "weights"),
        optional=("debias",),
        code=lambda p: (
            f"lopt.chain.momentum_modes(decays={_list_code(p['decays'])}, "
            f"weights={_list_code(p['weights'])}" + (", debias=True)" if p.get("debias") else ")")
        ),
    ),
    "scale_by_rms": Transform(
        optax.scale_by_rms,
        "optax.scale_by_rms",
        keywords=("decay", "eps"),
        optional=("bias_correction",),
        code=lambda p: (
            f"optax.scale_by_rms(decay={number_code(p['decay'])}, eps={number_code(p['eps'])}"
            + (", bias_correction=True)" if p.get("bias_correction") else ")")
        ),
    ),
    "scale_by_learning_rate": Transform(
        _scale_by_learning_rate,
        "optax.scale_by_learning_rate",
        positional=("learning_rate",),
        optional=("schedule",),
        code=_scale_by_learning_rate_code,
    ),
}


def _lookup(entry: Mapping[str, Any]) -> tuple[Transform, dict[str, Any]]:
    """The entry's :class:`Transform` and its parameters, checked against the table."""
    kind = entry.get("transform")
    if kind not in TRANSFORMS:
        raise ValueError(f"unknown chain transform {kind!r}; known: {', '.join(TRANSFORMS)}")
    t = TRANSFORMS[kind]
    params = {k: v for k, v in entry.items() if k != "transform" and k not in META_KEYS}
    required = (*t.positional, *t.keywords)
    missing = [n for n in required if n not in params]
    extra = sorted(set(params) - set(required) - set(t.optional))
    if missing or extra:
        raise ValueError(
            f"chain entry {kind!r}: "
            + (f"missing {', '.join(missing)}" if missing else f"unknown {', '.join(extra)}")
        )
    return t, params


def _check(chain: Sequence[Mapping[str, Any]]) -> None:
    if isinstance(chain, Mapping) or not all(isinstance(e, Mapping) for e in chain):
        raise ValueError("a chain is a list of {'transform': ..., ...} dicts")


def build_chain(chain: Sequence[Mapping[str, Any]]) -> optax.GradientTransformation:
    """Builds the optax transformation described by a chain (e.g. ``distill.json``'s).

    Args:
        chain: a list of ``{"transform": name, <parameters>}`` dicts, applied in order:
            ``offset_gradient`` (``offset``: :func:`offset_gradient`), ``clip`` (``max_delta``:
            ``optax.clip``), ``soft_clip`` (``scale``:
            :func:`soft_clip`), ``damp_oscillations`` (``scale``, ``decay``:
            :func:`damp_oscillations`), ``scale_by_agreement`` (``scale``, ``agreeing``,
            ``disagreeing``, ``rise``, ``fall``: :func:`scale_by_agreement`), ``trace``
            (``decay``: ``optax.trace``),
            ``scale_by_sign`` (no parameters: ``optax.scale_by_sign``), ``momentum_modes``
            (``decays``, ``weights``, optional ``debias``), ``scale_by_rms`` (``decay``, ``eps``,
            optional ``bias_correction``), ``scale_by_learning_rate`` (``learning_rate`` and
            optional ``schedule``: ``{"steps", "values", "tail_ratio"}``, see
            :func:`interpolated_schedule`). Keys ``mechanism`` and ``note`` are ignored. The
            numbers may be traced (the chain is then differentiable in them).

    Returns:
        ``optax.chain`` of the transformations.

    Raises:
        ValueError: for an unknown transform or missing/unknown parameters.

    Example:
        >>> import json, lopt
        >>> d = json.load(open("runs/quickstart/distill.json"))  # doctest: +SKIP
        >>> tx = lopt.build_chain(d["chain"])  # doctest: +SKIP
    """
    _check(chain)
    built = []
    for entry in chain:
        t, params = _lookup(entry)
        built.append(t.build(**params))
    return optax.chain(*built)


def chain_code(chain: Sequence[Mapping[str, Any]]) -> str:
    """The chain as one Python expression, ``optax.chain(...)``, with numbers to 6 digits.

    The expression needs ``optax`` and ``lopt`` (for this module's transformations) in scope.

    Raises:
        ValueError: as :func:`build_chain`.
    """
    _check(chain)
    parts = []
    for entry in chain:
        t, params = _lookup(entry)
        if t.code is not None:
            parts.append(t.code(params))
            continue
        args = [number_code(params[k]) for k in t.positional]
        args += [f"{k}={number_code(params[k])}" for k in t.keywords]
        parts.append(f"{t.name}({', '.join(args)})")
    return "optax.chain(" + ", ".join(parts) + ")"
