"""What the battery's cases share: the probes' default protocol constants and case builders.

:mod:`probes.battery` and :mod:`probes.battery_normalised` write their cases with these; the
constants are the settings the expected answers refer to (:mod:`probes.battery`'s docstring).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from probes.battery_optimizers import optax_cell
from probes.expected import Case, ExpectClipping, ExpectSchedule

#: Task horizon the schedule shape refers to (the paper's 200 updates).
HORIZON = 200
BACKGROUND = 1.0  # the black-box impulse background where b = 0 is not finite
W = 2000  # steady-state steps of the black-box probes (analyze_optax(warmup=...))
EPS8 = 1e-8
C23 = 2.0 ** (2.0 / 3.0) - 1.0  # slope of x/√(x²+e) halves where x² = (2^{2/3}-1)e
SQRT2M1 = np.sqrt(2.0) - 1.0  # slope of x/(|x|+e) halves where |x| = (√2-1)e

#: Sign-like: threshold 0, resolved to the grid's first point.
SIGN = ExpectClipping(True, 0.0)
#: A normalised update: shape only (its gain is 1/ε at ν = 0).
NORMED = ExpectSchedule("constant")


def scheduled_lr(sched: Callable, factor: float = 1.0) -> Callable[[np.ndarray], np.ndarray]:
    """``t ↦ factor × sched(t)`` on an array of steps (an optax schedule read in float64)."""
    return lambda t: factor * np.asarray(jax.vmap(sched)(jnp.asarray(t, jnp.int32)), np.float64)


def flat_schedule(value: float) -> ExpectSchedule:
    """A constant schedule with ``α_eff(t) = value``."""
    return ExpectSchedule("constant", lambda t: np.full(np.shape(t), value, np.float64))


def make_case(name, family, tx, hparams, expected, cell=None, white=None) -> Case:
    """A case whose white box is ``cell`` or, by default, :func:`optax_cell` of ``tx()``."""
    return Case(name, family, tx, cell or (lambda: optax_cell(tx())), hparams, expected, white)


def half_slope(inside: float, outside: float) -> float:
    """Where the slope of ``f(g) = g/(√(g² + e) + c)`` halves (``e = inside``, ``c = outside``).

    ``f'(g) = (e + c·s)/(s(s + c)²)`` with ``s = √(g² + e)``, and ``f'(0) = 1/(√e + c)``;
    ``f'`` falls monotonically in ``s``, so the half point is found by bisection on ``s``
    (``e = 0`` gives ``(√2 − 1)c``, ``c = 0`` gives ``√((2^{2/3} − 1)e)``).

    Args:
        inside: ``e ≥ 0``, the constant under the root.
        outside: ``c ≥ 0``, the constant added to the root; not both 0.

    Returns:
        The ``|g|`` where ``f'(g) = f'(0)/2``.
    """
    e, c = float(inside), float(outside)
    half = 0.5 / (np.sqrt(e) + c)
    lo, hi = np.sqrt(e), np.sqrt(e) + 10.0 * (np.sqrt(e) + c)  # f' = 2·half at lo, < half at hi
    for _ in range(200):
        s = 0.5 * (lo + hi)
        lo, hi = (s, hi) if (e + c * s) / (s * (s + c) ** 2) > half else (lo, s)
    s = 0.5 * (lo + hi)
    return float(np.sqrt(max(s * s - e, 0.0)))
