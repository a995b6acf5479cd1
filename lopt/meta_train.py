"""Meta-training: the jitted meta-step, the host loop, and the run directory.

``lopt.meta_train(opt, family, config, key, out_dir)`` trains ``theta`` so that
``opt.optimizer(theta)`` minimises the meta-objective over problems drawn from ``family``.

A run directory holds::

    config.json     optimizer, task, training config, versions
    theta.npz       the current meta-parameters (a ``lopt.save`` file)
    state.npz       everything needed to resume exactly: theta, meta-optimizer state, the
                    estimator's persistent problems, step, PRNG key data, NaN streak
    metrics.jsonl   one line per logging interval

Every file is written atomically, so a ``kill -9`` loses at most one checkpoint interval and a
resumed run (``resume=True``) finishes with bitwise the same theta as an uninterrupted one on
the same machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from lopt import distributed, estimators, rundir
from lopt.checkpoint import load, save
from lopt.unroll import product_floats
from lopt.validation import Validation
from tasks import TaskFamily

STATE_FORMAT = "lopt.meta_train.state/1"


class ConfigError(ValueError):
    """A malformed meta-training configuration."""


@dataclasses.dataclass(frozen=True)
class MetaTrainConfig:
    """Everything that defines a meta-training run (JSON-able).

    The defaults are the paper's linear-regression settings (METHOD.md §3): full BPTT over the
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
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}")
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


class TrainState(NamedTuple):
    """Everything a meta-training run carries; saved whole in ``state.npz``."""

    step: jax.Array
    theta: Any
    meta_state: Any
    estimator_state: Any
    key: jax.Array
    nonfinite_streak: jax.Array


class MetaTrainResult(NamedTuple):
    """What :func:`meta_train` returns."""

    theta: Any
    step: int
    metrics: list[dict[str, Any]]
    interrupted: bool
    out_dir: Path | None
    selected_step: int | None = None


class MetaTrainDiverged(RuntimeError):
    """Raised after ``max_nonfinite_steps`` consecutive meta-steps with no finite problem."""


def batch_sharding() -> NamedSharding | None:
    """A 1-d mesh over every visible device along the problem axis (``None`` on one device).

    After :func:`lopt.distributed.initialize`, ``jax.devices()`` lists the devices of every
    process, so the mesh spans all hosts.
    """
    devices = jax.devices()
    if len(devices) == 1:
        return None
    return NamedSharding(Mesh(np.asarray(devices), ("batch",)), P("batch"))


#: Bytes the stored matrix products of one meta-step may take when ``save_products`` is
#: ``None`` (see :func:`saves_products`).
PRODUCT_BUDGET = 2**30


def saves_products(opt, family: TaskFamily, config: MetaTrainConfig) -> bool:
    """Whether meta-training with ``config`` stores the optimizer's matrix products.

    ``config.save_products`` when set. Otherwise (``None``) yes when the products of one
    meta-step, ``4 · num_problems · truncation · P · product_floats`` bytes for ``P`` parameters
    per problem, fit in :data:`PRODUCT_BUDGET`: for the paper's linear regression (GRU-256, 64
    problems × 201 steps, P = 5) 188 MiB; the GRU-256 paper presets of ``two_moons`` and
    ``mnist`` (P = 1,185 and 19,178) would need 65 GiB and more, so they recompute them. Only
    the gradient estimators with ``remat`` store anything.
    """
    if not config.remat or config.estimator not in ("full_bptt", "tbptt"):
        return False
    if config.save_products is not None:
        return config.save_products
    theta = jax.eval_shape(opt.init, jax.random.key(0))
    tx = opt.optimizer(jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), theta))
    floats = product_floats(tx)
    if not floats:
        return False
    size = family.num_params()
    window = config.truncation or config.horizon or family.num_steps
    return 4 * config.num_problems * window * size * floats <= PRODUCT_BUDGET


def _build_estimator(opt, family, c: MetaTrainConfig, sharding):
    kw: dict[str, Any] = {"horizon": c.horizon, "objective": c.objective}
    if c.estimator == "full_bptt":
        kw.update(
            num_problems=c.num_problems,
            checkpoint=c.remat,
            save_products=saves_products(opt, family, c),
            outlier_threshold=c.outlier_threshold,
        )
    elif c.estimator == "tbptt":
        kw.update(
            num_problems=c.num_problems,
            truncation=c.truncation,
            stagger=c.stagger,
            checkpoint=c.remat,
            save_products=saves_products(opt, family, c),
            outlier_threshold=c.outlier_threshold,
        )
    else:
        kw.update(
            num_pairs=c.num_problems, truncation=c.truncation, sigma=c.sigma, stagger=c.stagger
        )
    return estimators.make_estimator(c.estimator, opt, family, shard=sharding, **kw)


