"""How well the fitted modes follow the measured impulse response, for the momentum section.

The momentum detector fits at most a few exponential modes ``α_i λ_i^k`` to the impulse
response ``r_k`` (the update at step ``t + k`` per unit gradient at step ``t``) and reports the
dominant mode's share of the *fitted* steady response ``Σ_i G_i`` (``G = Re α/(1−λ)``,
:func:`probes.modes.dominant_mode`). Where the fit stops following the measured curve, that
share is not the share of the *measured* steady response ``−Σ_k r_k``; :func:`impulse_fit`
gives both, the lag up to which the fit holds and the measured tail's decay per step.

A sign-like update (``point_kind == "sign flips"``) has no small-signal response: its analysis
stores, in place of ``r_k``, how many steps an opposite impulse flips the update's sign per
impulse amplitude. :func:`impulse_fit` judges no fit there and reports no steady response.

Shapes: ``K`` lags, ``M`` fitted modes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from probes.modes import steady_gains
from probes.values import complex_array, finite, floats

#: The fit "follows" the measured response while ``|fit − measured| ≤ FIT_TOLERANCE·|measured|``.
FIT_TOLERANCE = 0.1
#: Lags where ``|measured|`` is below this fraction of its peak are not judged (noise, zeros).
FIT_FLOOR = 0.01
#: The tail decay is read from the last this fraction of the lags.
TAIL_FRACTION = 0.25


def _vec(x: Any) -> np.ndarray:
    """A float vector from a JSON list or an array (``None`` entries become ``nan``)."""
    return np.asarray(x, float).reshape(-1) if isinstance(x, np.ndarray) else floats(x)


def fit_curve(fit_alphas: Any, fit_eigenvalues: Any, num_lags: int) -> np.ndarray | None:
    """The fitted impulse response ``−Re Σ_i α_i λ_i^k`` for ``k < num_lags`` (``(K,)``).

    Lag 0 is ``−Re Σ_i α_i`` (``0^0 = 1``: the instantaneous ``λ = 0`` term counts there only).
    ``None`` without fitted modes.
    """
    fa, fe = complex_array(fit_alphas), complex_array(fit_eigenvalues)
    if not fe.size or fa.size != fe.size or num_lags <= 0:
        return None
    k = np.arange(num_lags)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        fitted = np.real(-(fa[None, :] * fe[None, :] ** k[:, None]).sum(1))
    return fitted


def fit_agreement_lag(
    measured: Any,
    fitted: Any,
    tolerance: float = FIT_TOLERANCE,
    floor: float = FIT_FLOOR,
) -> int | None:
    """The first lag where the fit leaves the measured curve, or ``None`` if it never does.

    The first ``k`` with ``|fitted_k − measured_k| > tolerance·|measured_k|`` among the lags
    where ``|measured_k| > floor·max|measured|``; the fit holds on every judged lag before it.

    Args:
        measured: ``r_k``, ``(K,)``.
        fitted: the fit at the same lags, ``(K,)``.
        tolerance: relative error allowed.
        floor: lags below this fraction of the peak ``|r|`` are not judged.
    """
    r, f = _vec(measured), _vec(fitted)
    n = min(r.size, f.size)
    if n == 0 or not np.isfinite(r[:n]).any():
        return None
    r, f = r[:n], f[:n]
    peak = float(np.nanmax(np.abs(r)))
    judged = np.isfinite(r) & (np.abs(r) > floor * peak)
    bad = judged & ~(np.abs(f - r) <= tolerance * np.abs(r))
    idx = np.nonzero(bad)[0]
    return int(idx[0]) if idx.size else None


def tail_decay(measured: Any, fraction: float = TAIL_FRACTION) -> float | None:
    """The measured response's decay per step at long lags, ``exp`` of the slope of ``ln|r_k|``.

    Least squares over the last ``fraction`` of the lags (at least 3), using the lags where
    ``r_k`` is nonzero, finite and has the sign of the tail's last value; ``None`` when fewer
    than 3 remain.
    """
    r = _vec(measured)
    if r.size < 3:
        return None
    start = min(int(r.size * (1.0 - fraction)), r.size - 3)
    k = np.arange(start, r.size)
    tail = r[start:]
    ok = np.isfinite(tail) & (tail != 0)
    if not ok.any():
        return None
    sign = np.sign(tail[ok][-1])
    ok &= np.sign(tail) == sign
    if ok.sum() < 3:
        return None
    slope = float(np.polyfit(k[ok], np.log(np.abs(tail[ok])), 1)[0])
    return float(np.exp(slope))


#: ``momentum.point_kind`` of a sign-like update, read from sign flips, not an impulse response.
SIGN_FLIPS = "sign flips"


def is_sign_like(m: Mapping[str, Any]) -> bool:
    """Whether a ``momentum`` block was read from sign flips (its response holds flip counts)."""
    return (m or {}).get("point_kind") == SIGN_FLIPS


def impulse_fit(m: Mapping[str, Any], meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The fit against the measured impulse response, from an analysis's ``momentum`` block.

    Returns a dict (values ``None`` where the analysis lacks them):

    * ``measured_steady``: ``−Σ_k r_k``, the measured total response to a unit gradient over
      the ``K`` lags recorded (the steady gain of a persistent gradient, truncated at ``K``).
    * ``fitted_steady``: ``Σ G_i`` over the fitted modes with ``G_i > 0`` (the denominator of
      the detector's share).
    * ``dominant_gain``: the dominant mode's ``G`` (``share × fitted_steady``).
    * ``share_fitted``: the detector's share, ``G_dom / fitted_steady``.
    * ``share_measured``: ``G_dom / measured_steady``.
    * ``fit_lag``: :func:`fit_agreement_lag` (``None``: the fit holds on every lag recorded).
    * ``num_lags``: ``K``.
    * ``tail_decay``: :func:`tail_decay` of the measured response.
    * ``slowest_fitted``: the largest ``|λ_i|`` among the fitted modes.
    * ``tail_differs``: the tail decays at a rate more than 0.005 per step from
      ``slowest_fitted`` (``|ρ − λ_max| > 0.005``).
    * ``sign_like``: the block was read from sign flips (:func:`is_sign_like`); every value
      above is then ``None`` (``num_lags`` 0, ``fit_judged`` false): flip counts are not a
      response to sum or fit.
    """
    meta = meta or {}
    if is_sign_like(m):
        keys = ("measured_steady", "fitted_steady", "dominant_gain", "share_fitted")
        keys += ("share_measured", "fit_lag", "tail_decay", "slowest_fitted")
        out = dict.fromkeys(keys)
        return {**out, "num_lags": 0, "fit_judged": False, "tail_differs": False, "sign_like": True}
    r = floats(m.get("impulse_response") or meta.get("impulse_response") or [])
    fa, fe = complex_array(m.get("fit_alphas")), complex_array(m.get("fit_eigenvalues"))
    fitted = fit_curve(fa, fe, r.size)
    out: dict[str, Any] = {"num_lags": int(r.size), "sign_like": False}
    measured_steady = float(-np.nansum(r)) if r.size else None
    g = steady_gains(fe, fa) if fe.size and fa.size == fe.size else np.zeros(0)
    pos = g[np.isfinite(g) & (g > 0)]
    fitted_steady = float(pos.sum()) if pos.size else None
    share = finite(m.get("share"))
    dom = share * fitted_steady if share is not None and fitted_steady is not None else None
    out["measured_steady"] = measured_steady
    out["fitted_steady"] = fitted_steady
    out["dominant_gain"] = dom
    out["share_fitted"] = share
    out["share_measured"] = (
        dom / measured_steady if dom is not None and measured_steady not in (None, 0.0) else None
    )
    out["fit_lag"] = fit_agreement_lag(r, fitted) if fitted is not None else None
    out["fit_judged"] = fitted is not None
    rho = tail_decay(r)
    out["tail_decay"] = rho
    mags = np.abs(fe[np.isfinite(fe)]) if fe.size else np.zeros(0)
    slow = float(mags.max()) if mags.size else None
    out["slowest_fitted"] = slow
    out["tail_differs"] = bool(rho is not None and slow is not None and abs(rho - slow) > 0.005)
    return out


def impulse_caption(fit: Mapping[str, Any]) -> str:
    """The sentences the impulse-response figure adds about the fit's range and the tail."""
    if not fit.get("fit_judged"):
        return ""
    lag, n = fit.get("fit_lag"), fit.get("num_lags")
    tol = f"{FIT_TOLERANCE:.0%}"
    if lag is None:
        text = f" The fit stays within {tol} of the measured curve at every lag up to {n}."
    elif lag == 0:
        text = (
            f" The fit is more than {tol} off the measured curve from lag 0 on (lags below "
            f"{FIT_FLOOR:.0%} of the peak not judged)."
        )
    else:
        text = (
            f" The fit stays within {tol} of the measured curve up to lag {lag - 1} "
            f"(first off at lag {lag}; lags below {FIT_FLOOR:.0%} of the peak not judged)."
        )
    if fit.get("tail_differs"):
        text += (
            f" At long lags the measured response decays by {fit['tail_decay']:.4g} per step, "
            f"not by the slowest fitted mode's {fit['slowest_fitted']:.4g}."
        )
    return text
