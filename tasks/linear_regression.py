"""Random ill-conditioned quadratics: the paper's ``linear_regression`` family.

Each problem is ``f(x) = ½ xᵀHx + vᵀx + c`` in ``dim`` dimensions with ``H = Q diag(λ) Qᵀ``,
``log10 λᵢ ~ U[log10_min, log10_max]`` (default ``[-3, 0]``, condition number ≤ 1000), ``Q`` a
random orthogonal matrix, ``v ~ N(0, I)`` and ``c`` such that ``min f = 0``; ``x0 ~ N(0, I)``.
Reference: Maheswaranathan et al. (2021), section 3.

``linear_regression_scaled`` multiplies each problem's loss by its own factor ``s`` with
``log10 s ~ U[-d/2, d/2]`` (``scale_decades = d = 4``): gradient magnitudes then differ by four
decades between problems, a family on which adapting the learning rate to the gradient's
scale pays (the normalised meta-objective ``f_t / f_0`` is unchanged by ``s``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tasks.base import TaskError, TaskFamily, pytree_family, static


def random_orthogonal(key: jax.Array, dim: int) -> jax.Array:
    """A Haar-distributed orthogonal matrix (QR of a Gaussian matrix with the sign fixed)."""
    q, r = jnp.linalg.qr(jax.random.normal(key, (dim, dim)))
    return q * jnp.sign(jnp.diagonal(r))


@pytree_family
class LinearRegression(TaskFamily):
    """Random quadratics with a log-uniform spectrum; full batch, deterministic.

    The task is ``{"hessian": H, "optimum": x*, "eigenvalues": λ}`` with ``x* = -H⁻¹v``. The
    loss is computed as ``½ (x - x*)ᵀ H (x - x*)``, which equals ``½xᵀHx + vᵀx + c`` but keeps
    float32 precision near the minimum (the expanded form cancels catastrophically there).
    """

    name: str = static("linear_regression")
    num_steps: int = static(201)
    dim: int = static(5)
    log10_min: float = static(-3.0)
    log10_max: float = static(0.0)
    scale_decades: float = static(0.0)

    def __post_init__(self):
        if not isinstance(self.dim, int) or isinstance(self.dim, bool) or self.dim < 1:
            raise TaskError(f"linear_regression: dim must be a positive int, got {self.dim!r}")
        if not isinstance(self.num_steps, int) or self.num_steps < 1:
            raise TaskError(
                f"linear_regression: num_steps must be a positive int, got {self.num_steps!r}"
            )
        if not float(self.log10_min) <= float(self.log10_max):
            raise TaskError(
                f"linear_regression: need log10_min <= log10_max, got "
                f"{self.log10_min!r} > {self.log10_max!r}"
            )
        if not 0.0 <= float(self.scale_decades) <= 12.0:
            raise TaskError(
                f"linear_regression: scale_decades must be in [0, 12], got {self.scale_decades!r}"
            )

    def sample(self, key):  # noqa: D102
        k_eig, k_rot, k_v = jax.random.split(key, 3)
        eigenvalues = 10.0 ** jax.random.uniform(
            k_eig, (self.dim,), minval=self.log10_min, maxval=self.log10_max
        )
        q = random_orthogonal(k_rot, self.dim)
        v = jax.random.normal(k_v, (self.dim,))
        hessian = (q * eigenvalues) @ q.T
        # x* = -H⁻¹ v, computed in the eigenbasis (exact inverse of a known spectrum).
        optimum = -(q / eigenvalues) @ (q.T @ v)
        task = {"hessian": hessian, "optimum": optimum, "eigenvalues": eigenvalues}
        if self.scale_decades:  # a key of its own: the other draws stay those of the plain family
            half = 0.5 * float(self.scale_decades)
            log10_scale = jax.random.uniform(
                jax.random.fold_in(key, 1), (), minval=-half, maxval=half
            )
            task["scale"] = 10.0**log10_scale
        return task

    def init(self, task, key):  # noqa: D102
        del task
        return jax.random.normal(key, (self.dim,))

    def loss(self, task, params, key):  # noqa: D102
        del key
        delta = params - task["optimum"]
        loss = 0.5 * delta @ (task["hessian"] @ delta)
        return loss * task["scale"] if "scale" in task else loss
