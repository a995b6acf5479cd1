"""Hand-designed baselines (SGD, momentum, RMSProp, Adam) and the spaces they are tuned over.

A baseline is an optax transformation built by name from a dict of hyperparameters:

    >>> import lopt
    >>> tx = lopt.baseline("momentum", learning_rate=3.2, momentum=0.9)

Hyperparameters may be traced arrays, so :func:`lopt.tune` can ``vmap`` over candidates and
build the transformation inside the vmapped function. Each baseline has a :class:`SearchSpace`:
the learning rate on a log grid and (except SGD) one more hyperparameter ``h`` in ``[0, 1)``
(momentum's β, RMSProp's decay, Adam's β1 with β2 = 0.999), gridded on a log scale of
``1 - h``, because what matters is the memory ``1 / (1 - h)`` of the average it controls.
Reference: Maheswaranathan et al. (2021), section 3 (tuned baselines).
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
import optax


def _sgd(learning_rate):
    return optax.sgd(learning_rate)


def _momentum(learning_rate, momentum=0.9):
    # Heavy ball: v ← g + β v, x ← x - α v (the same (α, β) as Polyak's form).
    return optax.sgd(learning_rate, momentum=momentum)


def _rmsprop(learning_rate, decay=0.9, eps=1e-8):
    return optax.rmsprop(learning_rate, decay=decay, eps=eps)


def _adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8):
    return optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)


# name -> (builder, the searched hyperparameter besides the learning rate).
_BASELINES: dict[str, tuple[Callable[..., optax.GradientTransformation], str | None]] = {
    "sgd": (_sgd, None),
    "momentum": (_momentum, "momentum"),
    "rmsprop": (_rmsprop, "decay"),
    "adam": (_adam, "b1"),
}


def baseline_names() -> list[str]:
    """The baseline names, in the order they are reported."""
    return list(_BASELINES)


def _check_name(name: str) -> None:
    if name not in _BASELINES:
        raise ValueError(
            f"unknown optimizer {name!r}; choose one of: {', '.join(baseline_names())}"
        )


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float | np.number) and not isinstance(x, bool)


def baseline(name: str, **hyperparams: Any) -> optax.GradientTransformation:
    """Builds the hand-designed optimizer ``name`` from its hyperparameters.

    Args:
        name: one of ``sgd``, ``momentum``, ``rmsprop``, ``adam``.
        **hyperparams: ``learning_rate`` (required) and the optimizer's others: ``momentum``
            (momentum's β), ``decay`` (RMSProp), ``b1``/``b2`` (Adam), ``eps`` (RMSProp, Adam).
            Values may be Python numbers or (traced) scalar arrays.

    Returns:
        The optax transformation.

    Raises:
        ValueError: for an unknown name, an unknown or missing hyperparameter, or a Python
            number out of range (learning rate ≤ 0, β outside ``[0, 1)``).

    Example:
        >>> tx = baseline("adam", learning_rate=1e-2, b1=0.9)
    """
    _check_name(name)
    builder, _ = _BASELINES[name]
    params = inspect.signature(builder).parameters
    unknown = sorted(set(hyperparams) - set(params))
    if unknown:
        raise ValueError(
            f"{name} has no hyperparameter {', '.join(map(repr, unknown))}; "
            f"its hyperparameters are: {', '.join(params)}"
        )
    if "learning_rate" not in hyperparams:
        raise ValueError(f"{name} needs a learning_rate")
    for key, value in hyperparams.items():
        if isinstance(value, jax.core.Tracer) or not _is_number(value):
            continue  # arrays (e.g. traced during tuning) are the caller's responsibility
        value = float(value)
        if key in ("learning_rate", "eps") and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name}: {key} must be a positive number, got {value!r}")
        if key in ("momentum", "decay", "b1", "b2") and not 0.0 <= value < 1.0:
            raise ValueError(f"{name}: {key} must be in [0, 1), got {value!r}")
    return builder(**hyperparams)


def _log_grid(lo: float, hi: float, per_decade: int) -> tuple[float, ...]:
    n = round((math.log10(hi) - math.log10(lo)) * per_decade) + 1
    return tuple(float(x) for x in np.logspace(math.log10(lo), math.log10(hi), n))


class SearchSpace(NamedTuple):
    """Where :func:`lopt.tune` looks for a baseline's hyperparameters.

    The coarse stage is the product ``learning_rates × other_values``; the refinement stage
    multiplies the best learning rate by ``10**refine_lr_log10`` and the best ``1 - h`` by
    ``10**refine_other_log10``.

    Attributes:
        name: the baseline.
        learning_rates: the coarse learning-rate grid (log-spaced).
        other: the name of the second hyperparameter, or ``None`` (SGD).
        other_values: its coarse grid, values in ``[0, 1)``.
        refine_lr_log10: offsets (decades) of the refinement around the best learning rate.
        refine_other_log10: offsets (decades of ``1 - h``) around the best ``h``.
    """

    name: str
    learning_rates: tuple[float, ...]
    other: str | None
    other_values: tuple[float, ...]
    refine_lr_log10: tuple[float, ...] = tuple(k / 16 for k in range(-4, 5))
    refine_other_log10: tuple[float, ...] = (-0.25, -0.125, 0.0, 0.125, 0.25)

    def _grid(self, lrs, others) -> dict[str, np.ndarray]:
        names = ["learning_rate"] + ([self.other] if self.other else [])
        points = list(itertools.product(lrs, others)) if self.other else [(lr,) for lr in lrs]
        return {n: np.array([p[i] for p in points], np.float64) for i, n in enumerate(names)}

    def coarse(self) -> dict[str, np.ndarray]:
        """The coarse grid: ``{hyperparameter: values[C]}``."""
        return self._grid(self.learning_rates, self.other_values)

    def refine(self, best: dict[str, float]) -> dict[str, np.ndarray]:
        """The refinement grid around ``best`` (the centre included)."""
        lrs = [best["learning_rate"] * 10.0**d for d in self.refine_lr_log10]
        others: list[float] = []
        if self.other:
            one_minus = 1.0 - best[self.other]
            for d in self.refine_other_log10:
                h = float(np.clip(1.0 - one_minus * 10.0**d, 0.0, 1.0 - 1e-6))
                if not any(math.isclose(h, o, rel_tol=1e-9, abs_tol=1e-12) for o in others):
                    others.append(h)
        return self._grid(lrs, others)


def search_space(name: str) -> SearchSpace:
    """The default search space of baseline ``name``.

    Learning rates: 10⁻⁵ … 10², two per decade (15 values) — wide enough for Rosenbrock's
    stiff valley (small steps), momentum on ``linear_regression`` (α* ≈ 3.8) and Adam there
    (its best step is ≈ 10, since the optimum lies far from the start). The
    second hyperparameter has five values with ``1 - h`` two per decade: β, β1 ∈ {0, 0.68,
    0.9, 0.968, 0.99}; RMSProp's decay ∈ {0.68, 0.9, 0.968, 0.99, 0.997}. The refinement
    stage covers ± ¼ decade (half the coarse spacing) around the best point, in steps of
    1/16 decade in the learning rate and ⅛ decade in ``1 - h`` (9 × 5 points).

    Raises:
        ValueError: for an unknown name.
    """
    _check_name(name)
    lrs = _log_grid(1e-5, 100.0, 2)
    other = _BASELINES[name][1]
    if other is None:
        return SearchSpace(name, lrs, None, ())
    lo = -2.5 if other == "decay" else -2.0
    hi = -0.5 if other == "decay" else 0.0
    values = tuple(float(1.0 - x) for x in _log_grid(10.0**lo, 10.0**hi, 2)[::-1])
    return SearchSpace(name, lrs, other, values)
