"""Validation during meta-training: fixed held-out problems and the best theta so far.

With ``MetaTrainConfig.validate_every > 0``, meta-training scores theta every that many steps
on ``validation_problems`` problems drawn from :data:`VALIDATION_SEED` (never the training
stream nor the evaluation's held-out problems) and keeps the best one; a run's ``theta.npz``
is that theta (the best so far while the run goes on). The record of the best (its theta, step
and score) is saved inside ``state.npz`` with every checkpoint, so a resumed run knows exactly
what the uninterrupted one would; ``best.npz`` is a copy of it for readers of unfinished runs,
rewritten from ``state.npz`` on resume when missing or out of date.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax

from lopt import distributed, rundir
from lopt.checkpoint import load, save
from lopt.unroll import init_inner, per_problem_metric, unroll

#: Seed of the fixed validation problems (``MetaTrainConfig.validate_every``).
VALIDATION_SEED = 2_000_029

#: Prefix of the validation record's entries in ``state.npz``.
RECORD = "validation/"


@functools.lru_cache(maxsize=8)
def _validation_losses(opt, horizon: int):
    """Jitted ``(family, theta, keys) -> losses[B, T]`` of ``opt.optimizer(theta)``."""

    @jax.jit
    def run(family, theta, keys):
        tx = optax.with_extra_args_support(opt.optimizer(theta))

        def one(k):
            return unroll(tx, family, init_inner(tx, family, k), horizon)[1]

        return jax.vmap(one)(keys)

    return run


class Validation:
    """Scores theta on fixed validation problems and keeps the best (``validate_every``).

    The best theta is written to ``best.npz`` (atomic) whenever it improves; the record itself
    travels in ``state.npz`` (:meth:`record`, :meth:`restore`).
    """

    def __init__(self, opt, family, config, out: Path | None, *, write: bool):
        self.enabled = config.validate_every > 0
        self.every, self.last = config.validate_every, config.num_steps
        self.opt, self.family, self.out, self.write = opt, family, out, write
        self.best: float | None = None
        self.best_step: int | None = None
        self.best_theta: Any = None
        self._row: dict[str, Any] = {}
        if not self.enabled:
            return
        try:
            hash(opt)
            self._fn = _validation_losses(opt, config.horizon)
        except TypeError:
            self._fn = _validation_losses.__wrapped__(opt, config.horizon)
        self._keys = jax.random.split(jax.random.key(VALIDATION_SEED), config.validation_problems)

    def record(self) -> dict[str, np.ndarray]:
        """The best so far as ``state.npz`` entries (none when validation is off)."""
        if not self.enabled:
            return {}
        if self.best_step is None:
            return {RECORD + "best_step": np.asarray(-1, np.int64)}
        out = {
            RECORD + "best_step": np.asarray(self.best_step, np.int64),
            RECORD + "best": np.asarray(self.best, np.float64),
        }
        theta = rundir.tree_to_arrays(self.best_theta)
        out.update({RECORD + "theta/" + k: v for k, v in theta.items()})
        return out

    def record_sizes(self, theta_template: Any) -> dict[str, int]:
        """The entries :meth:`record` may write, with their sizes (for reading them back)."""
        if not self.enabled:
            return {}
        return {
            RECORD + "best_step": 8,
            RECORD + "best": 8,
            **rundir.tree_sizes(theta_template, RECORD + "theta/"),
        }

    def restore(self, arrays: dict[str, np.ndarray], theta_template: Any, step: int) -> None:
        """Takes the record back from the entries of ``state.npz`` (a resumed run at ``step``).

        A ``state.npz`` written before the record moved into it has none: the record is then
        read from ``best.npz``, and if that is gone too while a validation was due by
        ``step``, resuming is refused (the run would select another theta).

        Raises:
            CheckpointError: one line saying which file is missing and what to do.
        """
        if not self.enabled:
            return
        path = self.out / "state.npz"
        if RECORD + "best_step" in arrays:
            best_step = int(arrays[RECORD + "best_step"])
            if best_step < 0:
                return
            prefix = RECORD + "theta/"
            theta = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            self.best_theta = rundir.arrays_to_tree(theta, theta_template, str(path))
            self.best, self.best_step = float(arrays[RECORD + "best"]), best_step
            self._rewrite_best(step)
            return
        best = self.out / "best.npz"
        if best.exists():
            _, self.best_theta, meta = load(best)
            self.best, self.best_step = float(meta["validation"]), int(meta["step"])
        elif step >= self.every:
            raise rundir.CheckpointError(
                f"{best}: missing, and {path} (written by an older lopt) does not record the "
                "validations; restore best.npz from a backup, or start the run again"
            )

    def _rewrite_best(self, step: int) -> None:
        """Rewrites ``best.npz`` from the record when it is missing or not the record's."""
        if not self.write:
            return
        path = self.out / "best.npz"
        try:
            _, _, meta = load(path)
            current = meta.get("step") == self.best_step and meta.get("validation") == self.best
        except rundir.CheckpointError as e:
            current = False
            warnings.warn(f"{e}; rewriting it from state.npz (step {step})", stacklevel=4)
        if not current:
            save(path, self.opt, self.best_theta, step=self.best_step, validation=self.best)

    def due(self, step: int) -> bool:
        """Whether to validate after meta-step ``step``."""
        return self.enabled and (step % self.every == 0 or step == self.last)

    def __call__(self, step: int, theta: Any) -> float:
        """Scores ``theta`` (``inf`` if any validation problem diverged); keeps the best."""
        theta = jax.device_get(distributed.to_host(theta))
        losses = np.asarray(self._fn(self.family, theta, self._keys))
        score = float(np.mean(per_problem_metric(losses)))
        improved = bool(np.isfinite(score) and (self.best_step is None or score < self.best))
        if improved:
            self.best, self.best_step, self.best_theta = score, step, theta
            if self.write:
                save(self.out / "best.npz", self.opt, theta, step=step, validation=score)
        self._row = {
            "validation": score if np.isfinite(score) else None,
            "validation_step": step,
            "best_validation": self.best,
            "best_step": self.best_step,
        }
        return score

    def pop_row(self) -> dict[str, Any]:
        """The latest validation's numbers for the next ``metrics.jsonl`` row (once)."""
        row, self._row = self._row, {}
        return row
