"""``analyze_cell`` and ``analyze``: the mechanism questions, answered for a cell.

For a :class:`lopt.Cell` (white box, docs/method.md, Analyses):

* **momentum**: linearise at the convergence point (the fixed point at ``g* = 0`` reached by
  most seeds taken along the autonomous trajectory from ``h0``), compute its impulse response
  ``r_k = ∇readout·J_hᵏ J_g`` (:func:`probes.linearize.impulse_response`), fit it with at most
  two exponentials plus ``λ = 0`` (:func:`probes.detectors.fit_modes`, as for optax) and take
  the dominant fitted mode (:func:`probes.detectors.detect_momentum`); the raw eigenmodes are
  kept as evidence (a trained GRU spreads momentum over many of them, with cancelling ``α_i``).
  Without a fixed point (a step counter in the state: scheduled SGD, Adam) the end of the
  autonomous trajectory is used instead.
* **clipping**: ``U(h0, g)`` and ``∂U/∂g`` on a symmetric log grid; the threshold is refined by
  two rounds of a 64-point linear sub-grid between the bracketing grid points.
* **schedule**: ``α_eff(h_t)`` along ``h_{t+1} = F(h_t, 0)``.
* **adaptation**: ``α_eff`` along the fixed-point branch ``h*(g*)``, one arm per sign of ``g*``
  (docs/method.md, Adaptation). Each arm is traced with :func:`probes.continuation` from the
  convergence point ``h*(0)``, stepping outward in ``|g*|`` over a log grid that covers the
  gradients seen in training (percentiles 1% to 99.9% of ``|g|`` when ``gradient_samples`` are
  given, otherwise ``scale × magnitude_range``). Folds (where the branch jumps to another stable
  branch) split each arm into segments with their own log-log slopes; ``detected`` is decided on the
  whole arm over the training range (:func:`probes.detectors.detect_adaptation`). Without a
  convergence point (a step counter in the state: scheduled SGD, Adam) ``α_eff`` is taken at the
  state reached after ``steady_steps`` iterations of ``F(·, g*)`` from ``h0`` instead.

Beyond the paper, for both (**oscillation damping**, :func:`damping_gains`,
:class:`probes.detectors.Damping`): the steady gain for a gradient alternating ``±a`` against
the steady gain for a constant ``a``, each from a fresh state, over amplitudes from two decades
below to one above the adaptation range; ``κ`` where their relative ratio halves, and the memory
of the damping's build-up (:func:`nyquist_response`, :func:`probes.detectors.fit_damping_memory`).

Any coordinate-wise optax transformation is analysed by its behaviour alone with
:func:`analyze_optax` (:mod:`probes.black_box`, re-exported here); the result of both is an
:class:`Analysis` (:mod:`probes.analysis_result`).

Shapes: ``T`` steps, ``G`` gradient values, ``M`` magnitudes, ``H`` hidden units.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from lopt.cell import Cell
from probes import detectors
from probes.agreement import probe_agreement
from probes.analysis_result import SCHEMA_VERSION, Analysis, is_current
from probes.bias import probe_bias, rest_gradient
from probes.black_box import (
    GRADIENT_PERCENTILES,
    HAIR,
    KINK,
    SCHEDULE_HORIZON,
    analyze_optax,
    damping_gains,
    first_response,
    gradient_range,
    log_grid,
    median_gradient,
    momentum_from_response,
    nyquist_response,
    probe_clipping,
    probe_damping,
    step_size_program,
    with_transient_damping,
)
from probes.canonical import canonical
from probes.detectors import Adaptation
from probes.fixed_points import FAILED, FIXED, KIND_NAMES, SLOW, continuation, fixed_points
from probes.linearize import impulse_response, linearize
from probes.trajectories import pca
from probes.update_function import effective_lr, update_function, update_slope

__all__ = [
    "GRADIENT_PERCENTILES",
    "SCHEMA_VERSION",
    "Analysis",
    "analyze",
    "analyze_cell",
    "analyze_optax",
    "convergence_point",
    "damping_gains",
    "gradient_range",
    "is_current",
    "nyquist_response",
]


def _principal_plane(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Projection of ``points (n, H)`` on their first two principal components, and the ratios."""
    x = np.asarray(points, np.float64)
    ok = np.all(np.isfinite(x), axis=1)
    if ok.sum() < 2:
        return np.zeros((x.shape[0], 2)), np.zeros(2)
    p = pca(x[ok], 2)  # the one PCA of the package (probes.trajectories)
    k = np.asarray(p.components).shape[0]
    comps = np.zeros((2, x.shape[1]))
    comps[:k] = np.asarray(p.components, np.float64)
    ratio = np.zeros(2)
    ratio[:k] = np.asarray(p.explained_ratio, np.float64)
    projected = np.full((x.shape[0], 2), np.nan)
    projected[ok] = (x[ok] - np.asarray(p.mean, np.float64)) @ comps.T
    return projected, ratio


