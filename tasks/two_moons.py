"""A small MLP classifying the two-moons data set: the paper's ``two_moons`` family.

Each problem draws its own data set from the key: ``num_points`` training points (default 1024)
and ``num_test`` held-out points (default 512), half of each in either class. Class 0 lies on
the upper half circle ``(cos θ, sin θ)``, class 1 on the interleaved lower one
``(1 - cos θ, ½ - sin θ)``, ``θ ~ U[0, π]``, both shifted by ``-(½, ¼)`` so the data are
centred, plus Gaussian noise of standard deviation ``noise`` (default 0.1).

The model is a fully connected network with ``depth`` hidden layers of ``width`` units
(default 2 × 32, ``tanh``) and one logit, initialised with LeCun-normal weights
(``N(0, 1/fan_in)``) and zero biases from the ``init`` key. The loss is the mean logistic loss
plus ``½ · l2 · Σ‖W‖²`` over the weight matrices (biases are not penalised; default
``l2 = 1e-4``). Full batch by default; with ``batch_size`` set, the loss key draws that many
training points (with replacement) per step.
Reference: Maheswaranathan et al. (2021), section 3 (width, depth and horizon left open).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from tasks.base import PyTree, TaskError, TaskFamily, pytree_family, static

_ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu}


def make_moons(
    key: jax.Array, num_points: int, noise: float, num_test: int = 0
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Draws balanced two-moons training and held-out sets.

    Args:
        key: PRNG key.
        num_points: an even number of training points; half are in each class.
        noise: standard deviation of the Gaussian noise added to every coordinate.
        num_test: an even number of held-out points drawn alongside (default none).

    Returns:
        ``(x, y, x_test, y_test)``: points ``[N, 2]`` (centred) and labels ``[N]`` in
        ``{0., 1.}``, the first half of each set in class 0 and the second half in class 1.
    """
    # One draw of angles and one of noise for both sets and both classes: fewer random calls
    # keep the compiled program small.
    half, half_test = num_points // 2, num_test // 2
    n = half + half_test
    k_angle, k_noise = jax.random.split(key)
    theta = jax.random.uniform(k_angle, (2, n), minval=0.0, maxval=math.pi)
    upper = jnp.stack([jnp.cos(theta[0]), jnp.sin(theta[0])], axis=-1)
    lower = jnp.stack([1.0 - jnp.cos(theta[1]), 0.5 - jnp.sin(theta[1])], axis=-1)
    points = jnp.stack([upper, lower]) - jnp.array([0.5, 0.25])  # [class, n, 2]
    points = points + noise * jax.random.normal(k_noise, points.shape)

    def split(lo, hi):
        x = points[:, lo:hi].reshape(-1, 2)
        y = jnp.repeat(jnp.arange(2.0), hi - lo)
        return x, y

    return (*split(0, half), *split(half, n))


def mlp_init(key: jax.Array, sizes: list[int]) -> list[dict[str, jax.Array]]:
    """LeCun-normal weights and zero biases for a fully connected net with layer ``sizes``."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {
            "w": jax.random.normal(k, (n_in, n_out)) / math.sqrt(n_in),
            "b": jnp.zeros((n_out,)),
        }
        for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def mlp_apply(params: list[dict[str, jax.Array]], x: jax.Array, activation: str) -> jax.Array:
    """The network's output for inputs ``x[..., in]``: hidden layers use ``activation``."""
    act = _ACTIVATIONS[activation]
    for layer in params[:-1]:
        x = act(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def logistic_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean binary cross-entropy of ``logits`` against labels in ``{0, 1}`` (stable form)."""
    return jnp.mean(jax.nn.softplus(logits) - labels * logits)


@pytree_family
class TwoMoons(TaskFamily):
    """Binary classification of two interleaved half circles with a small MLP.

    The task is ``{"x": [N, 2], "y": [N], "x_test": [M, 2], "y_test": [M]}``; parameters are a
    list of ``{"w", "b"}`` layers. :meth:`metrics` gives the held-out loss and accuracy.

    Attributes:
        num_steps: optimizer updates per unroll (default 300).
        num_points: training points per problem, even (default 1024).
        num_test: held-out points per problem, even (default 512).
        noise: standard deviation of the noise on the points (default 0.1).
        width: units per hidden layer (default 32).
        depth: number of hidden layers (default 2).
        activation: ``"tanh"`` (default) or ``"relu"``.
        l2: coefficient of ``½ Σ‖W‖²`` added to the loss (default 1e-4).
        batch_size: ``None`` for full batch (default), else points drawn per step.

    Example:
        >>> import jax, tasks
        >>> family = tasks.get("two_moons", batch_size=128)
        >>> task = family.sample(jax.random.key(0))
        >>> params = family.init(task, jax.random.key(1))
        >>> sorted(family.metrics(task, params))
        ['accuracy', 'loss']
    """

    name: str = static("two_moons")
    num_steps: int = static(300)
    num_points: int = static(1024)
    num_test: int = static(512)
    noise: float = static(0.1)
    width: int = static(32)
    depth: int = static(2)
    activation: str = static("tanh")
    l2: float = static(1e-4)
    batch_size: int | None = static(None)

    def __post_init__(self):
        def positive_int(label, v, minimum=1):
            if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
                raise TaskError(f"two_moons: {label} must be an int >= {minimum}, got {v!r}")

        def nonnegative(label, v):
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < math.inf:
                raise TaskError(f"two_moons: {label} must be a finite number >= 0, got {v!r}")

        positive_int("num_steps", self.num_steps)
        positive_int("width", self.width)
        positive_int("depth", self.depth, minimum=0)
        for label in ("num_points", "num_test"):
            v = getattr(self, label)
            positive_int(label, v, minimum=2)
            if v % 2:
                raise TaskError(f"two_moons: {label} must be even (balanced classes), got {v}")
        nonnegative("noise", self.noise)
        nonnegative("l2", self.l2)
        if self.activation not in _ACTIVATIONS:
            raise TaskError(
                f"two_moons: activation must be one of {', '.join(_ACTIVATIONS)}, "
                f"got {self.activation!r}"
            )
        if self.batch_size is not None:
            positive_int("batch_size", self.batch_size)

    def sample(self, key):  # noqa: D102
        x, y, x_test, y_test = make_moons(key, self.num_points, self.noise, self.num_test)
        return {"x": x, "y": y, "x_test": x_test, "y_test": y_test}

    def init(self, task, key):  # noqa: D102
        del task
        return mlp_init(key, [2] + [self.width] * self.depth + [1])

    def logits(self, params: PyTree, x: jax.Array) -> jax.Array:
        """The network's logit for each point of ``x[N, 2]``, shape ``[N]``."""
        return mlp_apply(params, x, self.activation)[..., 0]

    def loss(self, task, params, key):  # noqa: D102
        x, y = task["x"], task["y"]
        if self.batch_size is not None:
            idx = jax.random.randint(key, (self.batch_size,), 0, x.shape[0])
            x, y = x[idx], y[idx]
        penalty = sum(jnp.sum(layer["w"] ** 2) for layer in params)
        return logistic_loss(self.logits(params, x), y) + 0.5 * self.l2 * penalty

    def metrics(self, task, params):
        """Held-out logistic loss (without the L2 term) and accuracy."""
        logits = self.logits(params, task["x_test"])
        y = task["y_test"]
        accuracy = jnp.mean((logits > 0) == (y > 0.5))
        return {"loss": logistic_loss(logits, y), "accuracy": accuracy}
