"""Scoring an analysis against a battery case's expected answer (:mod:`probes.battery`).

:func:`check` judges each mechanism in turn: detection first (a false positive or false
negative), then the numbers (a value error, with the measured and expected values). The
expectations are :mod:`probes.battery`'s ``Expect*`` records (a case's ``expected_for``); this
module reads their fields and imports nothing from the battery.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

#: A verdict's outcome: the first two are right, the last three wrong.
OUTCOMES = ("true positive", "true negative", "false positive", "false negative", "value error")
#: Relative tolerance on a bias's expected stall gradient ``g₀``.
BIAS_RTOL = 0.01


class Verdict(NamedTuple):
    """One mechanism's outcome: one of :data:`OUTCOMES`, and measured vs expected numbers."""

    mechanism: str
    outcome: str
    detail: str = ""
    measured: Any = None
    expected: Any = None

    @property
    def ok(self) -> bool:
        """True positive or true negative."""
        return self.outcome in ("true positive", "true negative")


def _detection(mechanism: str, expected: bool, measured: bool) -> Verdict | None:
    """A verdict when detection is wrong or nothing more is to be checked, else ``None``."""
    if expected and not measured:
        return Verdict(mechanism, "false negative", "not detected", False, True)
    if measured and not expected:
        return Verdict(mechanism, "false positive", "detected", True, False)
    return None


def _right(mechanism: str, detected: bool) -> Verdict:
    return Verdict(mechanism, "true positive" if detected else "true negative")


def _close(measured: float, expected: float, rtol: float) -> bool:
    return bool(np.isfinite(measured) and abs(measured - expected) <= rtol * abs(expected))


def _momentum(e: Any, m: Any) -> Verdict:
    v = _detection("momentum", e.detected, bool(m.detected))
    if v is not None:
        return v._replace(detail=f"{v.detail} (β={m.beta:.4g}, α={m.alpha:.4g})")
    if e.beta is not None and not abs(float(m.beta) - e.beta) <= e.beta_tol:
        return Verdict("momentum", "value error", "beta", float(m.beta), e.beta)
    if e.alpha is not None and not _close(float(m.alpha), e.alpha, e.alpha_rtol):
        return Verdict("momentum", "value error", "alpha", float(m.alpha), e.alpha)
    return _right("momentum", e.detected)


def _clipping(e: Any, c: Any) -> Verdict:
    v = _detection("clipping", e.detected, bool(c.detected))
    if v is not None:
        return v._replace(detail=f"{v.detail} (threshold={c.threshold:.4g}, slope0={c.slope0:.4g})")
    if e.detected and e.threshold is not None:
        g = np.abs(np.asarray(c.gradients, np.float64))
        lo = float(np.min(g[g > 0])) if np.any(g > 0) else 0.0
        t = float(c.threshold)
        ok = t <= lo * (1 + 1e-6) if e.threshold < lo else _close(t, e.threshold, e.rtol)
        if not ok:
            return Verdict("clipping", "value error", "threshold", t, e.threshold)
    return _right("clipping", e.detected)


def _schedule(e: Any, s: Any) -> Verdict:
    v = _detection("schedule", e.shape != "constant", bool(s.detected))
    if v is not None:
        return v._replace(detail=f"{v.detail} (shape={s.shape})")
    if e.shape is not None and s.shape != e.shape:
        return Verdict("schedule", "value error", "shape", s.shape, e.shape)
    if e.lr is not None:
        a = np.asarray(s.effective_lr, np.float64)
        want = e.lr(np.arange(a.size))
        tol = e.rtol * np.abs(want) + 1e-6 * np.max(np.abs(want))
        bad = ~(np.abs(a - want) <= tol)
        if bad.any():
            t = int(np.argmax(bad))
            return Verdict("schedule", "value error", f"effective lr at t={t}", a[t], want[t])
    return _right("schedule", e.shape != "constant")


def _adaptation(e: Any, a: Any) -> Verdict:
    v = _detection("adaptation", e.detected, bool(a.detected))
    if v is not None:
        return v._replace(detail=f"{v.detail} (slope={a.slope:.4g})")
    if e.detected and e.slope is not None and not abs(float(a.slope) - e.slope) <= e.slope_tol:
        return Verdict("adaptation", "value error", "slope", float(a.slope), e.slope)
    return _right("adaptation", e.detected)


def _bias(expected: float, rtol: float, b: Any) -> Verdict:
    want = expected != 0
    if b is None:  # an analysis written before the bias was read
        return Verdict("bias", "false negative", "not read") if want else _right("bias", False)
    v = _detection("bias", want, bool(b.detected))
    if v is not None:
        u0, g0 = float(b.update_at_zero), float(b.stall_gradient)
        return v._replace(detail=f"{v.detail} (update at g = 0: {u0:.3g}, g0 = {g0:.4g})")
    if want and not _close(float(b.stall_gradient), expected, rtol):
        return Verdict("bias", "value error", "stall gradient", float(b.stall_gradient), expected)
    return _right("bias", want)


def _agreement(e: Any, a: Any) -> Verdict | None:
    """The sign-agreement verdict, ``None`` where it is unchecked."""
    if e is None or e.detected is None:
        return None
    if a is None:  # an analysis written before agreement was read
        return Verdict("agreement", "false negative", "not read") if e.detected else None
    v = _detection("agreement", e.detected, bool(a.detected))
    if v is not None:
        up, down = float(a.agreeing), float(a.disagreeing)
        return v._replace(detail=f"{v.detail} (agreeing ×{up:.3g}, flipping ×{down:.3g})")
    p = float(a.switch_rate)
    if e.detected and e.switch is not None and not abs(p - e.switch) <= e.switch_tol:
        return Verdict("agreement", "value error", "switch rate", p, e.switch)
    return _right("agreement", e.detected)


def check(case: Any, analysis: Any, bias_rtol: float = BIAS_RTOL) -> list[Verdict]:
    """Scores an analysis of ``case.optax()`` (source ``optax``) or ``case.cell()`` (``cell``).

    Returns verdicts for momentum, clipping, schedule, adaptation, (unless expected ``None``)
    damping (read in steady state or from the first steps), bias (the stall gradient
    ``g₀`` within ``bias_rtol``) and (unless expected ``None``) sign agreement (the switch rate
    within its tolerance). Detection is judged first (false
    positive / false negative), then the numbers (value error, with the measured and expected
    values).
    """
    e = case.expected_for(analysis.source)
    out = [
        _momentum(e.momentum, analysis.momentum),
        _clipping(e.clipping, analysis.clipping),
        _schedule(e.schedule, analysis.schedule),
        _adaptation(e.adaptation, analysis.adaptation),
    ]
    if e.damping is not None:  # in steady state or, where that finds none, in the first steps
        d, t = analysis.damping, getattr(analysis, "damping_transient", None)
        measured = bool(d is not None and d.detected) or bool(t is not None and t.detected)
        v = _detection("damping", e.damping, measured)
        out.append(v or _right("damping", e.damping))
    out.append(_bias(float(getattr(e, "bias", 0.0)), bias_rtol, getattr(analysis, "bias", None)))
    agreement = _agreement(getattr(e, "agreement", None), getattr(analysis, "agreement", None))
    if agreement is not None:
        out.append(agreement)
    return out
