"""The chain's update under a constant gradient, beside the optimizer's, at the horizon.

Whatever an optimizer does to a gradient it keeps meeting (its learning rate and schedule, its
momentum's steady gain, its clipping, its normalisation, its bias) shows in one curve: ``U(g)``,
the update after ``T`` steps of a constant gradient ``g`` from a fresh state, with ``T`` the
task's horizon (so that a schedule is where training leaves it, and read the same by the chain,
whose schedule covers the horizon). A faithful chain draws the same curve.
:func:`compare_steady_update` runs the optimizer and the chain on the bias probe's gradient grid
(:mod:`probes.bias`: both signs, log-spaced over the training range and two decades below it)
and reads the ratio ``U_chain(g) / U(g)`` at every grid point inside the training range where
the optimizer's update is resolved (``|U| ≥ RESOLVED · max |U|``: near a bias's ``g₀``, where
``U`` crosses 0, a ratio says nothing).

A ratio of 1 everywhere says the mechanisms, with their probed numbers, step as the optimizer
does under any persistent gradient; a ratio far from 1 at some ``|g|`` says that part of the
update function is left unexplained, and where. The clipping probe reads the update function
at the first step, the adaptation probe the lag-0 gain at fixed points: an optimizer whose
update under a persistent gradient bends where its first update does not (a gain that grows
over many steps of a large persistent gradient) is read correctly by both and still missed by
the chain, and this comparison says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from probes.bias import BELOW

#: Share of the optimizer's largest steady update below which no ratio is read.
RESOLVED = 0.01
#: A ratio within a factor ``1 + TOLERANCE`` of 1 is a match (the memory-along tolerance).
TOLERANCE = 0.25


def constant_gradient_updates(tx: optax.GradientTransformation, steps: int) -> Any:
    """``gs (G,) -> U (G,)``: each update after ``steps`` steps of the constant gradient ``g``.

    One parameter of shape ``(1,)`` per gradient, trained from a fresh state (it advances as in
    training); compiled once per call.
    """

    def one(g: jax.Array) -> jax.Array:
        p0 = jnp.zeros((1,), jnp.float32)

        def body(carry, _):
            p, state = carry
            u, state = tx.update(jnp.full((1,), g, jnp.float32), state, p)
            return (optax.apply_updates(p, u), state), u[0]

        return jax.lax.scan(body, (p0, tx.init(p0)), None, length=steps)[1][-1]

    return jax.jit(jax.vmap(one))


def compare_steady_update(
    tx: optax.GradientTransformation,
    chain_tx: optax.GradientTransformation,
    analysis: Mapping[str, Any],
    steps: int,
    gradients: Any = None,
) -> dict[str, Any] | None:
    """The optimizer's and the chain's update after ``steps`` constant gradients, and their ratio.

    Args:
        tx: the optimizer (coordinate-wise: run on one parameter).
        chain_tx: the chain.
        analysis: the analysis whose ``bias.gradients`` is the grid.
        steps: ``T``, the task's horizon (a detected schedule read over fewer steps shortens
            it to its window: past it the chain holds the schedule's last value).
        gradients: training gradient entries (any shape; optional): where they fall on the
            grid weighs the mismatch (``outside_share``).

    Returns:
        ``None`` when the analysis has no grid. Otherwise ``{"steps": T, "gradients": [...],
        "optimizer": [...], "chain": [...], "ratio": [...], "training_range": [lo, hi],
        "ratio_range": [min, max], "worst_gradient": g, "worst_ratio": r, "within": share,
        "outside_share": share, "tolerance": TOLERANCE}``: both updates per grid gradient; the
        ratio per gradient (``None`` outside the training range, where the optimizer's update
        is not resolved, or where either update is not finite); over the ratios read, their
        range, the one farthest from 1 (in log; a ratio of the wrong sign is farthest) with its
        gradient, and the share of grid points within tolerance (``ratio_range``, ``worst_*``
        and ``within`` are ``None`` when no ratio was read); with ``gradients``,
        ``outside_share``: the share of the training gradient entries inside the training
        range whose nearest grid point of the same sign (in ``log |g|``) has a ratio outside
        tolerance (``None`` without them).
    """
    bias = analysis.get("bias") if isinstance(analysis, Mapping) else None
    if not isinstance(bias, Mapping):
        return None
    g = np.asarray(bias.get("gradients") or [], np.float64)
    mags = np.abs(g[np.isfinite(g) & (g != 0)])
    if not mags.size or mags.size != np.count_nonzero(g) or int(steps) < 1:
        return None
    lo, hi = float(mags.min() * 10**BELOW), float(mags.max())
    sched = analysis.get("schedule") or {}
    window = len(sched.get("effective_lr") or []) if sched.get("detected") else 0
    steps = min(int(steps), window) if window else int(steps)
    grid = jnp.asarray(g, jnp.float32)
    u = np.asarray(constant_gradient_updates(tx, steps)(grid), np.float64)
    uc = np.asarray(constant_gradient_updates(chain_tx, steps)(grid), np.float64)
    finite = np.isfinite(u)
    top = float(np.max(np.abs(u[finite]))) if finite.any() else 0.0
    read = (
        finite
        & np.isfinite(uc)
        & (np.abs(g) >= lo * (1 - 1e-6))
        & (np.abs(u) >= RESOLVED * top)
        & (top > 0)
    )
    ratio = np.where(read, uc / np.where(read, u, 1.0), np.nan)

    def listed(x: np.ndarray) -> list[float | None]:
        return [float(v) if np.isfinite(v) else None for v in x]

    out: dict[str, Any] = {
        "steps": int(steps),
        "gradients": listed(g),
        "optimizer": listed(u),
        "chain": listed(uc),
        "ratio": listed(ratio),
        "training_range": [lo, hi],
        "ratio_range": None,
        "worst_gradient": None,
        "worst_ratio": None,
        "within": None,
        "outside_share": None,
        "tolerance": TOLERANCE,
    }
    r = ratio[read]
    if r.size:
        # a chain stepping the other way than the optimizer is as far from 1 as can be
        far = np.where(r > 0, np.abs(np.log(np.where(r > 0, r, 1.0))), np.inf)
        i = int(np.argmax(far))
        out.update(
            ratio_range=[float(r.min()), float(r.max())],
            worst_gradient=float(g[read][i]),
            worst_ratio=float(r[i]),
            within=float(np.mean((r >= 1 / (1 + TOLERANCE)) & (r <= 1 + TOLERANCE))),
        )
        if gradients is not None:
            out["outside_share"] = _outside_share(g, ratio, np.asarray(gradients), lo, hi)
    return out


def _outside_share(
    grid: np.ndarray, ratio: np.ndarray, samples: np.ndarray, lo: float, hi: float
) -> float | None:
    """Share of the samples in ``[lo, hi]`` whose nearest same-sign grid ratio is off.

    An unread ratio (nan) counts as not off. ``None`` when no sample lies in the range.
    """
    s = np.asarray(samples, np.float64).reshape(-1)
    s = s[np.isfinite(s) & (np.abs(s) >= lo) & (np.abs(s) <= hi)]
    if not s.size:
        return None
    off = np.isfinite(ratio) & ((ratio < 1 / (1 + TOLERANCE)) | (ratio > 1 + TOLERANCE))
    hits = 0
    for sign in (1.0, -1.0):
        side = np.flatnonzero(np.sign(grid) == sign)
        mine = np.abs(s[np.sign(s) == sign])
        if not side.size or not mine.size:
            continue
        logs = np.log(np.abs(grid[side]))
        nearest = np.argmin(np.abs(np.log(mine)[:, None] - logs[None, :]), axis=1)
        hits += int(off[side][nearest].sum())
    return float(hits / s.size)
