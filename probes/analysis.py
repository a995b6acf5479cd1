"""``analyze_cell``, ``analyze`` and ``analyze_optax``: the four mechanism questions, answered.

For a :class:`lopt.Cell` (white box, METHOD.md §5):

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
  (METHOD.md §5.7). Each arm is traced with :func:`probes.continuation` from the convergence
  point ``h*(0)``, stepping outward in ``|g*|`` over a log grid that covers the gradients seen in
  training (percentiles 1% to 99.9% of ``|g|`` when ``gradient_samples`` are given, otherwise
  ``scale × magnitude_range``). Folds (where the branch jumps to another stable branch) split
  each arm into segments with their own log-log slopes; ``detected`` is decided on the whole
  arm over the training range (:func:`probes.detectors.detect_adaptation`). Without a
  convergence point (a step counter in the state: scheduled SGD, Adam) ``α_eff`` is taken at
  the state reached after ``steady_steps`` iterations of ``F(·, g*)`` from ``h0`` instead.

Beyond the paper, for both (**oscillation damping**, :func:`damping_gains`,
:class:`probes.detectors.Damping`): the steady gain for a gradient alternating ``±a`` against
the steady gain for a constant ``a``, each from a fresh state, over amplitudes from two decades
below to one above the adaptation range; ``κ`` where their relative ratio halves, and the memory
of the damping's build-up (:func:`nyquist_response`, :func:`probes.detectors.fit_damping_memory`).

For any optax transformation acting coordinate-wise (black box, :func:`analyze_optax`) on one
scalar coordinate, with exact linear responses from ``jax.jvp`` through the update sequence:

* **momentum**: impulse response ``r_k = ∂u_{W+k}/∂g_W`` after ``W`` steps of a background
  gradient ``b`` (``b = 0``; if that is not finite, e.g. Adam's ``√ν`` at ``ν = 0``,
  ``b = gradient_scale``), fitted with modes (:func:`probes.detectors.fit_modes`). Expected:
  ``sgd(α)``: one mode ``λ = 0``, ``α``; ``sgd(α, momentum=β)``: ``(β, α)``; ``rmsprop``: a
  dominant ``λ = 0`` mode (no momentum); ``adam(α, b1, b2)`` on background ``b``:
  ``r_k = -(α/|b|)[(1-b1)b1^k - c(1-b2)b2^k]`` with ``c = 1/(1-b2^{W+k+1}) ≈ 1`` for a long
  ``W``, so the dominant mode is ``β = b1``, ``α = α(1-b1)/|b|`` (share ≈ ``(1-b1)/(2-b1-b2)``)
  and the ``b2`` mode has the opposite sign: the steady response
  ``-Σ α_j/(1-λ_j) = -α(1-c)/|b| ≈ 0``
  (Adam's update is invariant to the gradient's scale; ``c - 1 ≈ 0.16`` at ``W = 2000``).
* **clipping**: the first update from a fresh state, ``u_0(g)``, as for cells. ``adam``'s first
  update is ``-α g/(|g| + ε)``: a sign step, which this probe reports as clipping at ``≈ ε``.
* **schedule**: ``-∂u_t/∂g_t`` after ``t`` zero gradients (a secant at ``±10⁻³·scale`` where the
  derivative is not finite).
* **adaptation**: ``-∂u_W/∂g_W`` at ``g_W = 0`` after ``W`` steps of constant ``g*``. Expected:
  constant for sgd/momentum/clip; ``α/√(ρ g*² + ε)`` for rmsprop and
  ``≈ α(1-b1)/(√b2 |g*|)`` for adam (log-log slope ``-1``).

Shapes: ``T`` steps, ``G`` gradient values, ``M`` magnitudes, ``H`` hidden units.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt.cell import Cell
from probes import detectors
from probes._cells import canonical
from probes.detectors import Adaptation, Clipping, Damping, Momentum, Schedule, _num
from probes.fixed_points import FAILED, FIXED, KIND_NAMES, SLOW, continuation, fixed_points
from probes.linearize import impulse_response, linearize
from probes.update_function import _slope, _update_function, effective_lr

#: 2: adds ``damping`` (oscillation damping). Analyses of an older version are re-computed by
#: ``probes report`` and ``lopt distill`` rather than re-used (:func:`is_current`).
SCHEMA_VERSION = 2


def is_current(analysis: dict[str, Any]) -> bool:
    """Whether an ``analysis.json`` dict has every result this version computes."""
    return int(analysis.get("schema_version") or 0) >= SCHEMA_VERSION


@dataclasses.dataclass
class Analysis:
    """What :func:`analyze_cell` / :func:`analyze_optax` found.

    Attributes:
        momentum, clipping, schedule, adaptation: the four detector results.
        source: ``"cell"`` or ``"optax"``.
        meta: settings and context (gradient scale, typical step, ...).
        damping: oscillation damping (:class:`probes.detectors.Damping`), a mechanism beyond
            the paper's four; ``None`` for analyses written before it existed.
    """

    momentum: Momentum
    clipping: Clipping
    schedule: Schedule
    adaptation: Adaptation
    source: str
    meta: dict[str, Any]
    damping: Damping | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict with ``schema_version``; every number finite or ``None``."""
        out = {
            "schema_version": SCHEMA_VERSION,
            "source": self.source,
            "meta": _num(self.meta),
            "momentum": self.momentum.to_json(),
            "clipping": self.clipping.to_json(),
            "schedule": self.schedule.to_json(),
            "adaptation": self.adaptation.to_json(),
        }
        if self.damping is not None:
            out["damping"] = self.damping.to_json()
        json.dumps(out, allow_nan=False)  # fails loudly if anything non-finite slipped through
        return out


