"""Evidence for the white-box figures of a report, computed from a :class:`lopt.Cell`.

:func:`white_box_evidence` runs the public probes (:func:`probes.trajectories`,
:func:`probes.pca`, :func:`probes.continuation`, :func:`probes.linearize`) around the
convergence point the analysis measured: the states near it, update functions along its slowest
mode and along the S-curve of fixed points, the eigenvalues. :func:`heavy_ball_optimum` gives
Polyak's optimal heavy-ball parameters on ``linear_regression``.

Shapes: ``B`` problems, ``T`` steps, ``C`` recorded coordinates, ``H`` hidden units,
``G`` gradient values, ``A`` perturbation amounts, ``N`` continuation inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from probes.runs import stage_printer
from probes.values import finite, plain


def as_dict(analysis: Any) -> dict[str, Any]:
    """The ``to_json()`` dict of an :class:`probes.Analysis` (a dict is copied)."""
    if hasattr(analysis, "to_json"):
        return analysis.to_json()
    if isinstance(analysis, Mapping):
        return dict(analysis)
    raise TypeError(f"expected a probes.Analysis or its to_json() dict, got {type(analysis)}")


progress_lines = stage_printer  # the report's stages print like the analysis's


def heavy_ball_optimum(family: Any, key: Any = None, num_problems: int = 256) -> dict | None:
    """Optimal heavy-ball ``(α*, β*)`` for ``linear_regression``, else ``None``.

    With Hessian eigenvalues in ``[μ, L]`` (the extremes over ``num_problems`` sampled problems),
    ``κ = L/μ``, ``β* = ((√κ-1)/(√κ+1))²`` and ``α* = 4/(√L+√μ)²`` (Polyak's optimal rate).
    """
    if getattr(family, "name", None) != "linear_regression":
        return None
    import jax

    key = jax.random.key(0) if key is None else key
    sample = jax.jit(jax.vmap(type(family).sample, in_axes=(None, 0)))
    batch = sample(family, jax.random.split(key, num_problems))
    if not isinstance(batch, Mapping) or "eigenvalues" not in batch:
        return None
    lam = np.asarray(batch["eigenvalues"], np.float64)
    mu, L = float(lam.min()), float(lam.max())
    kappa = L / mu
    beta = ((math.sqrt(kappa) - 1) / (math.sqrt(kappa) + 1)) ** 2
    alpha = 4.0 / (math.sqrt(L) + math.sqrt(mu)) ** 2
    return {"alpha": alpha, "beta": beta, "mu": mu, "L": L, "num_problems": int(num_problems)}


def analysis_convergence_point(cell: Any, analysis: Mapping[str, Any]) -> tuple[np.ndarray, str]:
    """The convergence point ``h*`` of an analysis and its kind (``fixed``, ``slow``, ...).

    The point :func:`probes.analysis.analyze_cell` recorded (``meta["convergence_point"]``);
    for an analysis written before it was recorded, :func:`probes.analysis.convergence_point`
    again with the analysis's settings (the same function, so the same point for the same
    settings).
    """
    from probes.analysis import convergence_point

    meta = analysis.get("meta") or {}
    h0 = np.asarray(cell.init_state(), np.float32)
    point = np.asarray([np.nan if x is None else x for x in meta.get("convergence_point") or []])
    if point.shape == h0.shape and np.all(np.isfinite(point)):
        kind = meta.get("linearized_at") or (analysis.get("momentum") or {}).get("point_kind")
        return point.astype(np.float32), str(kind)
    conv = convergence_point(cell, typical_step=finite(meta.get("typical_step")))
    return np.asarray(conv.point), conv.kind


def analysis_branches(analysis: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, dict]]:
    """The adaptation grid ``|g*|`` (``(M,)``) and per-arm branches of an analysis dict.

    ``branches[arm]`` (``"pos"``, ``"neg"``) as :func:`probes.detectors.detect_adaptation`
    stored them: ``fold_indices``/``fold_magnitudes``, ``segments`` with their slopes, and the
    evidence ``inputs``, ``alpha_eff``, ``kind``, ``fold`` (``(M+1,)``, from ``g* = 0``).
    Empty for an analysis without them.
    """
    d = analysis.get("adaptation") or {}
    mags = np.asarray([np.nan if x is None else x for x in d.get("magnitudes") or []], float)
    return mags, {k: dict(v) for k, v in (d.get("branches") or {}).items() if isinstance(v, dict)}


def white_box_evidence(
    cell: Any,
    analysis: Any,
    *,
    family: Any = None,
    key: Any = None,
    trajectories: Any = None,
    num_problems: int = 8,
    max_lines: int = 24,
    num_amounts: int = 7,
    num_gradients: int = 121,
    continuation_points: int = 40,
    progress: bool | Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evidence for the white-box figures, from a cell and its analysis (JSON-able dict).

    * ``convergence``: the convergence point ``h*`` (``point``) where the analysis measured β and
      α (:func:`analysis_convergence_point`), its kind, the residual of the continuation's first
      point there, and the slowest real eigenvalue of ``∂F/∂h`` at ``h*``
      (:func:`probes.linearize`).
    * ``states``: hidden-state trajectories on ``num_problems`` problems of ``family``
      (:func:`probes.trajectories`) projected on their two principal components
      (:func:`probes.pca`), with ``h*`` and ``h0`` projected too (needs ``family``).
    * ``slow_mode``: ``U(h* + a·v, g)`` for the slowest real eigenvector ``v`` of ``∂F/∂h`` at
      ``h*`` (:func:`probes.update_function.perturbed_states`), ``a`` spanning the states visited.
    * ``s_curve``: branches of fixed points ``h*(g*)`` traced by :func:`probes.continuation`
      from ``h*`` for ``g* > 0`` and ``g* < 0`` on the analysis's own grid
      (``adaptation.magnitudes``, preceded by ``0``) and back, their first principal component
      and ``α_eff`` along each. The rising arms (``pos_up``, ``neg_up``) carry the analysis's
      ``kind``, ``alpha_eff`` and ``fold`` where it stored them, so that the folds drawn are the
      ones the analysis found (fold positions, segments and slopes are read from the analysis,
      never recomputed); the arms traced back (``pos_down``, ``neg_down``) carry
      ``jump_back``: jumps on the way back (hysteresis), not folds of the analysed branch.
      ``s_curve_updates``: update functions at points evenly spaced along each rising arm.
    * ``optimum``: :func:`heavy_ball_optimum` when ``family`` is ``linear_regression``.

    Every probe of one kind runs as one batched call (one compilation each).

    Args:
        cell: the optimizer's :class:`lopt.Cell`.
        analysis: its :class:`probes.Analysis` (or ``to_json()`` dict): gradient scale, histogram.
        family: task family for trajectories and the optimum (optional).
        key: PRNG key for the trajectories (default ``key(0)``).
        trajectories: already recorded :class:`probes.Trajectories` of this optimizer (then
            ``family`` is only used for the optimum).
        num_problems: problems recorded.
        max_lines: at most this many (problem, coordinate) trajectories are kept for the figure.
        num_amounts: perturbation amounts along the slow mode.
        num_gradients: ``G``, gradient grid of the update functions.
        continuation_points: inputs per continuation sweep (log-spaced, plus ``0``) for an
            analysis without an adaptation grid (else the analysis's ``magnitudes``).
        progress: print stage lines (``True``) or call this function with each stage.

    Returns:
        A JSON-able dict (see above).
    """
    import jax
    import jax.numpy as jnp

    from probes.canonical import canonical
    from probes.fixed_points import FAILED, KIND_NAMES, continuation
    from probes.linearize import linearize
    from probes.trajectories import pca
    from probes.trajectories import trajectories as record_trajectories
    from probes.update_function import effective_lr, perturbed_states, update_function

    stage = progress_lines(progress)
    a = as_dict(analysis)
    cell = canonical(cell)
    key = jax.random.key(0) if key is None else key
    scale = finite((a.get("meta") or {}).get("gradient_scale")) or 1.0
    h0 = np.asarray(cell.init_state(), np.float32)
    H = h0.shape[0]
    out: dict[str, Any] = {"hidden_size": int(H), "gradient_scale": scale}

    tr = trajectories
    if tr is None and family is not None:
        stage(f"recording trajectories on {num_problems} problems")
        tr = record_trajectories(cell, family, key, num_problems=num_problems)
    grads = hidden = None
    if tr is not None:
        grads = np.asarray(tr.grads, np.float64).reshape(-1)
        grads = grads[np.isfinite(grads)]
        if tr.hidden is not None and tr.initial_hidden is not None:
            hidden = np.concatenate(
                [np.asarray(tr.initial_hidden)[:, None], np.asarray(tr.hidden)], axis=1
            )  # (B, T+1, C, H)

    # Gradient range of the update functions: the gradients actually seen, else the histogram.
    edges = np.asarray(a.get("clipping", {}).get("histogram_edges") or [], float)
    if grads is not None and grads.size:
        g_max, g_top = float(np.percentile(np.abs(grads), 99.5)), float(np.max(np.abs(grads)))
    else:
        g_max = g_top = float(np.max(np.abs(edges))) if edges.size else 10 * scale
    g_max = g_max if g_max > 0 else 10 * scale
    gs = np.linspace(-g_max, g_max, num_gradients)
    out["gradient_range"] = g_max

    # Convergence point: the analysis's own, so that the figures are drawn around the state where
    # β and α were measured. S-curve: one continuation program for all four sweeps, from h*.
    stage("tracing fixed points: convergence point and S-curve (continuation)")
    h_star, star_kind = analysis_convergence_point(cell, a)
    mags, stored = analysis_branches(a)
    if mags.size and np.all(np.isfinite(mags)):
        up = np.concatenate([[0.0], mags])  # the analysis's own grid: the same branch
    else:
        lo, hi = 1e-2 * scale, max(1e3 * scale, 2.0 * g_top)
        up = np.concatenate([[0.0], np.geomspace(lo, hi, continuation_points)])
    opts = {}
    if finite((a.get("meta") or {}).get("typical_step")):
        opts["typical_step"] = max(float(a["meta"]["typical_step"]), 1e-30)
    branches = {"pos_up": continuation(cell, up, h_star, **opts)}
    branches["pos_down"] = continuation(cell, up[::-1], branches["pos_up"].points[-1], **opts)
    branches["neg_up"] = continuation(cell, -up, h_star, **opts)
    branches["neg_down"] = continuation(cell, -up[::-1], branches["neg_up"].points[-1], **opts)

    stage("linearising at the convergence point")
    lin = linearize(cell, h_star)
    lam = np.asarray(lin.eigenvalues)
    real = np.abs(lam.imag) <= 1e-6 * np.maximum(1.0, np.abs(lam))
    i_slow = int(np.argmax(np.where(real, np.abs(lam), -1.0))) if real.any() else 0
    v = np.real(np.asarray(lin.right)[:, i_slow])
    v = v / max(float(np.linalg.norm(v)), 1e-30)
    out["convergence"] = {
        "point": h_star,
        "kind": star_kind,
        "residual": float(branches["pos_up"].residual[0]),
        "alpha_eff": float(lin.alpha_eff),
        "spectral_radius": float(np.max(np.abs(lam))),
        "slow_eigenvalue": complex(lam[i_slow]),
        "slow_timescale": float(np.asarray(lin.timescale)[i_slow]),
    }

    # States near the convergence point: PCA of the recorded trajectories.
    if hidden is not None:
        stage("projecting the states on principal components")
        B, T1, C, _ = hidden.shape
        p = pca(jnp.asarray(hidden), num_components=2)
        lines = np.transpose(hidden, (0, 2, 1, 3)).reshape(B * C, T1, H)
        pick = np.linspace(0, B * C - 1, min(max_lines, B * C)).astype(int)
        steps = np.unique(np.linspace(0, T1 - 1, min(T1, 200)).astype(int))
        comps, mean = np.asarray(p.components), np.asarray(p.mean)
        out["states"] = {
            "lines": (lines[pick][:, steps] - mean) @ comps.T,
            "steps": steps,
            "fixed_point": (h_star - mean) @ comps.T,
            "start": (h0 - mean) @ comps.T,
            "explained_ratio": np.asarray(p.explained_ratio),
            "num_problems": int(B),
            "num_coords": int(C),
        }
        reach = float(np.percentile(np.abs((hidden.reshape(-1, H) - h_star) @ v), 95))
    else:
        reach = float(abs((h0 - h_star) @ v))
    reach = reach if reach > 1e-6 else max(1.0, float(np.linalg.norm(h0 - h_star)))
    amounts = np.linspace(-reach, reach, num_amounts)
    slow_states = np.asarray(perturbed_states(h_star, v[None], amounts)[0])  # (A, H)

    # First principal component of all fixed points found, oriented to rise with g* > 0.
    arms: dict[str, Any] = {}
    ok_pts = []
    for name, b in branches.items():
        ok = np.asarray(b.kind) != FAILED
        arms[name] = {
            "inputs": np.asarray(b.inputs),
            "kind": [KIND_NAMES[int(x)] for x in np.asarray(b.kind)],
        }
        if name.endswith("_up"):
            arms[name]["fold"] = np.asarray(b.fold)
        else:
            arms[name]["jump_back"] = np.asarray(b.fold)
        ok_pts.append(np.asarray(b.points)[ok])
    cloud = np.concatenate(ok_pts)
    pc = pca(jnp.asarray(cloud if cloud.shape[0] > 1 else h_star[None]), num_components=1)
    comp, mean = np.asarray(pc.components)[0], np.asarray(pc.mean)
    y_up = (np.asarray(branches["pos_up"].points) - mean) @ comp
    if y_up[-1] < y_up[0]:
        comp = -comp

    # Update functions at points evenly spaced along each rising arm (the S-curve bends in a
    # narrow band of g*, so even spacing in g* would crowd them on the flat parts).
    picks, pick_states = [], []
    for name in ("pos_up", "neg_up"):
        b = branches[name]
        ok = (np.asarray(b.kind) != FAILED) & (np.abs(np.asarray(b.inputs)) > 0)
        idx = np.nonzero(ok)[0]
        if idx.size:
            y = (np.asarray(b.points)[idx] - mean) @ comp
            chosen = {int(idx[np.argmin(np.abs(y - t))]) for t in np.linspace(y[0], y[-1], 5)}
            for j in sorted(chosen):
                picks.append(float(b.inputs[j]))
                pick_states.append(np.asarray(b.points[j]))

    # α_eff and U for every state at once (one compilation each).
    stage("update functions and effective learning rates")
    arm_states = [np.asarray(b.points) for b in branches.values()]
    all_states = np.concatenate([slow_states, *arm_states])
    alpha = np.asarray(effective_lr(cell, jnp.asarray(all_states), secant=1e-3 * scale))
    u_states = np.concatenate([slow_states, *(np.stack(pick_states)[None] if picks else [])])
    updates = np.asarray(update_function(cell, jnp.asarray(u_states), gs))
    A = slow_states.shape[0]
    out["slow_mode"] = {
        "eigenvalue": complex(lam[i_slow]),
        "amounts": amounts,
        "gradients": gs,
        "updates": updates[:A],
        "alpha_eff": alpha[:A],
    }
    n = A
    for name, b, pts in zip(list(branches), branches.values(), arm_states, strict=True):
        ok = np.asarray(b.kind) != FAILED
        arm = arms[name]
        arm["alpha_eff"] = np.where(ok, alpha[n : n + pts.shape[0]], np.nan)
        arm["pc1"] = np.where(ok, (pts - mean) @ comp, np.nan)
        n += pts.shape[0]
        # The rising arms as the analysis found them: its folds, kinds and α_eff.
        mine = stored.get(name[:3]) or {}
        if name.endswith("_up") and len(mine.get("fold") or []) == len(arm["inputs"]):
            arm["fold"] = np.asarray(mine["fold"], bool)
            if len(mine.get("alpha_eff") or []) == len(arm["inputs"]):
                arm["alpha_eff"] = np.asarray(
                    [np.nan if x is None else x for x in mine["alpha_eff"]], float
                )
            if len(mine.get("kind") or []) == len(arm["inputs"]):
                arm["kind"] = list(mine["kind"])
    if picks:
        out["s_curve_updates"] = {
            "g_star": np.asarray(picks),
            "gradients": gs,
            "updates": updates[A:],
        }
    out["s_curve"] = {"arms": arms, "explained_ratio": float(np.asarray(pc.explained_ratio)[0])}
    if family is not None:
        out["optimum"] = heavy_ball_optimum(family)
    return plain(out)
