"""The settings of a meta-training run: :class:`MetaTrainConfig`, validated in one place."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import optax

from lopt import estimators
from tasks import TaskFamily


class ConfigError(ValueError):
    """A malformed meta-training configuration."""


@dataclasses.dataclass(frozen=True)
class MetaTrainConfig:
    """Everything that defines a meta-training run (JSON-able).

    The defaults are the paper's linear-regression settings: full BPTT over the
    family's horizon, 64 problems per step, Adam (lr 7.8e-4, β1 0.806, β2 0.594, ε 4.5e-6)
    with the learning rate decayed ×0.555 every 1000 steps and element-wise gradient clipping
    at 0.047, 5000 steps.

    Attributes:
        estimator: ``full_bptt``, ``tbptt``, ``es`` or ``pes``.
        horizon: inner steps per problem; ``None`` means the family's ``num_steps``.
        truncation: inner steps per meta-step for truncated estimators (divides the horizon);
            ``None`` means the whole horizon.
        num_problems: problems (or ES/PES perturbation pairs) per meta-step.
        sigma: ES/PES perturbation scale.
        objective: ``mean_normalized`` (paper), ``final``, ``min`` or ``log``.
        l2: coefficient of ``½ l2 ‖θ‖²`` added to the meta-loss.
        stagger: spread truncated problems over the horizon at the start.
        remat: rematerialise the inner-loop body in the backward pass.
        save_products: with ``remat``, keep the learned optimizer's matrix products for the
            backward pass instead of recomputing them (:func:`lopt.unroll`): a quarter fewer
            FLOPs for a GRU, at :func:`lopt.product_floats` floats per coordinate, inner step
            and problem. ``None`` (default): keep them when the meta-step's products fit in
            :data:`PRODUCT_BUDGET` bytes (:func:`saves_products` decides).
        learning_rate, lr_decay, decay_steps, b1, b2, eps, clip: the default meta-optimizer
            (Adam with exponential decay ``lr · lr_decay^(step/decay_steps)``, element-wise
            clipping of the meta-gradient at ``clip``; ``None`` disables clipping).
        num_steps: meta-steps.
        log_every: meta-steps between lines of ``metrics.jsonl``.
        checkpoint_every: meta-steps between checkpoints.
        max_nonfinite_steps: stop after this many consecutive meta-steps in which every problem
            was non-finite (theta is never updated by such steps).
        seed: the run's PRNG seed (used when no key is passed).
        validate_every: meta-steps between validations (``0``: never). A validation scores
            theta by the paper's metric (mean normalised loss over the horizon) on
            ``validation_problems`` fixed problems drawn from :data:`VALIDATION_SEED`, a key
            that is neither the held-out key (:func:`lopt.heldout_key`) nor a tuning key. The
            best-scoring theta is kept in ``best.npz`` and, once training ends, becomes the
            run's result (``theta.npz``): meta-training is noisy and its last iterate is not
            always its best (see the README's presets section).
        validation_problems: problems per validation.
        outlier_threshold: ``full_bptt``/``tbptt`` only: leave out of each meta-step the
            problems whose meta-gradient is more than this many times the median problem's
            (``None``: keep all). Over long full-BPTT unrolls a few problems' inner dynamics can
            turn chaotic: their loss looks ordinary but their meta-gradient grows by 10⁸ or
            more, and after the element-wise clip its sign alone steers every meta-parameter.
            Costs one extra backward pass on the steps that have an outlier (counted as
            ``outliers`` in ``metrics.jsonl``).
    """

    estimator: str = "full_bptt"
    horizon: int | None = None
    truncation: int | None = None
    num_problems: int = 64
    sigma: float = 0.01
    objective: str = "mean_normalized"
    l2: float = 0.0
    stagger: bool = True
    remat: bool = True
    save_products: bool | None = None
    learning_rate: float = 7.8e-4
    lr_decay: float = 0.555
    decay_steps: int = 1000
    b1: float = 0.806
    b2: float = 0.594
    eps: float = 4.5e-6
    clip: float | None = 0.047
    num_steps: int = 5000
    log_every: int = 10
    checkpoint_every: int = 100
    max_nonfinite_steps: int = 10
    seed: int = 0
    validate_every: int = 0
    validation_problems: int = 64
    outlier_threshold: float | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MetaTrainConfig:
        """Builds a config from a dict, rejecting unknown keys with one clear line."""
        if not isinstance(d, dict):
            raise ConfigError(f"meta-training config must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            valid = ", ".join(sorted(known))
            raise ConfigError(
                f"unknown meta-training setting(s) {', '.join(unknown)}; valid: {valid}"
            )
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-able dict."""
        return dataclasses.asdict(self)

    def resolved(self, family: TaskFamily) -> MetaTrainConfig:
        """Fills ``horizon`` and ``truncation`` from the family and validates everything.

        Raises:
            ConfigError: one line naming the offending setting.
        """
        c = dataclasses.replace(
            self,
            horizon=family.num_steps if self.horizon is None else self.horizon,
        )
        c = dataclasses.replace(c, truncation=c.horizon if c.truncation is None else c.truncation)
        if not isinstance(c.validate_every, int) or c.validate_every < 0:
            raise ConfigError(
                f"validate_every must be a non-negative integer, got {c.validate_every!r}"
            )
        ints = (
            "validation_problems",
            "horizon",
            "truncation",
            "num_problems",
            "num_steps",
            "decay_steps",
            "log_every",
            "checkpoint_every",
            "max_nonfinite_steps",
        )
        for name in ints:
            v = getattr(c, name)
            # Counters are int32 on the device.
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v < 2**31:
                raise ConfigError(f"{name} must be a positive integer below 2^31, got {v!r}")
        for name in ("sigma", "learning_rate", "lr_decay", "eps"):
            v = getattr(c, name)
            if not isinstance(v, int | float) or not v > 0 or not math.isfinite(v):
                raise ConfigError(f"{name} must be a positive number, got {v!r}")
        for name in ("remat", "stagger"):
            if not isinstance(getattr(c, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(c, name)!r}")
        if c.save_products is not None and not isinstance(c.save_products, bool):
            raise ConfigError(f"save_products must be true, false or null, got {c.save_products!r}")
        if c.clip is not None and not c.clip > 0:
            raise ConfigError(f"clip must be positive or null, got {c.clip!r}")
        if not c.l2 >= 0:
            raise ConfigError(f"l2 must be >= 0, got {c.l2!r}")
        if c.outlier_threshold is not None:
            v = c.outlier_threshold
            if isinstance(v, bool) or not isinstance(v, int | float) or not 1 <= v < math.inf:
                raise ConfigError(f"outlier_threshold must be a number >= 1 or null, got {v!r}")
            if c.estimator not in ("full_bptt", "tbptt"):
                raise ConfigError(
                    f"outlier_threshold needs a gradient estimator (full_bptt or tbptt), "
                    f"not {c.estimator!r}"
                )
        for name, options in (
            ("estimator", estimators.ESTIMATORS),
            ("objective", estimators.OBJECTIVES),
        ):
            if getattr(c, name) not in options:
                raise ConfigError(
                    f"unknown {name} {getattr(c, name)!r}; choose one of: {', '.join(options)}"
                )
        if c.truncation > c.horizon:
            raise ConfigError(
                f"truncation ({c.truncation}) is longer than the horizon ({c.horizon})"
            )
        if c.horizon % c.truncation:
            raise ConfigError(f"truncation ({c.truncation}) must divide the horizon ({c.horizon})")
        if c.estimator == "full_bptt" and c.truncation != c.horizon:
            raise ConfigError(
                "full_bptt unrolls the whole horizon; use estimator tbptt to truncate"
            )
        if c.truncation < c.horizon and c.objective not in estimators.PER_STEP_OBJECTIVES:
            raise ConfigError(f"objective {c.objective!r} needs the whole horizon (no truncation)")
        n = jax.device_count()
        if c.num_problems % n:
            raise ConfigError(
                f"num_problems ({c.num_problems}) must be a multiple of the {n} devices"
            )
        return c

    def meta_optimizer(self) -> optax.GradientTransformation:
        """The default meta-optimizer built from this config."""
        schedule = optax.exponential_decay(self.learning_rate, self.decay_steps, self.lr_decay)
        adam = optax.adam(schedule, b1=self.b1, b2=self.b2, eps=self.eps)
        return adam if self.clip is None else optax.chain(optax.clip(self.clip), adam)
