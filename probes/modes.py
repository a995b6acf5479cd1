"""Fits to responses: exponential modes, the momentum mode and memories.

Prony's method and the dominant momentum mode of an impulse response, two real modes with
non-negative weights fitted to a response (what a chain of traces can carry), the memory of a
sign-like update, and the build-up memory of oscillation damping.
"""

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


def steady_gains(eigenvalues: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Each mode's part of the steady response, ``G_i = Re(α_i/(1 - λ_i))``.

    The two members of a conjugate pair each carry half of the pair's ``2 Re``. A mode that
    does not decay (``|λ| ≥ 1``) gets ``nan``; the ``λ = 0`` mode's gain is its ``α``.
    """
    lam = np.asarray(eigenvalues, np.complex128).reshape(-1)
    al = np.asarray(alphas, np.complex128).reshape(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.real(al / (1.0 - lam))
    return np.where((np.abs(lam) < 1.0) & np.isfinite(g), g, np.nan)


def dominant_mode(eigenvalues: np.ndarray, alphas: np.ndarray) -> tuple[int, float]:
    """The momentum candidate among modes and its share of the positive steady response.

    Candidates are the decaying modes that do not alternate (``Re λ > 0``, ``|λ| < 1``; a
    negative ``λ`` flips sign every step, which no momentum does) and that push against
    the gradient, ``G_i > 0`` (:func:`steady_gains`; a conjugate pair counts as one); a mode
    with ``G_i < 0`` (Adam's ``ν`` mode, the second pole of two cascaded EMAs) corrects the
    others and is no candidate. The dominant one has the largest ``G_i``; its share is
    ``G_i / Σ_{G_j > 0} G_j`` over all modes, the instantaneous ``λ = 0`` term included
    (Nesterov: ``β/(1-β)`` against ``1``).

    Returns:
        ``(index, share)``; ``index = -1`` (and share 0) when there is no candidate.
    """
    lam = np.asarray(eigenvalues, np.complex128).reshape(-1)
    g = steady_gains(lam, alphas)
    positive = np.where(np.isfinite(g) & (g > 0), g, 0.0)
    cand = np.where((lam.real > 0) & (positive > 0), positive, 0.0)
    total = float(np.sum(positive))
    if not np.any(cand > 0) or total <= 0:
        return -1, 0.0
    i = int(np.argmax(cand))
    pair = 2.0 if abs(lam[i].imag) > 1e-6 * max(1.0, abs(lam[i])) else 1.0
    return i, float(pair * cand[i] / total)


def memory_from_flips(amplitudes: np.ndarray, flipped: np.ndarray) -> float:
    """The memory ``β`` of a saturating (sign-like) update from how long an impulse flips it.

    On a background ``b``, an opposite impulse ``-X b`` flips the sign of an update
    ``sign(m)`` whose memory is ``m' = β m + (1-β) g`` for ``K(X) ≈ ln((1-β)(X+1))/(-ln β)``
    steps (signum; Lion's EMA the same with ``b2``): ``K`` grows by ``1/(-ln β)`` per unit of
    ``ln X``. ``β = exp(-1/s)`` with ``s`` the least-squares slope of ``K`` against ``ln X`` over
    the amplitudes that flip more than the impulse step itself; a memoryless sign (``K = 1``)
    gives 0.

    Args:
        amplitudes: ``X``, increasing, ``(A,)``.
        flipped: ``K(X)``, steps whose sign the impulse flipped, ``(A,)``.
    """
    x = np.log(np.asarray(amplitudes, np.float64))
    k = np.asarray(flipped, np.float64)
    ok = k > 1
    if ok.sum() < 2:
        return 0.0
    s = float(np.polyfit(x[ok], k[ok], 1)[0])
    return float(np.exp(-1.0 / s)) if s > 0 else 0.0


#: Candidate memories for :func:`fit_damping_memory`: ``1 − ρ`` log-spaced from 1 to 10⁻³.
MEMORY_GRID = 1.0 - np.logspace(0.0, -3.0, 601)


def fit_damping_memory(
    buildup: np.ndarray,
    amplitude: float,
    kappa: float,
    reference: np.ndarray | None = None,
    *,
    return_fit: bool = False,
) -> float | tuple[float, np.ndarray]:
    """The ``ρ`` whose damping, seen through the optimizer's own filter, best fits ``D_t``.

    ``D_t = N_t(a)/N_t(a₀)`` is the Nyquist gain at step ``t`` of an input alternating ``±a``,
    relative to the same at a tiny amplitude ``a₀`` (no damping), both from a fresh state. The
    model is :func:`lopt.chain.damp_oscillations` in front of a linear filter: the input is
    scaled by ``f_t = 1/(1 + (a/κ')√(1 − ρᵗ))`` (``e_t = a²(1 − ρᵗ)`` after ``t`` changes of
    ``±a``) and then filtered. The filter's alternating-input weights are read off the reference
    itself, ``w_k = N_k(a₀) − N_{k−1}(a₀)``, so ``D_t = Σ_k w_k f_{t−k} / N_t(a₀)``; without a
    reference ``D_t = f_t``. ``ρ`` and ``κ'`` are fitted together (squared log errors over a grid
    of ``ρ`` and of ``κ'`` within a factor ``10^±0.1``, −21% … +26%, of ``κ``): a slow memory has
    not settled within the probe's steps, which biases the steady ``κ`` and, through it, a fit of
    ``ρ`` alone. ``κ'`` only serves the fit; the reported ``κ`` stays the steady one. The
    reference amplitude must be well below ``κ`` (the probe uses the bottom of its grid).

    Args:
        buildup: ``D_t``, ``(T,)``.
        amplitude: ``a``.
        kappa: the steady half-point ``κ``.
        reference: ``N_t(a₀)``, ``(T,)`` (optional).
        return_fit: also return the fitted model's ``D_t``.

    Returns:
        ``ρ`` from :data:`MEMORY_GRID` (``nan`` if fewer than two usable steps), and with
        ``return_fit`` the fitted ``D_t`` (``(T,)``, ``nan`` where it cannot be computed).
    """
    d = np.asarray(buildup, np.float64).reshape(-1)
    T = d.size
    t = np.arange(T, dtype=np.float64)
    none = (float("nan"), np.full(T, np.nan)) if return_fit else float("nan")
    if not (np.isfinite(kappa) and kappa > 0):
        return none
    kap = kappa * 10.0 ** np.linspace(-0.1, 0.1, 21)
    root = np.sqrt(1.0 - MEMORY_GRID[:, None] ** t[None])  # (R, T)
    f = 1.0 / (1.0 + (amplitude / kap)[:, None, None] * root[None])  # (K, R, T)
    f = f.reshape(-1, T)
    if reference is not None:
        n0 = np.asarray(reference, np.float64).reshape(-1)[:T]
        w = np.diff(n0, prepend=0.0)
        # Σ_k w_k f_{t-k} for every candidate: f times the lower-triangular Toeplitz matrix of w.
        lag = t[:, None] - t[None, :]
        toeplitz = np.where(lag >= 0, w[np.clip(lag, 0, T - 1).astype(int)], 0.0)  # [t, s]
        with np.errstate(divide="ignore", invalid="ignore"):
            model = (f @ toeplitz.T) / n0[None]
    else:
        model = f
    ok = np.isfinite(d) & (d > 0) & (t >= 1) & np.all(np.isfinite(model) & (model > 0), axis=0)
    if ok.sum() < 2:
        return none
    err = np.sum((np.log(model[:, ok]) - np.log(d[ok])[None]) ** 2, axis=1)
    best = int(np.argmin(err))
    rho = float(MEMORY_GRID[best % MEMORY_GRID.size])
    return (rho, model[best]) if return_fit else rho


#: A fitted eigenvalue whose imaginary part is at most this is real.
IMAG_TOL = 1e-6
#: Decays :func:`real_modes` chooses from: 0 (a direct term) and timescales ``1/(1 − λ)`` from
#: 1.05 to 1000 steps, evenly in their logarithm.
REAL_MODE_GRID = np.concatenate([[0.0], 1.0 - np.logspace(-0.02, -3.0, 150)])


def real_modes(r: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """At most two real modes with non-negative weights fitted to a response: ``r_k ≈ Σ w_i λ_i^k``.

    Decays on :data:`REAL_MODE_GRID`, by least squares over every lag: every single grid decay
    (``w = p/G``) and every pair (the closed-form 2×2 normal equations), keeping the candidates
    whose weights are non-negative. A ringing or alternating response gets the real modes that
    follow it best, which a chain of traces can carry; the lag-0 and steady gains are the fit's.

    Args:
        r: the response, descent-signed (``r_0 > 0``), ``(T,)`` with ``T ≥ 3``.

    Returns:
        ``(λ (2,), w (2,))`` (a single mode has a second of weight 0), or ``None`` if no
        candidate has non-negative weights.
    """
    r = np.asarray(r, np.float64)
    grid = REAL_MODE_GRID
    powers = grid[:, None] ** np.arange(r.size)[None, :]  # [grid, lags]
    gram, proj = powers @ powers.T, powers @ r
    i, j = np.triu_indices(grid.size, 1)
    det = gram[i, i] * gram[j, j] - gram[i, j] ** 2
    ok = det > 1e-12 * gram[i, i] * gram[j, j]
    det = np.where(ok, det, 1.0)
    wi = (gram[j, j] * proj[i] - gram[i, j] * proj[j]) / det
    wj = (gram[i, i] * proj[j] - gram[i, j] * proj[i]) / det
    ok &= (wi >= 0) & (wj >= 0)
    # residual r·r − 2 w·p + wᵀGw (r·r is the same for every candidate)
    sse = -2 * (wi * proj[i] + wj * proj[j])
    sse += wi**2 * gram[i, i] + 2 * wi * wj * gram[i, j] + wj**2 * gram[j, j]
    sse = np.where(ok, sse, np.inf)
    one = np.diag(gram)
    w1 = np.where(one > 0, proj / np.where(one > 0, one, 1.0), -1.0)
    sse1 = np.where(w1 >= 0, -(w1**2) * one, np.inf)  # single decays: −p²/G
    if not (np.isfinite(sse).any() or np.isfinite(sse1).any()):
        return None
    k, k1 = int(np.argmin(sse)), int(np.argmin(sse1))
    if sse1[k1] <= sse[k]:
        return np.array([grid[k1], grid[k1]]), np.array([w1[k1], 0.0])
    return np.array([grid[i[k]], grid[j[k]]]), np.array([wi[k], wj[k]])