@jax.jit
def _cell_run(cell, gs):
    """``gs (T,) -> updates (T,)``: a cell run from ``h0`` (the update read from the new state)."""

    def body(h, g):
        h = cell.step(h, g)
        return h, cell.readout(h)

    return jax.lax.scan(body, jnp.asarray(cell.init_state(), jnp.float32), gs)[1]


# ----------------------------------------------------------------------------- cells


@jax.jit
def _autonomous(cell, steps_like):
    def body(h, _):
        return cell.step(h, jnp.zeros([], jnp.float32)), h

    h0 = jnp.asarray(cell.init_state(), jnp.float32)
    return jax.lax.scan(body, h0, steps_like)[1]


@jax.jit
def _driven(cell, inputs, steps):
    """The state after ``steps`` steps of each constant input from ``h0``, ``(N, H)``."""

    def run(g):
        h0 = jnp.asarray(cell.init_state(), jnp.float32)
        return jax.lax.fori_loop(0, steps, lambda _, h: cell.step(h, g), h0)

    return jax.vmap(run)(inputs)


@jax.jit
def _driven_gain(cell, b, steps_like):
    """``-∂U(h_t, g)/∂g`` at ``g = b·(1 + KINK)`` after ``t`` steps of a constant ``b``, (T,)."""

    def body(h, _):
        gain = -jax.grad(lambda g: cell.readout(cell.step(h, g)))(b * (1.0 + KINK))
        return cell.step(h, b), gain

    h0 = jnp.asarray(cell.init_state(), jnp.float32)
    return jax.lax.scan(body, h0, steps_like)[1]


@jax.jit
def _step_then_rest(step, h, g):
    return step(step(h, g), jnp.zeros_like(g))


def lagged(cell: Cell) -> Cell:
    """``cell`` whose update for a gradient is the one a step later, after a zero gradient.

    ``U_1(h, g) = readout(step(step(h, g), 0))``: what the clipping probe reads where the
    update at a gradient's own step never moves (:func:`probes.black_box.first_response`).
    """
    c = canonical(cell)
    return c._replace(step=Partial(_step_then_rest, c.step))


def _persists(cell, h, steps):
    """``‖F^steps(h, 0) - h‖₂``: how far a candidate convergence point moves when iterated."""
    end = jax.lax.fori_loop(0, steps, lambda _, x: cell.step(x, jnp.zeros([], jnp.float32)), h)
    return jnp.linalg.norm(end - h)


_PAD = 384  # every grid evaluation is padded to this length: one compilation per cell kind


def _padded(fn: Callable, gs: np.ndarray) -> np.ndarray:
    gs = np.asarray(gs, np.float32).reshape(-1)
    out = []
    for i in range(0, gs.size, _PAD):
        chunk = gs[i : i + _PAD]
        out.append(np.asarray(fn(jnp.asarray(np.pad(chunk, (0, _PAD - chunk.size)))))[: chunk.size])
    return np.concatenate(out) if out else np.zeros(0)


def _best_point(fp, i: int) -> tuple[int, int]:
    """Slot of the point most seeds reached for input ``i`` (fixed first, then slow) and kind."""
    kind = np.asarray(fp.kind[i])
    count = np.asarray(fp.count[i])
    mask = np.asarray(fp.mask[i])
    for wanted in (FIXED, SLOW):
        ok = mask & (kind == wanted)
        if ok.any():
            return int(np.argmax(np.where(ok, count, -1))), wanted
    return -1, FAILED


#: Iterations of ``F(·, 0)`` a convergence point must survive (see :func:`convergence_point`).
PERSIST_STEPS = 10


