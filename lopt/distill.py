"""Mechanism distillation: the probes' findings as an interpretable optax chain.

:func:`distill` reads what the probes detected in a run's learned optimizer
(``RUN/analysis.json``, see :mod:`probes.analysis`) and writes it down as a chain of ordinary
transformations, each one a mechanism of the paper (Maheswaranathan et al., 2021, §5):

1. **clipping** → :func:`soft_clip` of the *gradient*, ``g ↦ g / (1 + |g|/c)``, with
   ``c = threshold / (√2 − 1)``. Why a saturating map and not ``optax.clip``: the probes define
   the threshold as the gradient where the slope of ``U(h0, g)`` has halved (METHOD.md §5.5).
   A hard clip at that threshold drops the slope to 0 there and saturates at ``α·threshold``,
   about half of the asymptotes the learned update actually reaches; this map has slope
   ``1/(1 + |g|/c)²``, which halves exactly at ``(√2 − 1)c``, and saturates at ``±c`` (times the
   learning rate). On the quickstart GRU it puts the asymptote at ``9.0 × 1.72 = 15.5``, the
   measured ``U(h0, −∞)``. Both maps are scored against the measured ``U(h0, g)`` (relative
   RMS error over the range of training gradients) and the better one is used; the scores are
   recorded in ``distill.json`` (``clip_fit``).
2. **momentum** → ``optax.trace(decay=β)`` with the dominant fitted mode's ``β``.
3. **learning rate and schedule** → ``optax.scale_by_learning_rate`` with the dominant mode's
   ``α`` (the learned update has no built-in minus sign; ``α > 0`` means descent, and
   ``scale_by_learning_rate`` supplies the minus). If a schedule was detected, ``α`` is
   multiplied by ``α_eff(t) / α_eff(h*)``: the probed effective learning rate along the
   autonomous dynamics, divided by its value at the convergence point, so that the multiplier
   tends to 1 and the steady-state learning rate is the mode's ``α``. It is interpolated
   piecewise-linearly between knots (:func:`interpolated_schedule`) and, after the last probed
   step, approaches 1 geometrically at the rate of the probed tail.
4. **adaptation** (only if detected, and not if the detected damping alone accounts for it: the
   adaptation probe's step from ``g*`` to 0 is a gradient change the damping reacts to) →
   ``optax.scale_by_rms`` whose ``ε`` puts the half-point of
   ``α_eff(|g*|)`` where the probes found it; ``α`` is multiplied by ``√ε`` so the small-gradient
   learning rate is unchanged (the decay, which the steady-state probe cannot see, is 0.9).

5. **oscillation damping** (only if detected; a mechanism beyond the paper's four, see
   :class:`probes.detectors.Damping`) → :func:`damp_oscillations` first in the chain, with the
   probed ``κ`` (the gradient amplitude where gradients that flip sign every step lose half
   their gain relative to persistent ones; the transform has exactly that half-point) and the
   probed memory ``ρ`` (how fast the damping builds up from a fresh state; ``DAMP_DECAY`` for
   analyses that lack it).

Mechanisms that were not detected are left out; without momentum the learning rate is
``α_eff(h*)`` (plain, possibly scheduled, SGD). A chain is a JSON list of dicts
(``{"transform": name, <parameters>}``); :func:`build_chain` turns it back into an optax
transformation, so ``distill.json`` is enough to train with the distilled optimizer.

:func:`distill` evaluates the chain on the held-out problems of ``RUN/eval.json`` (same key,
same number of problems, same horizon), compares it with the learned optimizer and the best
tuned baseline problem by problem, and reports the fraction of the learned optimizer's gain it
recovers, ``(best_baseline − distilled)/(best_baseline − learned)``, with a 95% paired bootstrap
interval over problems (fixed seed). Two variants with the same structure are reported next to
it, clearly labelled: *identified* (:func:`identify_chain`: every number fitted to the learned
optimizer's own updates, no loss used) and *re-tuned* (:func:`retune_chain`: every number
tuned on the loss of training problems, never the held-out ones, starting from the identified
numbers when there are some). The three answer different questions: do the probed numbers
describe the optimizer, do numbers fitted to its behaviour, and can the detected structure
match it at all.

Example:
    >>> import lopt, optax
    >>> tx = lopt.distill.build_chain([{"transform": "trace", "decay": 0.9},
    ...                                {"transform": "scale_by_learning_rate",
    ...                                 "learning_rate": 0.1}])   # = optax.sgd(0.1, momentum=0.9)
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from lopt import rundir

#: ``distill.json`` schema. 2: the re-tuned variant tunes every number (``notes.retune`` holds
#: its validation curve, not a grid; ``results.distilled_retuned`` has no factors).
SCHEMA = "lopt.distill/2"
#: The ``analysis.json`` schema version with every result the chain uses (``probes.analysis``'s
#: ``SCHEMA_VERSION``; lopt does not import probes). Older analyses are redone (``analyze``).
ANALYSIS_SCHEMA = 2

#: ``soft_clip``'s slope ``1/(1+|g|/c)²`` halves at ``|g| = (√2 − 1)c``.
_HALF_SLOPE = math.sqrt(2.0) - 1.0
#: Schedule knots are kept until piecewise-linear interpolation is within this relative error.
KNOT_TOL = 2e-3
#: Paired bootstrap resamples and seed for the fraction's interval.
BOOTSTRAP_SAMPLES = 10_000
BOOTSTRAP_SEED = 0
#: Re-tuning (:func:`retune_chain`): Adam steps on the loss, training problems, Adam's initial
#: learning rate (cosine-decayed to a tenth), validation interval and validation problems ...
RETUNE_STEPS = 600
RETUNE_PROBLEMS = 256
RETUNE_LR = 0.03
RETUNE_EVERY = 25
RETUNE_VALIDATION = 256
#: Problems differentiated at once (bounds memory), and the largest default re-tuning cost
#: (:func:`retune_cost`, coordinate-steps) :func:`distill` runs without being asked.
RETUNE_CHUNK = 32
RETUNE_BUDGET = 2e8
#: :func:`damp_oscillations`' memory in a distilled chain when the analysis has no measured
#: ``damping.memory`` (analyses written before the probe measured it).
DAMP_DECAY = 0.8

_META_KEYS = {"mechanism", "note"}


class DistillError(ValueError):
    """A run directory cannot be distilled (missing or unusable analysis / evaluation)."""


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

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params

        def one(g):
            g32 = jnp.asarray(g, jnp.float32)
            return (g32 / (1.0 + jnp.abs(g32) / scale)).astype(jnp.asarray(g).dtype)

        return jax.tree.map(one, updates), state

    return optax.GradientTransformation(init_fn, update_fn)


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
        >>> tx = optax.chain(lopt.distill.damp_oscillations(0.2), optax.sgd(1.0, momentum=0.9))
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


def _transform(entry: Mapping[str, Any]) -> optax.GradientTransformation:
    kind = entry.get("transform")
    params = {k: v for k, v in entry.items() if k != "transform" and k not in _META_KEYS}

    def need(*names: str, optional: tuple[str, ...] = ()) -> None:
        missing = [n for n in names if n not in params]
        extra = sorted(set(params) - set(names) - set(optional))
        if missing or extra:
            raise ValueError(
                f"chain entry {kind!r}: "
                + (f"missing {', '.join(missing)}" if missing else f"unknown {', '.join(extra)}")
            )

    if kind == "clip":
        need("max_delta")
        return optax.clip(params["max_delta"])
    if kind == "soft_clip":
        need("scale")
        return soft_clip(params["scale"])
    if kind == "damp_oscillations":
        need("scale", "decay")
        return damp_oscillations(params["scale"], params["decay"])
    if kind == "trace":
        need("decay")
        return optax.trace(decay=params["decay"])
    if kind == "scale_by_rms":
        need("decay", "eps")
        return optax.scale_by_rms(decay=params["decay"], eps=params["eps"])
    if kind == "scale_by_learning_rate":
        need("learning_rate", optional=("schedule",))
        lr = params["learning_rate"]
        sched = params.get("schedule")
        if sched is None:
            return optax.scale_by_learning_rate(lr)
        s = {k: v for k, v in sched.items() if k not in _META_KEYS}
        missing = {"steps", "values"} - set(s)
        if missing or len(s["steps"]) != len(s["values"]) or not s["steps"]:
            raise ValueError("chain entry 'scale_by_learning_rate': bad schedule")
        return optax.scale_by_learning_rate(
            interpolated_schedule(lr, s["steps"], s["values"], s.get("tail_ratio", 0.0))
        )
    raise ValueError(
        f"unknown chain transform {kind!r}; known: clip, soft_clip, damp_oscillations, trace, "
        "scale_by_rms, scale_by_learning_rate"
    )


def build_chain(chain: Sequence[Mapping[str, Any]]) -> optax.GradientTransformation:
    """Builds the optax transformation described by a distilled chain (``distill.json``).

    Args:
        chain: a list of ``{"transform": name, <parameters>}`` dicts, applied in order:
            ``clip`` (``max_delta``: ``optax.clip``), ``soft_clip`` (``scale``:
            :func:`soft_clip`), ``damp_oscillations`` (``scale``, ``decay``:
            :func:`damp_oscillations`), ``trace`` (``decay``: ``optax.trace``), ``scale_by_rms``
            (``decay``, ``eps``), ``scale_by_learning_rate`` (``learning_rate`` and optional
            ``schedule``: ``{"steps", "values", "tail_ratio"}``, see
            :func:`interpolated_schedule`). Keys ``mechanism`` and ``note`` are ignored.

    Returns:
        ``optax.chain`` of the transformations.

    Raises:
        ValueError: for an unknown transform or missing/unknown parameters.

    Example:
        >>> import json, lopt
        >>> d = json.load(open("runs/quickstart/distill.json"))  # doctest: +SKIP
        >>> tx = lopt.distill.build_chain(d["chain"])  # doctest: +SKIP
    """
    if isinstance(chain, Mapping) or not all(isinstance(e, Mapping) for e in chain):
        raise ValueError("a chain is a list of {'transform': ..., ...} dicts")
    return optax.chain(*(_transform(e) for e in chain))


def _g(x: float) -> str:
    return repr(float(f"{float(x):.6g}"))


def chain_code(chain: Sequence[Mapping[str, Any]]) -> str:
    """The chain as one Python expression (``optax.chain(...)``; ``lopt.distill`` for extras)."""
    parts = []
    for e in chain:
        kind = e["transform"]
        if kind == "clip":
            parts.append(f"optax.clip({_g(e['max_delta'])})")
        elif kind == "soft_clip":
            parts.append(f"lopt.distill.soft_clip({_g(e['scale'])})")
        elif kind == "damp_oscillations":
            parts.append(
                f"lopt.distill.damp_oscillations({_g(e['scale'])}, decay={_g(e['decay'])})"
            )
        elif kind == "trace":
            parts.append(f"optax.trace(decay={_g(e['decay'])})")
        elif kind == "scale_by_rms":
            parts.append(f"optax.scale_by_rms(decay={_g(e['decay'])}, eps={_g(e['eps'])})")
        elif kind == "scale_by_learning_rate":
            lr, s = _g(e["learning_rate"]), e.get("schedule")
            if s is None:
                parts.append(f"optax.scale_by_learning_rate({lr})")
            else:
                steps = "[" + ", ".join(str(int(t)) for t in s["steps"]) + "]"
                values = "[" + ", ".join(_g(v) for v in s["values"]) + "]"
                tail = _g(s.get("tail_ratio", 0.0))
                parts.append(
                    "optax.scale_by_learning_rate(lopt.distill.interpolated_schedule("
                    f"{lr}, {steps}, {values}, tail_ratio={tail}))"
                )
        else:
            raise ValueError(f"unknown chain transform {kind!r}")
    return "optax.chain(" + ", ".join(parts) + ")"


# ----------------------------------------------------------------------------- from the analysis


def _knots(values: np.ndarray, tol: float = KNOT_TOL) -> list[int]:
    """Fewest greedy knots whose linear interpolation stays within ``tol`` (relative)."""
    n = len(values)
    if n <= 2:
        return list(range(n))
    scale = max(float(np.max(np.abs(values))), 1e-30)
    knots, i = [0], 0
    while i < n - 1:
        j = i + 1
        while j + 1 < n:
            t = np.arange(i, j + 2)
            line = np.interp(t, [i, j + 1], [values[i], values[j + 1]])
            if np.max(np.abs(line - values[i : j + 2])) > tol * scale:
                break
            j += 1
        knots.append(j)
        i = j
    return knots


def _tail_ratio(m: np.ndarray, window: int = 10) -> float:
    """Per-step ratio of ``m_t − 1`` over the last ``window`` steps, clipped to ``[0, 1]``.

    ``0`` (jump to 1 after the last knot) when the tail does not approach 1 monotonically.
    """
    if len(m) <= window:
        return 0.0
    a, b = m[-1 - window] - 1.0, m[-1] - 1.0
    if a == 0 or b / a <= 0:
        return 0.0
    return float(min(1.0, (b / a) ** (1.0 / window)))


def _clip_fit(clipping: Mapping[str, Any]) -> dict[str, Any] | None:
    """Scores ``soft_clip`` and ``optax.clip`` against the measured ``U(h0, g)``.

    Both are scaled by the measured slope at 0 (``U ≈ slope0 · map(g)``) after removing
    ``U(h0, 0)`` (a bias the chain does not model), over the range of training gradients (the
    histogram's edges; the whole grid if there is none). Returns relative RMS errors.
    """
    g = np.asarray(clipping.get("gradients") or [], np.float64)
    u = np.asarray([np.nan if x is None else x for x in clipping.get("updates") or []], np.float64)
    slope0, thr = clipping.get("slope0"), clipping.get("threshold")
    if g.size == 0 or g.size != u.size or not slope0 or not thr:
        return None
    edges = np.asarray(clipping.get("histogram_edges") or [], np.float64)
    lim = float(np.max(np.abs(edges))) if edges.size else float(np.max(np.abs(g)))
    sel = (np.abs(g) <= lim) & np.isfinite(u)
    if sel.sum() < 3:
        return None
    g, u = g[sel], u[sel] - np.interp(0.0, g[sel], u[sel])
    c = thr / _HALF_SLOPE
    models = {"soft_clip": g / (1.0 + np.abs(g) / c), "clip": np.clip(g, -thr, thr)}
    norm = max(float(np.sqrt(np.mean(u**2))), 1e-30)
    err = {k: float(np.sqrt(np.mean((slope0 * v - u) ** 2)) / norm) for k, v in models.items()}
    return {"range": lim, "relative_rms_error": err, "chosen": min(err, key=err.get)}


#: The adaptation probe's fall counts as the damping's own response (no ``scale_by_rms``) when
#: every measured ``α_eff(|g*|)/α_eff(|g*|₀)`` is at least this fraction of the damping's
#: prediction ``1/(1 + √(1−ρ)|g*|/(2κ))``.
DAMPING_EXPLAINS = 0.8


def _adaptation_explained_by_damping(ada: Mapping[str, Any], damp: Mapping[str, Any]) -> bool:
    """Whether the adaptation probe's fall is what the detected damping alone produces.

    The probe reads ``α_eff`` at ``g = 0`` from the state reached under a constant ``g*``: for
    :func:`damp_oscillations` that step is a half-change of ``g*/2`` on top of ``e ≈ 0``, so the
    damping scales ``α_eff`` by ``1/(1 + √(1−ρ)|g*|/(2κ))``. RMSProp-like adaptation falls
    further (as ``1/|g*|``).
    """
    m = np.asarray(ada.get("magnitudes") or [], np.float64)
    arms = ada.get("lr_vs_magnitude") or {}
    kappa, rho = float(damp["scale"]), float(damp["decay"])
    predicted = 1.0 / (1.0 + math.sqrt(1.0 - rho) * m / (2.0 * kappa))
    ok_any = False
    for arm in ("pos", "neg"):
        a = np.abs(np.asarray([np.nan if x is None else x for x in arms.get(arm, [])], float))
        if a.size != m.size or a.size < 2 or not np.isfinite(a[0]) or a[0] <= 0:
            continue
        ratio = a / a[0]
        ok = np.isfinite(ratio)
        if np.any(ratio[ok] < DAMPING_EXPLAINS * predicted[ok] / predicted[0]):
            return False
        ok_any = True
    return ok_any


def chain_from_analysis(
    analysis: Mapping[str, Any], *, clip_form: str = "auto"
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Turns an ``Analysis.to_json()`` dict into a chain (see the module docstring).

    Args:
        analysis: the probes' result (``analysis.json``).
        clip_form: ``"auto"`` (the map closer to the measured ``U(h0, g)``), ``"soft_clip"``
            or ``"clip"``.

    Returns:
        ``(chain, notes)``: the chain (JSON-able) and what was derived how (JSON-able).

    Raises:
        DistillError: if the analysis lacks the four mechanisms.
    """
    for k in ("momentum", "clipping", "schedule", "adaptation"):
        if not isinstance(analysis.get(k), Mapping):
            raise DistillError(f"analysis has no {k!r} result; re-run 'probes analyze'")
    mom, clip, sch, ada = (analysis[k] for k in ("momentum", "clipping", "schedule", "adaptation"))
    notes: dict[str, Any] = {
        "detected": {
            k: bool(analysis[k].get("detected"))
            for k in ("momentum", "clipping", "schedule", "adaptation")
        }
    }
    chain: list[dict[str, Any]] = []
    damping = analysis.get("damping")
    if isinstance(damping, Mapping):
        notes["detected"]["damping"] = bool(damping.get("detected"))
        kappa, memory = damping.get("kappa"), damping.get("memory")
        if damping.get("detected") and kappa is not None and math.isfinite(float(kappa)):
            measured = memory is not None and 0.0 <= float(memory) < 1.0
            chain.append(
                {
                    "transform": "damp_oscillations",
                    "scale": float(kappa),
                    "decay": float(memory) if measured else DAMP_DECAY,
                    "mechanism": f"oscillation damping (gain for sign-flipping gradients "
                    f"halves at |g| = {float(kappa):.4g})",
                }
            )

    # α_eff at the convergence point: the impulse response at lag 0 (= Σ α_i), else the end of
    # the schedule probe, else the slope of U(h0, g) at 0.
    resp = [x for x in (mom.get("impulse_response") or []) if x is not None]
    fit_alphas = mom.get("fit_alphas") or []
    eff = sch.get("effective_lr") or []
    if resp:
        alpha_star, src = -float(resp[0]), "impulse response at lag 0"
    elif fit_alphas:
        alpha_star, src = float(sum(a[0] for a in fit_alphas)), "sum of fitted α_i"
    elif eff and eff[-1] is not None:
        alpha_star, src = float(eff[-1]), "end of the schedule probe"
    else:
        alpha_star, src = -float(clip.get("slope0") or 0.0), "slope of U(h0, g) at 0"
    notes["alpha_eff_steady"] = {"value": alpha_star, "source": src}

    if clip.get("detected") and clip.get("threshold"):
        thr = float(clip["threshold"])
        fit = _clip_fit(clip)
        notes["clip_fit"] = fit
        form = clip_form if clip_form != "auto" else (fit["chosen"] if fit else "soft_clip")
        if form == "soft_clip":
            chain.append(
                {
                    "transform": "soft_clip",
                    "scale": thr / _HALF_SLOPE,
                    "mechanism": f"clipping (slope halves at the detected |g| = {thr:.4g})",
                }
            )
        elif form == "clip":
            chain.append(
                {
                    "transform": "clip",
                    "max_delta": thr,
                    "mechanism": f"clipping at the detected |g| = {thr:.4g}",
                }
            )
        else:
            raise ValueError(f"clip_form must be auto, soft_clip or clip, got {clip_form!r}")

    lr = alpha_star
    damp_entry = chain[0] if chain and chain[0]["transform"] == "damp_oscillations" else None
    explained = damp_entry is not None and _adaptation_explained_by_damping(ada, damp_entry)
    notes["adaptation_from_damping"] = explained
    if ada.get("detected") and not explained:
        m = np.asarray(ada.get("magnitudes") or [], np.float64)
        arms = ada.get("lr_vs_magnitude") or {}
        arm = "pos" if (ada.get("slope_pos") or 0) <= (ada.get("slope_neg") or 0) else "neg"
        a = np.abs(np.asarray([np.nan if x is None else x for x in arms.get(arm, [])], float))
        ok = np.isfinite(a) & (a > 0)
        decay = 0.9
        if ok.sum() >= 2 and m.size == a.size:
            # RMSProp's steady α_eff ∝ 1/√(ρ g*² + ε) halves at ρ g*² = 3ε.
            half = float(np.interp(0.5, (a[ok] / a[ok][0])[::-1], m[ok][::-1]))
            eps = decay * half**2 / 3.0
        else:
            eps = 1e-8
        chain.append(
            {
                "transform": "scale_by_rms",
                "decay": decay,
                "eps": eps,
                "mechanism": "adaptation (α_eff falls with |g*|)",
            }
        )
        lr = lr * math.sqrt(eps)
    if mom.get("detected"):
        chain.append(
            {
                "transform": "trace",
                "decay": float(mom["beta"]),
                "mechanism": f"momentum (dominant mode, timescale "
                f"{float(mom.get('timescale') or 0):.3g} steps)",
            }
        )
        lr = float(mom["alpha"]) * (lr / alpha_star if alpha_star else 1.0)
    entry: dict[str, Any] = {
        "transform": "scale_by_learning_rate",
        "learning_rate": lr,
        "schedule": None,
        "mechanism": "learning rate",
    }
    knots: list[int] = []
    if sch.get("detected") and eff and alpha_star:
        e = np.asarray([np.nan if x is None else x for x in eff], np.float64)
        if not np.all(np.isfinite(e)):  # keep the finite prefix
            e = e[: int(np.argmax(~np.isfinite(e)))]
        mult = e / alpha_star
        knots = _knots(mult)
    if sch.get("detected") and eff and alpha_star and knots:
        entry["schedule"] = {
            "steps": knots,
            "values": [float(mult[k]) for k in knots],
            "tail_ratio": _tail_ratio(mult),
        }
        entry["mechanism"] = f"learning rate with a {sch.get('shape')} schedule"
    chain.append(entry)
    return chain, notes


# ----------------------------------------------------------------------------- identification

#: How :func:`identify_chain` treats each number of a chain entry: fitted in log space (positive
#: numbers), through a logistic (decays in (0, 1)), or linearly in units of the detected
#: magnitude (the learning rate, whose sign the fit may flip: a probed α can have the wrong sign,
#: e.g. at g = 0 for the ``log1p_sign`` input, where the input's derivative vanishes).
_FREE_FIELDS = {
    "scale": "log",
    "max_delta": "log",
    "learning_rate": "signed",
    "eps": "log",
    "decay": "logit",
}
#: Identification settings: problems per round, rounds, Levenberg-Marquardt iterations per fit,
#: coordinates kept per problem, and the base key ``fold_in(key(0), IDENTIFY_KEY)`` (also Adam's
#: tuning key in :func:`lopt.evaluation.tune_baselines`, but its problems are drawn as
#: ``split(fold_in(base, round))``, not ``split(base)``; never the held-out key).
IDENTIFY_PROBLEMS = 64
IDENTIFY_ROUNDS = 6
IDENTIFY_STEPS = 40
IDENTIFY_COORDS = 256
IDENTIFY_KEY = 2
#: Validation problems for choosing among the fitted candidates.
IDENTIFY_VALIDATION = 64


def _free_numbers(chain: Sequence[Mapping[str, Any]]) -> list[tuple[int, str]]:
    """``(entry index, field)`` of each number :func:`identify_chain` fits ("gamma": γ)."""
    free = []
    for i, e in enumerate(chain):
        for k, kind in _FREE_FIELDS.items():
            v = e.get(k)
            if not isinstance(v, int | float) or isinstance(v, bool):
                continue
            if (v != 0) if kind == "signed" else (v > 0 and (kind == "log" or v < 1)):
                free.append((i, k))  # a number the coordinates can represent exactly
        s = e.get("schedule")
        if s is not None and all(float(v) > 0 for v in s.get("values", [])):
            free.append((i, "gamma"))  # m(t)^γ is defined for positive multipliers only
    return free


def _encode(chain: Sequence[Mapping[str, Any]], free: list[tuple[int, str]]) -> dict:
    z = {}
    for i, k in free:
        if k == "gamma":
            z[f"{i}.{k}"] = jnp.float32(1.0)
        elif _FREE_FIELDS[k] == "log":
            z[f"{i}.{k}"] = jnp.float32(math.log(float(chain[i][k])))
        elif _FREE_FIELDS[k] == "signed":
            z[f"{i}.{k}"] = jnp.float32(math.copysign(1.0, float(chain[i][k])))
        else:
            v = float(chain[i][k])
            z[f"{i}.{k}"] = jnp.float32(math.log(v / (1.0 - v)))
    return z


def _decode(chain: Sequence[Mapping[str, Any]], free: list[tuple[int, str]], z: Mapping) -> list:
    """The chain with the numbers ``z`` (may be traced); a schedule's knots raised to ``γ``."""
    out = [dict(e) for e in chain]
    for i, k in free:
        x = z[f"{i}.{k}"]
        if k == "gamma":
            s = dict(out[i]["schedule"])
            s["values"] = [jnp.float32(v) ** x for v in chain[i]["schedule"]["values"]]
            out[i]["schedule"] = s
        elif _FREE_FIELDS[k] == "log":
            out[i][k] = jnp.exp(x)
        elif _FREE_FIELDS[k] == "signed":
            out[i][k] = abs(float(chain[i][k])) * x
        else:
            out[i][k] = jax.nn.sigmoid(x)
    return out


def _replay(tx: optax.GradientTransformationExtraArgs, seq: Mapping[str, jax.Array]) -> jax.Array:
    """``tx``'s updates, open loop, on one recorded sequence ``{"g", "p", "f"}`` ([T, m])."""

    def body(s, x):
        u, s = tx.update(x["g"], s, x["p"], value=x["f"])
        return s, u

    return jax.lax.scan(body, tx.init(seq["p"][0]), seq)[1]


def _imitation_error(chain_tx, teacher_u: jax.Array, seqs: Mapping[str, jax.Array]) -> jax.Array:
    """Per problem: ``Σ(u_chain − u_learned)² / Σ u_learned²`` over steps and coordinates."""
    u = jax.vmap(lambda s: _replay(chain_tx, s))(seqs)
    num = jnp.sum((u - teacher_u) ** 2, axis=(1, 2))
    return num / jnp.maximum(jnp.sum(teacher_u**2, axis=(1, 2)), 1e-30)


def identify_chain(
    chain: Sequence[Mapping[str, Any]],
    learned: optax.GradientTransformation,
    family: Any,
    *,
    num_steps: int | None = None,
    rounds: int = IDENTIFY_ROUNDS,
    num_problems: int = IDENTIFY_PROBLEMS,
    fit_steps: int = IDENTIFY_STEPS,
    coords: int | None = IDENTIFY_COORDS,
    key: jax.Array | None = None,
    say: Any = None,
) -> tuple[list[dict[str, Any]] | None, dict[str, Any]]:
    """Fits the chain's numbers to the learned optimizer's *updates* (system identification).

    The structure stays the one the probes detected; its numbers are refitted: clip and damping
    scales (positive), decays (inside (0, 1)), the learning rate (non-zero; its sign may flip),
    and an exponent ``γ`` on the detected schedule's multipliers when they are all positive
    (``m(t)^γ``: ``γ = 1`` is the probed schedule, ``γ = 0`` none). No loss enters: the target
    is what the learned optimizer outputs for the gradients the chain sees. The learned
    optimizer must act coordinate by coordinate (a :class:`~lopt.cell.Cell`), so that replaying
    it on a recorded subset of coordinates reproduces what it did.

    1. Record the gradients the learned optimizer meets on ``num_problems`` training problems
       (``coords`` coordinates per problem; both optimizers act coordinate-wise, so replaying a
       subset is exact), and its updates.
    2. Fit the numbers (Levenberg-Marquardt in log / logit coordinates, the learning rate
       linearly in units of its detected magnitude) to minimise the imitation error: per problem
       ``Σ_t,i (u_chain − u_learned)² / Σ_t,i u_learned²`` with the chain replayed open loop on
       the recorded gradients, averaged over problems.
    3. Run the fitted chain on fresh problems, record the gradients *it* meets and the learned
       optimizer's updates for them, add them to the data and refit (DAgger: the chain is then
       fitted where it actually goes, not only along the learned optimizer's path). Repeat.

    The returned chain is the candidate (the detected numbers or a round's fit) with the lowest
    imitation error on its own trajectories on ``IDENTIFY_VALIDATION`` other problems.

    Args:
        chain: the detected chain (:func:`chain_from_analysis`).
        learned: the learned optimizer.
        family: the task family.
        num_steps: updates per problem (default: the family's).
        rounds: fits (the first on the learned optimizer's trajectories).
        num_problems: problems per round.
        fit_steps: Levenberg-Marquardt iterations per fit.
        coords: coordinates kept per problem (evenly spaced in the flattened parameters);
            ``None`` keeps all. Replaying a subset is exact only for a coordinate-wise learned
            optimizer (one with a :class:`~lopt.cell.Cell`).
        key: base key (default ``fold_in(key(0), IDENTIFY_KEY)``).
        say: optional progress callback.

    Returns:
        ``(chain, notes)``: the identified chain (same structure, plain floats; the detected
        chain itself if no fit does better) and a record (schedule exponent, per-candidate
        errors, the selected candidate, settings); ``(None, {"note": why})`` when there is
        nothing to identify (no number in the chain to fit, or a learned optimizer that makes no
        finite, non-zero update).
    """
    from jax.flatten_util import ravel_pytree

    from lopt.unroll import init_inner, unroll

    num_steps = family.num_steps if num_steps is None else num_steps
    key = jax.random.fold_in(jax.random.key(0), IDENTIFY_KEY) if key is None else key
    free = _free_numbers(chain)
    if not free:
        return None, {"note": "the chain has no number to fit: nothing to identify"}
    learned = optax.with_extra_args_support(learned)
    n = family.num_params()
    keep = n if coords is None else min(n, coords)
    idx = np.unique(np.linspace(0, n - 1, keep).round().astype(np.int32))

    def record(tx, keys):
        tx = optax.with_extra_args_support(tx)

        def pick(r):
            return {
                "g": ravel_pytree(r.grads)[0][idx],
                "p": ravel_pytree(r.params)[0][idx],
                "f": r.loss,
            }

        def one(k):
            return unroll(tx, family, init_inner(tx, family, k), num_steps, record=pick)[1]

        seqs = jax.vmap(one)(keys)
        teacher = jax.vmap(lambda s: _replay(learned, s))(seqs)
        finite = jnp.all(jnp.isfinite(seqs["g"]), (1, 2)) & jnp.all(jnp.isfinite(teacher), (1, 2))
        finite &= jnp.all(jnp.isfinite(seqs["p"]), (1, 2)) & jnp.isfinite(seqs["f"]).all(1)
        # a problem on which the learned optimizer makes no update has nothing to imitate
        return seqs, teacher, finite & (jnp.sum(teacher**2, (1, 2)) > 0)

    @jax.jit
    def record_chain(z, keys):
        return record(build_chain(_decode(chain, free, unravel(z))), keys)

    z_flat, unravel = ravel_pytree(_encode(chain, free))

    @jax.jit
    def fit(x, seqs, teacher):
        # Levenberg-Marquardt on the residuals (u_chain − u_learned)·√(w_p), w_p = 1/(P·Σu²): a
        # handful of numbers and many residuals, often ill-conditioned (β and α trade off), where
        # first-order steps crawl. Normal equations are accumulated problem by problem.
        w = 1.0 / (jnp.sum(teacher**2, (1, 2)) * teacher.shape[0])

        def resid(x, seq, target, wp):
            u = _replay(build_chain(_decode(chain, free, unravel(x))), seq)
            return ((u - target) * jnp.sqrt(wp)).reshape(-1)

        def normal(x):
            def one(a):
                r = resid(x, *a)
                jac = jax.jacfwd(resid)(x, *a)
                return jac.T @ jac, jac.T @ r, r @ r

            jj, jr, rr = jax.lax.map(one, (seqs, teacher, w), batch_size=16)
            return jj.sum(0), jr.sum(0), rr.sum()

        def value(x):
            return jax.lax.map(lambda a: jnp.sum(resid(x, *a) ** 2), (seqs, teacher, w)).sum()

        def step(carry, _):
            x, lam = carry
            jj, jr, f = normal(x)
            d = jnp.diag(jj)
            damp = lam * jnp.diag(d + 1e-6 * jnp.mean(d) + 1e-30)
            # at most one unit per number and iteration (a factor e, or a logit unit): a
            # trust region that keeps a decay from jumping into its logistic's flat tail
            cand = x - jnp.clip(jnp.linalg.solve(jj + damp, jr), -1.0, 1.0)
            f_new = value(cand)
            ok = jnp.isfinite(f_new) & (f_new < f)
            return (jnp.where(ok, cand, x), jnp.where(ok, lam / 3.0, lam * 3.0)), f

        (x, _), _ = jax.lax.scan(step, (x, jnp.float32(1.0)), length=fit_steps)
        return x, value(x)

    def keys(i, count=num_problems):
        return jax.random.split(jax.random.fold_in(key, i), count)

    val_keys = keys(10_000, IDENTIFY_VALIDATION)

    @jax.jit
    def chain_error(z, teacher, seqs):
        return _imitation_error(build_chain(_decode(chain, free, unravel(z))), teacher, seqs)

    def score(finite, err):
        # mean imitation error on the validation problems; inf if the chain diverged on any
        finite, err = np.asarray(finite), np.asarray(err)
        return float(np.mean(err)) if finite.all() and np.isfinite(err).all() else math.inf

    def validate(z):
        seqs, teacher, finite = record_chain(z, val_keys)
        return score(finite, chain_error(z, teacher, seqs))

    def usable(recorded):
        # problems whose gradients and learned updates are finite and not all zero; the others
        # (a chain diverging in a DAgger round, an optimizer that never moves) are dropped, so
        # no inf or NaN reaches the fit (a zero weight would not mask it in the Jacobian)
        seqs, teacher, ok = recorded
        ok = np.asarray(ok)
        return jax.tree.map(lambda x: x[ok], seqs), teacher[ok]

    data = [usable(jax.jit(lambda k: record(learned, k))(keys(0)))]
    if data[0][1].shape[0] == 0:
        return None, {
            "note": "the learned optimizer makes no finite, non-zero update on the recorded "
            "problems: nothing to identify"
        }
    detected = build_chain(chain)
    seqs0, teacher0, finite0 = jax.jit(lambda k: record(detected, k))(val_keys)
    err0 = jax.jit(lambda t, s: _imitation_error(detected, t, s))(teacher0, seqs0)
    z = z_flat
    candidates = [(None, math.nan, score(finite0, err0))]
    for r in range(rounds):
        seqs = jax.tree.map(lambda *x: jnp.concatenate(x), *[d[0] for d in data])
        teacher = jnp.concatenate([d[1] for d in data])
        z, train_err = fit(z, seqs, teacher)  # finite: the fit only accepts finite steps
        candidates.append((z, float(train_err), validate(z)))
        if say:
            say(
                f"identification round {r + 1}/{rounds}: imitation error {float(train_err):.4f} "
                f"(fit), {candidates[-1][2]:.4f} (own trajectories, validation)"
            )
        if r + 1 < rounds:
            new = usable(record_chain(z, keys(r + 1)))
            if new[1].shape[0]:
                data.append(new)
    best = int(np.argmin([c[2] for c in candidates]))
    if best == 0:
        fitted, gamma = [dict(e) for e in chain], {}
    else:
        fitted, gamma = _relabel(chain, free, unravel(candidates[best][0]), "numbers identified")
    notes = {
        "method": "numbers fitted to the learned optimizer's updates on the gradients the chain "
        "meets (DAgger rounds); no loss is used",
        "schedule_exponent": gamma,
        "candidates": [
            {"round": i, "fit_error": c[1], "validation_error": c[2]}
            for i, c in enumerate(candidates)
        ],
        "selected_round": best,
        "rounds": rounds,
        "num_problems": num_problems,
        "validation_problems": IDENTIFY_VALIDATION,
        "coords": int(idx.size),
        "fit_steps": fit_steps,
        "key": f"fold_in(key(0), {IDENTIFY_KEY})",
    }
    return fitted, notes


def _plain_entry(e: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in e.items():
        if k == "schedule" and isinstance(v, Mapping):
            v = {**v, "values": [float(x) for x in v["values"]]}
        elif isinstance(v, jax.Array | np.ndarray | np.floating):
            v = float(v)
        out[k] = v
    return out


# ----------------------------------------------------------------------------- re-tuning


_POWER = ", multipliers raised to the power "


def _relabel(
    chain: Sequence[Mapping[str, Any]], free: list[tuple[int, str]], z: Mapping, tag: str
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """``chain`` with the numbers ``z`` (plain floats), relabelled, and its schedule exponents.

    The mechanisms of the entries that have free numbers are relabelled ``(<tag>)``; a
    schedule exponent is named in the label (relative to the probed schedule, so composed with
    one the label already names), since a negative one turns the shape upside down.
    """
    out = [_plain_entry(e) for e in _decode(chain, free, z)]
    gamma = {f"{i}": float(z[f"{i}.gamma"]) for i, k in free if k == "gamma"}
    for i in sorted({i for i, _ in free}):
        m = out[i].get("mechanism")
        if m:
            base, power = m.split(" (")[0], 1.0
            found = re.search(f"{_POWER}(\\S+)$", base)
            if found:  # a chain refitted again: its multipliers carry an earlier exponent
                base, power = base[: found.start()], float(found.group(1))
            if f"{i}" in gamma:
                base += f"{_POWER}{power * gamma[f'{i}']:.2g}"
            out[i]["mechanism"] = f"{base} ({tag})"
    return out, gamma


def retune_cost(
    family: Any,
    num_steps: int | None = None,
    steps: int = RETUNE_STEPS,
    num_problems: int = RETUNE_PROBLEMS,
) -> float:
    """The cost of :func:`retune_chain` in coordinate-steps.

    ``steps × num_problems × horizon × parameters`` (the validation runs, forward only, are
    left out). Deterministic, and proportional to the work for a quadratic or Rosenbrock problem
    (``linear_regression`` at the defaults, 1.5·10⁸, takes about 25 s here). A net with data
    costs more per coordinate-step (a forward and backward pass over its batch), so for nets
    the count is low; :func:`distill` compares it with ``RETUNE_BUDGET``.
    """
    horizon = family.num_steps if num_steps is None else num_steps
    return float(steps) * num_problems * horizon * family.num_params()


def retune_chain(
    chain: Sequence[Mapping[str, Any]],
    family: Any,
    key: jax.Array,
    *,
    num_steps: int | None = None,
    steps: int = RETUNE_STEPS,
    num_problems: int = RETUNE_PROBLEMS,
    learning_rate: float = RETUNE_LR,
    every: int = RETUNE_EVERY,
    validation: int = RETUNE_VALIDATION,
    chunk: int = RETUNE_CHUNK,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[dict[str, Any]] | None, dict[str, Any]]:
    """Tunes every number of the chain on the loss, on training problems (never held-out ones).

    The structure stays; the numbers :func:`identify_chain` fits (clip and damping scales,
    decays, the learning rate, an exponent ``γ`` on the schedule's multipliers, relative to the
    starting chain's) are tuned, in the same log / logit / linear coordinates, to minimise the
    paper's meta-objective, the mean normalised loss ``mean_t f_t/f_0``, by Adam (cosine-decayed
    learning rate) on its exact gradient through the whole inner run (full BPTT). Every step
    trains the same ``num_problems`` problems, ``split(fold_in(key, 0))``, ``chunk`` at a time
    (memory): with a fixed sample, as :func:`lopt.tune` uses, the objective is deterministic
    and Adam settles instead of wandering with the sample (a handful of numbers does not
    overfit a few hundred problems; the validation below checks). Gradients are taken problem
    by problem: a problem whose loss or gradient is not finite is left out of that step
    (counted in ``notes["masked"]``); the others' mean is clipped to norm 1, formed so that
    gradients near the float32 limit (a problem that blows up without overflowing) cannot
    overflow it; a step with no usable problem, or whose update is not finite, leaves the
    numbers and Adam's state unchanged.

    Every ``every`` steps, and at the start, the chain is scored on ``validation`` other
    training problems, ``split(fold_in(key, 1_000_000))``, by the mean normalised loss
    (infinite if any problem's loss is not finite, :func:`lopt.tune` 's rule); the best scoring
    numbers are kept, so the result is never worse there than the starting chain.

    Args:
        chain: the chain to start from (the identified one, or the detected one).
        family: the task family.
        key: the training key (never the held-out key).
        num_steps: updates per problem (default: the family's).
        steps: Adam steps (rounded up to a multiple of ``every``).
        num_problems: training problems (the same at every step).
        learning_rate: Adam's initial learning rate (in the coordinates above).
        every: validation interval in steps.
        validation: validation problems.
        chunk: problems differentiated at once.
        progress: called as ``progress(done, total)`` from inside the compiled loop after each
            validation round (a host callback; the arithmetic is the same without it).

    Returns:
        ``(chain, notes)``: the tuned chain (same structure, plain floats; the starting chain if
        no step scores better) and a record (validation curve, selected step, masked problems,
        schedule exponents, settings); ``(None, {"note": why})`` when the chain has no number
        to tune or every candidate, the start included, diverges on a validation problem.
    """
    from jax.flatten_util import ravel_pytree

    from lopt.unroll import init_inner, normalized_loss, unroll

    num_steps = family.num_steps if num_steps is None else num_steps
    free = _free_numbers(chain)
    if not free:
        return None, {"note": "the chain has no number to tune"}
    if min(steps, every, num_problems, validation, chunk) < 1:
        raise DistillError(
            "re-tuning: steps, every, num_problems, validation and chunk must be >= 1"
        )
    z0, unravel = ravel_pytree(_encode(chain, free))

    def metric(z, k):
        tx = optax.with_extra_args_support(build_chain(_decode(chain, free, unravel(z))))
        return normalized_loss(unroll(tx, family, init_inner(tx, family, k), num_steps)[1])

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
    val_keys = jax.random.split(jax.random.fold_in(key, 1_000_000), validation)

    def score(z):
        m = jax.lax.map(lambda k: metric(z, k), val_keys, batch_size=chunk)
        return jnp.where(jnp.all(jnp.isfinite(m)), jnp.mean(m), jnp.inf)

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
    tuned, gamma = _relabel(chain, free, unravel(zs[best - 1]), "numbers tuned on the loss")
    return tuned, {**notes, "schedule_exponent": gamma}


# ----------------------------------------------------------------------------- evaluation


def _mean_sem(x: np.ndarray) -> tuple[float, float]:
    x = np.asarray(x, np.float64)
    sem = float(np.std(x, ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("inf")
    return float(np.mean(x)), sem


def recovered_fraction(
    learned: np.ndarray,
    baseline: np.ndarray,
    distilled: np.ndarray,
    *,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any] | None:
    """``(mean B − mean D)/(mean B − mean L)`` with a 95% paired bootstrap interval.

    Problems are resampled with replacement (the same indices for all three optimizers, so the
    pairing is kept), ``samples`` times with ``numpy.random.default_rng(seed)``; the interval is
    the 2.5% and 97.5% percentiles of the resampled ratios. ``None`` if a metric is not finite.

    Args:
        learned: per-problem metrics ``[B]`` of the learned optimizer.
        baseline: the best baseline's, on the same problems.
        distilled: the distilled chain's, on the same problems.
        samples: bootstrap resamples.
        seed: the resampling seed.

    Returns:
        ``{"mean", "ci": [lo, hi], "method", "samples", "seed"}`` or ``None``.
    """
    L, B, D = (np.asarray(x, np.float64) for x in (learned, baseline, distilled))
    if not all(np.all(np.isfinite(x)) for x in (L, B, D)) or np.mean(B - L) == 0:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, L.size, size=(samples, L.size))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.mean(B[idx] - D[idx], 1) / np.mean(B[idx] - L[idx], 1)
    ratios = ratios[np.isfinite(ratios)]
    lo, hi = np.percentile(ratios, [2.5, 97.5]) if ratios.size else (np.nan, np.nan)
    return {
        "mean": float(np.mean(B - D) / np.mean(B - L)),
        "ci": [float(lo), float(hi)],
        "method": "paired bootstrap over problems, 95% percentile interval",
        "samples": int(samples),
        "seed": int(seed),
    }


def fraction_report(
    learned: np.ndarray,
    baseline: np.ndarray,
    distilled: np.ndarray,
    distilled_retuned: np.ndarray | None = None,
    distilled_identified: np.ndarray | None = None,
) -> dict[str, Any]:
    """Gain of the learned optimizer over the baseline, its significance, recovered fractions.

    The gain is the paired difference ``baseline − learned`` (mean and s.e.m. over problems); it
    is significant when it exceeds 2 s.e.m. (the rule of ``lopt.evaluation.paired``). Fractions are
    reported only then; otherwise they are ``None`` and ``reason`` says why.
    """
    L, B = np.asarray(learned, np.float64), np.asarray(baseline, np.float64)
    d = B - L
    if not np.all(np.isfinite(d)):
        return {
            "gain": None,
            "significant": False,
            "fraction": None,
            "fraction_retuned": None,
            "fraction_identified": None,
            "reason": "non-finite metrics (a diverged run): the gain is undefined",
        }
    mean, sem = _mean_sem(d)
    out: dict[str, Any] = {"gain": {"mean": mean, "sem": sem}, "significant": bool(mean > 2 * sem)}
    if not out["significant"]:
        out.update(
            fraction=None,
            fraction_retuned=None,
            fraction_identified=None,
            reason=f"the learned optimizer's gain over the best baseline ({mean:.3g} ± "
            f"{sem:.2g}) is not above 2 s.e.m. of the paired difference",
        )
        return out
    out["fraction"] = recovered_fraction(L, B, distilled)
    out["fraction_retuned"] = (
        None if distilled_retuned is None else recovered_fraction(L, B, distilled_retuned)
    )
    out["fraction_identified"] = (
        None if distilled_identified is None else recovered_fraction(L, B, distilled_identified)
    )
    out["reason"] = None if out["fraction"] is not None else "the distilled chain diverged"
    return out


@dataclasses.dataclass
class Distillation:
    """A distilled optimizer and how it fares (see :func:`distill`).

    Attributes:
        chain: the chain (JSON-able list of dicts); :func:`build_chain` rebuilds ``tx``.
        tx: the optax transformation.
        chain_retuned: the chain with every number tuned on the loss of training problems
            (:func:`retune_chain`; same structure) or ``None``.
        tx_retuned: its transformation or ``None``.
        chain_identified: the chain with its numbers identified from the learned optimizer's
            updates (:func:`identify_chain`; same structure) or ``None``.
        tx_identified: its transformation or ``None``.
        results: ``learned``, ``best_baseline``, ``distilled``, ``distilled_retuned``,
            ``distilled_identified``.
        gain, significant, fraction, fraction_retuned, fraction_identified, reason: see
            :func:`fraction_report`.
        curves: per-step mean and s.e.m. of ``f_t/f_0`` for the distilled chains.
        notes: how the numbers were derived, the identification and re-tuning records,
            evaluation settings.
    """

    chain: list[dict[str, Any]]
    tx: optax.GradientTransformation
    chain_retuned: list[dict[str, Any]] | None = None
    tx_retuned: optax.GradientTransformation | None = None
    chain_identified: list[dict[str, Any]] | None = None
    tx_identified: optax.GradientTransformation | None = None
    results: dict[str, Any] = dataclasses.field(default_factory=dict)
    gain: dict[str, float] | None = None
    significant: bool = False
    fraction: dict[str, Any] | None = None
    fraction_retuned: dict[str, Any] | None = None
    fraction_identified: dict[str, Any] | None = None
    reason: str | None = None
    curves: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The ``distill.json`` dict (schema :data:`SCHEMA`; strict JSON, no NaN)."""
        from lopt.evaluation import _finite_json

        out = {
            "schema": SCHEMA,
            "chain": self.chain,
            "optax_code": chain_code(self.chain),
            "chain_retuned": self.chain_retuned,
            "optax_code_retuned": None
            if self.chain_retuned is None
            else chain_code(self.chain_retuned),
            "chain_identified": self.chain_identified,
            "optax_code_identified": None
            if self.chain_identified is None
            else chain_code(self.chain_identified),
            "results": self.results,
            "gain": self.gain,
            "significant": self.significant,
            "fraction": self.fraction,
            "fraction_retuned": self.fraction_retuned,
            "fraction_identified": self.fraction_identified,
            "reason": self.reason,
            "curves": self.curves,
            "notes": self.notes,
        }
        return _finite_json(_plain(out))


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, np.bool_ | bool):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    return x


def _summary(losses: np.ndarray) -> tuple[dict[str, Any], dict[str, Any], np.ndarray]:
    from lopt.unroll import per_problem_metric, summarize

    s = summarize(losses)
    metric = {"metric": s.metric, "sem": s.sem, "final": s.final, "diverged": s.diverged}
    curve = {"mean": list(map(float, s.curve_mean)), "sem": list(map(float, s.curve_sem))}
    return metric, curve, per_problem_metric(losses)


def distill(
    run_dir: str | Path,
    *,
    retune: bool = True,
    identify: bool = True,
    progress: bool = True,
    retune_steps: int | None = None,
    retune_problems: int | None = None,
    analyze: Callable[[Path], Mapping[str, Any]] | None = None,
) -> Distillation:
    """Distils a run's learned optimizer into an optax chain and evaluates it.

    Reads ``RUN/analysis.json`` (written by ``probes analyze RUN``, or by ``analyze`` when
    missing, older than ``theta.npz`` or older than the damping probe) and
    ``RUN/eval.json`` (computed with :func:`lopt.evaluation.evaluate_run` if missing), builds the
    chain (:func:`chain_from_analysis`), optionally identifies its numbers from the learned
    optimizer's updates (:func:`identify_chain`; no loss involved), optionally tunes every
    number on the loss of training problems, starting from the identified numbers when there
    are some and from the detected ones otherwise (:func:`retune_chain`; problems drawn from the
    tuning key of the momentum baseline in :func:`lopt.evaluation.tune_baselines`), and evaluates
    the learned
    optimizer, the best tuned baseline of ``eval.json`` (with its recorded hyperparameters) and
    the chains on the same held-out problems as ``eval.json`` (:func:`lopt.heldout_key`, its
    number of problems, its horizon).

    Args:
        run_dir: the run directory.
        retune: also report the re-tuned variant. With the default settings it is skipped
            (and ``notes["retune"]`` says why) when :func:`retune_cost` exceeds
            ``RETUNE_BUDGET``, as for the classifier families' nets.
        identify: also report the identified variant.
        progress: print progress lines to stderr.
        retune_steps: re-tuning steps (default ``RETUNE_STEPS``); setting it or
            ``retune_problems`` runs the re-tuning whatever its cost.
        retune_problems: re-tuning's training problems (default ``RETUNE_PROBLEMS``).
        analyze: ``run_dir -> analysis dict`` that writes ``RUN/analysis.json`` when it is
            missing or outdated, e.g. ``probes.runs.analyze_run`` (``lopt distill`` passes it;
            ``lopt`` itself never imports ``probes``). ``None``: such a run is a
            :class:`DistillError` naming the command to run first.

    Returns:
        A :class:`Distillation`.

    Raises:
        DistillError: if the run cannot be distilled (no learned optimizer, no baseline, no
            current analysis and no ``analyze``).
        OSError: if the run directory or its files are missing.
    """
    from lopt.baselines import baseline
    from lopt.checkpoint import load
    from lopt.evaluation import evaluate_run, family_from_config
    from lopt.tune import heldout_key
    from lopt.unroll import evaluate

    def say(msg: str) -> None:
        if progress:
            print(f"distill: {msg}", file=sys.stderr, flush=True)

    run = Path(run_dir)
    cfg = rundir.read_json(run / "config.json")
    family = family_from_config(cfg)
    analysis, why, path = None, f"no {run / 'analysis.json'}", run / "analysis.json"
    if path.exists():
        if rundir.older_than(path, run / "theta.npz"):
            why = f"{path} is older than theta.npz"
        else:
            analysis = rundir.read_json(path)
            if int(analysis.get("schema_version") or 0) < ANALYSIS_SCHEMA:
                why = f"{path} predates the oscillation-damping probe"
                analysis = None
    if analysis is None:
        if analyze is None:
            raise DistillError(f"{why}: run 'probes analyze {run}' first")
        say(f"{why}: analysing the learned optimizer (probes analyze)")
        analysis = analyze(run)
    if (run / "eval.json").exists():
        ev = rundir.read_json(run / "eval.json")
    else:
        say("no eval.json: tuning and evaluating the baselines (lopt evaluate)")
        ev = evaluate_run(run, progress=progress)
    horizon = int(ev.get("horizon") or family.num_steps)
    block = (ev.get("horizons") or {}).get(str(horizon))
    if not block or not block.get("best_baseline"):
        raise DistillError(f"{run / 'eval.json'}: no best baseline at horizon {horizon}")
    best = block["best_baseline"]
    best_hp = block["optimizers"][best].get("hyperparams") or {}
    num_problems = int(ev.get("num_problems") or 128)

    chain, notes = chain_from_analysis(analysis)
    tx = build_chain(chain)
    opt, theta, _ = load(run / "theta.npz")
    chain_id = tx_id = None
    if identify:
        say("identifying the chain's numbers from the learned optimizer's updates")
        try:
            opt.cell(theta)
            coordinatewise = True
        except TypeError:
            coordinatewise = False  # e.g. the MLP optimizer's per-tensor features
        if not coordinatewise:
            notes["identify"] = {
                "note": "not identified: the learned optimizer has no Cell (it is not "
                "coordinate-wise), so replaying it on recorded gradients is not exact"
            }
        else:
            chain_id, notes["identify"] = identify_chain(
                chain,
                opt.optimizer(theta),
                family,
                num_steps=horizon,
                rounds=IDENTIFY_ROUNDS,
                num_problems=IDENTIFY_PROBLEMS,
                say=say,
            )
        if chain_id is not None:
            tx_id = build_chain(chain_id)
        else:
            say(f"identification skipped: {notes['identify']['note']}")
    chain_rt = tx_rt = None
    if retune:
        identified = chain_id is not None and notes["identify"].get("selected_round", 0) > 0
        start = "identified" if identified else "detected"
        steps = RETUNE_STEPS if retune_steps is None else retune_steps
        problems = RETUNE_PROBLEMS if retune_problems is None else retune_problems
        cost = retune_cost(family, horizon, steps, problems)
        if retune_steps is None and retune_problems is None and cost > RETUNE_BUDGET:
            notes["retune"] = {
                "note": f"not re-tuned by default: {steps} steps × {problems} problems of "
                f"this family cost {cost:.2g} coordinate-steps (budget {RETUNE_BUDGET:.2g}); "
                "choose fewer with lopt distill --retune-steps/--retune-problems",
                "cost": cost,
            }
        else:
            say(
                f"re-tuning every number of the chain on training problems (from the {start} "
                f"numbers; {steps} steps × {problems} problems)"
            )
            bar = tqdm(
                total=-(-steps // RETUNE_EVERY),  # validation rounds
                desc="re-tune",
                unit="round",
                file=sys.stderr,
                dynamic_ncols=True,
                disable=not progress,
            )
            # The momentum baseline's tuning key in lopt.evaluation.tune_baselines (its problems
            # are resampled per step here); never the held-out key.
            chain_rt, notes["retune"] = retune_chain(
                chain_id if chain_id is not None else chain,
                family,
                jax.random.fold_in(jax.random.key(0), 0),
                num_steps=horizon,
                steps=steps,
                num_problems=problems,
                learning_rate=RETUNE_LR,
                every=RETUNE_EVERY,
                validation=RETUNE_VALIDATION,
                chunk=RETUNE_CHUNK,
                progress=lambda done, total: bar.update(done - bar.n),
            )
            bar.close()
            notes["retune"].update(start=start, key="fold_in(key(0), 0)", cost=cost)
        if chain_rt is not None:
            tx_rt = build_chain(chain_rt)
        else:
            say(f"re-tuning skipped: {notes['retune']['note']}")
    key = heldout_key()
    optimizers = {"learned": opt.optimizer(theta), best: baseline(best, **best_hp), "distilled": tx}
    if tx_id is not None:
        optimizers["distilled_identified"] = tx_id
    if tx_rt is not None:
        optimizers["distilled_retuned"] = tx_rt
    metrics, curves, per = {}, {}, {}
    for name, t in optimizers.items():
        say(f"evaluating {name} on {num_problems} held-out problems, {horizon} steps")
        metrics[name], curves[name], per[name] = _summary(
            np.asarray(evaluate(t, family, key, num_problems, horizon))
        )
    recorded = block["optimizers"]["learned"].get("metric")
    if recorded is not None and not math.isclose(
        metrics["learned"]["metric"], recorded, rel_tol=1e-3
    ):
        say(
            f"warning: learned metric {metrics['learned']['metric']:.5g} differs from "
            f"eval.json's {recorded:.5g}"
        )
    rep = fraction_report(
        per["learned"],
        per[best],
        per["distilled"],
        per.get("distilled_retuned"),
        per.get("distilled_identified"),
    )
    results = {
        "learned": metrics["learned"],
        "best_baseline": {"name": best, **metrics[best], "hyperparameters": best_hp},
        "distilled": metrics["distilled"],
        "distilled_retuned": metrics.get("distilled_retuned"),
        "distilled_identified": metrics.get("distilled_identified"),
    }
    for name in ("distilled", "distilled_retuned", "distilled_identified"):
        if name in per:
            d = per[best] - per[name]
            results[name]["vs_best_baseline"] = (
                dict(zip(("mean", "sem"), _mean_sem(d), strict=True))
                if np.all(np.isfinite(d))
                else None
            )
            dl = per[name] - per["learned"]
            results[name]["vs_learned"] = (
                dict(zip(("mean", "sem"), _mean_sem(dl), strict=True))
                if np.all(np.isfinite(dl))
                else None
            )
    if tx_rt is not None:
        results["distilled_retuned"]["label"] = (
            f"every number tuned on the loss of training problems, not held-out ones, from the "
            f"{notes['retune']['start']} numbers"
        )
    if tx_id is not None:
        results["distilled_identified"]["label"] = (
            "numbers fitted to the learned optimizer's updates; no loss used"
        )
    notes["evaluation"] = {
        "key": "lopt.heldout_key()",
        "num_problems": num_problems,
        "horizon": horizon,
        "gain": "paired difference best_baseline − learned (mean normalised loss)",
    }
    return Distillation(
        chain=chain,
        tx=tx,
        chain_retuned=chain_rt,
        tx_retuned=tx_rt,
        chain_identified=chain_id,
        tx_identified=tx_id,
        results=results,
        gain=rep["gain"],
        significant=rep["significant"],
        fraction=rep["fraction"],
        fraction_retuned=rep["fraction_retuned"],
        fraction_identified=rep["fraction_identified"],
        reason=rep["reason"],
        curves={
            k: curves[k]
            for k in ("distilled", "distilled_retuned", "distilled_identified")
            if k in curves
        },
        notes=notes,
    )


def distill_run(run: str | Path, **kwargs: Any) -> dict[str, Any]:
    """:func:`distill` (same keyword arguments) and write ``RUN/distill.json`` atomically.

    The file also names the run's task and its data source (``config.json``).
    """
    result = distill(run, **kwargs).to_json()
    task = rundir.read_json(Path(run) / "config.json").get("task") or {}
    result["task"] = {"name": task.get("name"), "data_source": task.get("data_source")}
    rundir.write_json(Path(run) / "distill.json", result)
    return result


def format_report(result: Mapping[str, Any]) -> str:
    """Plain-text summary of a ``distill.json`` dict: chain, table, fraction."""
    lines = ["distilled chain:"]
    for e in result["chain"]:
        params = ", ".join(
            f"{k}={_g(v)}" if isinstance(v, int | float) else f"{k}=<{len(v['steps'])} knots>"
            for k, v in e.items()
            if k not in ("transform", *_META_KEYS) and v is not None
        )
        lines.append(f"  {e['transform']}({params})  # {e.get('mechanism', '')}")
    lines.append(
        f"  = {result['optax_code'][:200]}{'…' if len(result['optax_code']) > 200 else ''}"
    )
    r = result["results"]
    lines.append(f"{'optimizer':<30} {'metric':>8} {'± s.e.m.':>9}  vs best baseline")
    rows = [
        ("learned", r["learned"]),
        (f"best baseline ({r['best_baseline']['name']})", r["best_baseline"]),
        ("distilled", r["distilled"]),
    ]
    if r.get("distilled_identified"):
        rows.append(("distilled, identified", r["distilled_identified"]))
    if r.get("distilled_retuned"):
        rows.append(("distilled, re-tuned", r["distilled_retuned"]))
    for name, s in rows:
        m = "inf" if s["metric"] is None else f"{s['metric']:.4f}"
        e = "-" if s["sem"] is None else f"{s['sem']:.4f}"
        v = s.get("vs_best_baseline")
        vs = "" if v is None else f"{v['mean']:+.4f} ± {v['sem']:.4f}"
        lines.append(f"{name:<30} {m:>8} {e:>9}  {vs}")
    for key, label in (
        ("identified", "identified (numbers fitted to the learned optimizer's updates, no loss)"),
        ("retuned", f"re-tuned ({(r.get('distilled_retuned') or {}).get('label', '')})"),
    ):
        code = result.get(f"optax_code_{key}")
        if code:
            lines.append(f"  {label}:")
            lines.append(f"    {code[:200]}{'…' if len(code) > 200 else ''}")
    g = result["gain"]
    if g is not None:
        lines.append(
            f"learned gain over the best baseline: {g['mean']:.4f} ± {g['sem']:.4f} "
            f"({'significant' if result['significant'] else 'not significant'})"
        )
    for label, key in (
        ("distilled", "fraction"),
        ("identified", "fraction_identified"),
        ("re-tuned", "fraction_retuned"),
    ):
        f = result.get(key)
        if f is not None:
            lines.append(
                f"fraction of the gain recovered ({label}): {f['mean']:.1%} "
                f"(95% CI {f['ci'][0]:.1%} … {f['ci'][1]:.1%})"
            )
    if result.get("reason"):
        lines.append(f"fraction: n/a ({result['reason']})")
    return "\n".join(lines)
