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
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tasks
from lopt import rundir
from lopt.base import LearnedOptimizer, from_config
from lopt.checkpoint import load
from lopt.evaluation import (
    DEFAULT_BASELINES,
    EVAL_SCHEMA,
    Evaluation,
    compare,
    family_from_config,
    tune_baselines,
)
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

    def _error(self, name: str, message: str) -> rundir.CheckpointError:
        return rundir.CheckpointError(f"{self.file(name)}: {message}")

    @functools.cached_property
    def config(self) -> dict[str, Any]:
        """``config.json``: optimizer, task, meta-training settings, versions."""
        cfg = rundir.read_json(self.file("config.json"))
        if not isinstance(cfg, dict):
            kind = type(cfg).__name__
            raise self._error("config.json", f"(top level): expected a JSON object, got {kind}")
        return cfg

    def _field(self, name: str, build: Any) -> Any:
        try:
            return build(self.config.get(name))
        except (ValueError, TypeError, KeyError) as e:
            raise self._error("config.json", f"{name}: {e}") from None

    @functools.cached_property
    def family(self) -> tasks.TaskFamily:
        """The task family the run was trained on, rebuilt from ``config.json``, sizes checked."""
        try:
            return family_from_config(self.config)
        except (ValueError, TypeError) as e:  # the message names the field
            raise self._error("config.json", str(e)) from None

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

    @property
    def horizon(self) -> int:
        """Inner steps per problem in training: ``meta_train.horizon``, else the family's."""
        if self.config.get("meta_train") is None:
            return self.family.num_steps
        return self.meta_config.resolved(self.family).horizon

    def check(self) -> None:
        """Checks ``config.json`` and ``theta.npz`` before anything is built from them.

        The task family (its name, settings and sizes), the optimizer (its sizes), the
        meta-training settings when recorded, the memory one evaluated problem needs, and the
        checkpoint (format, checksum, a learned optimizer of the type ``config.json`` names).

        Raises:
            lopt.CheckpointError: one line naming the file and the field at fault.
        """
        family = self.family
        named = self.optimizer if "optimizer" in self.config else None
        if self.config.get("meta_train") is not None:
            self.meta_config  # noqa: B018 (validates)
        opt, _, _ = self.checkpoint()
        if named is not None and opt.config().get("type") != named.config().get("type"):
            raise self._error(
                "theta.npz",
                f"optimizer: a {opt.config().get('type')!r} optimizer, but config.json "
                f"names {named.config().get('type')!r}",
            )
        self._check_memory(opt, family)

    def _check_memory(self, opt: LearnedOptimizer, family: tasks.TaskFamily) -> None:
        import jax
        import jax.numpy as jnp

        from lopt.meta_train import memory_limit

        theta = jax.eval_shape(opt.init, jax.random.key(0))
        tx = opt.optimizer(jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), theta))
        state = jax.eval_shape(tx.init, jax.ShapeDtypeStruct((1,), jnp.float32))
        per_coordinate = 1 + sum(math.prod(x.shape) for x in jax.tree.leaves(state))
        need, have = 4 * family.num_params() * per_coordinate, memory_limit()
        if have is not None and need > have:
            raise self._error(
                "config.json",
                f"task.settings: one problem's parameters and optimizer state would take "
                f"{need / 2**30:.3g} GiB; this machine has {have / 2**30:.3g} GiB",
            )

    def checkpoint(self) -> tuple[Any, Any, dict[str, Any]]:
        """``(opt, theta, metadata)`` from ``theta.npz`` (:func:`lopt.load`).

        Raises:
            lopt.CheckpointError: ``theta.npz`` is missing, damaged or not a ``lopt.save`` file.
        """
        path = self.file("theta.npz")
        try:
            return load(path)
        except rundir.CheckpointError:
            raise
        except (TypeError, AttributeError, KeyError, ValueError) as e:
            # e.g. a .npy file renamed theta.npz: numpy hands back an array, not an archive
            raise rundir.CheckpointError(
                f"{path}: not a lopt checkpoint ({type(e).__name__}: {e})"
            ) from None

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


def evaluate_run(
    run_dir: str | Path,
    *,
    baselines: Sequence[str] = DEFAULT_BASELINES,
    num_problems: int = 128,
    progress: bool = True,
    tuned: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluates a meta-training run against tuned baselines and writes ``eval.json``.

    The baselines are tuned on the run's task family (training problems), then the learned
    optimizer and the tuned baselines are evaluated on the same ``num_problems`` held-out
    problems at the training horizon and at twice it.

    Args:
        run_dir: the run directory.
        baselines: baseline names to tune.
        num_problems: held-out problems.
        progress: show progress bars.
        tuned: results of :func:`tune_baselines` on the same family, to reuse (tuning is
            deterministic, so several runs on one family can share it); tuned here if absent.

    Returns:
        The dict written to ``run_dir/eval.json`` (schema ``lopt.eval/1``).
    """
    run = Run(run_dir)
    run.check()  # config.json and theta.npz, sizes included, before anything is built
    opt, theta, meta = run.checkpoint()
    family = run.family
    if tuned is None:
        tuned = tune_baselines(family, baselines, progress=progress)
    tuned = {n: tuned[n] for n in baselines}
    optimizers = {"learned": opt.optimizer(theta), **{n: r.tx for n, r in tuned.items()}}
    hyper = {n: r.hyperparams for n, r in tuned.items()}
    horizon = run.horizon
    result = compare(
        optimizers,
        family,
        learned="learned",
        num_problems=num_problems,
        horizons=(horizon, 2 * horizon),
        hyperparams=hyper,
        progress=progress,
    )
    result.update(
        schema=EVAL_SCHEMA,
        task={
            "name": family.name,
            "settings": family.settings(),
            "data_source": getattr(family, "data_source", "synthetic"),
        },
        meta_step=meta.get("step"),
        # The step of the evaluated theta: validation may have selected an earlier one.
        selected_step=meta.get("selected_step", meta.get("step")),
        horizon=horizon,
    )
    rundir.write_json(run.file("eval.json"), result)
    return result