class ConvergencePoint(NamedTuple):
    """The state an optimizer converges to without gradients (see :func:`convergence_point`).

    Attributes:
        point: ``h*``, ``(H,)``.
        kind: ``fixed`` or ``slow`` (:data:`probes.fixed_points.KIND_NAMES`), or
            ``trajectory end`` when the search found neither.
        found: whether the search found a fixed or slow point (else ``point`` is the end of the
            autonomous trajectory: a step counter in the state, as in Adam, has no fixed point).
        fixed_points: the search's :class:`probes.FixedPoints` (one input, ``g* = 0``).
    """

    point: jax.Array
    kind: str
    found: bool
    fixed_points: Any


def convergence_point(
    cell: Cell,
    trajectory: jax.Array | None = None,
    *,
    schedule_steps: int = SCHEDULE_HORIZON,
    num_seeds: int = 16,
    typical_step: float | None = None,
    key: jax.Array | None = None,
    fixed_point_options: dict[str, Any] | None = None,
) -> ConvergencePoint:
    """The convergence point ``h*``: the fixed point at ``g* = 0`` that most seeds reach.

    The seeds are ``num_seeds`` states evenly spaced along the autonomous trajectory
    ``h_{t+1} = F(h_t, 0)`` from ``h0``, with 1% noise (the last state kept exact); fixed points
    win over slow points, and without either, or when the point found moves by more than one
    typical step over ``PERSIST_STEPS`` further steps, the end of the trajectory is used. On a
    bistable optimizer this is the attractor most nearby states fall into, not necessarily the
    one the exact trajectory reaches. :func:`analyze_cell` linearises here and traces the
    adaptation branches from here, records it as ``meta["convergence_point"]``, and the report
    draws its white-box figures around the same point
    (:func:`probes.report.white_box_evidence`).

    Args:
        cell: the cell.
        trajectory: the autonomous trajectory ``(T, H)`` if already computed.
        schedule_steps: ``T`` when the trajectory is computed here.
        num_seeds: seeds for the fixed-point search.
        typical_step: step size of the state (fixed vs slow points).
        key: for the seed noise (default ``key(0)``).
        fixed_point_options: extra keyword arguments for :func:`probes.fixed_points`.

    Returns:
        A :class:`ConvergencePoint`.
    """
    cell = canonical(cell)
    key = jax.random.key(0) if key is None else key
    traj = _autonomous(cell, jnp.zeros(schedule_steps)) if trajectory is None else trajectory
    seeds = traj[np.linspace(0, traj.shape[0] - 1, num_seeds).astype(int)]
    noise = 0.01 * (1.0 + jnp.abs(seeds)) * jax.random.normal(key, seeds.shape)
    seeds = seeds + noise.at[-1].set(0.0)
    opts = dict(fixed_point_options or {})
    fp = fixed_points(cell, jnp.zeros(1), seeds[None], typical_step=typical_step, **opts)
    slot, kind = _best_point(fp, 0)
    # A fixed point must persist: iterated PERSIST_STEPS times it moves less than one typical
    # step (a slow point moves ~1% of one per step). The float-to-int cast of a step counter
    # makes states just below an integer map onto it, a false fixed point that moves on.
    step = float(fp.typical_step)
    if slot >= 0 and float(_persists(cell, fp.points[0, slot], PERSIST_STEPS)) <= step:
        return ConvergencePoint(fp.points[0, slot], KIND_NAMES[kind], True, fp)
    return ConvergencePoint(traj[-1], "trajectory end", False, fp)


