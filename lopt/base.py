"""The ``LearnedOptimizer`` contract and the registry behind :func:`from_config`.

A learned optimizer is a *description* (hyperparameters such as the hidden size, kept in
``config()``) plus meta-parameters ``theta`` (a pytree of arrays) that it creates with
``init(key)``. ``optimizer(theta)`` turns them into an ordinary
``optax.GradientTransformationExtraArgs``; ``cell(theta)`` exposes the per-coordinate dynamics
for the probes (optimizers that are not a pure per-coordinate recurrence raise ``TypeError``).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import jax
import optax

from lopt.cell import Cell

_REGISTRY: dict[str, type[LearnedOptimizer]] = {}

#: Largest hidden layer a learned optimizer accepts: a GRU of this size already has 0.8 G
#: meta-parameters per recurrent matrix; a config asking for more is a mistake (or hostile)
#: and is refused before anything is allocated.
MAX_HIDDEN_SIZE = 16_384


class LearnedOptimizer(abc.ABC):
    """Base class of learned optimizers.

    Subclasses set ``type_name`` (the ``"type"`` entry of their config; registering them for
    :func:`from_config`) and take their config's other entries as keyword arguments.
    """

    type_name: ClassVar[str]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("type_name")
        if name is not None:
            _REGISTRY[name] = cls

    @abc.abstractmethod
    def init(self, key: jax.Array) -> Any:
        """Draws initial meta-parameters ``theta`` (a pytree of float32 arrays)."""

    @abc.abstractmethod
    def optimizer(
        self, theta: Any, *, output_scale: float | jax.Array | None = None
    ) -> optax.GradientTransformationExtraArgs:
        """The optax transformation defined by ``theta``.

        Args:
            theta: meta-parameters.
            output_scale: overrides the configured output scale; an array is fine, so
                ``optax.inject_hyperparams(opt.optimizer)(theta, output_scale=0.5)`` works.
        """

    def cell(self, theta: Any) -> Cell:
        """The per-coordinate dynamics for the probes (not every optimizer has one)."""
        del theta
        raise TypeError(f"{type(self).__name__} is not a per-coordinate recurrence; it has no cell")

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """A JSON-able dict with a ``"type"`` entry, enough for :func:`from_config`."""

    def num_meta_params(self, theta: Any) -> int:
        """Total number of scalars in ``theta``."""
        return sum(x.size for x in jax.tree.leaves(theta))

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.config() == other.config()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(repr(sorted(self.config().items())))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "type")
        return f"{type(self).__name__}({args})"


def from_config(config: dict[str, Any]) -> LearnedOptimizer:
    """Rebuilds a learned optimizer from ``opt.config()``.

    Args:
        config: a dict with a ``"type"`` entry naming a registered optimizer class; the other
            entries are its constructor's keyword arguments.

    Returns:
        The optimizer (``from_config(opt.config()) == opt``).

    Raises:
        ValueError: unknown type or invalid arguments.
    """
    if not isinstance(config, dict) or "type" not in config:
        raise ValueError(f"optimizer config must be a dict with a 'type' entry, got {config!r}")
    kwargs = dict(config)
    name = kwargs.pop("type")
    if name not in _REGISTRY:
        raise ValueError(f"unknown optimizer type {name!r}; known: {sorted(_REGISTRY)}")
    try:
        return _REGISTRY[name](**kwargs)
    except TypeError as e:
        raise ValueError(f"bad config for optimizer type {name!r}: {e}") from None
