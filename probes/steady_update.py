"""The chain's update under a constant gradient, beside the optimizer's, at the horizon.

Whatever an optimizer does to a gradient it keeps meeting (its learning rate and schedule, its
momentum's steady gain, its clipping, its normalisation, its bias) shows in one curve: ``U(g)``,
the update after ``T`` steps of a constant gradient ``g`` from a fresh state, with ``T`` the
task's horizon (so that a schedule is where training leaves it, and read the same by the chain,
whose schedule covers the horizon). A faithful chain draws the same curve.
:func:`compare_steady_update` runs the optimizer and the chain on the bias probe's gradient grid
(:mod:`probes.bias`: both signs, log-spaced over the training range and two decades below it)
and reads the ratio ``U_chain(g) / U(g)`` at every grid point inside the training range where
the optimizer's update is resolved (``|U| > RESOLVED · max |U|``, a floor of float32 rounding)
and not within ``|g₀|`` of a detected bias's ``g₀`` (where ``U`` crosses 0 a ratio says
nothing: a rest point read a hair apart makes it anything).

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

import jax.numpy as jnp
import numpy as np
import optax

from probes.bias import BELOW, steady_update_program
from probes.black_box import scalar_updates
from probes.values import finite, finite_prefix, floats

#: Share of the optimizer's largest update at or below which no ratio is read (float32 rounding).
RESOLVED = 1e-6
#: A ratio within a factor ``1 + TOLERANCE`` of 1 is a match (the memory-along tolerance).
TOLERANCE = 0.25


def compare_steady_update(
    tx: optax.GradientTransformation,
    chain_tx: optax.GradientTransformation,
    analysis: Mapping[str, Any],
    steps: int,
    gradients: Any = None,
) -> dict[str, Any] | None:
    """The optimizer's and the chain's update after ``steps`` constant gradients, and their ratio.

    Both run on one scalar parameter from a fresh state, as the probes run the optimizer
    (:func:`probes.black_box.scalar_updates`).

    Args:
        tx: the optimizer (coordinate-wise).
        chain_tx: the chain.
        analysis: the analysis whose ``bias.gradients`` is the grid.
        steps: ``T``, the task's horizon. A detected schedule read over fewer steps shortens
            it to the finite part of its window: past it the chain extrapolates the schedule's
            tail, which no probe checks.
        gradients: training gradient entries (any shape; optional): where they fall on the
            grid weighs the mismatch (``outside_share``).

    Returns:
        ``None`` when the analysis has no grid or ``steps < 1``. Otherwise ``{"steps": T,
        "gradients", "optimizer", "chain", "ratio", "training_range": [lo, hi], "ratio_range": [min,
        max], "worst_gradient", "worst_ratio", "within", "not_finite": [...], "outside_share",
        "compared_share", "tolerance"}``: both updates per grid gradient; the ratio per gradient
        (``None`` outside the training range, where the optimizer's update is not resolved, within
        ``|g₀|`` of a detected bias's ``g₀``, or where either update is not finite). A point is
        *compared* inside the training range where the optimizer's update is finite and resolved,
        away from ``g₀``; the chain's update there may be non-finite (``not_finite`` lists those
        gradients: they count as off). Over the compared points: the range of the ratios read, the
        point farthest from 1 (a non-finite chain update first, then a ratio of the wrong sign, then
        the largest ``|log r|``), and the share within tolerance (``None`` where nothing is
        compared). With ``gradients`` (else ``None``): ``compared_share``, the share of the training
        gradient entries inside the training range whose nearest grid point of the same sign (in
        ``log |g|``) is compared, and ``outside_share``, the share of those that sit where that
        point is off.
    """
    bias = analysis.get("bias") if isinstance(analysis, Mapping) else None
    if not isinstance(bias, Mapping) or int(steps) < 1:
        return None
    g = floats(bias.get("gradients"))
    mags = np.abs(g[np.isfinite(g) & (g != 0)])
    if not mags.size or not np.isfinite(g).all():
        return None
    lo, hi = float(mags.min() * 10**BELOW), float(mags.max())
    sched = analysis.get("schedule") or {}
    window = finite_prefix(sched.get("effective_lr")).size if sched.get("detected") else 0
    steps = min(int(steps), window) if window else int(steps)
    grid = jnp.asarray(g, jnp.float32)
    # the chain is built afresh per analysis: compile without keeping the programs
    program = steady_update_program.__wrapped__
    u = np.asarray(program(scalar_updates(tx), steps)(grid), np.float64)
    uc = np.asarray(program(scalar_updates(chain_tx), steps)(grid), np.float64)
    resolved = np.isfinite(u)
    top = float(np.max(np.abs(u[resolved]))) if resolved.any() else 0.0
    g0 = (finite(bias.get("stall_gradient")) or 0.0) if bias.get("detected") else 0.0
    compared = (
        resolved
        & (np.abs(g) >= lo * (1 - 1e-6))
        & (np.abs(u) > RESOLVED * top)
        & (np.abs(g - g0) >= abs(g0))
    )
    read = compared & np.isfinite(uc)
    broken = compared & ~np.isfinite(uc)
    ratio = np.where(read, uc / np.where(read, u, 1.0), np.nan)
    off = broken | (read & ((ratio < 1 / (1 + TOLERANCE)) | (ratio > 1 + TOLERANCE)))

    def listed(x: np.ndarray) -> list[float | None]:
        return [float(v) if np.isfinite(v) else None for v in x]

    out: dict[str, Any] = {
        "steps": steps,
        "gradients": listed(g),
        "optimizer": listed(u),
        "chain": listed(uc),
        "ratio": listed(ratio),
        "training_range": [lo, hi],
        "ratio_range": None,
        "worst_gradient": None,
        "worst_ratio": None,
        "within": None,
        "not_finite": [float(x) for x in g[broken]],
        "outside_share": None,
        "compared_share": None,
        "tolerance": TOLERANCE,
    }
    if not compared.any():
        return out
    r = ratio[compared]
    with np.errstate(divide="ignore", invalid="ignore"):
        far = np.abs(np.log(np.abs(r)))
    # farthest: a non-finite chain update, then the wrong sign, then the largest |log r|
    rank = np.where(~np.isfinite(r), 2.0, np.where(r <= 0, 1.0, 0.0))
    i = int(np.lexsort((np.nan_to_num(far, nan=np.inf, posinf=np.inf), rank))[-1])
    out.update(
        ratio_range=[float(r[np.isfinite(r)].min()), float(r[np.isfinite(r)].max())]
        if np.isfinite(r).any()
        else None,
        worst_gradient=float(g[compared][i]),
        worst_ratio=float(r[i]) if np.isfinite(r[i]) else None,
        within=float(1.0 - off[compared].mean()),
    )
    if gradients is not None:
        out["outside_share"], out["compared_share"] = _outside_share(
            g, compared, off, np.asarray(gradients), lo, hi
        )
    return out


def _outside_share(
    grid: np.ndarray,
    compared: np.ndarray,
    off: np.ndarray,
    samples: np.ndarray,
    lo: float,
    hi: float,
) -> tuple[float | None, float | None]:
    """``(off, compared)``: shares of the samples in ``[lo, hi]`` by their nearest grid point.

    Each sample goes to the grid point of its sign inside the training range nearest in
    ``log |g|`` (bisection on the midpoints). ``compared``: the share of the samples whose
    point is compared (not where the optimizer's update is unresolved, as near a bias's
    ``g₀``); ``off``: among those, the share whose point is off. ``None`` for a share with no
    samples to count.
    """
    s = np.asarray(samples, np.float64).reshape(-1)
    s = s[np.isfinite(s) & (np.abs(s) >= lo) & (np.abs(s) <= hi)]
    if not s.size:
        return None, None
    hits = total = 0
    for sign in (1.0, -1.0):
        side = np.flatnonzero((np.sign(grid) == sign) & (np.abs(grid) >= lo * (1 - 1e-6)))
        mine = np.abs(s[np.sign(s) == sign])
        if not side.size or not mine.size:
            continue
        logs = np.log(np.abs(grid[side]))
        order = np.argsort(logs)
        logs, side = logs[order], side[order]
        nearest = side[np.searchsorted((logs[1:] + logs[:-1]) / 2, np.log(mine))]
        seen = compared[nearest]
        hits += int(off[nearest][seen].sum())
        total += int(seen.sum())
    return (float(hits / total) if total else None), float(total / s.size)
