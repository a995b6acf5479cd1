"""Interpretation reports: ``index.html`` + ``report.json`` + ``figures/*.png`` (METHOD.md §6).

:func:`write_report` turns an :class:`probes.Analysis` (or its ``to_json()`` dict) into a
self-contained page: a plain-language summary generated from the numbers, the comparison with
tuned baselines (from ``eval.json``), one section per mechanism with its numbers and figures,
and the distilled optimizer (from ``distill.json``) when there is one. Every figure is embedded
as a base64 PNG, the styles are inline, and nothing is fetched: the page opens offline.
``report.json`` (``"schema": "probes.report/1"``) holds every number the page shows.

White-box figures (states near the convergence point, update functions along the slow mode and
along the S-curve of fixed points, the eigenvalues) need *evidence* beyond the analysis:
:func:`white_box_evidence` computes it from a :class:`lopt.Cell` with the public probes
(:func:`probes.trajectories`, :func:`probes.pca`, :func:`probes.fixed_points`,
:func:`probes.linearize`, :func:`probes.continuation`). Black-box analyses (any optax
optimizer, the per-parameter MLP optimizer) get the behavioural figures only.

:func:`report_run` does everything for a meta-training run directory and writes ``RUN/report/``.

Shapes: ``B`` problems, ``T`` steps, ``C`` recorded coordinates, ``H`` hidden units,
``G`` gradient values, ``A`` perturbation amounts, ``N`` continuation inputs.
"""

from __future__ import annotations

import base64
import html
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = "probes.report/1"

_NAMES = {
    "learned": "learned",
    "momentum": "momentum",
    "rmsprop": "RMSProp",
    "adam": "Adam",
    "sgd": "SGD",
}


# ----------------------------------------------------------------------------- small helpers


def _as_dict(analysis: Any) -> dict[str, Any]:
    if hasattr(analysis, "to_json"):
        return analysis.to_json()
    if isinstance(analysis, Mapping):
        return dict(analysis)
    raise TypeError(f"expected a probes.Analysis or its to_json() dict, got {type(analysis)}")


def _finite(x: Any) -> float | None:
    """A finite float or ``None``."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _clean(x: Any) -> Any:
    """Strict-JSON version of ``x``: arrays to lists, non-finite to ``None``, complex to pairs."""
    if isinstance(x, Mapping):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray) or (hasattr(x, "__array__") and not isinstance(x, str)):
        arr = np.asarray(x)
        return _clean(arr.item()) if arr.ndim == 0 else [_clean(v) for v in arr.tolist()]
    if isinstance(x, bool | np.bool_):
        return bool(x)
    if isinstance(x, int | np.integer):
        return int(x)
    if isinstance(x, complex | np.complexfloating):
        return [_finite(x.real), _finite(x.imag)]
    if isinstance(x, float | np.floating):
        return _finite(x)
    return x


def _complex(pairs: Any) -> np.ndarray:
    """``[[re, im], ...]`` (or reals) to a complex array; ``None`` entries become NaN."""
    if pairs is None:
        return np.zeros(0, complex)
    out = []
    for p in pairs:
        if isinstance(p, list | tuple):
            re, im = (np.nan if v is None else v for v in (list(p) + [0.0])[:2])
            out.append(complex(re, im))
        else:
            out.append(complex(np.nan if p is None else p))
    return np.asarray(out, complex)


def _fmt(x: Any, spec: str = ".3g") -> str:
    v = _finite(x)
    if v is None:
        return "∞" if isinstance(x, float) and math.isinf(x) else "–"
    return format(v, spec).replace("-", "−")


def _slope(x: Any) -> str:
    """A log-log slope: two significant digits, and ``0`` for float noise (``|s| < 5e-4``)."""
    v = _finite(x)
    return "–" if v is None else ("0" if abs(v) < 5e-4 else _fmt(v, ".2g"))


def _pm(mean: Any, sem: Any, spec: str = ".4f") -> str:
    if _finite(mean) is None:
        return "diverged" if mean is None else "–"
    return (
        f"{_fmt(mean, spec)} ± {_fmt(sem, spec)}" if _finite(sem) is not None else _fmt(mean, spec)
    )


def _esc(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _label(name: str) -> str:
    return _NAMES.get(name, name)


def _join(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _stage(progress: bool | Callable[[str], None] | None) -> Callable[[str], None]:
    if callable(progress):
        return progress
    if not progress:
        return lambda msg: None
    start = time.perf_counter()

    def emit(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f} s] {msg}", file=sys.stderr, flush=True)

    return emit


# ----------------------------------------------------------------------------- evidence


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


def _autonomous(cell: Any, steps: int):
    import jax
    import jax.numpy as jnp

    @jax.jit
    def run(cell, xs):
        def body(h, _):
            h = cell.step(h, jnp.zeros([], jnp.float32))
            return h, h

        h0 = jnp.asarray(cell.init_state(), jnp.float32)
        return jax.lax.scan(body, h0, xs)[1]

    return run(cell, jnp.zeros(steps))


def _fold_slopes(inputs: np.ndarray, alpha: np.ndarray, fold: np.ndarray, ok: np.ndarray):
    """Fold position and log-log slopes of ``α_eff`` before/after the first fold of a sweep."""
    m, a = np.abs(inputs), np.abs(alpha)
    use = ok & (m > 0) & np.isfinite(a) & (a > 0)
    idx = np.nonzero(fold & (m > 0))[0]
    out: dict[str, Any] = {"fold_at": None, "slope_before": None, "slope_after": None}

    def slope(sel):
        sel = sel & use
        if sel.sum() < 3:
            return None
        return float(np.polyfit(np.log(m[sel]), np.log(a[sel]), 1)[0])

    n = np.arange(m.size)
    if idx.size:
        f = int(idx[0])
        out["fold_at"] = float(m[f])
        out["slope_before"] = slope(n < f)
        out["slope_after"] = slope(n >= f)
        out["alpha_before"] = _finite(a[f - 1]) if f > 0 else None
        out["alpha_after"] = _finite(a[f])
    else:
        out["slope_before"] = slope(n >= 0)
    return out


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

    * ``convergence``: the fixed point ``h*`` at ``g* = 0``: the state the autonomous dynamics
      ``h ← F(h, 0)`` reach from ``h0`` in 200 steps, Newton-polished (the first point of the
      continuation below), its kind, and the slowest real eigenvalue of ``∂F/∂h`` there
      (:func:`probes.linearize`).
    * ``states``: hidden-state trajectories on ``num_problems`` problems of ``family``
      (:func:`probes.trajectories`) projected on their two principal components
      (:func:`probes.pca`), with ``h*`` and ``h0`` projected too (needs ``family``).
    * ``slow_mode``: ``U(h* + a·v, g)`` for the slowest real eigenvector ``v`` of ``∂F/∂h`` at
      ``h*`` (:func:`probes.update_function.perturbed_states`), ``a`` spanning the states visited.
    * ``s_curve``: branches of fixed points ``h*(g*)`` traced by :func:`probes.continuation`
      from ``h*`` for ``g* > 0`` and ``g* < 0`` and back (hysteresis), their first principal
      component, ``α_eff`` along each, folds (with the log-log slope of ``α_eff`` before and
      after the first one); ``s_curve_updates``: update functions at points evenly spaced
      along each rising arm.
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
        continuation_points: inputs per continuation sweep (log-spaced, plus ``0``).
        progress: print stage lines (``True``) or call this function with each stage.

    Returns:
        A JSON-able dict (see above).
    """
    import jax
    import jax.numpy as jnp

    import probes
    from probes._cells import canonical
    from probes.fixed_points import FAILED, KIND_NAMES
    from probes.update_function import effective_lr, perturbed_states, update_function

    stage = _stage(progress)
    a = _as_dict(analysis)
    cell = canonical(cell)
    key = jax.random.key(0) if key is None else key
    scale = _finite(a.get("meta", {}).get("gradient_scale")) or 1.0
    h0 = np.asarray(cell.init_state(), np.float32)
    H = h0.shape[0]
    out: dict[str, Any] = {"hidden_size": int(H), "gradient_scale": scale}

    tr = trajectories
    if tr is None and family is not None:
        stage(f"recording trajectories on {num_problems} problems")
        tr = probes.trajectories(cell, family, key, num_problems=num_problems)
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

    # Convergence point and S-curve: one continuation program for all four sweeps. The rising
    # positive sweep starts at g* = 0 from the end of the autonomous trajectory, so its first
    # point is the convergence point h*.
    stage("tracing fixed points: convergence point and S-curve (continuation)")
    auto = np.asarray(_autonomous(cell, 200))
    lo, hi = 1e-2 * scale, max(1e3 * scale, 2.0 * g_top)
    up = np.concatenate([[0.0], np.geomspace(lo, hi, continuation_points)])
    branches = {"pos_up": probes.continuation(cell, up, auto[-1])}
    h_star = np.asarray(branches["pos_up"].points[0])
    star_kind = KIND_NAMES[int(branches["pos_up"].kind[0])]
    if star_kind == "failed":
        h_star, star_kind = auto[-1], "trajectory end"
    branches["pos_down"] = probes.continuation(cell, up[::-1], branches["pos_up"].points[-1])
    branches["neg_up"] = probes.continuation(cell, -up, h_star)
    branches["neg_down"] = probes.continuation(cell, -up[::-1], branches["neg_up"].points[-1])

    stage("linearising at the convergence point")
    lin = probes.linearize(cell, h_star)
    lam = np.asarray(lin.eigenvalues)
    real = np.abs(lam.imag) <= 1e-6 * np.maximum(1.0, np.abs(lam))
    i_slow = int(np.argmax(np.where(real, np.abs(lam), -1.0))) if real.any() else 0
    v = np.real(np.asarray(lin.right)[:, i_slow])
    v = v / max(float(np.linalg.norm(v)), 1e-30)
    out["convergence"] = {
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
        p = probes.pca(jnp.asarray(hidden), num_components=2)
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
            "fold": np.asarray(b.fold),
        }
        ok_pts.append(np.asarray(b.points)[ok])
    cloud = np.concatenate(ok_pts)
    pc = probes.pca(jnp.asarray(cloud if cloud.shape[0] > 1 else h_star[None]), num_components=1)
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
        if name.endswith("_up"):
            arm.update(_fold_slopes(arm["inputs"], arm["alpha_eff"], arm["fold"], ok))
    if picks:
        out["s_curve_updates"] = {
            "g_star": np.asarray(picks),
            "gradients": gs,
            "updates": updates[A:],
        }
    out["s_curve"] = {"arms": arms, "explained_ratio": float(np.asarray(pc.explained_ratio)[0])}
    if family is not None:
        out["optimum"] = heavy_ball_optimum(family)
    return _clean(out)