# ----------------------------------------------------------------------------- shared pieces


def _log_grid(scale: float, lo: float, hi: float, num: int) -> np.ndarray:
    return scale * np.logspace(np.log10(lo), np.log10(hi), num)


def _clipping(
    slope_fn: Callable[[np.ndarray], np.ndarray],
    update_fn: Callable[[np.ndarray], np.ndarray],
    magnitudes: np.ndarray,
    gradient_samples: np.ndarray | None,
    fraction: float,
) -> Clipping:
    """Clipping evidence and threshold from vectorised ``∂U/∂g`` and ``U`` (see module doc)."""
    slope0 = float(slope_fn(np.zeros(1))[0])
    thresholds = {}
    for sign in (1.0, -1.0):
        s = slope_fn(sign * magnitudes)
        t, j = detectors.one_sided_threshold(magnitudes, s, slope0, fraction)
        if j > 0:  # refine between the bracketing grid points
            lo, hi = magnitudes[j - 1], magnitudes[j]
            for _ in range(2):
                sub = np.linspace(lo, hi, 64)
                ts, k = detectors.one_sided_threshold(sub, slope_fn(sign * sub), slope0, fraction)
                if k <= 0:
                    break
                lo, hi, t = sub[k - 1], sub[k], ts
        thresholds[sign] = t
    grid = np.concatenate([-magnitudes[::-1], [0.0], magnitudes])
    updates = update_fn(grid)
    slopes = slope_fn(grid)
    if gradient_samples is not None and np.size(gradient_samples):
        gs = np.asarray(gradient_samples, np.float64).reshape(-1)
        gs = gs[np.isfinite(gs)]
        counts, edges = np.histogram(gs, bins=64)
    else:
        counts, edges = np.zeros(0), np.zeros(0)
    tp, tn = thresholds[1.0], thresholds[-1.0]
    if not (np.isfinite(slope0) and slope0 != 0.0):
        tp = tn = float("inf")
    detected = bool(slope0 != 0.0 and np.isfinite(min(tp, tn)))
    return Clipping(
        detected,
        float(min(tp, tn)),
        float(tp),
        float(tn),
        float(updates[-1]),
        float(updates[0]),
        slope0,
        grid,
        np.asarray(updates),
        np.asarray(slopes),
        counts,
        edges,
    )


def _gradient_scale(gradient_samples: Any, default: float = 1.0) -> float:
    if gradient_samples is None:
        return default
    g = np.abs(np.asarray(gradient_samples, np.float64).reshape(-1))
    g = g[np.isfinite(g) & (g > 0)]
    return float(np.median(g)) if g.size else default


#: Percentiles of the training ``|g|`` spanned by the adaptation grid.
GRADIENT_PERCENTILES = (1.0, 99.9)


