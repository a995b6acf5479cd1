"""The task-family contract, the registry, and user-defined families.

A *task family* is a distribution over optimisation problems. A PRNG key draws one problem
(``task``, a pytree of arrays); ``init`` draws its starting parameters and ``loss`` evaluates
it. Families are frozen dataclasses registered as pytrees: data arrays are leaves and settings
are static, so a family can be passed to a jitted function as an argument and its data never
gets baked into the compiled program as a constant.

Example:
    >>> import jax, tasks
    >>> family = tasks.get("linear_regression")
    >>> task = family.sample(jax.random.key(0))
    >>> params = family.init(task, jax.random.key(1))
    >>> float(family.loss(task, params, jax.random.key(2))) > 0
    True
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar

import jax

PyTree = Any


class TaskError(ValueError):
    """A user mistake about tasks: unknown family, bad setting, malformed data file."""


def static(default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A dataclass field that is a static setting (pytree metadata) rather than a data leaf."""
    return dataclasses.field(default=default, metadata={"static": True}, **kwargs)


def pytree_family(cls: type) -> type:
    """Class decorator: make ``cls`` a frozen dataclass registered as a pytree.

    Fields declared with :func:`static` are metadata (hashed, part of the compiled program);
    every other field is a leaf (usually a data array).
    """
    cls = dataclasses.dataclass(frozen=True)(cls)
    fields = dataclasses.fields(cls)
    meta = [f.name for f in fields if f.metadata.get("static", False)]
    data = [f.name for f in fields if not f.metadata.get("static", False)]
    return jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=meta)


class TaskFamily:
    """Base class of every task family.

    Subclasses are decorated with :func:`pytree_family` and define the fields ``name`` and
    ``num_steps`` (optimizer updates per unroll) plus the three pure functions below.
    """

    name: str
    num_steps: int
    #: Where the data came from; recorded in every result that uses the family.
    data_source: ClassVar[str] = "synthetic"

    def sample(self, key: jax.Array) -> PyTree:
        """Draws one problem (a pytree of arrays) from the family."""
        raise NotImplementedError

    def init(self, task: PyTree, key: jax.Array) -> PyTree:
        """Draws the starting parameters of ``task``."""
        raise NotImplementedError

    def loss(self, task: PyTree, params: PyTree, key: jax.Array) -> jax.Array:
        """Scalar training loss; ``key`` picks the minibatch (full-batch families ignore it)."""
        raise NotImplementedError

    def metrics(self, task: PyTree, params: PyTree) -> dict[str, jax.Array]:
        """Held-out metrics (e.g. test loss and accuracy); empty for families without a split."""
        del task, params
        return {}

    def num_params(self) -> int:
        """Scalar parameters per problem (from shapes only; nothing is computed)."""
        task = jax.eval_shape(self.sample, jax.random.key(0))
        params = jax.eval_shape(self.init, task, jax.random.key(0))
        return sum(math.prod(x.shape) for x in jax.tree.leaves(params))

    def settings(self) -> dict[str, Any]:
        """The static settings that rebuild this family with :func:`get` (JSON-able)."""
        out = {}
        for f in dataclasses.fields(self):
            if f.metadata.get("static", False) and f.name != "name" and f.init:
                value = getattr(self, f.name)
                if isinstance(value, str | int | float | bool | type(None)):
                    out[f.name] = value
        return out


@pytree_family
class CustomFamily(TaskFamily):
    """A family built from plain functions by :func:`custom`."""

    data: PyTree
    name: str = static()
    num_steps: int = static()
    init_fn: Callable = static()
    loss_fn: Callable = static()
    sample_fn: Callable | None = static(None)

    def _kw(self) -> dict[str, PyTree]:
        return {} if self.data is None else {"data": self.data}

    def sample(self, key):  # noqa: D102
        if self.sample_fn is None:
            return {}
        return self.sample_fn(key, **self._kw())

    def init(self, task, key):  # noqa: D102
        return self.init_fn(task, key, **self._kw())

    def loss(self, task, params, key):  # noqa: D102
        return self.loss_fn(task, params, key, **self._kw())


def custom(
    name: str,
    *,
    init: Callable,
    loss: Callable,
    num_steps: int,
    sample: Callable | None = None,
    data: PyTree = None,
) -> CustomFamily:
    """Builds a task family from plain functions.

    Args:
        name: the family's name (recorded in results).
        init: ``init(task, key) -> params``.
        loss: ``loss(task, params, key) -> scalar``; ``key`` picks a minibatch if you use one.
        num_steps: optimizer updates per unroll.
        sample: ``sample(key) -> task``, a pytree of arrays; without it every problem is the
            same (``task == {}``) and only ``init`` varies.
        data: an optional pytree of arrays shared by all problems (a data set). It is a leaf of
            the family, so it reaches jitted code as an argument; when given, ``sample``,
            ``init`` and ``loss`` each receive it as the keyword argument ``data``.

    Returns:
        A :class:`CustomFamily`.

    Example:
        >>> import jax, jax.numpy as jnp, tasks
        >>> fam = tasks.custom(
        ...     "shifted_bowl", num_steps=50,
        ...     sample=lambda key: {"target": jax.random.normal(key, (3,))},
        ...     init=lambda task, key: jnp.zeros(3),
        ...     loss=lambda task, p, key: jnp.sum((p - task["target"]) ** 2))
    """
    if not isinstance(num_steps, int) or num_steps < 1:
        raise TaskError(
            f"custom family {name!r}: num_steps must be a positive int, got {num_steps!r}"
        )
    for label, fn in (("init", init), ("loss", loss), ("sample", sample)):
        if fn is not None and not callable(fn):
            raise TaskError(f"custom family {name!r}: {label} must be callable")
    return CustomFamily(
        data=data, name=name, num_steps=num_steps, init_fn=init, loss_fn=loss, sample_fn=sample
    )


_REGISTRY: dict[str, Callable[..., TaskFamily]] = {}


def register(name: str, factory: Callable[..., TaskFamily]) -> None:
    """Makes ``tasks.get(name, **overrides)`` call ``factory(**overrides)``."""
    _REGISTRY[name] = factory


def names() -> list[str]:
    """The registered family names, sorted."""
    return sorted(_REGISTRY)


def get(name: str, **overrides: Any) -> TaskFamily:
    """Builds the family ``name`` with its default settings, changed by ``overrides``.

    Raises:
        TaskError: for an unknown name (the message lists the valid ones) or a setting the
            family does not have or cannot take.
    """
    if name not in _REGISTRY:
        raise TaskError(f"unknown task {name!r}; choose one of: {', '.join(names())}")
    factory = _REGISTRY[name]
    if dataclasses.is_dataclass(factory):
        known = {f.name for f in dataclasses.fields(factory) if f.init and f.name != "name"}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TaskError(
                f"task {name!r} has no setting {', '.join(map(repr, unknown))}; "
                f"its settings are: {', '.join(sorted(known))}"
            )
    try:
        return factory(**overrides)
    except TypeError as e:  # a wrong type for a setting, or a factory that is not a dataclass
        raise TaskError(f"task {name!r}: {e}") from None
