"""How much of the learned optimizer's gain a distilled chain recovers, with its uncertainty.

The gain is the paired difference ``best_baseline − learned`` of a per-problem metric (mean
normalised loss) on the same held-out problems; the recovered fraction is
``(mean B − mean D)/(mean B − mean L)`` with a 95% paired bootstrap interval over problems.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class BootstrapConfig:
    """The paired bootstrap of :func:`recovered_fraction`.

    Attributes:
        samples: resamples of the problems.
        seed: ``numpy.random.default_rng`` seed of the resampling.
    """

    samples: int = 10_000
    seed: int = 0


def mean_sem(x: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of the mean of ``x`` (s.e.m. ``inf`` for one value)."""
    x = np.asarray(x, np.float64)
    sem = float(np.std(x, ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("inf")
    return float(np.mean(x)), sem


def recovered_fraction(
    learned: np.ndarray,
    baseline: np.ndarray,
    distilled: np.ndarray,
    config: BootstrapConfig = BootstrapConfig(),
) -> dict[str, Any] | None:
    """``(mean B − mean D)/(mean B − mean L)`` with a 95% paired bootstrap interval.

    Problems are resampled with replacement (the same indices for all three optimizers, so the
    pairing is kept), ``config.samples`` times with ``numpy.random.default_rng(config.seed)``;
    the interval is the 2.5% and 97.5% percentiles of the resampled ratios. ``None`` if a metric
    is not finite.

    Args:
        learned: per-problem metrics ``[B]`` of the learned optimizer.
        baseline: the best baseline's, on the same problems.
        distilled: the distilled chain's, on the same problems.
        config: resamples and seed (:class:`BootstrapConfig`).

    Returns:
        ``{"mean", "ci": [lo, hi], "method", "samples", "seed"}`` or ``None``.
    """
    L, B, D = (np.asarray(x, np.float64) for x in (learned, baseline, distilled))
    if not all(np.all(np.isfinite(x)) for x in (L, B, D)) or np.mean(B - L) == 0:
        return None
    samples, seed = config.samples, config.seed
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, L.size, size=(samples, L.size))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.mean(B[idx] - D[idx], 1) / np.mean(B[idx] - L[idx], 1)
    ratios = ratios[np.isfinite(ratios)]
    lo, hi = np.percentile(ratios, [2.5, 97.5]) if ratios.size else (np.nan, np.nan)
    return {
        "mean": float(np.mean(B - D) / np.mean(B - L)),
        "ci": [float(lo), float(hi)],
        "method": "paired bootstrap over problems, 95% percentile interval",
        "samples": int(samples),
        "seed": int(seed),
    }


def fraction_report(
    learned: np.ndarray,
    baseline: np.ndarray,
    distilled: np.ndarray,
    distilled_retuned: np.ndarray | None = None,
    distilled_identified: np.ndarray | None = None,
    config: BootstrapConfig = BootstrapConfig(),
) -> dict[str, Any]:
    """Gain of the learned optimizer over the baseline, its significance, recovered fractions.

    The gain is the paired difference ``baseline − learned`` (mean and s.e.m. over problems); it
    is significant when it exceeds 2 s.e.m. (the rule of ``lopt.evaluation.paired``). Fractions
    are reported only then (:func:`recovered_fraction` with ``config``); otherwise they are
    ``None`` and ``reason`` says why.

    Args:
        learned: per-problem metrics ``[B]`` of the learned optimizer.
        baseline: the best baseline's, on the same problems.
        distilled: the distilled chain's.
        distilled_retuned: the re-tuned chain's, if there is one.
        distilled_identified: the identified chain's, if there is one.
        config: the bootstrap of the fractions' intervals.

    Returns:
        ``{"gain": {"mean", "sem"} | None, "significant", "fraction", "fraction_retuned",
        "fraction_identified", "reason"}``.
    """
    L, B = np.asarray(learned, np.float64), np.asarray(baseline, np.float64)
    d = B - L
    if not np.all(np.isfinite(d)):
        return {
            "gain": None,
            "significant": False,
            "fraction": None,
            "fraction_retuned": None,
            "fraction_identified": None,
            "reason": "non-finite metrics (a diverged run): the gain is undefined",
        }
    mean, sem = mean_sem(d)
    out: dict[str, Any] = {"gain": {"mean": mean, "sem": sem}, "significant": bool(mean > 2 * sem)}
    if not out["significant"]:
        out.update(
            fraction=None,
            fraction_retuned=None,
            fraction_identified=None,
            reason=f"the learned optimizer's gain over the best baseline ({mean:.3g} ± "
            f"{sem:.2g}) is not above 2 s.e.m. of the paired difference",
        )
        return out
    out["fraction"] = recovered_fraction(L, B, distilled, config)
    out["fraction_retuned"] = (
        None if distilled_retuned is None else recovered_fraction(L, B, distilled_retuned, config)
    )
    out["fraction_identified"] = (
        None
        if distilled_identified is None
        else recovered_fraction(L, B, distilled_identified, config)
    )
    out["reason"] = None if out["fraction"] is not None else "the distilled chain diverged"
    return out