def gradient_range(
    gradient_samples: Any, scale: float, magnitude_range: tuple[float, float]
) -> tuple[float, float, str]:
    """``(lo, hi, source)``: the ``|g*|`` covered by the adaptation grid.

    The percentiles ``GRADIENT_PERCENTILES`` of the non-zero finite ``|g|`` seen in training, or
    ``scale × magnitude_range`` without samples.
    """
    if gradient_samples is not None:
        g = np.abs(np.asarray(gradient_samples, np.float64).reshape(-1))
        g = g[np.isfinite(g) & (g > 0)]
        if g.size >= 2:
            lo, hi = np.percentile(g, GRADIENT_PERCENTILES)
            if hi > lo > 0:
                p0, p1 = GRADIENT_PERCENTILES
                return float(lo), float(hi), f"training |g| percentiles {p0:g}%-{p1:g}%"
    lo, hi = magnitude_range
    return scale * lo, scale * hi, "gradient scale x magnitude_range"


def _principal_plane(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Projection of ``points (n, H)`` on their first two principal components, and the ratios."""
    x = np.asarray(points, np.float64)
    ok = np.all(np.isfinite(x), axis=1)
    if ok.sum() < 2:
        return np.zeros((x.shape[0], 2)), np.zeros(2)
    mean = x[ok].mean(0)
    _, sv, vt = np.linalg.svd(x[ok] - mean, full_matrices=False)
    comps = np.zeros((2, x.shape[1]))
    comps[: min(2, vt.shape[0])] = vt[:2]
    var = sv**2
    ratio = np.zeros(2)
    ratio[: min(2, var.size)] = (var / max(var.sum(), 1e-300))[:2]
    return np.where(ok[:, None], (x - mean) @ comps.T, np.nan), ratio


def damping_gains(
    run: Callable[[jax.Array], jax.Array],
    amplitudes: Any,
    *,
    steps: int = 200,
    tail: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
    """Steady DC and Nyquist gains of a scalar optimizer at each amplitude (oscillation damping).

    For each amplitude ``a`` four gradient sequences of ``steps`` steps are run from a fresh
    state: ``+a`` and ``-a`` constant, and ``±a`` alternating starting with either sign. Over
    the last ``tail`` steps (even, so the alternation averages out):

    * DC gain ``G₀(a) = -(ū(+a) - ū(-a)) / 2a``, the mean update per unit of a persistent
      gradient;
    * Nyquist gain ``G_π(a) = -mean((u(+alt) - u(-alt))·s_t) / 2a`` with ``s_t = ±1`` the sign
      of the ``+alt`` input: the alternating part of the update per unit of a gradient that
      flips sign every step.

    Differences between the two signs cancel an update the optimizer makes with no gradient
    (a learned bias) and average asymmetric responses. A linear optimizer gives constant gains:
    heavy-ball ``(α, β)``: ``G₀ = α/(1-β)``, ``G_π = α/(1+β)``.

    Args:
        run: ``gs (T,) -> updates (T,)`` for one coordinate from a fresh state.
        amplitudes: ``(A,)`` positive amplitudes.
        steps: ``T``, long enough for the state to settle.
        tail: steps averaged at the end (rounded down to even, at least 2).

    Returns:
        ``(dc_gain, nyquist_gain)``, each ``(A,)``.
    """
    a = jnp.asarray(np.asarray(amplitudes, np.float32).reshape(-1))
    tail = max(2, int(tail) // 2 * 2)
    if steps < tail:
        raise ValueError(f"steps ({steps}) must be at least tail ({tail})")
    const = jnp.stack([jnp.ones(steps), -jnp.ones(steps)]).astype(jnp.float32)
    u = jax.vmap(jax.vmap(run))(a[:, None, None] * const[None])[..., -tail:]  # (A, 2, tail)
    dc = -(u[:, 0].mean(-1) - u[:, 1].mean(-1)) / (2 * a)
    ny = nyquist_response(run, amplitudes, steps=steps)[:, -tail:].mean(-1)
    return np.asarray(dc, np.float64), ny


def nyquist_response(
    run: Callable[[jax.Array], jax.Array], amplitudes: Any, *, steps: int = 200
) -> np.ndarray:
    """Per-step Nyquist gain ``-(u_t(+alt) - u_t(-alt))·s_t / 2a`` from a fresh state, ``(A, T)``.

    The step-by-step version of :func:`damping_gains`' ``G_π``: how the response to a gradient
    alternating ``±a`` evolves while the optimizer's state settles.
    """
    a = jnp.asarray(np.asarray(amplitudes, np.float32).reshape(-1))
    sign = jnp.where(jnp.arange(steps) % 2 == 0, 1.0, -1.0).astype(jnp.float32)
    u = jax.vmap(jax.vmap(run))(a[:, None, None] * jnp.stack([sign, -sign])[None])
    return np.asarray(-(u[:, 0] - u[:, 1]) * sign / (2 * a[:, None]), np.float64)


def _damping(
    run: Callable[[jax.Array], jax.Array],
    lo: float,
    hi: float,
    range_source: str,
    points: int,
    steps: int,
) -> Damping:
    """The damping probe over ``[lo/100, 10·hi]`` (log grid), decided on ``[lo, hi]``."""
    amps = np.logspace(np.log10(lo) - 2.0, np.log10(hi) + 1.0, points)
    dc, ny = damping_gains(run, amps, steps=steps)
    d = detectors.detect_damping(
        amps, dc, ny, gradient_range=(lo, hi), gradient_range_source=range_source
    )
    if d.detected:
        # How fast it builds up: at 3κ (inside the range), relative to the smallest amplitude.
        a_m = float(min(3.0 * d.kappa, hi))
        resp = nyquist_response(run, [float(amps[0]), a_m], steps=steps)
        with np.errstate(divide="ignore", invalid="ignore"):
            d.buildup = resp[1] / resp[0]
        d.buildup_amplitude = a_m
        d.memory, d.buildup_fit = detectors.fit_damping_memory(
            d.buildup, a_m, d.kappa, reference=resp[0], return_fit=True
        )
    return d


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
def _driven(cell, inputs, steps_like):
    def run(g):
        def body(h, _):
            h = cell.step(h, g)
            return h, h

        h0 = jnp.asarray(cell.init_state(), jnp.float32)
        return jax.lax.scan(body, h0, steps_like)[1]

    return jax.vmap(run)(inputs)


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


def analyze_cell(
    cell: Cell,
    *,
    gradient_samples: Any = None,
    typical_step: float | None = None,
    gradient_scale: float | None = None,
    schedule_steps: int = 100,
    impulse_steps: int = 200,
    num_seeds: int = 16,
    num_magnitudes: int = 48,
    magnitude_range: tuple[float, float] = (1e-2, 1e1),
    clip_range: tuple[float, float] = (1e-4, 1e4),
    clip_points: int = 161,
    steady_steps: int = 200,
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
        schedule_steps: ``T`` of the autonomous trajectory.
        impulse_steps: lags of the linearised impulse response fitted for momentum.
        num_seeds: seeds for the fixed-point search at ``g* = 0``.
        num_magnitudes: ``M``, grid points per arm along the fixed-point branch (log-spaced).
        magnitude_range: without ``gradient_samples`` the grid spans ``scale × [lo, hi]``.
        clip_range: the clipping grid spans ``scale × [lo, hi]`` per side (log-spaced).
        clip_points: grid points per side.
        steady_steps: iterations of ``F(·, g*)`` from ``h0`` giving the steady state of a cell
            without a convergence point (adaptation fallback).
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
    key = jax.random.key(0) if key is None else key
    scale = gradient_scale if gradient_scale is not None else _gradient_scale(gradient_samples)
    fp_opts = dict(fixed_point_options or {})
    h0 = jnp.asarray(cell.init_state(), jnp.float32)
    H = h0.shape[0]

    # Schedule: autonomous dynamics from h0.
    traj = _autonomous(cell, jnp.zeros(schedule_steps))
    alpha_t = np.asarray(effective_lr(cell, traj, secant=1e-3 * scale))
    schedule = detectors.detect_schedule(alpha_t)

    # The convergence point: fixed points at g* = 0 from states along the autonomous
    # trajectory (1% noise, the last state kept exact).
    seeds = traj[np.linspace(0, schedule_steps - 1, num_seeds).astype(int)]
    noise = 0.01 * (1.0 + jnp.abs(seeds)) * jax.random.normal(key, seeds.shape)
    seeds = seeds + noise.at[-1].set(0.0)
    fp = fixed_points(cell, jnp.zeros(1), seeds[None], typical_step=typical_step, **fp_opts)

    # Momentum: the convergence point at g* = 0.
    slot, kind = _best_point(fp, 0)
    if slot >= 0:
        h_star, point_kind = fp.points[0, slot], KIND_NAMES[kind]
    else:
        h_star, point_kind = traj[-1], "trajectory end"
    lin = linearize(cell, h_star)
    momentum = detectors.detect_momentum(
        np.asarray(lin.eigenvalues),
        np.asarray(lin.alpha),
        point_kind=point_kind,
        response=impulse_response(lin, impulse_steps),
    )

    # Clipping: U(h0, g).
    def slope_fn(gs):
        return _padded(lambda x: _slope(cell, h0, x), gs)

    def update_fn(gs):
        return _padded(lambda x: _update_function(cell, h0, x), gs)

    mags = _log_grid(scale, *clip_range, clip_points)
    clipping = _clipping(slope_fn, update_fn, mags, gradient_samples, detectors.SLOPE_FRACTION)

    # Adaptation: α_eff along the fixed-point branches traced from the convergence point.
    lo, hi, range_source = gradient_range(gradient_samples, scale, magnitude_range)
    m = np.logspace(np.log10(lo), np.log10(hi), num_magnitudes)
    step = float(fp.typical_step) if typical_step is None else float(typical_step)
    adaptation = _adaptation_along_branches(
        cell,
        h0,
        h_star if slot >= 0 else None,
        m,
        step=step,
        scale=scale,
        steady_steps=steady_steps,
        gradient_samples=gradient_samples,
        gradient_range=(lo, hi),
        range_source=range_source,
        options=dict(continuation_options or {}),
    )
    damping = _damping(
        lambda gs: _cell_run(cell, gs), lo, hi, range_source, damping_points, damping_steps
    )
    meta = {
        "hidden_size": int(H),
        "gradient_scale": scale,
        "typical_step": typical_step,
        "linearized_at": point_kind,
        "alpha_eff_h0": float(effective_lr(cell, h0, secant=1e-3 * scale)),
        "fixed_points_at_zero": int(np.sum(np.asarray(fp.mask[0]) & (np.asarray(fp.kind[0]) == 0))),
    }
    return Analysis(momentum, clipping, schedule, adaptation, "cell", meta, damping)


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
    if h_star is not None:
        opts = {"typical_step": max(step, 1e-30), **options}
        for name, sign in (("pos", 1.0), ("neg", -1.0)):
            br = continuation(cell, np.concatenate([[0.0], sign * m]), h_star, **opts)
            arms[name] = {
                "method": "continuation",
                "points": np.asarray(br.points),
                "kind": [KIND_NAMES[k] for k in np.asarray(br.kind)],
                "jump": np.asarray(br.jump),
                "jump_ratio": np.asarray(br.jump_ratio),
                "fold": np.asarray(br.fold),
            }
    else:
        inputs = jnp.asarray(np.concatenate([m, -m]), jnp.float32)
        ends = np.asarray(_driven(cell, inputs, jnp.zeros(steady_steps))[:, -1])
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
    gradient histogram, the gradient scale and the typical step of the state. An optimizer
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
    try:
        cell = opt.cell(theta)
    except TypeError:
        if samples is not None and "gradient_scale" not in kwargs:
            kwargs["gradient_scale"] = _gradient_scale(samples)
        return analyze_optax(opt.optimizer(theta), **kwargs)
    return analyze_cell(cell, gradient_samples=samples, typical_step=step, **kwargs)


# ----------------------------------------------------------------------------- optax


def _scalar_updates(tx: optax.GradientTransformation) -> Callable[[jax.Array], jax.Array]:
    """``gs (T,) -> updates (T,)`` for one scalar parameter trained by ``tx`` (params advance)."""

    def run(gs):
        p0 = jnp.zeros([], jnp.float32)
        state0 = tx.init(p0)

        def body(c, g):
            p, s = c
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), u

        return jax.lax.scan(body, (p0, state0), gs)[1]

    return run


def analyze_optax(
    tx: optax.GradientTransformation,
    *,
    gradient_scale: float = 1.0,
    gradient_samples: Any = None,
    impulse_steps: int = 200,
    warmup: int = 2000,
    schedule_steps: int = 100,
    num_magnitudes: int = 9,
    magnitude_range: tuple[float, float] = (1e-2, 1e1),
    clip_range: tuple[float, float] = (1e-4, 1e4),
    clip_points: int = 161,
    damping_points: int = 25,
    damping_steps: int = 200,
) -> Analysis:
    """The detectors for any coordinate-wise optax transformation, by behaviour alone.

    See the module docstring for each probe and the number every optax optimizer should give.

    Args:
        tx: the transformation (acting on each coordinate independently).
        gradient_scale: the typical gradient magnitude (background, grids).
        gradient_samples: gradients seen in training (histogram only).
        impulse_steps: lags ``T`` of the impulse response.
        warmup: ``W``, steps of background / constant gradient before probing.
        schedule_steps: steps of the schedule probe.
        num_magnitudes: ``M`` per arm for adaptation.
        magnitude_range: ``scale × [lo, hi]`` for adaptation.
        clip_range: ``scale × [lo, hi]`` for the clipping grid.
        clip_points: grid points per side.
        damping_points: amplitudes of the oscillation-damping probe (:func:`damping_gains`).
        damping_steps: steps of each damping sequence.

    Returns:
        An :class:`Analysis` (``momentum.point_kind == "impulse response"``).
    """
    run = _scalar_updates(tx)
    scale = float(gradient_scale)

    @jax.jit
    def impulse(background):
        gs = jnp.full(warmup + impulse_steps, background, jnp.float32)
        tangent = jnp.zeros_like(gs).at[warmup].set(1.0)
        return jax.jvp(run, (gs,), (tangent,))[1][warmup:]

    response = np.asarray(impulse(jnp.float32(0.0)))
    background = 0.0
    if not np.all(np.isfinite(response)):
        background = scale
        response = np.asarray(impulse(jnp.float32(background)))
    lams, alphas = detectors.fit_modes(response)
    momentum = detectors.detect_momentum(lams, alphas, point_kind="impulse response")

    @jax.jit
    def first_update(gs):
        return jax.vmap(lambda g: run(g[None])[0])(gs)

    @jax.jit
    def first_slope(gs):
        return jax.vmap(jax.grad(lambda g: run(g[None])[0]))(gs)

    mags = _log_grid(scale, *clip_range, clip_points)
    clipping = _clipping(
        lambda g: np.asarray(first_slope(jnp.asarray(g, jnp.float32))),
        lambda g: np.asarray(first_update(jnp.asarray(g, jnp.float32))),
        mags,
        gradient_samples,
        detectors.SLOPE_FRACTION,
    )

    delta = 1e-3 * scale

    @jax.jit
    def schedule_lr():
        def at(t):
            gs = jnp.zeros(schedule_steps, jnp.float32)
            tangent = (jnp.arange(schedule_steps) == t).astype(jnp.float32)
            d = -jax.jvp(run, (gs,), (tangent,))[1][t]
            plus = run(gs.at[t].set(delta))[t]
            minus = run(gs.at[t].set(-delta))[t]
            return jnp.where(jnp.isfinite(d), d, -(plus - minus) / (2 * delta))

        return jax.vmap(at)(jnp.arange(schedule_steps))

    schedule = detectors.detect_schedule(np.asarray(schedule_lr()))

    m = _log_grid(scale, *magnitude_range, num_magnitudes)

    @jax.jit
    def steady_lr(gstar):
        def one(g):
            gs = jnp.concatenate([jnp.full(warmup, g, jnp.float32), jnp.zeros(1, jnp.float32)])
            tangent = jnp.zeros_like(gs).at[-1].set(1.0)
            return -jax.jvp(run, (gs,), (tangent,))[1][-1]

        return jax.vmap(one)(gstar)

    a_pos = np.asarray(steady_lr(jnp.asarray(m, jnp.float32)))
    a_neg = np.asarray(steady_lr(jnp.asarray(-m, jnp.float32)))
    M = len(m)
    adaptation = detectors.detect_adaptation(
        m,
        a_pos,
        a_neg,
        point_kind={"pos": ["iterated"] * M, "neg": ["iterated"] * M},
        evidence={
            "pos": {"method": "iterated", "inputs": m, "alpha_eff": a_pos},
            "neg": {"method": "iterated", "inputs": -m, "alpha_eff": a_neg},
        },
        gradient_samples=gradient_samples,
        gradient_range=(float(m[0]), float(m[-1])),
        gradient_range_source="gradient scale x magnitude_range",
    )
    meta = {
        "gradient_scale": scale,
        "impulse_background": background,
        "impulse_response": response,
        # -Σ α_j/(1-λ_j) from the fitted modes (the lags recorded may be shorter than the
        # slowest mode): Adam ≈ 0 (only the bias-correction factor of the ν mode remains).
        "steady_response": float(-np.real(np.sum(alphas / (1.0 - lams)))),
        "warmup": warmup,
    }
    damping = _damping(
        jax.jit(run),
        float(m[0]),
        float(m[-1]),
        "gradient scale x magnitude_range",
        damping_points,
        damping_steps,
    )
    return Analysis(momentum, clipping, schedule, adaptation, "optax", meta, damping)
