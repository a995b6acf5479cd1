"""Exponential modes of an impulse response (Prony's method), for the momentum detector."""

from __future__ import annotations

import numpy as np


def fit_modes(
    response: np.ndarray, *, max_modes: int = 2, rel_floor: float = 1e-5, fit_tol: float = 1e-3
) -> tuple[np.ndarray, np.ndarray]:
    """Fits ``r_k = Σ_j c_j λ_j^k`` to an impulse response (Prony's method) and returns modes.

    A mode with ``λ = 0`` only touches lag 0, so exponentials are fitted to lags ``≥ 1`` and the
    ``λ = 0`` mode takes what is left at lag 0. One exponential is used when its relative
    residual is below ``fit_tol``, otherwise ``max_modes``. Lags where ``|r_k|`` has fallen below
    ``rel_floor`` of the peak are dropped (float32 noise).

    Args:
        response: ``r_k = ∂u_{t+k}/∂g_t``, ``(T,)``.
        max_modes: at most this many exponentials.
        rel_floor: see above.
        fit_tol: see above.

    Returns:
        ``(eigenvalues, alphas)`` with ``α_j = -c_j`` (the update has no built-in minus), so
        heavy-ball momentum ``-α Σ β^k g`` gives ``(β, α)``.
    """
    r = np.asarray(response, np.float64)
    peak = np.max(np.abs(r)) if r.size else 0.0
    if peak == 0 or not np.all(np.isfinite(r)):
        return np.zeros(1, complex), np.array([-r[0] if r.size else 0.0], complex)
    keep = np.nonzero(np.abs(r) >= rel_floor * peak)[0]
    s = r[1 : keep[-1] + 1]
    lams, cs = np.zeros(0, complex), np.zeros(0, complex)
    for M in range(1, max_modes + 1):
        if s.size < 2 * M + 1:
            break
        rows = s.size - M
        A = np.stack([s[M - 1 - j : M - 1 - j + rows] for j in range(M)], axis=1)
        p = np.linalg.lstsq(A, s[M : M + rows], rcond=None)[0]
        roots = np.roots(np.concatenate([[1.0], -p])).astype(complex)
        V = roots[None, :] ** np.arange(s.size)[:, None]
        c = np.linalg.lstsq(V, s.astype(complex), rcond=None)[0]
        err = np.linalg.norm(V @ c - s) / max(np.linalg.norm(s), 1e-300)
        # s_k = r_{k+1} = Σ c_j λ_j^{k+1}: the weights at lag 0 are c_j/λ_j.
        with np.errstate(divide="ignore", invalid="ignore"):
            c0 = np.where(np.abs(roots) > 0, c / roots, 0.0)
        lams, cs = roots, c0
        if err <= fit_tol:
            break
    zero_mode = r[0] - np.real(np.sum(cs))
    lams = np.concatenate([np.zeros(1, complex), lams])
    cs = np.concatenate([[zero_mode], cs])
    return lams, -cs