def analyze_cell(
    cell: Cell,
    *,
    gradient_samples: Any = None,
    typical_step: float | None = None,
    gradient_scale: float | None = None,
    schedule_steps: int | None = None,
    horizon_source: str = "",
    impulse_steps: int = 200,
    warmup: int = 2000,
    num_seeds: int = 16,
    num_magnitudes: int = 48,
    magnitude_range: tuple[float, float] = (1e-2, 1e1),
    clip_range: tuple[float, float] = (1e-4, 1e4),
    clip_points: int = 161,
    steady_steps: int = 2000,
    damping_points: int = 25,
    damping_steps: int = 200,
    key: jax.Array | None = None,
    fixed_point_options: dict[str, Any] | None = None,
    continuation_options: dict[str, Any] | None = None,
) -> Analysis:
    """Runs the detectors on a cell (see the module docstring for the method).

    Args:
        cell: the cell.
        gradient_samples: gradients seen in training (any shape); their median magnitude sets
            the gradient scale, their percentiles the range of the adaptation grid, and their
            histogram is kept for the clipping figure.
        typical_step: step size of the state along trajectories (fixed vs slow points).
        gradient_scale: overrides the scale from ``gradient_samples`` (default 1).
        schedule_steps: ``T`` of the autonomous trajectory (default ``SCHEDULE_HORIZON``).
        horizon_source: where ``schedule_steps`` came from (recorded in the result).
        impulse_steps: lags of the linearised impulse response fitted for momentum.
        warmup: ``W`` of the exact impulse response used where the linearised one is not
            finite or zero (:func:`probes.black_box.momentum_from_response`).
        num_seeds: seeds for the fixed-point search at ``g* = 0``.
        num_magnitudes: ``M``, grid points per arm along the fixed-point branch (log-spaced).
        magnitude_range: without ``gradient_samples`` the grid spans ``scale × [lo, hi]``.
        clip_range: the clipping grid spans ``scale × [lo, hi]`` per side (log-spaced).
        clip_points: grid points per side.
        steady_steps: iterations of ``F(·, g*)`` from ``h0`` giving the steady state of a cell
            without a convergence point, or where continuation finds no fixed point
            (adaptation fallback; the black box's ``W``).
        damping_points: amplitudes of the oscillation-damping probe (:func:`damping_gains`),
            log-spaced from two decades below to one decade above the adaptation range.
        damping_steps: steps of each damping sequence.
        key: for the seed noise (default ``key(0)``).
        fixed_point_options: extra keyword arguments for :func:`probes.fixed_points`.
        continuation_options: extra keyword arguments for :func:`probes.continuation`.

    Returns:
        An :class:`Analysis`.
    """
    cell = canonical(cell)
    # the cell's update sequence for the behavioural probes (new per analysis: never cached)
    run = functools.partial(_cell_run, cell)
    key = jax.random.key(0) if key is None else key
    scale = gradient_scale if gradient_scale is not None else median_gradient(gradient_samples)
    h0 = jnp.asarray(cell.init_state(), jnp.float32)
    H = h0.shape[0]

    if schedule_steps is None:
        schedule_steps = SCHEDULE_HORIZON
        horizon_source = horizon_source or f"default {SCHEDULE_HORIZON} steps (no task family)"
    hair = HAIR * clip_range[0] * scale

    traj = _autonomous(cell, jnp.zeros(schedule_steps))

    # The convergence point: where the linearisation (momentum) and the adaptation branches
    # start, and where the report draws its white-box figures.
    conv = convergence_point(
        cell,
        traj,
        num_seeds=num_seeds,
        typical_step=typical_step,
        key=key,
        fixed_point_options=fixed_point_options,
    )
    h_star, point_kind, fp = conv.point, conv.kind, conv.fixed_points
    lin = linearize(cell, h_star)
    response = impulse_response(lin, impulse_steps)
    if np.all(np.isfinite(response)) and np.any(response != 0):
        momentum = detectors.detect_momentum(
            np.asarray(lin.eigenvalues),
            np.asarray(lin.alpha),
            point_kind=point_kind,
            response=response,
        )
    else:
        # Singular (Adam's √ν at ν = 0, a norm at 0) or silent (a sign) at h*: the cell's
        # exact response on a background, as for a black box.
        momentum = momentum_from_response(run, scale, warmup, impulse_steps, cached=False)[0]

    # Clipping: U(h_t, g) at the first step t with a non-zero update (t = 0 but for a
    # schedule that starts at 0).
    mags = log_grid(scale, *clip_range, clip_points)

    late = lagged(cell)

    def updates_at(gs, t, lag=0):
        c = late if lag else cell
        return np.asarray(update_function(c, traj[t], jnp.asarray(gs, jnp.float32)))

    probe = [-mags[-1], -scale, scale, mags[-1]]
    t0, lag = first_response(updates_at, probe, schedule_steps)
    h_t0, read = traj[t0], late if lag else cell

    def slope_fn(gs):
        return _padded(lambda x: update_slope(read, h_t0, x), gs)

    def update_fn(gs):
        return _padded(lambda x: update_function(read, h_t0, x), gs)

    clipping = probe_clipping(
        slope_fn, update_fn, mags, gradient_samples, detectors.SLOPE_FRACTION, t0, lag
    )

    # Adaptation: α_eff along the fixed-point branches traced from the convergence point.
    lo, hi, range_source = gradient_range(gradient_samples, scale, magnitude_range)
    m = np.logspace(np.log10(lo), np.log10(hi), num_magnitudes)
    step = float(fp.typical_step) if typical_step is None else float(typical_step)
    adaptation = _adaptation_along_branches(
        cell,
        h0,
        h_star if conv.found else None,
        m,
        step=step,
        scale=scale,
        steady_steps=steady_steps,
        gradient_samples=gradient_samples,
        gradient_range=(lo, hi),
        range_source=range_source,
        options=dict(continuation_options or {}),
    )
    # Schedule: the gain along the autonomous dynamics from h0 and along a constant gradient
    # (a sign-like update, whose gain is 0: its step sizes; a normaliser: its step along the
    # constant gradient, detect_schedule).
    constant_measure = None
    if clipping.sign_like:
        # uncached: this run function is new per analysis (cf. momentum_from_response)
        steps = step_size_program.__wrapped__(run, schedule_steps, lag)
        alpha_t, driven = (np.asarray(x) for x in steps(jnp.float32(scale)))
    else:
        alpha_t = np.asarray(effective_lr(cell, traj, hair=hair))
        if detectors.normalised_schedule_curve(adaptation, clipping.sign_like):
            driven = np.abs(np.asarray(jax.jit(run)(jnp.full(schedule_steps, scale, jnp.float32))))
            constant_measure = "step size"
        else:
            driven = np.asarray(_driven_gain(cell, jnp.float32(scale), jnp.zeros(schedule_steps)))
    schedule = detectors.detect_schedule(
        alpha_t,
        driven,
        horizon_source=horizon_source,
        measure="step size" if clipping.sign_like else "gain",
        constant_measure=constant_measure,
    )

    damping = probe_damping(run, lo, hi, range_source, damping_points, damping_steps)
    meta = {
        "hidden_size": int(H),
        "gradient_scale": scale,
        "typical_step": typical_step,
        "linearized_at": point_kind,
        "convergence_point": np.asarray(h_star),
        "alpha_eff_h0": float(effective_lr(cell, h0, secant=1e-3 * scale)),
        "fixed_points_at_zero": int(np.sum(np.asarray(fp.mask[0]) & (np.asarray(fp.kind[0]) == 0))),
    }
    bias = probe_bias(run, lo, hi, steady_steps, gradient_samples, cached=False)
    agreement = probe_agreement(run, lo, hi, rest_gradient(bias), cached=False)
    mechanisms = (momentum, clipping, schedule, adaptation)
    result = Analysis(*mechanisms, "cell", meta, damping, bias=bias, agreement=agreement)
    return with_transient_damping(result, run, (lo, hi), cached=False)


