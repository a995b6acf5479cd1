"""The 2-d Rosenbrock function from random start points: the paper's ``rosenbrock`` family.

``f(x, y) = (1 - x)² + 100 (y - x²)²`` has its single minimum ``f = 0`` at ``(1, 1)`` at the
end of a long, curved, flat-bottomed valley along ``y = x²``. A problem is a start point drawn
uniformly from the box ``x ∈ [x_min, x_max]``, ``y ∈ [y_min, y_max]`` (default
``[-2, 2] × [-1, 3]``, which holds the whole valley between ``x = -√3`` and ``x = √3`` and both of
its walls); ``init`` returns it. The horizon (default 300 updates) leaves hand-designed
optimizers short of the minimum (Adam with learning rates 0.01 to 0.1 ends at a median loss of
0.2 to 0.6, from starting losses in the hundreds), so loss curves still separate optimizers.
Reference: Maheswaranathan et al. (2021), section 3 (the paper leaves box and horizon open).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from tasks.base import TaskError, TaskFamily, pytree_family, static


def rosenbrock(params: jax.Array) -> jax.Array:
    """The Rosenbrock function ``(1 - x)² + 100 (y - x²)²`` of ``params = [x, y]``."""
    x, y = params[0], params[1]
    return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2


@pytree_family
class Rosenbrock(TaskFamily):
    """The Rosenbrock valley from a random start point; deterministic (the key is ignored).

    The task is ``{"start": [x0, y0]}``; parameters are the 2-vector ``[x, y]``.

    Attributes:
        num_steps: optimizer updates per unroll (default 300).
        x_min: lower edge of the start box along ``x`` (default -2).
        x_max: upper edge along ``x`` (default 2).
        y_min: lower edge along ``y`` (default -1).
        y_max: upper edge along ``y`` (default 3).

    Example:
        >>> import jax, tasks
        >>> family = tasks.get("rosenbrock", num_steps=100)
        >>> task = family.sample(jax.random.key(0))
        >>> params = family.init(task, jax.random.key(1))  # the start point
    """

    name: str = static("rosenbrock")
    num_steps: int = static(300)
    x_min: float = static(-2.0)
    x_max: float = static(2.0)
    y_min: float = static(-1.0)
    y_max: float = static(3.0)

    def __post_init__(self):
        n = self.num_steps
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise TaskError(f"rosenbrock: num_steps must be a positive int, got {n!r}")
        for lo, hi in (("x_min", "x_max"), ("y_min", "y_max")):
            a, b = getattr(self, lo), getattr(self, hi)
            for label, v in ((lo, a), (hi, b)):
                if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                    raise TaskError(f"rosenbrock: {label} must be a finite number, got {v!r}")
            if not a < b:
                raise TaskError(f"rosenbrock: need {lo} < {hi}, got {a!r} >= {b!r}")

    def sample(self, key):  # noqa: D102
        low = jnp.array([self.x_min, self.y_min], float)
        high = jnp.array([self.x_max, self.y_max], float)
        return {"start": jax.random.uniform(key, (2,), minval=low, maxval=high)}

    def init(self, task, key):  # noqa: D102
        del key
        return task["start"]

    def loss(self, task, params, key):  # noqa: D102
        del task, key
        return rosenbrock(params)
