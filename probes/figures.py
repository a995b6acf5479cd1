"""Figures of an interpretation report, drawn with seaborn on matplotlib's Agg.

Every function takes plain NumPy data and returns a :class:`matplotlib.figure.Figure` built
without ``pyplot`` (so no global backend is switched and nothing is shown); :func:`png` renders
one to PNG bytes. Colours are fixed per optimizer (:func:`color`) so that "learned" has the same
colour in every figure of a report. The report module (:mod:`probes.report`) decides which
figures exist and writes them; this module only draws.

Shapes: ``T`` steps, ``G`` gradient values, ``A`` perturbation amounts, ``M`` magnitudes,
``H`` modes, ``L`` trajectory lines.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import matplotlib
import matplotlib.ticker
import numpy as np
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

#: One colour per optimizer name, shared by every figure (seaborn's colour-blind palette).
_CB = sns.color_palette("colorblind", 10).as_hex()
COLORS: dict[str, str] = {
    "learned": _CB[0],
    "momentum": _CB[1],
    "rmsprop": _CB[2],
    "adam": _CB[4],
    "sgd": _CB[5],
    "distilled": _CB[9],
    "distilled_retuned": _CB[7],
    "distilled_identified": _CB[8],
}
#: Accent colours for things that are not optimizers.
POS, NEG, MARK, GREY = _CB[0], _CB[3], "#222222", "#9a9a9a"
DPI = 110


def color(name: str) -> str:
    """The colour of optimizer ``name`` (unknown names get a stable colour from the palette)."""
    if name in COLORS:
        return COLORS[name]
    return (_CB[6], _CB[8])[sum(map(ord, name)) % 2]


def literal(text: Any) -> str:
    r"""``text`` as matplotlib shows it literally: no mathtext, whatever the data holds.

    Matplotlib parses a label with an even number of unescaped ``$`` as mathtext, where a
    backslash starts a command (a run directory named ``$a\undefined$`` fails to draw).
    Escaping every ``$`` as ``\$`` leaves no math, and outside math matplotlib shows ``\$`` as
    ``$`` and every other character (backslashes included) as it is. Every label or title built
    from data (optimizer and run names, a schedule's shape) goes through here.

    Example:
        >>> literal("run $1")
        'run \\$1'
    """
    return str(text).replace("$", r"\$")


@contextlib.contextmanager
def _style() -> Iterator[None]:
    rc = {
        "font.family": ["DejaVu Sans"],
        "axes.titlesize": 11,
        "axes.titleweight": "semibold",
        "axes.labelsize": 10,
        "legend.fontsize": 8.5,
        "legend.frameon": False,
        "xtick.labelsize": 8.5,
        "ytick.labelsize": 8.5,
        "axes.spines.top": False,
        "axes.spines.right": False,
    }
    with sns.axes_style("whitegrid", {"grid.color": "#e6e6e6"}), matplotlib.rc_context(rc):
        yield


def figure(ncols: int = 1, width: float = 6.0, height: float = 3.9) -> tuple[Figure, list]:
    """A new figure in the report's style with ``ncols`` axes side by side.

    Args:
        ncols: number of axes in one row.
        width: width in inches.
        height: height in inches.

    Returns:
        ``(fig, axes)``: the :class:`matplotlib.figure.Figure` (Agg canvas) and its axes.
    """
    with _style():
        fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def png(fig: Figure) -> bytes:
    """PNG bytes of a figure (Agg)."""
    buf = io.BytesIO()
    with _style():
        fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return buf.getvalue()


def _arr(x: Any) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in np.ravel(np.asarray(x, object))], float)


def _symlog(ax, axis: str, values: np.ndarray) -> None:
    v = np.abs(values[np.isfinite(values) & (values != 0)])
    if v.size:
        getattr(ax, f"set_{axis}scale")("symlog", linthresh=float(np.min(v)) * 1.5)


# ----------------------------------------------------------------------------- 1. loss curves


def loss_curves(panels: Sequence[Mapping[str, Any]]) -> Figure:
    """Normalised loss ``f_t/f_0`` against step, mean ± s.e.m. band, one panel per horizon.

    Args:
        panels: ``[{"title": str, "curves": {name: {"mean": (T,), "sem": (T,), "label"}}}]``
            (``name`` picks the colour, ``label`` the legend text).
    """
    fig, axes = figure(len(panels), width=5.2 * len(panels), height=3.9)
    for ax, panel in zip(axes, panels, strict=True):
        means = []
        for name, c in panel["curves"].items():
            mean, sem = _arr(c["mean"]), _arr(c.get("sem", np.zeros_like(c["mean"])))
            t = np.arange(mean.size)
            col = color(name)
            lw = 2.2 if name == "learned" else 1.5
            style = "--" if name.startswith("distilled") else "-"
            ax.plot(t, mean, color=col, lw=lw, ls=style, label=literal(c.get("label", name)))
            # On a log axis a band reaching zero would swamp the plot: where mean - sem ≤ 0 the
            # lower edge mirrors the upper one in log space, mean² / (mean + sem).
            with np.errstate(divide="ignore", invalid="ignore"):
                lo = np.where(mean - sem > 0, mean - sem, mean**2 / (mean + sem))
            ax.fill_between(t, lo, mean + sem, color=col, alpha=0.2, lw=0)
            means.append(mean)
        ax.set_yscale("log")
        m = np.concatenate(means) if means else np.zeros(0)
        m = m[np.isfinite(m) & (m > 0)]
        if m.size:
            ax.set_ylim(m.min() / 3, m.max() * 3)
        ax.set_xlabel("step")
        ax.set_ylabel("normalised loss $f_t/f_0$")
        ax.set_title(literal(panel["title"]))
        ax.legend(loc="best")
    return fig


# ----------------------------------------------------------------------------- 2. momentum


def state_trajectories(
    lines: np.ndarray,
    fixed_point: np.ndarray,
    start: np.ndarray | None,
    explained: Sequence[float],
) -> Figure:
    """Hidden-state trajectories projected on two principal components, coloured by step.

    Args:
        lines: ``(L, T, 2)`` projected states.
        fixed_point: ``(2,)`` the convergence point ``h*``.
        start: ``(2,)`` the initial state ``h0`` (or ``None``).
        explained: variance ratio of the two components.
    """
    fig, (ax,) = figure(width=5.6, height=4.4)
    lines = np.asarray(lines, float)
    L, T, _ = lines.shape
    cmap = sns.color_palette("crest", as_cmap=True)
    for line in lines:
        seg = np.stack([line[:-1], line[1:]], axis=1)
        lc = LineCollection(seg, cmap=cmap, lw=1.1, alpha=0.75)
        lc.set_array(np.arange(T - 1))
        lc.set_clim(0, T - 1)
        ax.add_collection(lc)
    sm = matplotlib.cm.ScalarMappable(cmap=cmap, norm=matplotlib.colors.Normalize(0, T - 1))
    fig.colorbar(sm, ax=ax, label="step", shrink=0.85)
    if start is not None:
        ax.plot(*start, "o", ms=8, mfc="white", mec=MARK, mew=1.5, label="$h_0$", zorder=5)
    ax.plot(*fixed_point, "*", ms=16, color=NEG, mec="white", label="$h^*$ (g = 0)", zorder=6)
    ax.autoscale_view()
    ev = [f"{100 * e:.0f}%" for e in explained]
    ax.set_xlabel(f"PC 1 ({ev[0]} var.)")
    ax.set_ylabel(f"PC 2 ({ev[1] if len(ev) > 1 else '0%'} var.)")
    ax.set_title("States converge to the fixed point")
    ax.legend(loc="best")
    return fig


def update_functions(
    gradients: np.ndarray,
    updates: np.ndarray,
    amounts: np.ndarray,
    *,
    title: str,
    amount_label: str,
    reference_slope: float | None = None,
    log_color: bool = False,
) -> Figure:
    """A family of update functions ``U(h, g)`` over ``g``, one per state, coloured by amount.

    Args:
        gradients: ``(G,)``.
        updates: ``(A, G)``.
        amounts: ``(A,)``, what distinguishes the states (colour bar).
        title: axes title.
        amount_label: colour-bar label.
        reference_slope: draws ``U = slope·g`` (the linear update at the reference state).
        log_color: colour on a symmetric log scale (amounts spanning decades).
    """
    fig, (ax,) = figure(width=5.6, height=4.2)
    g = _arr(gradients)
    amounts = _arr(amounts)
    cmap = sns.color_palette("icefire", as_cmap=True)
    lim = float(np.nanmax(np.abs(amounts))) or 1.0
    norm = matplotlib.colors.Normalize(-lim, lim)
    if log_color:
        small = np.abs(amounts[np.isfinite(amounts) & (amounts != 0)])
        lt = float(small.min()) if small.size else 1.0
        norm = matplotlib.colors.SymLogNorm(lt, vmin=-lim, vmax=lim)
    elif np.nanmin(amounts) >= 0:
        cmap = sns.color_palette("flare", as_cmap=True)
        norm = matplotlib.colors.Normalize(float(np.nanmin(amounts)), lim)
    for a, u in zip(amounts, np.asarray(updates, float), strict=True):
        ax.plot(g, u, color=cmap(norm(a)), lw=1.6)
    if reference_slope is not None and np.isfinite(reference_slope):
        centre = np.asarray(updates, float)[int(np.nanargmin(np.abs(amounts)))]
        u0 = float(np.interp(0.0, g, centre))
        ax.plot(g, u0 + reference_slope * g, color=GREY, ls=":", lw=1.4, label="slope at h*")
        ax.legend(loc="best")
    ax.axhline(0, color="#bbbbbb", lw=0.8, zorder=0)
    ax.axvline(0, color="#bbbbbb", lw=0.8, zorder=0)
    sm = matplotlib.cm.ScalarMappable(cmap=cmap, norm=norm)
    cb = fig.colorbar(sm, ax=ax, label=literal(amount_label), shrink=0.85)
    if log_color:
        decades = 10.0 ** np.arange(np.ceil(np.log10(lt)), np.floor(np.log10(lim)) + 1)
        cb.set_ticks(np.concatenate([-decades[::-1], [0.0], decades]))
    ax.set_xlabel("gradient g")
    ax.set_ylabel("update U(h, g)")
    ax.set_title(literal(title))
    return fig


def eigenvalues(
    eigs: np.ndarray,
    alphas: np.ndarray,
    fit_eigs: np.ndarray | None = None,
    dominant: complex | None = None,
) -> Figure:
    """Eigenvalues of ``∂F/∂h`` in the complex plane with the unit circle, coloured by ``Re α_i``.

    Left: the whole unit disc; right: a zoom on the eigenvalues (when they are clustered).

    Args:
        eigs: complex ``(H,)``.
        alphas: complex ``(H,)``.
        fit_eigs: fitted modes (drawn as open squares).
        dominant: the dominant fitted mode (a star).
    """
    eigs = np.asarray(eigs, complex)
    ok = np.isfinite(eigs)
    span = np.ptp(eigs.real[ok]) if ok.any() else 2.0
    span = max(span, np.ptp(eigs.imag[ok]) if ok.any() else 0.0)
    zoom = span < 0.8
    fig, axes = figure(2 if zoom else 1, width=9.8 if zoom else 5.4, height=4.4)
    al = np.real(np.asarray(alphas, complex))
    lim = float(np.nanmax(np.abs(al))) if al.size and np.isfinite(al).any() else 1.0
    norm = matplotlib.colors.Normalize(-(lim or 1.0), lim or 1.0)
    cmap = sns.color_palette("vlag", as_cmap=True)
    th = np.linspace(0, 2 * np.pi, 720)
    for i, ax in enumerate(axes):
        ax.plot(np.cos(th), np.sin(th), color=GREY, lw=1, ls="--", label="unit circle")
        sc = ax.scatter(
            eigs.real, eigs.imag, c=al, cmap=cmap, norm=norm, s=46, ec="#333333", lw=0.6, zorder=3
        )
        if fit_eigs is not None and len(fit_eigs):
            f = np.asarray(fit_eigs, complex)
            ax.scatter(
                f.real,
                f.imag,
                marker="s",
                s=80,
                fc="none",
                ec=MARK,
                lw=1.3,
                zorder=4,
                label="fitted modes",
            )
        if dominant is not None:
            ax.plot(
                dominant.real,
                dominant.imag,
                "*",
                ms=15,
                color=NEG,
                mec="white",
                zorder=5,
                label=f"dominant β = {dominant.real:.3g}",
            )
        ax.set_xlabel("Re λ")
        ax.set_ylabel("Im λ")
        if i == 0:
            ax.set_aspect("equal")
            ax.set_xlim(-1.15, 1.15)
            ax.set_ylim(-1.15, 1.15)
            ax.set_title("Eigenvalues at the convergence point")
            ax.legend(loc="lower left")
        else:
            cx = 0.5 * (eigs.real[ok].min() + max(eigs.real[ok].max(), 1.0))
            half = 0.55 * max(max(eigs.real[ok].max(), 1.0) - eigs.real[ok].min(), 0.1)
            ax.set_xlim(cx - half, cx + half)
            ax.set_ylim(-half, half)
            ax.set_aspect("equal")
            ax.set_title("Zoom")
    fig.colorbar(sc, ax=axes, label="Re $\\alpha_i$ (mode learning rate)", shrink=0.85)
    return fig


def alpha_beta(
    modes: Sequence[Mapping[str, Any]],
    points: Sequence[Mapping[str, Any]],
) -> Figure:
    """Learning rate ``α`` against momentum ``β``: fitted modes and reference points.

    Args:
        modes: ``[{"beta", "alpha", "label", "kind": "fit"|"eig"}]``.
        points: marked points ``[{"beta", "alpha", "label", "color", "marker"}]`` (the dominant
            mode, the heavy-ball optimum, a tuned baseline).
    """
    fig, (ax,) = figure(width=5.4, height=4.2)
    eig = [m for m in modes if m.get("kind") == "eig"]
    fit = [m for m in modes if m.get("kind") != "eig"]
    if eig:
        ax.scatter(
            [m["beta"] for m in eig],
            [m["alpha"] for m in eig],
            s=16,
            color=GREY,
            alpha=0.7,
            label="eigenmodes (real λ)",
            zorder=2,
        )
    if fit:
        ax.scatter(
            [m["beta"] for m in fit],
            [m["alpha"] for m in fit],
            s=60,
            marker="s",
            fc="none",
            ec=MARK,
            lw=1.2,
            label="fitted modes",
            zorder=3,
        )
    for p in points:
        ax.plot(
            p["beta"],
            p["alpha"],
            p.get("marker", "o"),
            ms=13 if p.get("marker") == "*" else 9,
            color=p.get("color", MARK),
            mec="white",
            label=literal(p["label"]),
            zorder=5,
        )
    ax.axhline(0, color="#bbbbbb", lw=0.8, zorder=0)
    ax.set_xlim(-0.05, 1.05)
    ax.set_xlabel("momentum β (decay per step)")
    ax.set_ylabel("learning rate α")
    ax.set_title("Momentum modes: α against β")
    ax.legend(loc="best")
    return fig


def impulse_response(
    response: np.ndarray,
    fitted: np.ndarray | None = None,
    along: Sequence[tuple[int, np.ndarray]] = (),
) -> Figure:
    """``|r_k|`` on a log scale (dotted where ``-r_k < 0``) and the fit by exponential modes.

    ``-r_k`` is the update caused by a unit gradient ``k`` steps earlier; heavy-ball momentum
    gives ``α βᵏ``, a straight line. ``along``: ``(start, response)`` pairs measured along
    training trajectories (:mod:`probes.memory_along`), drawn thin, lighter for later starts.
    """
    fig, (ax,) = figure(width=5.6, height=3.9)
    r = -_arr(response)
    k = np.arange(r.size)
    mag = np.abs(r)
    nz = mag[np.isfinite(mag) & (mag > 0)]
    peak = float(nz.max()) if nz.size else 1.0
    floor = max(1e-7 * peak, float(nz.min()) / 2 if nz.size else 0.0)
    col = color("learned")
    ax.plot(k, np.where(r > 0, mag, np.nan), color=col, lw=2.2, label="measured, positive")
    if (r < 0).any():
        ax.plot(
            k, np.where(r < 0, mag, np.nan), color=col, lw=1.6, ls=":", label="measured, negative"
        )
    if fitted is not None:
        f = np.abs(_arr(fitted))
        ax.plot(k, np.where(f > floor, f, np.nan), color=NEG, lw=1.3, ls="--", label="fitted modes")
    for i, (_, resp) in enumerate(along):
        a = np.abs(_arr(resp))
        shade = str(0.15 + 0.6 * i / max(len(along) - 1, 1))
        label = "along training (later starts lighter)" if i == 0 else None
        ax.plot(np.arange(a.size), np.where(a > floor, a, np.nan), color=shade, lw=0.9, label=label)
    if nz.size:
        ax.set_yscale("log")
        ax.set_ylim(floor, peak * 2)
    ax.set_xlabel("lag k (steps)")
    ax.set_ylabel("|update per unit gradient k steps ago|")
    ax.set_title("Impulse response")
    ax.legend(loc="best")
    return fig


# ----------------------------------------------------------------------------- 3. clipping


def clipping(
    gradients: np.ndarray,
    updates: np.ndarray,
    *,
    slope0: float,
    threshold_pos: float | None,
    threshold_neg: float | None,
    hist_counts: np.ndarray | None,
    hist_edges: np.ndarray | None,
    xlim: float,
) -> Figure:
    """``U(h0, g)`` over the histogram of training gradients, with the clip thresholds."""
    fig, (ax,) = figure(width=6.4, height=4.2)
    g, u = _arr(gradients), _arr(updates)
    keep = np.abs(g) <= xlim
    if hist_counts is not None and len(hist_counts):
        counts, edges = _arr(hist_counts), _arr(hist_edges)
        ax2 = ax.twinx()
        ax2.bar(
            edges[:-1],
            counts,
            width=np.diff(edges),
            align="edge",
            color=GREY,
            alpha=0.35,
            lw=0,
            label="training gradients",
        )
        ax2.set_ylabel("gradients seen (count)", color="#777777")
        ax2.tick_params(axis="y", colors="#777777")
        ax2.grid(False)
        if counts.size and np.max(counts) > 0:
            ax2.set_yscale("log")
            ax2.set_ylim(0.8, float(np.max(counts)) * 3)
        ax.set_zorder(ax2.get_zorder() + 1)
        ax.patch.set_visible(False)
    ax.plot(g[keep], slope0 * g[keep], color=GREY, ls=":", lw=1.3, label="linear (no clipping)")
    ax.plot(g[keep], u[keep], color=color("learned"), lw=2.2, label="U(h0, g)")
    for t, lab in ((threshold_pos, "+"), (threshold_neg, "-")):
        if t is not None and np.isfinite(t) and t <= xlim:
            x = t if lab == "+" else -t
            ax.axvline(x, color=NEG, ls="--", lw=1.2)
            # Each label sits on the outer side of its line, so close thresholds do not overlap.
            ax.annotate(
                f"{x:.3g}",
                (x, 0.03),
                xycoords=("data", "axes fraction"),
                xytext=(3 if lab == "+" else -3, 0),
                textcoords="offset points",
                ha="left" if lab == "+" else "right",
                va="bottom",
                fontsize=8,
                color=NEG,
                bbox={"fc": "white", "ec": "none", "pad": 1.5},
            )
    ax.axhline(0, color="#bbbbbb", lw=0.8, zorder=0)
    ax.set_xlim(-xlim, xlim)
    ulim = float(np.nanmax(np.abs(u[keep]))) if keep.any() else 1.0
    ax.set_ylim(-1.25 * ulim, 1.25 * ulim)
    ax.set_xlabel("gradient g")
    ax.set_ylabel("first update U(h0, g)")
    ax.set_title("Update function at the initial state")
    ax.legend(loc="upper right")
    return fig


# ----------------------------------------------------------------------------- 4. schedule


def schedule(
    alpha: np.ndarray, *, peak: int | None, shape: str, ylabel: str | None = None
) -> Figure:
    """``α_eff(h_t)`` along the autonomous trajectory ``h_{t+1} = F(h_t, 0)`` (or ``ylabel``'s)."""
    fig, (ax,) = figure(width=5.6, height=3.9)
    a = _arr(alpha)
    t = np.arange(a.size)
    ax.plot(t, a, color=color("learned"), lw=2.2)
    ax.fill_between(t, 0, a, color=color("learned"), alpha=0.1, lw=0)
    if peak is not None and 0 <= peak < a.size:
        ax.plot(peak, a[peak], "o", ms=8, color=NEG, mec="white", label=f"peak at step {peak}")
        ax.legend(loc="best")
    ax.set_xlabel("step t (zero gradients)")
    ax.set_ylabel(ylabel or "effective learning rate $\\alpha_{eff}$")
    ax.set_title(literal(f"Learning-rate schedule: {shape}"))
    ax.set_ylim(bottom=min(0.0, float(np.nanmin(a)) * 1.1) if np.isfinite(a).any() else 0)
    return fig


# ----------------------------------------------------------------------------- 5. adaptation


def s_curve(arms: Sequence[Mapping[str, Any]], *, ylabel: str) -> Figure:
    """Fixed points ``h*(g*)`` (first principal component) against ``g*``, one line per sweep.

    Args:
        arms: ``[{"inputs": (N,), "pc": (N,), "label", "color", "dashed": bool,
            "fold": (N,) bool, "jump_back": (N,) bool}]``: ``fold`` marks folds (×),
            ``jump_back`` jumps of a sweep traced back (hysteresis, ▲ in the arm's colour).
        ylabel: the y label.
    """
    fig, (ax,) = figure(width=5.8, height=4.2)
    allg, marks = [], set()
    for arm in arms:
        g, y = _arr(arm["inputs"]), _arr(arm["pc"])
        allg.append(g)
        ax.plot(
            g,
            y,
            color=arm["color"],
            lw=1.4 if arm.get("dashed") else 2.2,
            ls="--" if arm.get("dashed") else "-",
            marker=".",
            ms=4,
            label=literal(arm["label"]),
        )
        fold = np.asarray(arm.get("fold", []), bool)
        if fold.any():
            ax.plot(g[fold], y[fold], "x", color=MARK, ms=8, mew=1.6)
            marks.add("fold")
        back = np.asarray(arm.get("jump_back", []), bool)
        if back.any():
            ax.plot(g[back], y[back], "^", color=arm["color"], mfc="none", ms=7, mew=1.4)
            marks.add("back")
    if "fold" in marks:
        ax.plot([], [], "x", color=MARK, label="fold (jump)")
    if "back" in marks:
        ax.plot([], [], "^", color=MARK, mfc="none", label="jump on the way back (hysteresis)")
    g = np.abs(np.concatenate(allg)) if allg else np.zeros(1)
    g = g[np.isfinite(g) & (g > 0)]
    if g.size:
        lt = max(float(g.min()), float(g.max()) * 1e-4)
        ax.set_xscale("symlog", linthresh=lt, linscale=0.5)
        decades = 10.0 ** np.arange(np.ceil(np.log10(lt)), np.floor(np.log10(g.max())) + 1)
        ax.xaxis.set_major_locator(
            matplotlib.ticker.FixedLocator(np.concatenate([-decades[::-1], [0.0], decades]))
        )
    ax.set_xlabel("constant gradient g*")
    ax.set_ylabel(ylabel)
    ax.set_title("Fixed points h*(g*): the S-curve")
    ax.legend(loc="best")
    return fig


def adaptation_lr(series: Sequence[Mapping[str, Any]], *, reference: float | None) -> Figure:
    """``α_eff`` at the steady state against ``|g*|``, log-log, one series per arm/sweep.

    Args:
        series: ``[{"magnitudes": (M,), "alpha": (M,), "label", "color", "style": "line"|"dots"}]``.
        reference: draws a one-decade slope ``-1`` guide (RMSProp-like adaptation) starting at
            this ``α``, over the largest magnitudes.
    """
    fig, (ax,) = figure(width=5.6, height=4.2)
    allm = []
    for s in series:
        m, a = _arr(s["magnitudes"]), np.abs(_arr(s["alpha"]))
        ok = np.isfinite(m) & np.isfinite(a) & (m > 0) & (a > 0)
        allm.append(m[ok])
        lab = literal(s["label"])
        if s.get("style") == "dots":
            ax.plot(m[ok], a[ok], "o", ms=6, mfc="none", mec=s["color"], mew=1.4, label=lab)
        else:
            ax.plot(
                m[ok],
                a[ok],
                color=s["color"],
                lw=1.4 if s.get("dashed") else 2.2,
                ls="--" if s.get("dashed") else "-",
                label=lab,
            )
    m = np.concatenate(allm) if allm else np.zeros(0)
    ys = [np.abs(_arr(s["alpha"])) for s in series]
    ys = np.concatenate(ys) if ys else np.zeros(0)
    ys = ys[np.isfinite(ys) & (ys > 0)]
    if ys.size:
        ax.set_ylim(ys.min() / 4, ys.max() * 4)
    if reference is not None and m.size and np.isfinite(reference) and reference > 0:
        # A one-decade guide at the right end, starting at the reference level.
        x = np.geomspace(max(m.min(), m.max() / 10), m.max(), 20)
        ax.plot(x, reference * x[0] / x, color=GREY, ls=":", lw=1.4, label="slope −1 (RMSProp)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("|g*| (constant gradient)")
    ax.set_ylabel("$\\alpha_{eff}$ at the steady state")
    ax.set_title("Learning rate against gradient magnitude")
    ax.legend(loc="best")
    return fig


# ----------------------------------------------------------------------------- 6. damping


def damping(
    amplitudes: np.ndarray,
    dc_gain: np.ndarray,
    nyquist_gain: np.ndarray,
    ratio: np.ndarray,
    *,
    kappa: float | None,
    gradient_range: tuple[float, float] | None,
    threshold: float = 0.5,
    buildup: np.ndarray | None = None,
    buildup_fit: np.ndarray | None = None,
    memory: float | None = None,
    buildup_amplitude: float | None = None,
    range_label: str = "training |g|",
) -> Figure:
    """Steady gains for persistent and sign-flipping gradients, their ratio, its build-up.

    Left: ``G₀(a)`` (constant gradient ``a``) and ``G_π(a)`` (``+a, −a, …``) per unit gradient,
    log-log. Middle: ``R(a)``, their ratio relative to its small-amplitude value, with the
    detection threshold and ``κ``. The range where detection is decided (``range_label``) is
    shaded in both. Right (when
    ``buildup`` is given): the Nyquist gain step by step from a fresh state, relative to a tiny
    amplitude, with the fitted memory.
    """
    has_buildup = buildup is not None and len(buildup) > 0
    fig, axes = figure(ncols=3 if has_buildup else 2, width=15.0 if has_buildup else 10.5)
    ax0, ax1 = axes[0], axes[1]
    a = _arr(amplitudes)
    for ax in (ax0, ax1):
        if gradient_range is not None and all(np.isfinite(gradient_range)):
            ax.axvspan(*gradient_range, color=GREY, alpha=0.12, lw=0, label=literal(range_label))
        ax.set_xscale("log")
        ax.set_xlabel("gradient amplitude a")
    for y, lab, col in (
        (_arr(dc_gain), "persistent: g = a, a, a, …", color("learned")),
        (_arr(nyquist_gain), "sign-flipping: g = a, −a, a, …", NEG),
    ):
        ok = np.isfinite(y) & (y > 0)
        ax0.plot(a[ok], y[ok], color=col, lw=2.2, label=lab)
    ax0.set_yscale("log")
    ax0.set_ylabel("steady update per unit gradient")
    ax0.set_title("Gain for persistent and oscillating gradients")
    ax0.legend(loc="best")
    r = _arr(ratio)
    ok = np.isfinite(r)
    ax1.plot(a[ok], r[ok], color=MARK, lw=2.2, label="R(a)")
    ax1.axhline(threshold, color=GREY, ls=":", lw=1.3, label=f"R = {threshold:g}")
    ax1.axhline(1.0, color="#bbbbbb", lw=0.8, zorder=0)
    if kappa is not None and np.isfinite(kappa):
        ax1.plot(kappa, threshold, "o", ms=8, color=NEG, mec="white", label=f"κ ≈ {kappa:.3g}")
    top = float(np.nanmax(r[ok])) if ok.any() else 1.0
    ax1.set_ylim(0, max(1.1, 1.05 * top))
    ax1.set_ylabel("R(a): oscillating / persistent gain, relative")
    ax1.set_title("Oscillation damping")
    ax1.legend(loc="best")
    if has_buildup:
        ax2 = axes[2]
        b = _arr(buildup)
        t = np.arange(b.size)
        ax2.plot(t, b, color=NEG, lw=2.0, label="measured")
        if buildup_fit is not None and len(buildup_fit):
            lab = "fit" + (f", ρ ≈ {memory:.3g}" if memory is not None else "")
            ax2.plot(t, _arr(buildup_fit), color=MARK, ls="--", lw=1.4, label=lab)
        ax2.axhline(1.0, color="#bbbbbb", lw=0.8, zorder=0)
        ax2.set_ylim(0, max(1.1, float(np.nanmax(b)) * 1.05) if np.isfinite(b).any() else 1.1)
        ax2.set_xlabel("step t (gradient alternating from a fresh state)")
        amp = f" at a ≈ {buildup_amplitude:.2g}" if buildup_amplitude is not None else ""
        ax2.set_ylabel("sign-flipping gain, relative to a tiny a")
        ax2.set_title("How the damping builds up" + amp)
        ax2.legend(loc="best")
    return fig
