"""Mechanism detectors: momentum, clipping, schedule, adaptation (docs/method.md, Analyses).

Each detector turns evidence arrays (computed by :mod:`probes.analysis`) into a small result
(a :class:`Result`) with ``detected``, its numbers and the evidence itself (for figures). The
thresholds are module constants, documented where used; the analyses let callers override them.

Shapes: ``H`` modes, ``G`` gradient values, ``T`` steps, ``M`` gradient magnitudes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from probes.modes import MEMORY_GRID, dominant_mode, fit_damping_memory, fit_modes  # noqa: F401 (re-exported)
from probes.result import Result

#: Momentum: the dominant mode must decay no faster than this per step (``λ ≥ MIN_BETA``); an
#: SGD-like mode has ``λ = 0``.
MIN_BETA = 0.05
#: Momentum: the dominant mode must carry at least this share of the positive steady response,
#: ``G_i / Σ_{G_j > 0} G_j`` with ``G_i = α_i/(1 - λ_i)`` (:func:`probes.modes.dominant_mode`).
MIN_SHARE = 0.5
#: Momentum: a complex dominant pair ``|λ| e^{±iθ}`` counts as real (a decaying exponential)
#: when its response ``2 Re(α λᵏ)`` keeps its sign until its envelope ``|λ|ᵏ`` is below this
#: fraction of its start. Such pairs come from two-exponential fits to a response that is not
#: quite one exponential (a quickstart GRU-32: ``0.698 ± 0.077i``, first sign change at lag 21,
#: at 0.06% of the envelope); a ringing momentum (``0.9 e^{±0.5i}``: lag 4, 66%) is not momentum.
SIGN_CHANGE_LEVEL = 0.05
#: Clipping: the threshold is where the local slope ``|∂U/∂g|`` first falls to this fraction
#: of its value at ``g = 0`` (docs/method.md, Clipping).
SLOPE_FRACTION = 0.5
#: Schedule: relative rise / fall of ``α_eff(t)`` (w.r.t. its maximum) counted as a warm-up /
#: decay; below it on both sides the schedule is constant.
SCHEDULE_TOL = 0.05
#: Adaptation: detected if, along the traced branch over the gradient range (the training
#: ``|g|`` percentiles 1%–99.9%), the least-squares log-log slope of ``α_eff`` against ``|g*|``
#: is at most this (RMSProp/Adam: ``-1``; SGD/momentum: ``0``) on at least one arm ...
ADAPT_SLOPE = -0.2
#: ... and ``α_eff`` at the largest ``|g*|`` is at least this fraction below its value at the
#: smallest. The same two numbers mark each segment between folds that ``falls``.
ADAPT_DROP = 0.2
#: Oscillation damping: detected if, within the gradient range, the gain for gradients that
#: flip sign every step falls to this fraction of its small-gradient value, both by itself and
#: relative to the gain for persistent ones; ``κ`` is the amplitude where it does.
DAMP_RATIO = 0.5
#: ... where "small-gradient value" is the median over this many of the smallest resolved
#: amplitudes below the training range (the probe's grid starts two decades below it).
REFERENCE_POINTS = 3

#: A damping whose sparing (:attr:`Damping.sparing`) is within this factor of 1 scales
#: persistent and alternating gradients alike, as ``lopt.chain.damp_oscillations`` does.
SPARING_TOLERANCE = 1.25

#: The mechanisms an analysis answers, in the order reports and comparisons show them.
MECHANISMS = ("momentum", "clipping", "schedule", "adaptation", "damping", "bias")


# ----------------------------------------------------------------------------- momentum


@dataclasses.dataclass
class Momentum(Result):
    """Momentum as the dominant linear mode at the convergence point.

    The dominant mode is picked among the *fitted* modes (``fit_eigenvalues``, ``fit_alphas``):
    for a cell these are at most two exponentials (plus ``λ = 0``) fitted to the linearised
    impulse response, not the raw eigenmodes. A trained GRU spreads its momentum over many
    eigenmodes with ``λ`` in ``0.7–0.95``, none with half of ``Σ|α|``, and near-degenerate
    eigenvalues carry large ``α_i`` of opposite signs that cancel in the response (the
    quickstart GRU-32: ``α = 11.9`` at ``λ = 0.604`` against ``-5.9 ± 6.0i`` at
    ``0.601 ± 0.018i``, net ``0.19``), so the largest ``|α_i|`` and its share of ``Σ|α_j|`` say
    nothing about the response. The raw spectrum is kept as evidence.

    Attributes:
        detected: the dominant mode is real (or effectively real: ``sign_change_level ≤
            SIGN_CHANGE_LEVEL``), ``MIN_BETA ≤ β < 1`` and ``share ≥ MIN_SHARE``.
        beta: ``β`` of the dominant mode (largest positive ``α_i/(1-λ_i)``; a conjugate pair
            counts together), or 0 without one.
        alpha: its learning rate ``α_i`` (without a dominant mode: the ``λ = 0`` term).
        timescale: ``τ = -1/ln|β|`` steps.
        share: ``G_i / Σ_{G_j > 0} G_j`` over the fitted modes (``G = α/(1-λ)``).
        is_real: whether the dominant mode is real (strictly: no imaginary part).
        eigenvalues: all ``λ_i`` of the linearisation (evidence), complex.
        alphas: all ``α_i`` of the linearisation (evidence), complex.
        point_kind: where it was linearised (``fixed``, ``slow``, ``failed``, ``trajectory end``
            or ``impulse response`` for black-box optimizers).
        fit_eigenvalues, fit_alphas: the modes the dominant one is chosen from (the same as
            ``eigenvalues``/``alphas`` when no response was given).
        impulse_response: ``r_k = ∂U_{t+k}/∂g_t`` that was fitted (empty if none).
        phase: radians the dominant mode turns per timescale, ``θ·τ`` (0 for a real mode).
        sign_change_level: for a complex dominant pair, its envelope ``|λ|ᵏ`` at the first lag
            where its response ``2 Re(α λᵏ)`` changes sign (0 for a real mode or no change
            before ``|λ|ᵏ < 10⁻⁶``).
    """

    _COMPLEX = ("eigenvalues", "alphas", "fit_eigenvalues", "fit_alphas")

    detected: bool
    beta: float
    alpha: float
    timescale: float
    share: float
    is_real: bool
    eigenvalues: np.ndarray
    alphas: np.ndarray
    point_kind: str
    fit_eigenvalues: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, complex))
    fit_alphas: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, complex))
    impulse_response: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    phase: float = 0.0
    sign_change_level: float = 0.0


def _sign_change_level(lam: complex, alpha: complex) -> float:
    """Envelope ``|λ|ᵏ`` at the first sign change of ``2 Re(α λᵏ)`` (0 if none before 10⁻⁶)."""
    r = abs(lam)
    if r == 0 or r >= 1 or lam.imag == 0:
        return 0.0
    k = np.arange(int(min(np.ceil(np.log(1e-6) / np.log(r)), 100_000)) + 1)
    resp = np.real(alpha * lam**k)
    flips = np.nonzero(np.sign(resp[1:]) != np.sign(resp[0]))[0]
    return float(r ** k[flips[0] + 1]) if flips.size else 0.0


def detect_momentum(
    eigenvalues: np.ndarray,
    alphas: np.ndarray,
    *,
    point_kind: str,
    response: np.ndarray | None = None,
    min_beta: float = MIN_BETA,
    min_share: float = MIN_SHARE,
    sign_change_level: float = SIGN_CHANGE_LEVEL,
) -> Momentum:
    """Picks the dominant mode and decides whether it is momentum.

    The dominant mode is the decaying mode with ``Re λ > 0`` with the largest positive steady
    gain ``G_i = α_i/(1 - λ_i)`` (:func:`probes.modes.dominant_mode`); modes with ``G_i < 0``
    are corrections. Without one, ``β = 0`` and ``α`` is the instantaneous (``λ = 0``) term.

    Args:
        eigenvalues: the modes' ``λ_i`` (evidence).
        alphas: the modes' ``α_i`` (evidence).
        point_kind: see :class:`Momentum`.
        response: the impulse response ``r_k = ∂U_{t+k}/∂g_t``; if given, the dominant mode is
            chosen among modes fitted to it (:func:`fit_modes`) instead of ``(λ_i, α_i)``,
            which is robust to momentum spread over many modes and to cancelling ``α_i``.
        min_beta: see ``MIN_BETA``.
        min_share: see ``MIN_SHARE``.
        sign_change_level: see ``SIGN_CHANGE_LEVEL``.
    """
    lam_all = np.asarray(eigenvalues, np.complex128).reshape(-1)
    al_all = np.asarray(alphas, np.complex128).reshape(-1)
    if response is not None:
        r = np.asarray(response, np.float64).reshape(-1)
        lam, al = fit_modes(r)
    else:
        r = np.zeros(0)
        lam, al = lam_all, al_all
    extra = (lam, al, r)
    i, share = dominant_mode(lam, al)
    if i < 0:
        # No mode pushes against the gradient with memory: report the instantaneous term.
        zero = np.nonzero(np.abs(lam) == 0)[0]
        a0 = float(np.real(al[zero[0]])) if zero.size else 0.0
        a0 = a0 if np.isfinite(a0) else 0.0
        return Momentum(False, 0.0, a0, 0.0, 0.0, True, lam_all, al_all, point_kind, *extra)
    tol = 1e-6 * max(1.0, abs(lam[i]))
    is_real = abs(lam[i].imag) <= tol
    beta = float(lam[i].real) if is_real else float(abs(lam[i]))
    absb = abs(beta)
    tau = float("inf") if absb >= 1 else (0.0 if absb == 0 else -1.0 / np.log(absb))
    alpha = float(al[i].real) if is_real else float(2 * al[i].real)
    # θ·τ; a mode that does not decay (|λ| ≥ 1) or an SGD mode (λ = 0) has no timescale.
    phase = 0.0 if is_real else float(abs(np.angle(lam[i])) * tau) if 0 < tau < np.inf else np.inf
    level = 0.0 if is_real else _sign_change_level(complex(lam[i]), complex(al[i]))
    real_enough = is_real or (0 < absb < 1 and level <= sign_change_level)
    detected = bool(real_enough and min_beta <= beta < 1.0 and share >= min_share)
    return Momentum(
        detected,
        beta,
        alpha,
        tau,
        float(share),
        bool(is_real),
        lam_all,
        al_all,
        point_kind,
        *extra,
        phase=phase,
        sign_change_level=level,
    )


# ----------------------------------------------------------------------------- clipping


@dataclasses.dataclass
class Clipping(Result):
    """Saturation of the update function ``U(h0, g)``.

    Attributes:
        detected: on at least one side the slope falls to ``SLOPE_FRACTION`` of its value at 0
            (at a hair from 0 where that is not finite) within the probed range, and that
            slope is not zero; or the update is sign-like.
        threshold: the smaller of the two one-sided thresholds (``inf`` if none).
        threshold_pos: where the slope first falls for ``g > 0`` (``inf`` if never).
        threshold_neg: the same for ``g < 0`` (a positive number).
        asymptote_pos: ``U(h0, +g_max)``.
        asymptote_neg: ``U(h0, -g_max)`` (asymmetric asymptotes are allowed).
        slope0: ``∂U/∂g`` at 0.
        gradients: the probed grid, ``(G,)``; ``updates``, ``slopes``: ``U`` and ``∂U/∂g`` there.
        histogram_counts, histogram_edges: histogram of gradients seen in training (or empty).
        sign_like: the update jumps at ``g = 0`` with zero slope on both sides (sign-SGD, Lion):
            clipping at threshold 0 (``sign g = lim_{c→0} clip(g, ±c)/c``).
        step: the update probed, ``U(h_t, g)`` after ``t`` zero gradients: the first with a
            non-zero response (0 unless a schedule starts at 0).
        lag: 0 where that update is the one at step ``t``; 1 where no step's own update moves
            and the update one step later is read instead (Rprop moves by the previous step's
            sign, so its update at the step of a gradient is always 0).
    """

    detected: bool
    threshold: float
    threshold_pos: float
    threshold_neg: float
    asymptote_pos: float
    asymptote_neg: float
    slope0: float
    gradients: np.ndarray
    updates: np.ndarray
    slopes: np.ndarray
    histogram_counts: np.ndarray
    histogram_edges: np.ndarray
    sign_like: bool = False
    step: int = 0
    lag: int = 0


def one_sided_threshold(
    magnitudes: np.ndarray, slopes: np.ndarray, slope0: float, fraction: float = SLOPE_FRACTION
) -> tuple[float, int]:
    """First magnitude where ``|slope| ≤ fraction·|slope0|`` and its index (``inf, -1`` if none)."""
    below = np.abs(slopes) <= fraction * abs(slope0)
    if not below.any():
        return float("inf"), -1
    j = int(np.argmax(below))
    return float(magnitudes[j]), j


# ----------------------------------------------------------------------------- schedule


@dataclasses.dataclass
class Schedule(Result):
    """The learning-rate schedule: the time dependence of the step whatever the gradients.

    Attributes:
        detected: the shape is not ``constant``.
        shape: ``constant``, ``warm-up``, ``decay`` or ``warm-up-then-decay``.
        effective_lr: ``α_eff`` after ``t`` zero gradients, ``(T,)``.
        rise: how far the curves dip below their peak before it, ``(max - min_{t ≤ peak})/max``
            (the smaller of the two curves' values); fall: the same after the peak;
            peak_step: the first step where ``|α_eff|`` is largest.
        constant_gradient_lr: ``-∂u_t/∂g_t`` after ``t`` steps of a constant gradient ``b``
            from a fresh state, at ``g_t = b·(1 + KINK)`` (:data:`probes.black_box.KINK`: a
            kink's growing branch), ``(T,)`` (empty if not probed); the step ``|u_t|`` there
            instead where ``constant_gradient_measure`` says ``"step size"``.
        horizon_source: where ``T`` came from (the task family or the default).
        measure: what the curves are: ``"gain"`` (``α_eff``, the slope ``-∂u/∂g`` at ``g = 0``)
            or ``"step size"`` (``|u_t|`` at a gradient of the typical scale: a sign-like
            update, whose slopes are 0, carries its schedule in the size of its steps).
        constant_gradient_measure: what ``constant_gradient_lr`` is: ``measure``, or
            ``"step size"`` (``|u_t|`` after ``t`` steps of the constant gradient) where the
            update normalises the gradient's size (adaptation detected). A normaliser's gain
            along a constant gradient rises as its reaction to the newest gradient fades (its
            bias correction, or its accumulator catching up: Adam, Yogi) whether or not its
            step moves; a multiplier applied whatever the gradients moves the step too.
    """

    detected: bool
    shape: str
    effective_lr: np.ndarray
    rise: float
    fall: float
    peak_step: int
    constant_gradient_lr: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    horizon_source: str = ""
    measure: str = "gain"
    constant_gradient_measure: str = "gain"


def _rise_fall(curve: np.ndarray) -> tuple[float, float, int] | None:
    """``(rise, fall, peak)`` of ``|curve|`` over its finite values (``None`` if none positive)."""
    a = np.abs(np.asarray(curve, np.float64))
    finite = np.isfinite(a)
    if not finite.any() or np.max(a[finite]) <= 0:
        return None
    mag = np.where(finite, a, -np.inf)
    peak = int(np.argmax(mag))
    top = mag[peak]
    low = np.where(finite, a, np.inf)
    return float((top - low[: peak + 1].min()) / top), float((top - low[peak:].min()) / top), peak


def detect_schedule(
    effective_lr: np.ndarray,
    constant_lr: np.ndarray | None = None,
    *,
    tol: float = SCHEDULE_TOL,
    horizon_source: str = "",
    measure: str = "gain",
    constant_measure: str | None = None,
) -> Schedule:
    """Classifies the schedule as constant, warm-up, decay or warm-up-then-decay.

    On each curve, the rise is how far it dips below its peak anywhere before the peak and the
    fall how far anywhere after it, relative to the peak (the whole curve: a dip that recovers
    counts). A schedule applies whatever the gradients, so a warm-up (decay) needs a rise
    (fall) of at least ``tol`` on both curves: the gain after ``t`` zero gradients and, where
    given and not zero, the gain after ``t`` steps of a constant gradient. The moments' bias
    corrections of a normalised update (Adam, AdaBelief) lower the first with ``t`` and raise
    the second; for a normalised update the second curve is therefore the step along the
    constant gradient (``constant_measure="step size"``, :func:`normalised_schedule_curve`).
    ``measure`` names what the curves are (``constant_measure`` the second, when it differs;
    :class:`Schedule`); the rule is the same.
    """
    constant_measure = measure if constant_measure is None else constant_measure
    a = np.asarray(effective_lr, np.float64)
    b = np.zeros(0) if constant_lr is None else np.asarray(constant_lr, np.float64)
    ra = _rise_fall(a)
    if ra is None:
        return Schedule(
            False, "constant", a, 0.0, 0.0, 0, b, horizon_source, measure, constant_measure
        )
    rb = _rise_fall(b) if b.size else None
    rise, fall = (ra[0], ra[1]) if rb is None else (min(ra[0], rb[0]), min(ra[1], rb[1]))
    shape = {
        (False, False): "constant",
        (True, False): "warm-up",
        (False, True): "decay",
        (True, True): "warm-up-then-decay",
    }[(rise >= tol, fall >= tol)]
    detected = shape != "constant"
    return Schedule(
        detected, shape, a, rise, fall, ra[2], b, horizon_source, measure, constant_measure
    )


def normalised_schedule_curve(adaptation: Adaptation, sign_like: bool) -> bool:
    """Whether the schedule's second curve is the step along a constant gradient.

    It is where the update normalises the gradient's size (``adaptation.detected``) and is not
    sign-like (whose two curves are step sizes already): see :func:`detect_schedule`.
    """
    return bool(adaptation.detected) and not sign_like


# ----------------------------------------------------------------------------- adaptation


@dataclasses.dataclass
class Adaptation(Result):
    """Learning-rate adaptation: ``α_eff`` along the steady states ``h*(g*)`` against ``|g*|``.

    For a cell the steady states are the fixed-point branch traced from the convergence point
    (one arm per sign of ``g*``, :func:`probes.continuation`); for a black box, the state after
    ``W`` steps of constant ``g*``. A fold makes the branch jump to another stable branch; the
    arm is then made of segments between folds, each with its own slope.

    Attributes:
        detected: on at least one arm, over the gradient range, the least-squares log-log slope
            of ``α_eff`` against ``|g*|`` is ``≤ ADAPT_SLOPE`` and ``α_eff`` at the largest
            ``|g*|`` is at least ``ADAPT_DROP`` below its value at the smallest (measured along
            the traced branch, folds included; failed points left out).
        magnitudes: ``|g*|``, ``(M,)``, log-spaced over ``gradient_range``.
        lr_vs_magnitude: ``{"pos": α_eff (M,), "neg": α_eff (M,)}`` along each arm.
        slope_pos, slope_neg: the arms' least-squares slopes of ``log|α_eff|`` on ``log|g*|``.
        slope: the more negative of the two.
        point_kind: for each arm, the kind of each steady state (``fixed``/``slow``/``failed``
            on a traced branch; ``iterated`` without a fixed point, e.g. a step counter in the
            state), ``{"pos", "neg"}``.
        gradient_range: ``(lo, hi)`` of ``|g*|``: percentiles 1% and 99.9% of the training
            ``|g|`` when samples were given.
        gradient_range_source: where ``gradient_range`` came from.
        branches: per arm (``"pos"``, ``"neg"``) a dict: ``slope``, ``drop``
            (``1 - α_last/α_first``) and ``detected`` of the arm; ``fold_indices`` into
            ``magnitudes`` (a fold between ``j-1`` and ``j``; ``0``: between ``g* = 0`` and the
            first magnitude) and ``fold_magnitudes``; ``segments``: the stretches between folds,
            each with ``start``/``stop`` (indices into ``magnitudes``, ``stop`` exclusive),
            ``magnitude_range``, ``alpha_first``/``alpha_last``, ``slope``, ``drop``,
            ``falls`` (``slope ≤ ADAPT_SLOPE`` and ``drop ≥ ADAPT_DROP``) and
            ``training_fraction`` (the share of training ``|g|`` closest to this segment, or
            ``None``); and the evidence from the analysis: ``inputs`` (``g*``, starting at 0),
            ``alpha_eff``, ``kind``, ``jump``, ``jump_ratio``, ``fold`` (each ``(M+1,)``) and
            ``states_pc`` (the states projected on the two principal components of both arms,
            ``(M+1, 2)``), ``method`` (``continuation`` or ``iterated``).
    """

    detected: bool
    magnitudes: np.ndarray
    lr_vs_magnitude: dict[str, np.ndarray]
    slope_pos: float
    slope_neg: float
    slope: float
    point_kind: dict[str, list[str]]
    gradient_range: tuple[float, float] = (float("nan"), float("nan"))
    gradient_range_source: str = ""
    branches: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


def _loglog_slope(m: np.ndarray, a: np.ndarray) -> tuple[float, float]:
    a = np.abs(np.asarray(a, np.float64))
    ok = np.isfinite(a) & (a > 0)
    if ok.sum() < 2:
        return 0.0, 0.0
    x, y = np.log(m[ok]), np.log(a[ok])
    slope = float(np.polyfit(x, y, 1)[0])
    drop = float(1.0 - a[ok][-1] / a[ok][0])
    return slope, drop


def _segments(
    m: np.ndarray,
    a: np.ndarray,
    valid: np.ndarray,
    fold: np.ndarray,
    samples: np.ndarray | None,
    max_slope: float,
    min_drop: float,
) -> list[dict[str, Any]]:
    """Splits an arm at its folds; slope, drop and share of training gradients per segment."""
    M = m.shape[0]
    starts = [0] + [int(j) for j in np.nonzero(fold)[0] if j > 0]
    stops = starts[1:] + [M]
    out = []
    for k, (i, j) in enumerate(zip(starts, stops, strict=True)):
        aa = np.where(valid[i:j], a[i:j], np.nan)
        slope, drop = _loglog_slope(m[i:j], aa)
        ok = np.nonzero(np.isfinite(aa))[0]
        fraction = None
        if samples is not None and samples.size:
            # |g| closer (in log) to this segment than to its neighbours.
            lower = 0.0 if k == 0 else np.sqrt(m[i - 1] * m[i])
            upper = np.inf if j == M else np.sqrt(m[j - 1] * m[j])
            fraction = float(np.mean((samples >= lower) & (samples < upper)))
        out.append(
            {
                "start": i,
                "stop": j,
                "magnitude_range": [float(m[i]), float(m[j - 1])],
                "alpha_first": float(aa[ok[0]]) if ok.size else float("nan"),
                "alpha_last": float(aa[ok[-1]]) if ok.size else float("nan"),
                "slope": slope,
                "drop": drop,
                "falls": bool(ok.size >= 2 and slope <= max_slope and drop >= min_drop),
                "training_fraction": fraction,
            }
        )
    return out


def detect_adaptation(
    magnitudes: np.ndarray,
    lr_pos: np.ndarray,
    lr_neg: np.ndarray,
    *,
    point_kind: dict[str, list[str]] | None = None,
    folds: dict[str, np.ndarray] | None = None,
    evidence: dict[str, dict[str, Any]] | None = None,
    gradient_samples: Any = None,
    gradient_range: tuple[float, float] | None = None,
    gradient_range_source: str = "",
    max_slope: float = ADAPT_SLOPE,
    min_drop: float = ADAPT_DROP,
) -> Adaptation:
    """Adaptation from ``α_eff`` along each arm (see :class:`Adaptation` for the rule).

    Args:
        magnitudes: ``|g*|``, increasing, ``(M,)``.
        lr_pos: ``α_eff`` at ``+|g*|``, ``(M,)``.
        lr_neg: ``α_eff`` at ``-|g*|``, ``(M,)``.
        point_kind: per arm, the kind of each point (``failed`` points are left out).
        folds: per arm, ``(M,)`` bools: a fold between ``j-1`` and ``j``.
        evidence: per arm, extra arrays stored in ``branches`` (figures).
        gradient_samples: training gradients (each segment's share of them).
        gradient_range: the ``(lo, hi)`` the magnitudes span (default: their ends).
        gradient_range_source: where it came from.
        max_slope: see ``ADAPT_SLOPE``.
        min_drop: see ``ADAPT_DROP``.
    """
    m = np.asarray(magnitudes, np.float64)
    M = m.shape[0]
    samples = None
    if gradient_samples is not None:
        samples = np.abs(np.asarray(gradient_samples, np.float64).reshape(-1))
        samples = samples[np.isfinite(samples)]
    kinds = point_kind or {}
    branches, slopes, detected = {}, {}, False
    for name, lr in (("pos", lr_pos), ("neg", lr_neg)):
        a = np.asarray(lr, np.float64)
        valid = np.array([k != "failed" for k in kinds.get(name, ["fixed"] * M)], bool)
        fold = np.zeros(M, bool) if folds is None else np.asarray(folds[name], bool)
        slope, drop = _loglog_slope(m, np.where(valid, a, np.nan))
        arm = bool(valid.sum() >= 2 and slope <= max_slope and drop >= min_drop)
        detected |= arm
        slopes[name] = slope
        fold_idx = [int(j) for j in np.nonzero(fold)[0]]
        branches[name] = {
            "slope": slope,
            "drop": drop,
            "detected": arm,
            "fold_indices": fold_idx,
            "fold_magnitudes": [float(m[j]) for j in fold_idx],
            "segments": _segments(m, a, valid, fold, samples, max_slope, min_drop),
            **(evidence or {}).get(name, {}),
        }
    lo, hi = gradient_range if gradient_range is not None else (float(m[0]), float(m[-1]))
    return Adaptation(
        bool(detected),
        m,
        {"pos": np.asarray(lr_pos), "neg": np.asarray(lr_neg)},
        slopes["pos"],
        slopes["neg"],
        min(slopes["pos"], slopes["neg"]),
        kinds,
        (float(lo), float(hi)),
        gradient_range_source,
        branches,
    )


# ----------------------------------------------------------------------------- oscillation damping


@dataclasses.dataclass
class Damping(Result):
    """Oscillation damping: gradients that flip sign are damped more than persistent ones.

    Two steady gains per amplitude ``a`` (see :func:`probes.analysis.damping_gains`): the *DC
    gain* ``G₀(a)``, the update per unit gradient under a constant gradient ``±a``, and the
    *Nyquist gain* ``G_π(a)``, the amplitude of the alternating part of the update per unit
    gradient under ``+a, −a, +a, …``. Their ratio relative to its small-amplitude value,
    ``R(a) = (G_π/G₀)(a) / (G_π/G₀)_ref``, is 1 for every optimizer whose
    nonlinearity acts on the gradient's magnitude alone: SGD, momentum, clipping (the clipped
    magnitude is the same for both inputs), RMSProp and Adam (both gains fall as ``1/a``).
    It falls for an optimizer whose step size shrinks when the gradient keeps changing sign:
    AdaBelief (``√EMA((g − m)²)`` in the denominator: ``R = 1/(1 + a/κ)`` with
    ``κ = (1+β₁)ε/(2β₁)`` once its second moment has settled, e.g. ``β₂ ≤ 0.9`` within 200
    probe steps; a slower ``β₂`` still carries the constant input's start-up and reads higher)
    and :func:`lopt.chain.damp_oscillations` (``R = 1/(1 + a/κ)``).
    Such damping lets an optimizer use a learning rate far above the linear stability limit of
    stiff directions (whose gradients alternate) while keeping its full step along flat
    directions (whose gradients persist). The Nyquist gain must fall by itself too
    (``N(a) = G_π(a)/G_π,ref``): a ratio that falls because the DC gain *rises* (persistent
    gradients amplified, e.g. on a second branch of steady states past a fold) is not damping.
    The reference values are medians over the ``REFERENCE_POINTS`` (3) smallest amplitudes with
    resolved gains below ``gradient_range`` (the smallest resolved one where none lies below):
    at the very smallest amplitudes a learned optimizer's gains are differences of nearly equal
    float32 updates and can be off by several percent, enough to move ``max(R, N)`` across the
    threshold.

    Attributes:
        detected: ``max(R(a), N(a)) ≤ DAMP_RATIO`` somewhere in ``gradient_range``.
        kappa: the smallest amplitude where ``max(R, N)`` reaches ``DAMP_RATIO`` (log-linear
            interpolation over the whole grid up to the top of ``gradient_range``; ``inf`` if not
            detected). On the probe's grid, which starts two decades below the gradient range,
            ``R`` is normalised by its median over the three smallest amplitudes, that is at
            the second, ``a₁``, when ``R`` is monotone, so for ``R = 1/(1 + a/κ)`` the reported
            value is ``κ + 2a₁`` to first order.
        min_ratio: the smallest ``max(R, N)`` within ``gradient_range``.
        amplitudes: ``a``, increasing, ``(A,)``.
        dc_gain: ``G₀(a)`` (``−Δu/a``: positive for descent), ``(A,)``.
        nyquist_gain: ``G_π(a)``, ``(A,)``.
        ratio: ``R(a)``, ``(A,)`` (``nan`` where a gain is not positive and finite).
        gradient_range: the ``(lo, hi)`` of ``|g|`` where detection is decided.
        gradient_range_source: where that range came from.
        memory: how slowly the damping builds up, as the decay ``ρ`` of
            :func:`lopt.chain.damp_oscillations` whose damping factor
            ``1/(1 + (a/κ)√(1 − ρᵗ))`` best fits ``buildup`` (:func:`fit_damping_memory`);
            ``nan`` if not detected.
        buildup: ``D_t``, the Nyquist gain at step ``t`` under ``±a_m`` (``a_m = 3κ``, within the
            range) divided by the same at the smallest amplitude: how the damping grows
            from a fresh state (empty if not detected).
        buildup_amplitude: ``a_m``.
        buildup_fit: the fitted model's ``D_t`` (:func:`fit_damping_memory`).
        persistent_kept: the DC gain for a small persistent gradient ``±c`` (``c = a_m/10``)
            with ``±a_m`` alternating on top, over the DC gain for ``±c`` alone (after the
            probe's steps): how much of a persistent gradient goes through while the damping
            acts (``nan`` if not detected).
        sparing: ``persistent_kept`` over the Nyquist gain kept under the same ``±a_m``
            (``buildup``'s last 20 steps): 1 when the damping scales persistent and
            alternating gradients alike, as :func:`lopt.chain.damp_oscillations` does; above
            1 when it spares persistent ones; far below 1 for AdaBelief, whose gain for a
            persistent gradient alone is ``1/ε`` (``nan`` if not detected).
    """

    detected: bool
    kappa: float
    min_ratio: float
    amplitudes: np.ndarray
    dc_gain: np.ndarray
    nyquist_gain: np.ndarray
    ratio: np.ndarray
    gradient_range: tuple[float, float] = (float("nan"), float("nan"))
    gradient_range_source: str = ""
    memory: float = float("nan")
    buildup: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    buildup_amplitude: float = float("nan")
    buildup_fit: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    persistent_kept: float = float("nan")
    sparing: float = float("nan")


def damping_reference(amplitudes: Any, ok: Any, lo: float) -> np.ndarray:
    """:func:`detect_damping`'s reference amplitudes (indices): resolved (``ok``), below ``lo``.

    Up to ``REFERENCE_POINTS`` of the smallest; the smallest ``ok`` one alone if none is below.
    """
    a, ok = np.asarray(amplitudes, np.float64), np.asarray(ok, bool)
    below = int(np.sum(ok & (a < lo * (1 - 1e-6))))
    return np.flatnonzero(ok)[: min(max(below, 1), REFERENCE_POINTS)]


def detect_damping(
    amplitudes: np.ndarray,
    dc_gain: np.ndarray,
    nyquist_gain: np.ndarray,
    *,
    gradient_range: tuple[float, float] | None = None,
    gradient_range_source: str = "",
    max_ratio: float = DAMP_RATIO,
) -> Damping:
    """Oscillation damping from the two steady gains (see :class:`Damping` for the rule).

    Args:
        amplitudes: ``a``, increasing, ``(A,)``.
        dc_gain: ``G₀(a)``, ``(A,)``.
        nyquist_gain: ``G_π(a)``, ``(A,)``.
        gradient_range: ``(lo, hi)``; default the amplitudes' ends.
        gradient_range_source: where it came from.
        max_ratio: see ``DAMP_RATIO``.
    """
    a = np.asarray(amplitudes, np.float64).reshape(-1)
    g0 = np.asarray(dc_gain, np.float64).reshape(-1)
    gp = np.asarray(nyquist_gain, np.float64).reshape(-1)
    lo, hi = (float(a[0]), float(a[-1])) if gradient_range is None else map(float, gradient_range)
    ok = np.isfinite(g0) & np.isfinite(gp) & (g0 > 0) & (gp > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(ok, gp / np.where(ok, g0, 1.0), np.nan)
    ratio = np.full(a.shape, np.nan)
    both = np.full(a.shape, np.nan)
    if ok.any():
        # The median over a few small amplitudes: at one alone a learned optimizer's gains are
        # float32 differences of nearly equal updates, off by several percent either way.
        ref = damping_reference(a, ok, lo)
        ratio = q / np.median(q[ref])
        # Damping lowers the Nyquist gain itself, not only relative to the DC gain.
        both = np.maximum(ratio, np.where(ok, gp / np.median(gp[ref]), np.nan))
    inside = (a >= lo * (1 - 1e-6)) & (a <= hi * (1 + 1e-6)) & np.isfinite(both)
    kappa, min_ratio = float("inf"), float("nan")
    if inside.any():
        min_ratio = float(np.min(both[inside]))
    if min_ratio <= max_ratio:
        # The first crossing on the whole grid up to hi (it may lie below lo: damping that has
        # already set in at the smallest training gradients), log-linearly interpolated.
        upto = np.isfinite(both) & (a <= hi * (1 + 1e-6))
        x, r = np.log(a[upto]), both[upto]
        j = int(np.argmax(r <= max_ratio))
        if j == 0:
            kappa = float(np.exp(x[0]))
        else:
            t = (r[j - 1] - max_ratio) / (r[j - 1] - r[j])
            kappa = float(np.exp(x[j - 1] + t * (x[j] - x[j - 1])))
    return Damping(
        bool(np.isfinite(kappa)),
        kappa,
        min_ratio,
        a,
        g0,
        gp,
        ratio,
        (lo, hi),
        gradient_range_source,
    )