def _adaptation_along_branches(
    cell: Cell,
    h0: jax.Array,
    h_star: jax.Array | None,
    m: np.ndarray,
    *,
    step: float,
    scale: float,
    steady_steps: int,
    gradient_samples: Any,
    gradient_range: tuple[float, float],
    range_source: str,
    options: dict[str, Any],
) -> Adaptation:
    """Traces both arms from ``h_star`` (or iterates from ``h0`` without it); see module doc."""
    M = m.shape[0]
    arms = {}
    inputs = jnp.asarray(np.concatenate([m, -m]), jnp.float32)
    if h_star is not None:
        opts = {"typical_step": max(step, 1e-30), **options}
        for name, sign in (("pos", 1.0), ("neg", -1.0)):
            br = continuation(cell, np.concatenate([[0.0], sign * m]), h_star, **opts)
            arms[name] = {
                "method": "continuation",
                "points": np.array(br.points),
                "kind": [KIND_NAMES[k] for k in np.asarray(br.kind)],
                "jump": np.asarray(br.jump),
                "jump_ratio": np.asarray(br.jump_ratio),
                "fold": np.asarray(br.fold),
            }
        failed = [np.asarray(arms[k]["kind"][1:]) == KIND_NAMES[FAILED] for k in ("pos", "neg")]
        if np.any(failed):
            # No fixed point at these g* (an accumulator that grows without bound: Adagrad,
            # AdaBelief's √s): the steady state is the one W iterations of F(·, g*) reach.
            ends = np.asarray(_driven(cell, inputs, steady_steps))
            for i, name in enumerate(("pos", "neg")):
                bad = np.nonzero(failed[i])[0]
                arms[name]["points"][bad + 1] = ends[i * M + bad]
                for j in bad:
                    arms[name]["kind"][j + 1] = "iterated"
    else:
        ends = np.asarray(_driven(cell, inputs, steady_steps))
        start = np.asarray(h0)[None]
        for name, part in (("pos", ends[:M]), ("neg", ends[M:])):
            pts = np.concatenate([start, part])
            jump = np.concatenate([[0.0], np.max(np.abs(np.diff(pts, axis=0)), axis=1)])
            arms[name] = {
                "method": "iterated",
                "points": pts,
                "kind": ["initial"] + ["iterated"] * M,
                "jump": jump,
                "jump_ratio": np.zeros(M + 1),
                "fold": np.zeros(M + 1, bool),
            }
    both = np.concatenate([arms["pos"]["points"], arms["neg"]["points"]])
    pc, explained = _principal_plane(both)
    a = np.asarray(effective_lr(cell, jnp.asarray(both, jnp.float32), secant=1e-3 * scale))
    evidence = {}
    for i, (name, sign) in enumerate((("pos", 1.0), ("neg", -1.0))):
        arm = arms.pop(name)
        del arm["points"]
        sl = slice(i * (M + 1), (i + 1) * (M + 1))
        evidence[name] = {
            "inputs": np.concatenate([[0.0], sign * m]),
            "alpha_eff": a[sl],
            "states_pc": pc[sl],
            "states_pc_explained": explained,
            **arm,
        }
    return detectors.detect_adaptation(
        m,
        evidence["pos"]["alpha_eff"][1:],
        evidence["neg"]["alpha_eff"][1:],
        point_kind={k: evidence[k]["kind"][1:] for k in evidence},
        folds={k: evidence[k]["fold"][1:] for k in evidence},
        evidence=evidence,
        gradient_samples=gradient_samples,
        gradient_range=gradient_range,
        gradient_range_source=range_source,
    )