# Settings that only steer the host loop; they do not change the compiled meta-step.
_HOST_ONLY = {
    "num_steps": 1,
    "log_every": 1,
    "checkpoint_every": 1,
    "max_nonfinite_steps": 1,
    "seed": 0,
    "validate_every": 0,
    "validation_problems": 64,
}


@functools.lru_cache(maxsize=16)
def _compiled_default(opt, config: MetaTrainConfig, devices: tuple):
    del devices  # part of the cache key: the mesh depends on the visible devices
    return make_meta_step(opt, config, config.meta_optimizer())


def _meta_step_for(opt, config: MetaTrainConfig, meta_tx):
    """Compiled functions for this run, shared between runs that differ only on the host."""
    if meta_tx is not None:
        return make_meta_step(opt, config, meta_tx)
    try:
        hash(opt)
    except TypeError:
        return make_meta_step(opt, config, config.meta_optimizer())
    return _compiled_default(opt, dataclasses.replace(config, **_HOST_ONLY), tuple(jax.devices()))


def make_meta_step(opt, config: MetaTrainConfig, meta_tx: optax.GradientTransformation):
    """The jitted meta-step ``(family, state) -> (state, metrics)`` and state initialiser.

    The estimator is built inside the traced function, so the family's data arrays reach the
    compiled program as arguments, not constants. With several devices the problem batch is
    sharded over a 1-d mesh and the meta-gradient's mean becomes an all-reduce. With several
    processes (:mod:`lopt.distributed`) the initialiser takes each process's (identical) host
    values of ``family``, ``theta`` and ``key`` as one replicated global array each, so the
    whole train state is made of global arrays: theta and the meta-optimizer state replicated,
    the estimator's persistent problems sharded over every process's devices.
    """
    sharding = batch_sharding()

    def init(family, theta, key):
        k_est, k_steps = jax.random.split(key)
        est = _build_estimator(opt, family, config, sharding)
        return TrainState(
            step=jnp.zeros([], jnp.int32),
            theta=theta,
            meta_state=meta_tx.init(theta),
            estimator_state=est.init(theta, k_est),
            key=k_steps,
            nonfinite_streak=jnp.zeros([], jnp.int32),
        )

    def step(family, state: TrainState):
        est = _build_estimator(opt, family, config, sharding)
        loss, grad, est_state, info = est.grad(
            state.theta, state.estimator_state, jax.random.fold_in(state.key, state.step)
        )
        if config.l2:
            sq = sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(state.theta))
            loss = loss + 0.5 * config.l2 * sq
            grad = jax.tree.map(lambda g, t: g + config.l2 * t, grad, state.theta)
        updates, meta_state = meta_tx.update(grad, state.meta_state, state.theta)
        theta = optax.apply_updates(state.theta, updates)
        # theta never becomes non-finite: a step with no finite problem, or one that would
        # produce a non-finite theta, leaves theta and the meta-optimizer state untouched.
        ok = (info.num_valid > 0) & estimators.all_finite(theta)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731
        new_state = TrainState(
            step=state.step + 1,
            theta=keep(theta, state.theta),
            meta_state=keep(meta_state, state.meta_state),
            estimator_state=est_state,
            key=state.key,
            nonfinite_streak=jnp.where(ok, 0, state.nonfinite_streak + 1),
        )
        gnorm = optax.tree.norm(grad)
        metrics = {
            "meta_loss": loss,
            "grad_norm": gnorm,
            "num_nonfinite": info.num_nonfinite,
            "resets": info.resets,
            "outliers": jnp.asarray(info.num_outliers, jnp.int32),
            "skipped": (~ok).astype(jnp.int32),
        }
        return new_state, metrics

    if sharding is not None and jax.process_count() > 1:
        replicated = NamedSharding(sharding.mesh, P())
        return jax.jit(init, in_shardings=replicated), jax.jit(step, donate_argnums=1)
    return jax.jit(init), jax.jit(step, donate_argnums=1)


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("lopt", "jax", "jaxlib", "optax", "dm-haiku", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def run_config(opt, family: TaskFamily, config: MetaTrainConfig, **extra: Any) -> dict[str, Any]:
    """The JSON written to ``config.json``."""
    return {
        "optimizer": opt.config(),
        "task": {
            "name": family.name,
            "settings": family.settings(),
            "data_source": getattr(family, "data_source", "synthetic"),
        },
        "meta_train": config.to_dict(),
        "versions": _versions(),
        **extra,
    }


def save_state(out_dir: Path, opt, state: TrainState, family: TaskFamily) -> None:
    """Writes ``state.npz`` then ``theta.npz`` (both atomic); only process 0 writes.

    With several processes every process must call it: the estimator's sharded state is
    gathered with a collective (:func:`lopt.distributed.to_host`).
    """
    host = distributed.to_host(state)
    if not distributed.is_main_process():
        return
    rundir.save_tree(out_dir / "state.npz", host, STATE_FORMAT)
    save(out_dir / "theta.npz", opt, host.theta, step=int(host.step), task=family.name)


@contextlib.contextmanager
def _terminate_as_interrupt():
    """Within the block, SIGTERM (a scheduler's or ``kill``'s stop) acts like Ctrl-C.

    Only in the main thread (Python delivers signals there); elsewhere a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def meta_train(
    opt: Any,
    family: TaskFamily,
    config: MetaTrainConfig | None = None,
    key: jax.Array | None = None,
    out_dir: str | Path | None = None,
    *,
    meta_optimizer: optax.GradientTransformation | None = None,
    resume: bool = False,
    progress: bool = True,
) -> MetaTrainResult:
    """Meta-trains ``opt`` on ``family``.

    Args:
        opt: a learned optimizer (``init``, ``optimizer``, ``config``).
        family: the task family.
        config: the run's settings (default: the paper's).
        key: the run's PRNG key; defaults to ``jax.random.key(config.seed)``.
        out_dir: a run directory to write (see the module docstring); ``None`` keeps
            everything in memory.
        meta_optimizer: any optax transformation to use instead of the config's Adam.
        resume: continue from ``out_dir/state.npz`` (exactly, bitwise on the same machine).
        progress: show a tqdm bar.

    Returns:
        A :class:`MetaTrainResult`. Ctrl-C, or SIGTERM (``kill``, a batch scheduler's stop),
        stops the loop after the current meta-step, writes a final checkpoint and returns with
        ``interrupted=True``.

    Raises:
        ConfigError: for a malformed config.
        MetaTrainDiverged: after ``max_nonfinite_steps`` steps with no finite problem; the
            last checkpoint holds the last good theta.
    """
    config = (config or MetaTrainConfig()).resolved(family)
    key = jax.random.key(config.seed) if key is None else key
    out = Path(out_dir) if out_dir is not None else None
    k_theta, k_run = jax.random.split(key)
    init_fn, step_fn = _meta_step_for(opt, config, meta_optimizer)

    theta = opt.init(k_theta)
    # With several processes (lopt.distributed) every process runs this loop; only process 0
    # writes files.
    writer = out is not None and distributed.is_main_process()
    if resume:
        if out is None:
            raise ConfigError("resume needs a run directory")
        template = jax.eval_shape(init_fn, family, theta, k_run)
        state = rundir.load_tree(out / "state.npz", template, STATE_FORMAT)
        done = _finished(out, opt, int(state.step), config)
        if done is not None:
            return done
        if writer:
            rundir.truncate_jsonl(
                out / "metrics.jsonl", lambda r: r.get("step", 0) <= int(state.step)
            )
    else:
        state = init_fn(family, theta, k_run)
        if writer:
            out.mkdir(parents=True, exist_ok=True)
            rundir.write_json(out / "config.json", run_config(opt, family, config))
            (out / "metrics.jsonl").unlink(missing_ok=True)

    step = int(state.step)
    history: list[dict[str, Any]] = []
    pending: list[dict[str, jax.Array]] = []
    validate = Validation(opt, family, config, out, resume, write=writer)
    interrupted = False
    # The bar starts after the first meta-step, which includes compilation: a time estimate
    # from it would be off by orders of magnitude.
    bar = tqdm(
        total=config.num_steps,
        initial=step,
        disable=not progress,
        desc="meta-train (compiling)",
        dynamic_ncols=True,
    )
    t_start, step_start = time.perf_counter(), step

    def flush():
        nonlocal pending
        if not pending:
            return []
        values = jax.device_get(pending)
        first = step - len(values) + 1
        elapsed = time.perf_counter() - t_start
        row = {
            "step": step,
            "meta_loss": float(np.mean([v["meta_loss"] for v in values])),
            "meta_loss_last": float(values[-1]["meta_loss"]),
            "grad_norm": float(values[-1]["grad_norm"]),
            "num_nonfinite": int(sum(int(v["num_nonfinite"]) for v in values)),
            "skipped": int(sum(int(v["skipped"]) for v in values)),
            "resets": int(sum(int(v["resets"]) for v in values)),
            "outliers": int(sum(int(v["outliers"]) for v in values)),
            "steps_per_s": (step - step_start) / max(elapsed, 1e-9),
            "wall_s": elapsed,
            "first_step": first,
        }
        pending = []
        row.update(validate.pop_row())
        history.append(row)
        if writer:
            rundir.append_jsonl(out / "metrics.jsonl", [row])
        bar.set_postfix(meta_loss=f"{row['meta_loss']:.4g}", refresh=False)
        return [row]

    try:
        with _terminate_as_interrupt():
            while step < config.num_steps:
                state, metrics = step_fn(family, state)
                step += 1
                pending.append(metrics)
                if step == step_start + 1 and not bar.disable:
                    jax.block_until_ready(metrics)
                    bar.reset(config.num_steps)  # restarts the clock
                    bar.initial = bar.n = bar.last_print_n = step
                    bar.set_description("meta-train")
                else:
                    bar.update(1)
                if validate.due(step):
                    validate(step, state.theta)
                if step % config.log_every == 0 or step == config.num_steps:
                    flush()
                    streak = int(state.nonfinite_streak)
                    if streak >= config.max_nonfinite_steps:
                        raise MetaTrainDiverged(
                            f"{streak} consecutive meta-steps had no finite problem "
                            f"(step {step}); theta was left at its last good value"
                            + (
                                f" and {out}/state.npz holds it"
                                if out and (out / "state.npz").exists()
                                else ""
                            )
                        )
                if out is not None and step % config.checkpoint_every == 0:
                    save_state(out, opt, state, family)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    flush()
    if out is not None:
        save_state(out, opt, state, family)
    theta, selected = jax.device_get(state.theta), None
    if validate.enabled and not interrupted and step >= config.num_steps and validate.best:
        selected, theta = validate.best_step, validate.best_theta
        if writer:
            save(
                out / "theta.npz",
                opt,
                theta,
                step=step,
                task=family.name,
                selected_step=selected,
                validation=validate.best,
            )
    return MetaTrainResult(theta, step, history, interrupted, out, selected)


def _finished(out: Path, opt: Any, step: int, config: MetaTrainConfig) -> MetaTrainResult | None:
    """The result of a resumed run, read without writing, if it already reached its end.

    ``state.npz`` is the source of truth for where a run stands; ``theta.npz`` is derived
    from it (the last checkpoint's theta, or the validation-selected one once the run is
    finished). A ``theta.npz`` that is missing, unreadable, of another optimizer or of
    another step is reported with a warning and rewritten from ``state.npz``.

    Resuming a finished run changes nothing: rewriting its files would make every result
    derived from ``theta.npz`` (evaluation, analysis, report) look out of date. ``None`` when
    there is more to do, or the end of the run must be redone to rewrite ``theta.npz``.
    """
    try:
        saved_opt, theta, meta = load(out / "theta.npz")
    except (OSError, ValueError) as e:
        warnings.warn(
            f"{out}/theta.npz is unreadable ({e}); rewriting it from state.npz", stacklevel=3
        )
        return None
    if saved_opt.config() != opt.config() or meta.get("step") != step:
        warnings.warn(
            f"{out}/theta.npz does not match state.npz (step {step}); rewriting it", stacklevel=3
        )
        return None
    if step < config.num_steps:
        return None
    return MetaTrainResult(
        theta, step, meta_train_metrics(out), False, out, meta.get("selected_step")
    )


def meta_train_metrics(out_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl`` (a line torn by a crash mid-write is skipped)."""
    return rundir.read_jsonl(Path(out_dir) / "metrics.jsonl")
