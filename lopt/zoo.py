"""Small pretrained learned optimizers shipped with the package: :func:`pretrained`.

Each is a GRU optimizer meta-trained with the ``quick`` preset of one task family by
``experiments/paper.py --export-pretrained`` and stored as one :func:`lopt.save` file in
``lopt/_pretrained/NAME.npz``. Its metadata records the task, preset, seed, meta-step and the
held-out comparison with the tuned baselines (``"beats_all"``), so a user can see whether the
shipped optimizer actually beats them on its family.

Example::

    opt, theta, info = lopt.pretrained("linear_regression")
    tx = opt.optimizer(theta)          # an optax.GradientTransformationExtraArgs
    updates, state = tx.update(grads, tx.init(params), params)
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from lopt.base import LearnedOptimizer
from lopt.checkpoint import load

_DIR = "_pretrained"


def _directory() -> Path:
    return Path(str(resources.files("lopt").joinpath(_DIR)))


def pretrained_names() -> list[str]:
    """Names of the shipped optimizers (the task families they were meta-trained on)."""
    d = _directory()
    return sorted(p.stem for p in d.glob("*.npz")) if d.is_dir() else []


def pretrained(name: str) -> tuple[LearnedOptimizer, Any, dict[str, Any]]:
    """Loads a shipped pretrained optimizer.

    Args:
        name: a task family name, one of :func:`pretrained_names`.

    Returns:
        ``(opt, theta, metadata)`` as :func:`lopt.load`: ``opt.optimizer(theta)`` is a ready
        optax transformation.

    Raises:
        ValueError: for an unknown name (the message lists the shipped ones).
    """
    names = pretrained_names()
    if name not in names:
        raise ValueError(f"no pretrained optimizer {name!r}; shipped: {', '.join(names) or 'none'}")
    return load(_directory() / f"{name}.npz")