def analyze(opt: Any, theta: Any, family: Any = None, key: jax.Array | None = None, **kwargs):
    """Analyses a learned optimizer at ``theta``.

    Uses ``opt.cell(theta)`` (white box). With ``family`` it first records trajectories
    (:func:`probes.trajectories`, problems drawn from ``key``, by default ``key(0)``) for the
    gradient histogram, the gradient scale and the typical step of the state, and the schedule
    is probed over the family's horizon ``family.num_steps``. An optimizer
    without a cell (``cell`` raises ``TypeError``, e.g. the per-parameter MLP optimizer) is
    analysed as a black box with :func:`analyze_optax` on ``opt.optimizer(theta)``.

    Args:
        opt: a learned optimizer (``cell``, ``optimizer``).
        theta: its meta-parameters.
        family: optional task family for trajectories.
        key: PRNG key for the trajectories (default ``jax.random.key(0)`` with a family).
        **kwargs: passed to :func:`analyze_cell` / :func:`analyze_optax`.

    Returns:
        An :class:`Analysis`.
    """
    from probes.trajectories import trajectories
    from probes.trajectories import typical_step as _typical

    samples, step = None, None
    if family is not None:
        key = jax.random.key(0) if key is None else key
        tr = trajectories(opt, family, key, theta=theta)
        samples = np.asarray(tr.grads)
        if tr.hidden is not None:
            step = float(_typical(tr.hidden))
        if "schedule_steps" not in kwargs and getattr(family, "num_steps", None):
            kwargs["schedule_steps"] = int(family.num_steps)
            name = getattr(family, "name", type(family).__name__)
            kwargs.setdefault("horizon_source", f"task family {name} (num_steps)")
    try:
        cell = opt.cell(theta)
    except TypeError:
        if samples is not None and "gradient_scale" not in kwargs:
            kwargs["gradient_scale"] = median_gradient(samples)
        if samples is not None:  # the histogram, segments' shares and the bias's stall share
            kwargs.setdefault("gradient_samples", samples)
        return analyze_optax(opt.optimizer(theta), **kwargs)
    return analyze_cell(cell, gradient_samples=samples, typical_step=step, **kwargs)
