"""The optimizer's memory along its own training trajectories, beside the convergence point's.

The momentum probe linearises an optimizer at its convergence point (zero gradient, settled
state) and reads its impulse response there (:class:`probes.detectors.Momentum`). A learned
optimizer may carry gradients for longer, or shorter, in the states it passes through while it
trains; a linear momentum read at one state cannot say so. This reading measures it on the
trajectories the faithfulness score already records (:func:`probes.replay.record`): the
optimizer is replayed open loop on the gradients it met, and the response of its later updates
to its gradient at step ``s`` is the forward-mode derivative ``R_s[k] = ∂u_{s+k}/∂g_s``
(exact per coordinate for a coordinate-wise optimizer, as the RNN cells are; an optimizer that
mixes coordinates, such as the MLP optimizer's per-tensor features, behaves differently on the
kept coordinates alone, and is not read). Problems whose recorded gradients or updates are not
finite are left out.

Per start ``s`` (a grid from 0 to ``T − K``), averaged over problems and coordinates:

- **gain**: ``−R̄_s[0]``, the step per unit gradient at lag 0 (positive for descent);
- **memory**: ``Σ_{k<K} R̄_s[k] / R̄_s[0]``, in steps: the steady response over the lag-0 one,
  ``(1 − λᴷ)/(1 − λ)`` for a trace with decay ``λ`` and 1 without momentum.

A start's memory is left undefined (``nan``) where the lag-0 term is below ``LAG0_SHARE`` of
the response's largest term (RMSProp's and Adam's first update is sign-like: its derivative is
0). Where the analysis detected a schedule, its curve ``c(t)`` (``schedule.effective_lr``, held
at its last value past its end) is divided out first, ``R_s[k]·c(s)/c(s + k)``: a learning rate
that moves within the window is the schedule's, not a memory (a start whose window holds a
zero of the curve, as under a warm-up from 0, is left out). The same two numbers are read off
the convergence point's impulse response (truncated to ``K``), so the two can be compared
directly. The memory is **state-dependent** when some start's memory differs from the
convergence point's by more than a factor ``1 + TOLERANCE`` either way. Where adaptation was
detected nothing is compared: a normaliser's response to the gradient's size is part of the
response along training (it pulls RMSProp's below 1), and the normaliser in the chain carries
it. Nothing here is fitted, and no loss is used.

Shapes: P problems, T steps, C coordinates, S starts, K lags.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from probes.replay import replay

#: Lags of each response (``K``; fewer when the horizon is short).
LAGS = 40
#: Problems of the recorded trajectories used (the first ones).
PROBLEMS = 8
#: Relative difference in memory that counts as state-dependent.
TOLERANCE = 0.25
#: Least lag-0 term, relative to the response's largest, for which a memory is defined.
LAG0_SHARE = 0.05
#: Steps a schedule curve may fall short of the last window (held at its last value).
PAD = 2


def starts(num_steps: int, lags: int) -> list[int]:
    """0 and ``T − K`` halved repeatedly (distinct, increasing): ``[0, 2, 5, …, 80, 161]``."""
    last = num_steps - lags
    if last < 0:
        return []
    out = {0, last}
    s = last
    while s >= 5:
        s //= 2
        out.add(s)
    return sorted(out)


def _memory(response: np.ndarray) -> tuple[float, float]:
    """``(gain, memory)`` of a mean response ``R[k]`` (memory ``nan``: lag 0 too small)."""
    r = np.asarray(response, np.float64)
    if not (r.size and np.all(np.isfinite(r))):
        return float("nan"), float("nan")
    if not abs(r[0]) > LAG0_SHARE * np.max(np.abs(r)):
        return float(-r[0]), float("nan")
    return float(-r[0]), float(r.sum() / r[0])


def _schedule_divided(R: np.ndarray, grid: list[int], curve: Any) -> bool:
    """Divides a detected schedule's curve out of ``R`` in place; whether it could.

    The curve's finite prefix is used; it may end up to ``PAD`` steps before the last window
    does (a probe over ``T − 1`` steps), and is held at its last value there. A start whose
    window holds a value that is not positive (a warm-up from 0) is set to ``nan``; the
    division counts as done when some start is left.
    """
    c = np.asarray([np.nan if x is None else x for x in (curve or [])], np.float64)
    bad = np.flatnonzero(~np.isfinite(c))
    c = c[: bad[0]] if bad.size else c
    K = R.shape[1]
    if not grid or c.size + PAD < grid[-1] + K:
        return False
    c = np.concatenate([c, np.full(max(grid[-1] + K - c.size, 0), c[-1])])
    left = False
    for i, s in enumerate(grid):
        window = c[s : s + K]
        if np.all(window > 0):
            R[i] *= c[s] / window
            left = True
        else:
            R[i] = np.nan
    return left


def memory_along(
    tx: optax.GradientTransformation,
    seqs: Mapping[str, jax.Array],
    analysis: Mapping[str, Any] | None = None,
    *,
    lags: int = LAGS,
    problems: int = PROBLEMS,
    coordinatewise: bool = True,
) -> dict[str, Any] | None:
    """Reads the gain and the memory along recorded trajectories and at the convergence point.

    Args:
        tx: the optimizer that made ``seqs``.
        seqs: ``{"g", "p", "f", ...}`` recorded by :func:`probes.replay.record`
            (``[P, T, C]``; ``f`` ``[P, T]``).
        analysis: the probes' result for ``tx`` (``analysis.json``): the convergence point's
            impulse response (``momentum.impulse_response``, or the black box's
            ``meta.impulse_response``), the schedule and the adaptation verdict. ``None``:
            nothing is divided out or compared.
        lags: ``K``.
        problems: problems of ``seqs`` used (the first ones with finite gradients and
            updates).
        coordinatewise: whether ``tx`` treats every coordinate alone; if not, nothing is read.

    Returns:
        ``{"starts", "lags", "gain", "memory", "response", "schedule_divided",
        "convergence_gain", "convergence_memory", "state_dependent", "not_compared"}``
        (``response``: ``[S, K]`` mean responses, the schedule divided out; ``state_dependent``
        ``None``, and ``not_compared`` saying why, without a comparison; ``tolerance``), or
        ``None`` when the horizon is shorter than ``K``, ``tx`` is not coordinate-wise or no
        problem is finite.
    """
    T = int(seqs["g"].shape[1])
    grid = starts(T, lags)
    if not grid or not coordinatewise:
        return None
    finite = np.isfinite(np.asarray(seqs["g"])).all((1, 2))
    if "u" in seqs:
        finite &= np.isfinite(np.asarray(seqs["u"])).all((1, 2))
    keep = np.flatnonzero(finite)[:problems]
    if not keep.size:
        return None
    seqs = {k: jnp.asarray(v)[keep] for k, v in seqs.items() if k in ("g", "p", "f")}

    def response(seq: Mapping[str, jax.Array], s: jax.Array) -> jax.Array:
        def updates(g: jax.Array) -> jax.Array:
            return replay(tx, {**seq, "g": g})

        tangent = jnp.zeros_like(seq["g"]).at[s].set(1.0)
        _, du = jax.jvp(updates, (seq["g"],), (tangent,))
        return jax.lax.dynamic_slice_in_dim(du, s, lags, axis=0)  # [K, C]

    def mean_response(s: jax.Array) -> jax.Array:
        r = jax.vmap(lambda seq: response(seq, s))(seqs)  # [P, K, C]
        return jnp.mean(r, axis=(0, 2))

    R = np.asarray(jax.jit(jax.vmap(mean_response))(jnp.asarray(grid)), np.float64)  # [S, K]
    analysis = analysis or {}
    sched = analysis.get("schedule") or {}
    scheduled = bool(sched.get("detected"))
    divided = scheduled and _schedule_divided(R, grid, sched.get("effective_lr"))
    gain, memory = zip(*(_memory(r) for r in R), strict=True)
    out: dict[str, Any] = {
        "starts": grid,
        "lags": lags,
        "gain": list(gain),
        "memory": list(memory),
        "response": R.tolist(),
        "schedule_divided": divided,
        "convergence_gain": None,
        "convergence_memory": None,
        "state_dependent": None,
        "not_compared": None,
        "tolerance": TOLERANCE,
        "problems": int(keep.size),
    }
    mom = analysis.get("momentum") or {}
    # a sign-like optimizer's momentum keeps flip counts there, not a response
    ref = None if mom.get("point_kind") == "sign flips" else mom.get("impulse_response")
    ref = ref or (analysis.get("meta") or {}).get("impulse_response")
    ref = np.asarray(ref if ref is not None else [], np.float64)
    g0, m0 = _memory(ref[:lags]) if ref.size >= lags else (float("nan"), float("nan"))
    mem = np.asarray(memory)
    mem = mem[np.isfinite(mem)]
    if (analysis.get("adaptation") or {}).get("detected"):
        out["not_compared"] = (
            "adaptation detected: the response along training includes the step's dependence "
            "on the gradient's size"
        )
    elif scheduled and not divided:
        out["not_compared"] = "a schedule was detected but its curve could not be divided out"
    elif not (np.isfinite(m0) and m0 > 0):
        out["not_compared"] = "no convergence-point impulse response to compare with"
    elif not mem.size:
        out["not_compared"] = "no start with a lag-0 response to compare"
    else:
        out.update(
            convergence_gain=g0,
            convergence_memory=m0,
            state_dependent=bool(
                mem.max() > (1 + TOLERANCE) * m0 or mem.min() < m0 / (1 + TOLERANCE)
            ),
        )
    return out


def chain_gain_along(
    chain_tx: optax.GradientTransformation,
    seqs: Mapping[str, jax.Array],
    analysis: Mapping[str, Any] | None,
    along: Mapping[str, Any],
) -> dict[str, Any]:
    """The chain's steady gain along the optimizer's trajectories, beside the optimizer's.

    The *steady gain* at a start ``s`` is ``−Σ_{k<K} R̄_s[k]``: how far the later updates move
    per unit of a persistent change in the gradient at ``s`` (the gain times the memory). Both
    are read on the same recorded gradients, the same problems and lags, with the same
    schedule divided out, so their ratio says whether the chain steps as far as the optimizer
    where it trains: 1 for a chain that reproduces it; a damping or clip that holds the chain
    back along training, but not at the convergence point where its numbers were read, shows
    as a ratio below 1.

    Args:
        chain_tx: the chain (coordinate-wise).
        seqs: the trajectories ``along`` was read on.
        analysis: the analysis ``along`` was read with.
        along: :func:`memory_along`'s result for the optimizer.

    Returns:
        ``{"chain_gain": [...], "steady_gain": [...], "gain_ratio": r}``: the chain's and the
        optimizer's steady gains per start, and the median over starts where both are finite
        and the optimizer's is positive of their ratio (``None`` where there is none, and where
        adaptation was detected: a normaliser answers a persistent change of the gradient by
        the same step, so both sums are differences near 0, as for Adam).
    """
    mine = memory_along(
        chain_tx, seqs, analysis, lags=int(along["lags"]), problems=int(along["problems"])
    )

    def steady(m: Mapping[str, Any] | None) -> np.ndarray:
        if m is None:
            return np.full(len(along["starts"]), np.nan)
        return -np.sum(np.asarray(m["response"], np.float64), axis=1)

    theirs, ours = steady(along), steady(mine)
    ok = np.isfinite(theirs) & np.isfinite(ours) & (theirs > 0)
    ratio = float(np.median(ours[ok] / theirs[ok])) if ok.any() else None
    if ((analysis or {}).get("adaptation") or {}).get("detected"):
        ratio = None  # a normaliser cancels a persistent change: both sums are near 0

    def listed(x: np.ndarray) -> list[float | None]:
        return [float(v) if np.isfinite(v) else None for v in x]

    return {"chain_gain": listed(ours), "steady_gain": listed(theirs), "gain_ratio": ratio}
