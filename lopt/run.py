"""A meta-training run directory, as every later stage reads it.

``lopt meta-train`` writes ``config.json``, ``state.npz``, ``theta.npz`` and ``metrics.jsonl``;
later stages derive files from them (``eval.json``, ``analysis.json``, ``distill.json``,
``report/``). :class:`Run` owns the directory: it reads each file once, rebuilds the task
family, and says whether a derived file is still current (written after the ``theta.npz`` it
was derived from). ``state.npz`` is the source of truth for where training stands;
``theta.npz`` is the result every later stage uses.

Example:
    >>> run = Run("runs/quickstart")  # doctest: +SKIP
    >>> opt, theta, meta = run.checkpoint()  # doctest: +SKIP
    >>> run.evaluation().main.beats_all  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import tasks
from lopt import rundir
from lopt.base import LearnedOptimizer, from_config
from lopt.checkpoint import load
from lopt.evaluation import Evaluation, family_from_config
from lopt.meta_config import MetaTrainConfig


class Run:
    """A run directory written by :func:`lopt.meta_train` (or ``lopt meta-train``).

    Args:
        path: the directory. It must exist; files are read lazily, on first use.

    Raises:
        FileNotFoundError: ``path`` is not a directory.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_dir():
            raise FileNotFoundError(f"{self.path}: no such run directory")

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def file(self, name: str) -> Path:
        """The path of one of the run's files (``"eval.json"``, ``"report"``, ...)."""
        return self.path / name

    @functools.cached_property
    def config(self) -> dict[str, Any]:
        """``config.json``: optimizer, task, meta-training settings, versions."""
        cfg = rundir.read_json(self.file("config.json"))
        if not isinstance(cfg, dict):
            raise rundir.CheckpointError(f"{self.file('config.json')}: not a JSON object")
        return cfg

    def _field(self, name: str, build: Any) -> Any:
        try:
            return build(self.config.get(name))
        except (ValueError, TypeError, KeyError) as e:
            raise rundir.CheckpointError(f"{self.file('config.json')}: {name}: {e}") from None

    @functools.cached_property
    def family(self) -> tasks.TaskFamily:
        """The task family the run was trained on, rebuilt from ``config.json``."""
        return self._field("task", lambda _: family_from_config(self.config))

    @functools.cached_property
    def optimizer(self) -> LearnedOptimizer:
        """The learned optimizer described by ``config.json`` (its sizes checked)."""
        return self._field("optimizer", from_config)

    @functools.cached_property
    def meta_config(self) -> MetaTrainConfig:
        """The meta-training settings of ``config.json``, validated against the family."""

        def build(d: Any) -> MetaTrainConfig:
            config = MetaTrainConfig.from_dict(d)
            config.resolved(self.family)  # raises on anything out of bounds
            return config

        return self._field("meta_train", build)

    def checkpoint(self) -> tuple[Any, Any, dict[str, Any]]:
        """``(opt, theta, metadata)`` from ``theta.npz`` (:func:`lopt.load`)."""
        return load(self.file("theta.npz"))

    def metrics(self) -> list[dict[str, Any]]:
        """The rows of ``metrics.jsonl`` (damaged lines skipped)."""
        return rundir.read_jsonl(self.file("metrics.jsonl"))

    def evaluation(self) -> Evaluation | None:
        """``eval.json`` as an :class:`~lopt.evaluation.Evaluation`, ``None`` if absent."""
        path = self.file("eval.json")
        return Evaluation.read(path) if path.exists() else None

    def is_current(self, name: str) -> bool:
        """Whether the derived file ``name`` exists and was written after ``theta.npz``."""
        path = self.file(name)
        return path.exists() and not rundir.older_than(path, self.file("theta.npz"))

    def data_source(self) -> str | None:
        """Where the family's data came from (``synthetic``, a file, the fallback digits)."""
        return getattr(self.family, "data_source", None)
