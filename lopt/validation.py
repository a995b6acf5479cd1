"""Validation during meta-training: fixed held-out problems and the best theta so far.

With ``MetaTrainConfig.validate_every > 0``, meta-training scores theta every that many steps
on ``validation_problems`` problems drawn from :data:`VALIDATION_SEED` (never the training
stream nor the evaluation's held-out problems) and keeps the best one; a finished run's
``theta.npz`` is that theta. The best so far is also written to ``best.npz``, so a resumed run
knows it.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax

from lopt import distributed
from lopt.checkpoint import load, save
from lopt.unroll import init_inner, per_problem_metric, unroll

#: Seed of the fixed validation problems (``MetaTrainConfig.validate_every``).
VALIDATION_SEED = 2_000_029


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

    The best theta is written to ``best.npz`` (atomic) whenever it improves, so a resumed run
    knows the best so far; on resume the record is read back from that file.
    """

    def __init__(self, opt, family, config, out: Path | None, resume: bool, *, write: bool):
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
        if resume and out is not None and (out / "best.npz").exists():
            _, self.best_theta, meta = load(out / "best.npz")
            self.best, self.best_step = float(meta["validation"]), int(meta["step"])

    def due(self, step: int) -> bool:
        """Whether to validate after meta-step ``step``."""
        return self.enabled and (step % self.every == 0 or step == self.last)

    def __call__(self, step: int, theta: Any) -> float:
        """Scores ``theta`` (``inf`` if any validation problem diverged); keeps the best."""
        theta = jax.device_get(distributed.to_host(theta))
        losses = np.asarray(self._fn(self.family, theta, self._keys))
        score = float(np.mean(per_problem_metric(losses)))
        improved = bool(np.isfinite(score) and (self.best is None or score < self.best))
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