# ----------------------------------------------------------------------------- summary


def _schedule_phrase(s: Mapping[str, Any]) -> str:
    shape, peak = s.get("shape"), s.get("peak_step")
    n = len(s.get("effective_lr") or [])
    fall = _finite(s.get("fall"))
    falls = f" (α_eff falls by {fall:.0%} over {n} steps)" if fall is not None and n else ""
    if shape == "warm-up-then-decay":
        return f"warms up over {peak} steps then decays{falls}"
    if shape == "warm-up":
        return f"warms up over {peak} steps (no decay within {n} steps)"
    if shape == "decay":
        return f"decays its learning rate from the first step{falls}"
    return "learning-rate schedule not detected (α_eff stays within 5% of its peak)"


def _range_name(d: Mapping[str, Any]) -> str:
    training = str(d.get("gradient_range_source") or "").startswith("training")
    return "the training range" if training else "the probed range"


def _damping_phrase(d: Mapping[str, Any]) -> str:
    kappa, low = _finite(d.get("kappa")), _finite(d.get("min_ratio"))
    if d.get("detected") and kappa is not None:
        low_txt = f", down to {low:.0%} within {_range_name(d)}" if low is not None else ""
        mem = _finite(d.get("memory"))
        mem_txt = ""
        if mem is not None and 0.5 <= mem < 1:
            mem_txt = f"; the damping builds up over about {1 / (1 - mem):.0f} steps"
        elif mem is not None and mem < 0.5:
            mem_txt = "; the damping sets in within a step or two"
        return (
            "Damps oscillations: for gradients that flip sign every step its gain, relative to "
            f"persistent gradients, halves at |g| ≈ {kappa:.2g}{low_txt}{mem_txt}."
        )
    keep = f" (it stays above {low:.0%})" if low is not None else ""
    return (
        "Oscillation damping: not detected; sign-flipping and persistent gradients keep the "
        f"same relative gain{keep}."
    )


def summary_sentences(a: Mapping[str, Any], evidence: Mapping[str, Any] | None = None) -> list[str]:
    """Plain-language sentences, one per mechanism, generated from the analysis numbers."""
    m, c, s, ad = (a.get(k) or {} for k in ("momentum", "clipping", "schedule", "adaptation"))
    out = []
    beta, tau, share = _finite(m.get("beta")), _finite(m.get("timescale")), _finite(m.get("share"))
    resp = "response" if a.get("source") == "optax" else "linearised response"
    if m.get("detected") and beta is not None:
        t = f" (timescale ≈ {tau:.0f} steps)" if tau is not None else ""
        sh = f" carries {share:.0%} of its {resp}" if share is not None else ""
        pair = ""
        if m.get("is_real") is False:
            pair = " (a complex pair whose response stays monotone while it decays)"
        out.append(f"Momentum with β ≈ {beta:.2f}{t}{sh}{pair}.")
    else:
        why = ""
        if beta is not None and share is not None:
            why = f" (dominant mode β ≈ {beta:.2f}, {share:.0%} of the {resp})"
        out.append(f"Momentum: not detected{why}.")
    thr = _finite(c.get("threshold"))
    if c.get("detected") and thr is not None:
        out.append(f"Clips updates beyond |g| ≈ {thr:.2g}.")
    else:
        out.append("Gradient clipping: not detected within the probed range.")
    sched = _schedule_phrase(s)
    out.append(sched[0].upper() + sched[1:] + ".")
    slope = _finite(ad.get("slope"))
    sl = f" (log-log slope {_slope(slope)})" if slope is not None else ""
    if ad.get("detected"):
        out.append(f"Adapts its learning rate: α_eff falls as gradients grow{sl}.")
    else:
        extra = ""
        for arm in ((evidence or {}).get("s_curve") or {}).get("arms", {}).values():
            after = _finite(arm.get("slope_after"))
            if arm.get("fold_at") is not None and after is not None and after <= -0.2:
                extra = (
                    f"; past a fold at |g*| ≈ {arm['fold_at']:.2g} its fixed points jump to a "
                    f"second branch where it does fall (slope {after:.2g})"
                )
                break
        out.append(
            "Learning-rate adaptation: not detected; its learning rate does not fall as "
            f"gradients grow{sl}{extra}."
        )
    d = a.get("damping") or {}
    if d:
        out.append(_damping_phrase(d))
    return [x.replace("-0", "−0").replace(" -", " −") for x in out]


# ----------------------------------------------------------------------------- results


def _results(evaluation: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The comparison table from an ``eval.json`` dict (``lopt.eval/1``), robust to gaps."""
    if not evaluation or not isinstance(evaluation.get("horizons"), Mapping):
        return None
    learned = evaluation.get("learned", "learned")
    base_h = _finite(evaluation.get("horizon"))
    horizons = []
    for key in sorted(evaluation["horizons"], key=lambda k: float(k)):
        block = evaluation["horizons"][key] or {}
        rows = []
        optimizers = dict(block.get("optimizers") or {})
        names = sorted(optimizers, key=lambda n: (n != learned, list(optimizers).index(n)))
        for name in names:
            o = optimizers[name]
            v = (block.get("versus") or {}).get(name) or {}
            diff = _finite(v.get("diff"))
            rows.append(
                {
                    "name": name,
                    "metric": _finite(o.get("metric")),
                    "sem": _finite(o.get("sem")),
                    "final": _finite(o.get("final")),
                    "diverged": o.get("diverged"),
                    "hyperparams": _clean(o.get("hyperparams") or {}),
                    # Shown as baseline − learned: positive means the learned optimizer is better.
                    "diff_baseline_minus_learned": None if diff is None else -diff,
                    "diff_sem": _finite(v.get("diff_sem")),
                    "learned_better": v.get("beats") if v else None,
                    # problems where only the learned optimizer diverged (rule "better" out)
                    "learned_diverged": v.get("learned_diverged") if v else None,
                    "curve_mean": o.get("curve_mean"),
                    "curve_sem": o.get("curve_sem"),
                }
            )
        steps = int(float(key))
        mult = steps / base_h if base_h else None
        horizons.append(
            {
                "steps": steps,
                "multiple": mult,
                "best_baseline": block.get("best_baseline"),
                "beats_all": block.get("beats_all"),
                "rows": rows,
            }
        )
    return {
        "learned": learned,
        "num_problems": evaluation.get("num_problems"),
        "task": (evaluation.get("task") or {}).get("name"),
        "data_source": (evaluation.get("task") or {}).get("data_source"),
        "horizons": horizons,
    }


def _distill_sentence(distill: Mapping[str, Any]) -> str | None:
    """One summary line: how much of the gain the distilled chains recover (``distill.json``)."""
    parts = []
    for key, how in (
        ("fraction", "with the probed numbers"),
        ("fraction_identified", "with numbers fitted to its updates"),
        ("fraction_retuned", "with numbers tuned on training problems"),
    ):
        f = distill.get(key)
        if isinstance(f, Mapping) and _finite(f.get("mean")) is not None:
            ci = [_finite(x) for x in list(f.get("ci") or [])[:2]]
            band = f" (95% CI {ci[0]:.0%} … {ci[1]:.0%})" if len(ci) == 2 and None not in ci else ""
            parts.append(f"{how} {f['mean']:.0%}{band}")
    if not parts:
        return None
    steps = [
        str(e.get("mechanism", e.get("transform", "?"))).split(" (")[0]
        for e in distill.get("chain") or []
        if isinstance(e, Mapping)
    ]
    best = ((distill.get("results") or {}).get("best_baseline") or {}).get("name")
    over = f" over tuned {_label(str(best))}" if best else ""
    chain = f" ({' → '.join(steps)})" if steps else ""
    return (
        f"Written as an optax chain{chain}, the mechanisms recover this share of its gain{over}: "
        + "; ".join(parts)
        + "."
    )


def data_note(data_source: str | None) -> str:
    """`` (data: …)`` for data other than a synthetic family's own, else ``""``."""
    if not data_source or data_source == "synthetic":
        return ""
    return f" (data: {data_source})"


def _results_sentence(res: Mapping[str, Any]) -> str:
    parts = []
    for h in res["horizons"]:
        won = [_label(r["name"]) for r in h["rows"] if r["learned_better"]]
        lost = [_label(r["name"]) for r in h["rows"] if r["learned_better"] is False]
        mult = h.get("multiple")
        when = (
            f"at the training horizon ({h['steps']} steps)"
            if mult == 1
            else (f"at {mult:.3g}× it ({h['steps']} steps)" if mult else f"at {h['steps']} steps")
        )
        s = f"{when} it beats {_join(won) if won else 'no tuned baseline'}"
        if won and lost:
            s += f" but not {_join(lost)}"
        parts.append(s)
    task = f" {res['task']}" if res.get("task") else ""
    n = f"{res['num_problems']} " if res.get("num_problems") else ""
    return (
        f"On {n}held-out{task} problems{data_note(res.get('data_source'))} (mean normalised loss, "
        "paired differences > 2 s.e.m.), " + "; ".join(parts) + "."
    )


# ----------------------------------------------------------------------------- sections


class _Builder:
    """Collects sections, numbers and figures while the report is assembled."""

    def __init__(self, out_dir: Path):
        from probes import figures

        self.fig = figures
        self.dir = out_dir / "figures"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.figures: list[dict[str, Any]] = []
        self.pngs: dict[str, bytes] = {}

    def add(self, name: str, fig: Any, caption: str, section: str, white_box: bool) -> dict:
        from lopt.rundir import atomic_write

        data = self.fig.png(fig)
        rel = f"figures/{name}.png"
        atomic_write(self.dir / f"{name}.png", lambda f: f.write(data))
        self.pngs[rel] = data
        w, h = fig.get_size_inches()
        entry = {
            "file": rel,
            "caption": caption,
            "section": section,
            "white_box": white_box,
            "wide": bool(w / h > 1.8),
        }
        self.figures.append(entry)
        return entry


def _num_row(key: str, label: str, value: Any, display: str | None = None) -> dict[str, Any]:
    return {"key": key, "label": label, "value": _clean(value), "display": display or _fmt(value)}


def _loss_section(b: _Builder, res: dict | None, distill: Mapping | None) -> dict | None:
    if res is None:
        return None
    panels = []
    for i, h in enumerate(res["horizons"]):
        curves = {}
        for r in h["rows"]:
            if r["curve_mean"]:
                curves[r["name"]] = {
                    "mean": r["curve_mean"],
                    "sem": r["curve_sem"] or [],
                    "label": _label(r["name"]),
                }
        if i == 0 and distill:
            for name, c in (distill.get("curves") or {}).items():
                if isinstance(c, Mapping) and c.get("mean"):
                    key = name if str(name).startswith("distilled") else f"distilled ({name})"
                    label = key.replace("distilled_retuned", "distilled, re-tuned").replace(
                        "distilled_identified", "distilled, identified"
                    )
                    curves[key] = {"mean": c["mean"], "sem": c.get("sem") or [], "label": label}
        if curves:
            mult = f" ({h['multiple']:.0f}× horizon)" if h.get("multiple") else ""
            panels.append({"title": f"{h['steps']} steps{mult}", "curves": curves})
    figs = []
    if panels:
        figs.append(
            b.add(
                "loss_curves",
                b.fig.loss_curves(panels),
                f"Normalised loss f_t/f_0 (log scale), mean ± s.e.m. over {res.get('num_problems')}"
                " held-out problems. Look for the learned curve (blue) below the tuned baselines"
                " early on, and whether it keeps improving at twice the training horizon.",
                "results",
                False,
            )
        )
    return {"figures": figs}


def _mechanism_section(
    key: str,
    title: str,
    result: Mapping,
    lead: str,
    nums: list,
    figs: list,
    notes: Sequence[str] = (),
) -> dict:
    """One mechanism's section of the page: its detector's verdict, numbers and figures."""
    return {
        "id": key,
        "title": title,
        "detected": bool(result.get("detected")),
        "lead": lead,
        "numbers": nums,
        "figures": figs,
        "notes": list(notes),
    }


def _momentum_section(b: _Builder, a: Mapping, ev: Mapping | None, res: dict | None) -> dict:
    m = a.get("momentum") or {}
    source = a.get("source")
    nums = [
        _num_row("beta", "β (dominant mode)", m.get("beta"), _fmt(m.get("beta"), ".4g")),
        _num_row("alpha", "α (its learning rate)", m.get("alpha"), _fmt(m.get("alpha"), ".4g")),
        _num_row(
            "timescale",
            "timescale −1/ln β (steps)",
            m.get("timescale"),
            _fmt(m.get("timescale"), ".3g"),
        ),
        _num_row("share", "share of the response", m.get("share"), _fmt(m.get("share"), ".0%")),
        _num_row("is_real", "dominant mode real", m.get("is_real"), str(m.get("is_real"))),
        _num_row(
            "sign_change_level",
            "envelope at its first sign change (complex pair)",
            m.get("sign_change_level"),
            _fmt(m.get("sign_change_level"), ".2%"),
        ),
        _num_row(
            "point_kind", "where it was measured", m.get("point_kind"), str(m.get("point_kind"))
        ),
    ]
    fe, fa = _complex(m.get("fit_eigenvalues")), _complex(m.get("fit_alphas"))
    eigs, alphas = _complex(m.get("eigenvalues")), _complex(m.get("alphas"))
    if source == "cell" and alphas.size:
        total = np.real(np.nansum(alphas))
        nums.append(_num_row("sum_alpha", "Σα_i over eigenmodes (= α_eff(h*))", total))
        nums.append(
            _num_row("sum_abs_alpha", "Σ|α_i| (cancellation)", float(np.nansum(np.abs(alphas))))
        )
    conv = (ev or {}).get("convergence") or {}
    if conv:
        nums.append(
            _num_row(
                "slow_eigenvalue",
                "slowest real eigenvalue at h*",
                _complex([conv.get("slow_eigenvalue")])[0].real,
            )
        )
        nums.append(
            _num_row("spectral_radius", "spectral radius at h*", conv.get("spectral_radius"))
        )
    opt = (ev or {}).get("optimum")
    if opt:
        nums.append(
            _num_row("optimum_beta", "heavy-ball optimum β*", opt["beta"], _fmt(opt["beta"], ".4g"))
        )
        nums.append(
            _num_row(
                "optimum_alpha", "heavy-ball optimum α*", opt["alpha"], _fmt(opt["alpha"], ".4g")
            )
        )
    tuned = None
    for h in (res or {}).get("horizons", [])[:1]:
        for r in h["rows"]:
            hp = r["hyperparams"]
            if r["name"] == "momentum" and "momentum" in hp and "learning_rate" in hp:
                tuned = {"alpha": hp["learning_rate"], "beta": hp["momentum"]}
    figs = []
    st = (ev or {}).get("states")
    if st:
        figs.append(
            b.add(
                "momentum_states",
                b.fig.state_trajectories(
                    np.asarray(st["lines"], float),
                    np.asarray(st["fixed_point"], float),
                    np.asarray(st["start"], float),
                    st["explained_ratio"],
                ),
                f"Hidden states of {st['num_coords']} coordinates × {st['num_problems']} problems, "
                "projected on their first two principal components and coloured by step. Look "
                "for the trajectories leaving h0 (circle) and settling on the convergence point "
                "h* (star), the "
                f"fixed point at g = 0 ({conv.get('kind', '?')}).",
                "momentum",
                True,
            )
        )
    sm = (ev or {}).get("slow_mode")
    if sm and sm.get("updates"):
        lam = _complex([sm.get("eigenvalue")])[0]
        figs.append(
            b.add(
                "momentum_update_functions",
                b.fig.update_functions(
                    sm["gradients"],
                    np.asarray(sm["updates"], float),
                    sm["amounts"],
                    title=f"U(h* + a·v, g) along the slow mode (λ = {lam.real:.3g})",
                    amount_label="amount a along v",
                    reference_slope=-_finite(conv.get("alpha_eff") or 0.0),
                ),
                "Update functions at states displaced from h* along the slowest eigenvector v. "
                "Momentum shows up as curves shifted up or down (the state carries a velocity that "
                "adds to the update) with nearly the same slope.",
                "momentum",
                True,
            )
        )
    if source == "cell" and eigs.size:
        dom = (
            complex(m["beta"], 0.0)
            if m.get("detected") and _finite(m.get("beta")) is not None
            else None
        )
        figs.append(
            b.add(
                "momentum_eigenvalues",
                b.fig.eigenvalues(eigs, alphas, fe[np.abs(fe) > 0] if fe.size else None, dom),
                "Eigenvalues λ_i of ∂F/∂h at the convergence point, coloured by the mode's "
                "learning "
                "rate α_i. Each mode is a momentum component with β_i = λ_i; look for real modes "
                "close to (but inside) the unit circle, and for large α_i of opposite signs that "
                "cancel (the squares are the modes fitted to the actual response).",
                "momentum",
                True,
            )
        )
    resp = m.get("impulse_response") or (a.get("meta") or {}).get("impulse_response") or []
    r = np.asarray([np.nan if x is None else x for x in resp], float)
    if r.size:
        k = np.arange(r.size)
        fitted = np.real(-(fa[None, :] * fe[None, :] ** k[:, None]).sum(1)) if fe.size else None
        if fitted is not None and fe.size:
            fitted[0] = np.real(-fa.sum())
        figs.append(
            b.add(
                "momentum_impulse_response",
                b.fig.impulse_response(r, fitted),
                "How much a unit gradient at step t moves the update at step t + k "
                + ("(linearised at h*). " if source == "cell" else "(measured by autodiff). ")
                + "Heavy-ball momentum gives a straight line on this log scale, α βᵏ; the dashed "
                "curve is the fit by at most two exponential modes.",
                "momentum",
                False,
            )
        )
    modes = []
    for lam, al in zip(fe, fa, strict=False):
        if abs(lam.imag) <= 1e-9 and abs(lam) > 0:
            modes.append({"beta": lam.real, "alpha": al.real, "kind": "fit"})
    if source == "cell":
        for lam, al in zip(eigs, alphas, strict=False):
            if abs(lam.imag) <= 1e-6 * max(1.0, abs(lam)) and np.isfinite(al.real):
                modes.append({"beta": lam.real, "alpha": al.real, "kind": "eig"})
    points = []
    if m.get("detected") and _finite(m.get("beta")) is not None:
        points.append(
            {
                "beta": m["beta"],
                "alpha": m["alpha"],
                "label": "dominant (learned)",
                "color": b.fig.color("learned"),
                "marker": "*",
            }
        )
    if tuned:
        points.append(
            {**tuned, "label": "tuned momentum", "color": b.fig.color("momentum"), "marker": "D"}
        )
    if opt:
        points.append(
            {
                "beta": opt["beta"],
                "alpha": opt["alpha"],
                "label": "optimum (α*, β*)",
                "color": b.fig.NEG,
                "marker": "X",
            }
        )
    if modes or points:
        cap = "Momentum modes as (β, α) pairs: a heavy-ball optimizer is one point. "
        if opt:
            cap += (
                f"The cross marks Polyak's optimal heavy-ball parameters for this family, "
                f"β* = {opt['beta']:.3g}, α* = {opt['alpha']:.3g} (Hessian eigenvalues in "
                f"[{opt['mu']:.2g}, {opt['L']:.2g}] over {opt['num_problems']} sampled "
                "problems). Look for how close the learned dominant mode lands."
            )
        else:
            cap += "Look for where the learned dominant mode lands relative to tuned momentum."
        figs.append(
            b.add("momentum_alpha_beta", b.fig.alpha_beta(modes, points), cap, "momentum", False)
        )
    lead = (
        "Linearising the optimizer around the state it converges to splits it into modes, each "
        "a heavy-ball momentum term with decay β and learning rate α (METHOD.md §5.4). "
        if source == "cell"
        else "The response of the update to a single gradient impulse, fitted with exponential "
        "modes: each mode is a heavy-ball momentum term with decay β and learning rate α. "
    )
    return _mechanism_section("momentum", "Momentum", m, lead, nums, figs)


def _clipping_section(b: _Builder, a: Mapping) -> dict:
    c = a.get("clipping") or {}
    nums = [
        _num_row(
            "threshold",
            "threshold |g| (slope halves)",
            c.get("threshold"),
            _fmt(c.get("threshold"), ".3g"),
        ),
        _num_row("threshold_pos", "threshold for g > 0", c.get("threshold_pos")),
        _num_row("threshold_neg", "threshold for g < 0", c.get("threshold_neg")),
        _num_row("asymptote_pos", "U(h0, +g_max)", c.get("asymptote_pos")),
        _num_row("asymptote_neg", "U(h0, −g_max)", c.get("asymptote_neg")),
        _num_row("slope0", "slope ∂U/∂g at g = 0", c.get("slope0")),
    ]
    counts = np.asarray(c.get("histogram_counts") or [], float)
    edges = np.asarray(c.get("histogram_edges") or [], float)
    if counts.size and edges.size == counts.size + 1:
        centres = 0.5 * (edges[1:] + edges[:-1])
        thr = _finite(c.get("threshold"))
        if thr is not None and counts.sum() > 0:
            frac = float(counts[np.abs(centres) > thr].sum() / counts.sum())
            nums.append(
                _num_row(
                    "fraction_beyond_threshold",
                    "training gradients beyond the threshold",
                    frac,
                    f"{frac:.1%}",
                )
            )
    g = np.asarray([np.nan if x is None else x for x in (c.get("gradients") or [])], float)
    figs = []
    if g.size:
        gmax = float(np.nanmax(np.abs(g)))
        thr = [t for t in (_finite(c.get("threshold_pos")), _finite(c.get("threshold_neg"))) if t]
        span = float(np.max(np.abs(edges))) if edges.size else 0.0
        xlim = max([3 * t for t in thr] + [span]) if (thr or span) else gmax
        xlim = min(xlim, gmax) or gmax
        figs.append(
            b.add(
                "clipping_update_function",
                b.fig.clipping(
                    g,
                    c.get("updates") or [],
                    slope0=_finite(c.get("slope0")) or 0.0,
                    threshold_pos=_finite(c.get("threshold_pos")),
                    threshold_neg=_finite(c.get("threshold_neg")),
                    hist_counts=counts if counts.size else None,
                    hist_edges=edges if edges.size else None,
                    xlim=xlim,
                ),
                "The first update as a function of the gradient (blue) against the linear update "
                "with the same slope at g = 0 (dotted), over the histogram of gradients seen in "
                "training (grey). Clipping shows as the curve bending away from the line and "
                "flattening; dashed lines mark where its slope has halved.",
                "clipping",
                False,
            )
        )
    lead = (
        "Clipping is read from the update function at the initial state, U(h0, g): its "
        "slope at large |g| falls well below its slope at g = 0 (METHOD.md §5.5)."
    )
    return _mechanism_section("clipping", "Gradient clipping", c, lead, nums, figs)


def _schedule_section(b: _Builder, a: Mapping) -> dict:
    s = a.get("schedule") or {}
    lr = np.asarray([np.nan if x is None else x for x in (s.get("effective_lr") or [])], float)
    nums = [
        _num_row("shape", "shape", s.get("shape"), str(s.get("shape"))),
        _num_row("peak_step", "peak step", s.get("peak_step"), str(s.get("peak_step"))),
        _num_row("rise", "rise before the peak", s.get("rise"), _fmt(s.get("rise"), ".0%")),
        _num_row("fall", "fall after the peak", s.get("fall"), _fmt(s.get("fall"), ".0%")),
    ]
    if lr.size and np.isfinite(lr).any():
        nums.append(_num_row("alpha_eff_first", "α_eff at step 0", lr[0]))
        nums.append(_num_row("alpha_eff_peak", "α_eff at the peak", np.nanmax(np.abs(lr))))
        nums.append(_num_row("alpha_eff_last", f"α_eff at step {lr.size - 1}", lr[-1]))
    figs = []
    if lr.size:
        figs.append(
            b.add(
                "schedule_alpha_eff",
                b.fig.schedule(lr, peak=s.get("peak_step"), shape=str(s.get("shape"))),
                "The effective learning rate α_eff = −∂U/∂g at g = 0 while the optimizer runs on "
                "zero gradients from its initial state. A rise is a warm-up, a fall a decay: the "
                "schedule the optimizer carries in its state, independent of the problem.",
                "schedule",
                False,
            )
        )
    lead = (
        "A schedule is read along the autonomous dynamics h_{t+1} = F(h_t, 0): how the "
        "optimizer's learning rate changes with time alone (METHOD.md §5.6)."
    )
    return _mechanism_section("schedule", "Learning-rate schedule", s, lead, nums, figs)


def _damping_section(b: _Builder, a: Mapping) -> dict | None:
    d = a.get("damping")
    if not d:
        return None
    amps = np.asarray([np.nan if x is None else x for x in (d.get("amplitudes") or [])], float)
    gr = d.get("gradient_range")
    rng = tuple(float(x) for x in gr) if gr and all(x is not None for x in gr) else None
    nums = [
        _num_row("kappa", "κ: relative gain halves at |g|", d.get("kappa"), _fmt(d.get("kappa"))),
        _num_row(
            "min_ratio",
            f"smallest relative gain in {_range_name(d)}",
            d.get("min_ratio"),
            _fmt(d.get("min_ratio"), ".0%"),
        ),
    ]
    mem = _finite(d.get("memory"))
    if mem is not None:
        nums.append(
            _num_row(
                "memory",
                "memory ρ of its build-up (timescale 1/(1−ρ) steps)",
                mem,
                f"{mem:.3g} ({1 / (1 - mem):.0f} steps)" if mem < 1 else _fmt(mem),
            )
        )
    dc = np.asarray([np.nan if x is None else x for x in (d.get("dc_gain") or [])], float)
    ny = np.asarray([np.nan if x is None else x for x in (d.get("nyquist_gain") or [])], float)
    if dc.size and np.isfinite(dc[0]) and np.isfinite(ny[0]):
        nums.append(_num_row("dc_gain_small", "persistent gain, smallest amplitude", dc[0]))
        nums.append(_num_row("nyquist_gain_small", "sign-flipping gain, smallest amplitude", ny[0]))
    if rng:
        nums.append(
            _num_row(
                "gradient_range",
                "range where it is decided",
                list(rng),
                f"{rng[0]:.2g} – {rng[1]:.2g}",
            )
        )
    figs = []
    if amps.size:
        figs.append(
            b.add(
                "damping_gains",
                b.fig.damping(
                    amps,
                    dc,
                    ny,
                    d.get("ratio") or [],
                    kappa=_finite(d.get("kappa")),
                    gradient_range=rng,
                    buildup=d.get("buildup") or None,
                    buildup_fit=d.get("buildup_fit") or None,
                    memory=_finite(d.get("memory")),
                    buildup_amplitude=_finite(d.get("buildup_amplitude")),
                    range_label="training |g|" if "training" in _range_name(d) else "probed |g|",
                ),
                "Left: the steady update per unit gradient for a constant gradient a (blue) and "
                "for a gradient alternating +a, −a (red), at the end of the probe's sequences "
                "from the initial state (200 steps unless set otherwise). Middle: their ratio "
                "relative to its value at the smallest amplitude. "
                "Momentum, clipping, RMSProp and Adam keep it at 1; it falls when the "
                "optimizer damps gradients that keep changing sign. The shaded band is the "
                "range where detection is decided (training gradients when known). Right (when "
                "detected): "
                "the sign-flipping gain step by step from a fresh state at a ≈ 3κ, relative to "
                "a tiny amplitude, and the damping memory ρ fitted to it.",
                "damping",
                False,
            )
        )
    lead = (
        "Beyond the paper's four mechanisms: does the optimizer take smaller steps on gradients "
        "that flip sign every step (stiff directions, where a large learning rate oscillates) "
        "than on gradients that persist (flat directions)? Damping of this kind lets it use a "
        "learning rate above the linear stability limit of its stiffest directions."
    )
    return _mechanism_section("damping", "Oscillation damping", d, lead, nums, figs)


_ADAPT_KNOWN = {
    "detected",
    "magnitudes",
    "lr_vs_magnitude",
    "slope_pos",
    "slope_neg",
    "slope",
    "point_kind",
}


def _adaptation_section(b: _Builder, a: Mapping, ev: Mapping | None) -> dict:
    d = a.get("adaptation") or {}
    nums = [
        _num_row(
            "slope_pos", "log-log slope, g* > 0", d.get("slope_pos"), _slope(d.get("slope_pos"))
        ),
        _num_row(
            "slope_neg", "log-log slope, g* < 0", d.get("slope_neg"), _slope(d.get("slope_neg"))
        ),
        _num_row("slope", "slope used (RMSProp: −1)", d.get("slope"), _slope(d.get("slope"))),
    ]
    mags = np.asarray(d.get("magnitudes") or [], float)
    lrv = d.get("lr_vs_magnitude") or {}
    if mags.size:
        nums.append(
            _num_row(
                "magnitude_range",
                "|g*| probed",
                [mags.min(), mags.max()],
                f"{_fmt(mags.min())} … {_fmt(mags.max())}",
            )
        )
    # Fields added by later versions of the detector: shown generically, never required.
    for k, v in d.items():
        if k not in _ADAPT_KNOWN and (isinstance(v, int | float | str | bool) or v is None):
            nums.append(_num_row(k, k.replace("_", " "), v, v if isinstance(v, str) else None))
    notes = []
    sc = (ev or {}).get("s_curve") or {}
    arms = sc.get("arms") or {}
    for name, label in (("pos_up", "g* > 0"), ("neg_up", "g* < 0")):
        arm = arms.get(name) or {}
        if arm.get("fold_at") is not None:
            nums.append(
                _num_row(f"fold_at_{name[:3]}", f"fold on the {label} arm at |g*|", arm["fold_at"])
            )
            nums.append(
                _num_row(
                    f"slopes_around_fold_{name[:3]}",
                    f"slope before / after the fold ({label})",
                    [arm.get("slope_before"), arm.get("slope_after")],
                    f"{_fmt(arm.get('slope_before'), '.2g')} / "
                    f"{_fmt(arm.get('slope_after'), '.2g')}",
                )
            )
            notes.append(
                f"On the {label} arm the branch of fixed points connected to the convergence "
                f"point ends in a fold at |g*| ≈ {_fmt(arm['fold_at'], '.2g')}; beyond it the "
                f"state jumps to another branch, where α_eff goes from "
                f"{_fmt(arm.get('alpha_before'))} to {_fmt(arm.get('alpha_after'))} and then has "
                f"a log-log slope of {_fmt(arm.get('slope_after'), '.2g')} against |g*|."
            )
        elif arm:
            nums.append(
                _num_row(
                    f"slope_branch_{name[:3]}",
                    f"slope along the traced branch ({label})",
                    arm.get("slope_before"),
                    _fmt(arm.get("slope_before"), ".2g"),
                )
            )
    figs = []
    colors = {
        "pos_up": b.fig.POS,
        "pos_down": b.fig.POS,
        "neg_up": b.fig.NEG,
        "neg_down": b.fig.NEG,
    }
    order = [k for k in ("pos_up", "pos_down", "neg_up", "neg_down") if k in arms]
    arms = {k: arms[k] for k in order + [k for k in arms if k not in order]}
    if arms:
        series = []
        for name, arm in arms.items():
            g = np.asarray([np.nan if x is None else x for x in arm["inputs"]], float)
            sgn = "g* > 0" if name.startswith("pos") else "g* < 0"
            way = "from h*, |g*| rising" if name.endswith("up") else "|g*| falling back"
            series.append(
                {
                    "inputs": g,
                    "pc": np.asarray([np.nan if x is None else x for x in arm["pc1"]], float),
                    "label": f"{sgn}, {way}",
                    "color": colors.get(name, b.fig.MARK),
                    "dashed": name.endswith("down"),
                    "fold": arm.get("fold") or [],
                }
            )
        figs.append(
            b.add(
                "adaptation_s_curve",
                b.fig.s_curve(
                    series, ylabel=f"PC 1 of h*(g*) ({sc.get('explained_ratio', 0):.0%} var.)"
                ),
                "Fixed points h*(g*) for constant gradients g*, traced by continuation from the "
                "convergence point outwards (solid) and back (dashed), on their first principal "
                "component (symmetric-log x axis). An S-shaped curve with jumps (×) and a gap "
                "between "
                "solid and dashed lines is a fold with hysteresis: two stable states for one g*.",
                "adaptation",
                True,
            )
        )
    su = (ev or {}).get("s_curve_updates")
    if su and su.get("updates"):
        figs.append(
            b.add(
                "adaptation_update_functions",
                b.fig.update_functions(
                    su["gradients"],
                    np.asarray(su["updates"], float),
                    su["g_star"],
                    title="U(h*(g*), g) along the S-curve",
                    amount_label="g*",
                    log_color=True,
                ),
                "Update functions at fixed points of the S-curve (colour: the constant gradient g* "
                "that put the state there). Adaptation shows as flatter curves (a smaller slope, "
                "i.e. a smaller learning rate) at states reached with larger |g*|.",
                "adaptation",
                True,
            )
        )
    series = []
    for name, arm in arms.items():
        g = np.abs(np.asarray([np.nan if x is None else x for x in arm["inputs"]], float))
        series.append(
            {
                "magnitudes": g,
                "alpha": [np.nan if x is None else x for x in arm["alpha_eff"]],
                "label": ("g* > 0" if name.startswith("pos") else "g* < 0")
                + (" (rising)" if name.endswith("up") else " (falling back)"),
                "color": colors.get(name, b.fig.MARK),
                "dashed": name.endswith("down"),
            }
        )
    if mags.size:
        for k, col in (("pos", b.fig.POS), ("neg", b.fig.NEG)):
            if lrv.get(k):
                series.append(
                    {
                        "magnitudes": mags,
                        "alpha": lrv[k],
                        "style": "dots",
                        "color": col,
                        "label": f"detector, g* {'>' if k == 'pos' else '<'} 0",
                    }
                )
    if series:
        # The guide starts where the curves are a decade before their largest |g*|.
        ref = None
        for sr in series:
            mm = np.asarray(sr["magnitudes"], float)
            aa = np.abs(np.asarray(sr["alpha"], float))
            ok = np.isfinite(mm) & np.isfinite(aa) & (mm > 0) & (aa > 0)
            if ok.any():
                at = np.nanmax(mm[ok]) / 10
                ref = float(aa[ok][np.argmin(np.abs(np.log(mm[ok] / at)))])
                break
        figs.append(
            b.add(
                "adaptation_alpha_eff",
                b.fig.adaptation_lr(series, reference=ref),
                "Effective learning rate at the steady state of each constant gradient, against "
                "|g*| (log-log). RMSProp-like adaptation falls with slope −1 (dotted guide); a "
                "flat "
                "line means no adaptation. Circles are the detector's own probes.",
                "adaptation",
                False,
            )
        )
    lead = (
        "Adaptation is read at the steady states h*(g*) of constant gradients: does the "
        "effective learning rate fall as |g*| grows, as in RMSProp (METHOD.md §5.7)?"
    )
    return _mechanism_section("adaptation", "Learning-rate adaptation", d, lead, nums, figs, notes)


def _short(v: Any) -> str:
    """A compact rendering of a chain parameter (long lists and dicts are summarised)."""
    if _finite(v) is not None and not isinstance(v, bool):
        return _fmt(v, ".4g")
    if isinstance(v, list | tuple):
        return f"[{len(v)} values]" if len(v) > 4 else "[" + ", ".join(_short(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k}: {_short(x)}" for k, x in v.items()) + "}"
    return str(v)


def _chain_text(chain: Any) -> list[dict[str, str]]:
    """``[{"call": "trace(decay=0.913)", "mechanism": "momentum (...)"}]`` from a distill chain."""
    out = []
    for step in chain or []:
        if isinstance(step, Mapping):
            name = step.get("transform", "?")
            args = ", ".join(
                f"{k}={_short(v)}" for k, v in step.items() if k not in ("transform", "mechanism")
            )
            out.append({"call": f"{name}({args})", "mechanism": str(step.get("mechanism") or "")})
        else:
            out.append({"call": str(step), "mechanism": ""})
    return out


def _fraction_row(key: str, label: str, frac: Any) -> dict[str, Any] | None:
    if not isinstance(frac, Mapping) or _finite(frac.get("mean")) is None:
        return None
    ci = list(frac.get("ci") or [None, None])[:2]
    ci += [None] * (2 - len(ci))
    shown = f"{_fmt(frac.get('mean'), '.0%')} (95% CI {_fmt(ci[0], '.0%')} … {_fmt(ci[1], '.0%')})"
    return _num_row(key, label, [frac.get("mean"), *ci], shown)


def _retune_method(distill: Mapping) -> str:
    rt = (distill.get("notes") or {}).get("retune") or {}
    if "factors" in rt:  # a distill.json from before every number was tuned
        return "global learning-rate and clip factors chosen on training problems"
    start = f", from the {rt['start']} numbers" if rt.get("start") else ""
    return f"every number tuned on the loss of training problems{start}"


def _distill_section(distill: Mapping | None) -> dict | None:
    if not distill:
        return None
    res = distill.get("results") or {}
    rows = []
    for key, label in (
        ("learned", "learned"),
        ("best_baseline", None),
        ("distilled", "distilled"),
        ("distilled_identified", "distilled, identified"),
        ("distilled_retuned", "distilled, re-tuned"),
    ):
        r = res.get(key)
        if not isinstance(r, Mapping):
            continue
        name = label or f"best baseline ({_label(str(r.get('name', '?')))})"
        if r.get("label"):
            name += f" ({r['label']})"
        vs = r.get("vs_best_baseline") if isinstance(r.get("vs_best_baseline"), Mapping) else {}
        rows.append(
            {
                "name": name,
                "key": key,
                "metric": _finite(r.get("metric")),
                "sem": _finite(r.get("sem")),
                "vs_best_baseline": _clean(vs) or None,
            }
        )
    gain = distill.get("gain") or {}
    sig = distill.get("significant")
    nums = []
    if gain:
        nums.append(
            _num_row(
                "gain",
                "gain of learned over best baseline",
                [gain.get("mean"), gain.get("sem")],
                _pm(gain.get("mean"), gain.get("sem")),
            )
        )
    if sig is not None:
        nums.append(_num_row("significant", "gain significant", bool(sig), "yes" if sig else "no"))
    notes = []
    frac = _fraction_row("fraction", "fraction of the gain recovered", distill.get("fraction"))
    if frac:
        nums.append(frac)
    elif sig is False:
        notes.append(
            "The recovered fraction is not reported: the learned optimizer does not "
            "significantly beat the best tuned baseline, so there is no gain to share."
        )
    else:
        notes.append("The recovered fraction is not reported in distill.json.")
    frac_i = _fraction_row(
        "fraction_identified",
        "fraction recovered with identified numbers",
        distill.get("fraction_identified"),
    )
    if frac_i:
        nums.append(frac_i)
    frac_r = _fraction_row(
        "fraction_retuned", "fraction recovered after re-tuning", distill.get("fraction_retuned")
    )
    if frac_r:
        nums.append(frac_r)
    if distill.get("reason"):
        notes.append(str(distill["reason"]))
    method = distill.get("fraction") if isinstance(distill.get("fraction"), Mapping) else {}
    if method.get("method"):
        notes.append(f"Interval of the recovered fraction: {method['method']}.")
    code = [
        ("distilled", distill.get("optax_code")),
        ("identified", distill.get("optax_code_identified")),
        ("re-tuned", distill.get("optax_code_retuned")),
    ]
    return {
        "id": "distill",
        "title": "Distillation: the mechanisms as a hand-written optimizer",
        "detected": None,
        "lead": "The detected mechanisms composed into an optax chain, evaluated on the same "
        "held-out problems (written by lopt distill): with the probed numbers as they are; "
        "identified (every number fitted to the learned optimizer's own updates, no loss "
        f"used); and re-tuned ({_retune_method(distill)}). The first two ask whether the "
        "numbers describe the optimizer, the last whether the detected structure can match it "
        "at all.",
        "chain": _chain_text(distill.get("chain")),
        "code": [(k, c) for k, c in code if c],
        "rows": rows,
        "numbers": nums,
        "figures": [],
        "notes": notes,
    }


# ----------------------------------------------------------------------------- HTML

_CSS = """
:root { --fg:#1d2330; --muted:#5b6472; --line:#e3e6eb; --bg:#ffffff; --soft:#f5f7fa;
  --accent:#0173b2; --ok:#1a7f4b; --okbg:#e3f4ea; --no:#6b7280; --nobg:#eef0f3; }
* { box-sizing:border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
  font:15px/1.55 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  "Noto Sans", "DejaVu Sans", sans-serif; }
main { max-width:1120px; margin:0 auto; padding:32px 28px 64px; }
h1 { font-size:28px; line-height:1.2; margin:0 0 4px; letter-spacing:-0.01em; }
h2 { font-size:21px; margin:44px 0 6px; padding-top:12px; border-top:1px solid var(--line); }
.sub { color:var(--muted); margin:0 0 18px; font-size:13.5px; }
nav { display:flex; flex-wrap:wrap; gap:6px 16px; font-size:13.5px; margin:8px 0 22px; }
nav a { color:var(--accent); text-decoration:none; }
.summary { background:var(--soft); border-left:4px solid var(--accent); padding:16px 20px;
  border-radius:6px; font-size:16.5px; }
.summary p { margin:0 0 6px; } .summary p:last-child { margin:0; }
.badge { display:inline-block; font-size:12px; font-weight:600; padding:2px 9px;
  border-radius:999px; vertical-align:middle; margin-left:8px; letter-spacing:.02em; }
.badge.yes { color:var(--ok); background:var(--okbg); }
.badge.no { color:var(--no); background:var(--nobg); }
.lead { color:var(--muted); margin:4px 0 14px; max-width:860px; }
table { border-collapse:collapse; font-size:13.5px; font-variant-numeric:tabular-nums;
  margin:8px 0 16px; }
th, td { padding:5px 12px; border-bottom:1px solid var(--line); text-align:right; }
th { color:var(--muted); font-weight:600; background:var(--soft); }
td:first-child, th:first-child { text-align:left; }
table.numbers { width:100%; margin-top:0; }
table.numbers td:first-child { color:var(--muted); } table.numbers td { text-align:left; }
.swatch { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:7px; }
.better { color:var(--ok); font-weight:600; } .worse { color:#b42318; font-weight:600; }
.figs { display:grid; grid-template-columns:repeat(auto-fill, minmax(440px, 1fr)); gap:18px 22px;
  grid-auto-flow:dense; }
figure { margin:0; }
figure.wide { grid-column:1 / -1; }
figure img { width:100%; height:auto; border:1px solid var(--line); border-radius:6px; }
figcaption { font-size:13px; color:var(--muted); margin-top:6px; }
.note { font-size:14px; border-left:3px solid var(--line); padding:4px 12px; margin:8px 0; }
.mech { color:var(--muted); font-size:13.5px; }
.codelabel { margin:10px 0 2px; color:var(--muted); font-size:13px; }
pre { white-space:pre-wrap; overflow-wrap:anywhere;
  background:#0f172a; color:#e2e8f0; padding:12px 14px; border-radius:6px; overflow-x:auto;
  font:12.5px/1.5 ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace; }
code { font:12.5px ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace; }
footer { margin-top:48px; color:var(--muted); font-size:12.5px; }
"""


def _badge(detected: bool | None) -> str:
    if detected is None:
        return ""
    return (
        '<span class="badge yes">detected</span>'
        if detected
        else '<span class="badge no">not detected</span>'
    )


def _fig_html(f: Mapping[str, Any], pngs: Mapping[str, bytes]) -> str:
    data = base64.b64encode(pngs[f["file"]]).decode()
    return (
        f'<figure class="{"wide" if f.get("wide") else "normal"}">'
        f'<img alt="{_esc(f["caption"])}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_esc(f['caption'])}</figcaption></figure>"
    )


def _numbers_html(nums: Sequence[Mapping[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{_esc(n['label'])}</td><td>{_esc(n['display'])}</td></tr>" for n in nums
    )
    return f'<table class="numbers">{rows}</table>' if rows else ""


def _results_html(res: Mapping[str, Any], colors: Callable[[str], str]) -> str:
    out = []
    for h in res["horizons"]:
        mult = f" ({h['multiple']:.0f}× the training horizon)" if h.get("multiple") else ""
        head = (
            "<tr><th>optimizer</th><th>mean f_t/f_0 ± s.e.m.</th><th>final loss</th>"
            "<th>diverged</th><th>baseline − learned (paired)</th><th>hyperparameters</th></tr>"
        )
        rows = []
        for r in h["rows"]:
            d = r["diff_baseline_minus_learned"]
            if r["name"] == res.get("learned"):
                vs = ""
            elif d is None:
                vs = (
                    'baseline diverged: <span class="better">learned better</span>'
                    if r["learned_better"]
                    else "diverged runs"
                )
            else:
                cls = (
                    "better"
                    if r["learned_better"]
                    else ("worse" if d < -2 * (r["diff_sem"] or 0) else "")
                )
                verdict = (
                    "learned better"
                    if r["learned_better"]
                    else ("baseline better" if cls == "worse" else "not significant")
                )
                if not r["learned_better"] and r.get("learned_diverged"):
                    verdict += f" (learned diverged on {r['learned_diverged']})"
                vs = f'{_pm(d, r["diff_sem"])} <span class="{cls}">{verdict}</span>'
            hp = ", ".join(f"{k} = {_fmt(v)}" for k, v in (r["hyperparams"] or {}).items())
            sw = f'<span class="swatch" style="background:{colors(r["name"])}"></span>'
            rows.append(
                f"<tr><td>{sw}{_esc(_label(r['name']))}</td><td>{_pm(r['metric'], r['sem'])}</td>"
                f"<td>{_fmt(r['final'])}</td><td>{_esc(r['diverged'])}</td><td>{vs}</td>"
                f"<td>{_esc(hp)}</td></tr>"
            )
        out.append(f"<h3>{h['steps']} steps{_esc(mult)}</h3><table>{head}{''.join(rows)}</table>")
    return "".join(out)


def _section_html(sec: Mapping[str, Any], pngs: Mapping[str, bytes]) -> str:
    parts = [f'<h2 id="{sec["id"]}">{_esc(sec["title"])}{_badge(sec.get("detected"))}</h2>']
    if sec.get("lead"):
        parts.append(f'<p class="lead">{_esc(sec["lead"])}</p>')
    if sec.get("chain"):
        items = "".join(
            f"<li><code>{_esc(c['call'])}</code>"
            + (f' <span class="mech">— {_esc(c["mechanism"])}</span>' if c["mechanism"] else "")
            + "</li>"
            for c in sec["chain"]
        )
        parts.append(f"<p>Chain of transformations:</p><ol>{items}</ol>")
    for label, code in sec.get("code") or []:
        parts.append(f'<p class="codelabel">{_esc(label)}</p><pre>{_esc(code)}</pre>')
    if sec.get("rows"):
        rows = []
        for r in sec["rows"]:
            vs = r.get("vs_best_baseline") or {}
            rows.append(
                f"<tr><td>{_esc(r['name'])}</td><td>{_pm(r['metric'], r['sem'])}</td>"
                f"<td>{_pm(vs.get('mean'), vs.get('sem')) if vs else ''}</td></tr>"
            )
        parts.append(
            "<table><tr><th>optimizer</th><th>mean f_t/f_0 ± s.e.m.</th>"
            f"<th>best baseline − this (paired)</th></tr>{''.join(rows)}</table>"
        )
    for n in sec.get("notes") or []:
        parts.append(f'<p class="note">{_esc(n)}</p>')
    # The numbers table is the first cell of the figure grid: beside the first figure.
    table = _numbers_html(sec.get("numbers") or [])
    cells = [f'<div class="card">{table}</div>'] if table else []
    cells += [_fig_html(f, pngs) for f in sec.get("figures") or []]
    if cells:
        parts.append('<div class="figs">' + "".join(cells) + "</div>")
    return "\n".join(parts)


def _page(
    report: Mapping[str, Any],
    sections: Sequence[Mapping],
    results_figs: Sequence[Mapping],
    res: Mapping | None,
    pngs: Mapping[str, bytes],
    colors: Callable[[str], str],
) -> str:
    title = report["title"]
    nav = ['<a href="#summary">Summary</a>']
    if res:
        nav.append('<a href="#results">Results</a>')
    nav += [f'<a href="#{s["id"]}">{_esc(s["title"].split(":")[0])}</a>' for s in sections]
    kind = (
        "white box: the optimizer's own dynamical system (cell)"
        if report["white_box"]
        else (
            "white box (no extra evidence)"
            if report["source"] == "cell"
            else "black box: behaviour only (optax transformation)"
        )
    )
    body = [
        f"<h1>{_esc(title)}</h1>",
        f'<p class="sub">Interpretation report · {_esc(kind)} · schema {SCHEMA}</p>',
        "<nav>" + "".join(nav) + "</nav>",
        '<h2 id="summary" style="border:0;margin-top:8px">What the optimizer learned</h2>',
        '<div class="summary">'
        + "".join(f"<p>{_esc(s)}</p>" for s in report["summary"])
        + "</div>",
    ]
    if res:
        body.append('<h2 id="results">Results against tuned baselines</h2>')
        if report.get("results_sentence"):
            body.append(f'<p class="lead">{_esc(report["results_sentence"])}</p>')
        body.append(_results_html(res, colors))
        if results_figs:
            body.append(
                '<div class="figs">' + "".join(_fig_html(f, pngs) for f in results_figs) + "</div>"
            )
    for sec in sections:
        body.append(_section_html(sec, pngs))
    body.append(
        "<footer>Generated by <code>probes.write_report</code>. Every number on this page is in "
        "<code>report.json</code>; the figures are also in <code>figures/</code>. Method: "
        "Maheswaranathan et al., <i>Reverse engineering learned optimizers reveals known and "
        "novel mechanisms</i>, NeurIPS 2021.</footer>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head>"
        "<body><main>\n" + "\n".join(body) + "\n</main></body></html>\n"
    )


# ----------------------------------------------------------------------------- entry points


def write_report(
    analysis: Any,
    out_dir: str | os.PathLike,
    *,
    evaluation: Mapping[str, Any] | None = None,
    evidence: Mapping[str, Any] | None = None,
    distill: Mapping[str, Any] | None = None,
    title: str | None = None,
) -> dict[str, Any]:
    """Writes ``out_dir/index.html``, ``out_dir/report.json`` and ``out_dir/figures/*.png``.

    Args:
        analysis: a :class:`probes.Analysis` or its ``to_json()`` dict.
        out_dir: the report directory (created).
        evaluation: an ``eval.json`` dict (``lopt.eval/1``): results table and loss curves.
        evidence: :func:`white_box_evidence` for the white-box figures (cells only).
        distill: a ``distill.json`` dict (``lopt.distill/1`` or ``/2``): the distillation
            section.
        title: page title.

    Returns:
        The ``report.json`` dict (``"schema": "probes.report/1"``).

    Example:
        >>> import optax, probes
        >>> rep = probes.write_report(probes.analyze_optax(optax.sgd(0.1, momentum=0.9)), "out")
        >>> rep["summary"][0]
        'Momentum with β ≈ 0.90 (timescale ≈ 9 steps) carries 100% of its response.'
    """
    from lopt.rundir import atomic_write, write_json

    a = _as_dict(analysis)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ev = dict(evidence) if evidence else None
    if ev is not None:
        ev = _clean(ev)
    b = _Builder(out)
    res = _results(evaluation)
    loss = _loss_section(b, res, distill)
    sections = [
        _momentum_section(b, a, ev, res),
        _clipping_section(b, a),
        _schedule_section(b, a),
        _adaptation_section(b, a, ev),
    ]
    damp = _damping_section(b, a)
    if damp:
        sections.append(damp)
    dsec = _distill_section(distill)
    if dsec:
        sections.append(dsec)
    # Figures left over from an earlier report would not be on the page: remove them.
    written = {Path(f["file"]).name for f in b.figures}
    for old in (out / "figures").glob("*.png"):
        if old.name not in written:
            old.unlink()
    if title is None:
        task = (evaluation or {}).get("task", {}) if evaluation else {}
        name = task.get("name")
        title = (
            "What the learned optimizer learned"
            + (f" on {name}" if name else "")
            + data_note(task.get("data_source"))
        )
    results_json = None
    if res:
        results_json = {
            **res,
            "horizons": [
                {
                    **h,
                    "rows": [
                        {k: v for k, v in r.items() if not k.startswith("curve")} for r in h["rows"]
                    ],
                }
                for h in res["horizons"]
            ],
        }
    distilled = _distill_sentence(distill) if distill else None
    report = {
        "schema": SCHEMA,
        "title": title,
        "source": a.get("source"),
        "white_box": bool(ev) and a.get("source") == "cell",
        "summary": summary_sentences(a, ev) + ([distilled] if distilled else []),
        "results_sentence": _results_sentence(res) if res else None,
        "results": results_json,
        "mechanisms": {
            s["id"]: {
                "detected": s.get("detected"),
                "numbers": {
                    n["key"]: {"label": n["label"], "value": n["value"], "display": n["display"]}
                    for n in s["numbers"]
                },
                "notes": s.get("notes") or [],
                **(
                    {"chain": s["chain"], "code": dict(s.get("code") or []), "rows": s["rows"]}
                    if s["id"] == "distill"
                    else {}
                ),
            }
            for s in sections
        },
        "figures": b.figures,
        "analysis": _clean(a),
        "evidence": ev,
        "distill": _clean(distill) if distill else None,
    }
    report = _clean(report)
    page = _page(report, sections, loss["figures"] if loss else [], res, b.pngs, b.fig.color)
    data = page.encode("utf-8")
    atomic_write(out / "index.html", lambda f: f.write(data))
    write_json(out / "report.json", report)
    return report


def report_run(
    run: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    progress: bool = True,
    seed: int = 0,
) -> Path:
    """Writes the interpretation report of a meta-training run directory (``RUN/report/``).

    Loads ``theta.npz`` and the task family from ``config.json``; re-uses ``analysis.json`` when
    it is newer than ``theta.npz`` (else runs :func:`probes.analyze` and writes it, as
    ``probes analyze`` does); computes :func:`white_box_evidence` when the optimizer has a cell;
    adds ``eval.json`` and ``distill.json`` when present.

    Args:
        run: the run directory.
        out: the report directory (default ``RUN/report``).
        progress: print one line per stage (to stderr).
        seed: key for the recorded trajectories.

    Returns:
        The path of ``index.html``.
    """
    import jax

    from lopt.checkpoint import load
    from lopt.evaluation import family_from_config
    from lopt.rundir import read_json

    stage = _stage(progress)
    run = Path(run)
    out = run / "report" if out is None else Path(out)
    cfg = read_json(run / "config.json")
    opt, theta, _ = load(run / "theta.npz")
    family = family_from_config(cfg)
    stage(f"loaded {run} ({family.name})")
    from probes.runs import analyze_run, saved_analysis

    analysis, why = saved_analysis(run, key_seed=seed)
    stage(why)
    if analysis is None:
        stage("analysing the optimizer (writes analysis.json)")
        analysis = analyze_run(run, key_seed=seed)
    evidence = None
    try:
        cell = opt.cell(theta)
    except TypeError:
        cell = None
        stage("no cell (black box): behavioural figures only")
    if cell is not None and analysis.get("source") == "cell":
        evidence = white_box_evidence(
            cell, analysis, family=family, key=jax.random.key(seed), progress=stage
        )
    evaluation = read_json(run / "eval.json") if (run / "eval.json").exists() else None
    distill = read_json(run / "distill.json") if (run / "distill.json").exists() else None
    stage("drawing figures and writing the report")
    task = cfg.get("task") or {}
    title = (
        f"{run.resolve().name}: what the learned optimizer learned"
        + (f" on {task['name']}" if task.get("name") else "")
        + data_note(task.get("data_source"))
    )
    write_report(
        analysis, out, evaluation=evaluation, evidence=evidence, distill=distill, title=title
    )
    stage(f"done: {out / 'index.html'}")
    return out / "index.html"
