"""Meta-training: the jitted meta-step, the host loop, and the run directory.

``lopt.meta_train(opt, family, config, key, out_dir)`` trains ``theta`` so that
``opt.optimizer(theta)`` minimises the meta-objective over problems drawn from ``family``.

A run directory holds::

    config.json     optimizer, task, training config, versions
    theta.npz       the run's result so far (a ``lopt.save`` file): with validation the best
                    validated theta (metadata ``selected_step``), otherwise the last iterate
    best.npz        with validation, the best validated theta so far
    state.npz       everything needed to resume exactly: theta, meta-optimizer state, the
                    estimator's persistent problems, step, PRNG key data, NaN streak, and the
                    validation record (best theta, step and score)
    metrics.jsonl   one line per logging interval
    .lock           while a run writes it: the lock held by that process (its pid inside)

Every file is written atomically, so a ``kill -9`` loses at most one checkpoint interval and a
resumed run (``resume=True``) finishes with bitwise the same theta as an uninterrupted one on
the same machine. Checkpoints are written only between meta-steps (a meta-step includes its
validation), so no interruption can lose a validation. One process writes a run directory at a
time (an exclusive lock), and a fresh run refuses a directory that holds someone else's files.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import signal
import sys
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
from lopt.meta_config import ConfigError, MetaTrainConfig
from lopt.unroll import product_floats
from lopt.validation import Validation
from tasks import TaskFamily

STATE_FORMAT = "lopt.meta_train.state/1"


class TrainState(NamedTuple):
    """Everything a meta-training run carries; saved whole in ``state.npz``."""

    step: jax.Array
    theta: Any
    meta_state: Any
    estimator_state: Any
    key: jax.Array
    nonfinite_streak: jax.Array


class MetaTrainResult(NamedTuple):
    """What :func:`meta_train` returns (``theta``: the selection, as in ``theta.npz``)."""

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
#: The smallest hidden size for which ``save_products=None`` stores the products: each stored
#: float saves a ``2(H + I)``-FLOP row of a matrix product, which pays for its memory traffic
#: only for wide cells. Measured on a 2-core CPU (``experiments/benchmarks/meta_step.py``, paired
#: ratio to the plain reference, storing / recomputing): H = 32 1.12 / 0.95, H = 64 1.01 / 0.96,
#: H = 128 0.91 / 1.11, H = 256 0.94 / 1.07.
PRODUCT_MIN_HIDDEN = 96


def saves_products(opt, family: TaskFamily, config: MetaTrainConfig) -> bool:
    """Whether meta-training with ``config`` stores the optimizer's matrix products.

    ``config.save_products`` when set. Otherwise (``None``) yes when the optimizer's cells are
    wide enough for storing to pay (``hidden_size ≥`` :data:`PRODUCT_MIN_HIDDEN`; an optimizer
    without a ``hidden_size`` is judged by size alone) and the products of one meta-step,
    ``4 · num_problems · truncation · P · product_floats`` bytes for ``P`` parameters per
    problem, fit in :data:`PRODUCT_BUDGET`: for the paper's linear regression (GRU-256, 64
    problems × 201 steps, P = 5) 188 MiB; the GRU-256 paper presets of ``two_moons`` and
    ``mnist`` (P = 1,185 and 19,178) would need 65 GiB and more, so they recompute them, as
    do the GRU-32 quick presets. Storing or recomputing gives the same numbers (bitwise, on the
    quick preset); only the time and memory differ. Only the gradient estimators with
    ``remat`` store anything.
    """
    if not config.remat or config.estimator not in ("full_bptt", "tbptt"):
        return False
    if config.save_products is not None:
        return config.save_products
    hidden = getattr(opt, "hidden_size", None)
    if isinstance(hidden, int | np.integer) and hidden < PRODUCT_MIN_HIDDEN:
        return False
    theta = jax.eval_shape(opt.init, jax.random.key(0))
    tx = opt.optimizer(jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), theta))
    floats = product_floats(tx)
    if not floats:
        return False
    size = family.num_params()
    window = config.truncation or config.horizon or family.num_steps
    return 4 * config.num_problems * window * size * floats <= PRODUCT_BUDGET


def meta_step_bytes(opt, family: TaskFamily, config: MetaTrainConfig) -> int:
    """A lower bound on the memory one meta-step keeps, in bytes.

    A gradient estimator keeps every step's carry (parameters and optimizer state) over the
    unrolled window for its backward pass, plus the stored products (:func:`saves_products`);
    ES and PES keep one step's.

    ``4 · num_problems · window · P · (1 + state floats + stored products)`` bytes for ``P``
    parameters per problem; the paper's linear regression (GRU-256, 64 × 201 steps, P = 5)
    needs 263 MiB by this count.
    """
    config = config.resolved(family)
    theta = jax.eval_shape(opt.init, jax.random.key(0))
    tx = opt.optimizer(jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), theta))
    state = jax.eval_shape(tx.init, jax.ShapeDtypeStruct((1,), jnp.float32))
    per_coordinate = 1 + sum(math.prod(x.shape) for x in jax.tree.leaves(state))
    if saves_products(opt, family, config):
        per_coordinate += product_floats(tx)
    gradient = config.estimator in ("full_bptt", "tbptt")
    window = config.truncation if gradient else 1
    return 4 * config.num_problems * window * family.num_params() * per_coordinate


def memory_limit() -> int | None:
    """Bytes of memory one meta-step may use.

    This host's RAM on CPU (every CPU device shares it); on accelerators one device's memory
    times the devices, which split the batch.
    """
    devices = jax.devices()
    if devices[0].platform != "cpu":
        limit = (devices[0].memory_stats() or {}).get("bytes_limit")
        return None if limit is None else limit * len(devices)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


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


def save_state(
    out_dir: Path, opt, state: TrainState, family: TaskFamily, validation: Validation | None = None
) -> None:
    """Writes ``state.npz`` then ``theta.npz`` (both atomic); only process 0 writes.

    ``state.npz`` holds the train state and ``validation``'s record; ``theta.npz`` the run's
    result so far (:func:`_write_theta`). With several processes every process must call it:
    the estimator's sharded state is gathered with a collective
    (:func:`lopt.distributed.to_host`).
    """
    host = distributed.to_host(state)
    if not distributed.is_main_process():
        return
    arrays = rundir.tree_to_arrays(host)
    if validation is not None:
        arrays.update(validation.record())
    rundir.write_npz(out_dir / "state.npz", arrays, STATE_FORMAT)
    _write_theta(out_dir, opt, int(host.step), host.theta, family, validation)


def _selection(theta: Any, validation: Validation | None) -> tuple[Any, int | None]:
    """The run's result so far: the best validated theta and its step, else the last iterate."""
    if validation is not None and validation.best_step is not None:
        return validation.best_theta, validation.best_step
    return theta, None


def _write_theta(out_dir, opt, step, theta, family, validation) -> None:
    """Writes ``theta.npz``: always the run's selection so far, never another iterate."""
    theta, selected = _selection(theta, validation)
    if selected is None:
        save(out_dir / "theta.npz", opt, theta, step=step, task=family.name)
    else:
        save(
            out_dir / "theta.npz",
            opt,
            theta,
            step=step,
            task=family.name,
            selected_step=selected,
            validation=validation.best,
        )


class _StopSignals:
    """SIGINT and SIGTERM ask the loop to stop at the next boundary between meta-steps.

    The first signal only sets :attr:`requested`: the current meta-step (with its validation)
    finishes and a checkpoint is written, so no interruption loses a validation. A second one
    raises ``KeyboardInterrupt`` at once; no checkpoint is written then (the last one stands,
    as after a ``kill -9``). Only in the main thread (Python delivers signals there); a signal
    the process ignores stays ignored.
    """

    def __init__(self, announce: bool):
        self.requested, self._announce, self._previous = False, announce, {}

    def _handle(self, signum, frame) -> None:
        del frame
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self._announce:  # os.write: print could re-enter a stream the bar is writing
            os.write(
                sys.stderr.fileno(),
                f"\n{signal.Signals(signum).name}: stopping after this meta-step with a "
                "checkpoint (send it again to stop at once, without one)\n".encode(),
            )

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


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
        A :class:`MetaTrainResult` whose ``theta`` is what ``theta.npz`` holds: the best
        validated theta (``selected_step``) with validation, else the last iterate. Ctrl-C, or
        SIGTERM (``kill``, a batch scheduler's stop), stops the loop after the current
        meta-step and its validation, writes a final checkpoint and returns with
        ``interrupted=True``; a second one raises ``KeyboardInterrupt`` at once, leaving the
        last periodic checkpoint (like ``kill -9``).

    Raises:
        ConfigError: for a malformed config.
        RunDirError: ``out_dir`` is an empty path, or (for a fresh run) a directory holding
            files but no run of ours.
        RunLocked: another process is writing ``out_dir``.
        CheckpointError: ``resume`` without a readable ``state.npz``.
        OSError: a file could not be written (the message names it).
        MetaTrainDiverged: after ``max_nonfinite_steps`` steps with no finite problem; theta
            is left at its last good value, and the last checkpoint (if any) as it was.
    """
    config = (config or MetaTrainConfig()).resolved(family)
    if out_dir is not None and os.fspath(out_dir) == "":
        raise rundir.RunDirError(
            "the run directory is an empty path; name one (e.g. --out runs/NAME)"
        )
    need, have = meta_step_bytes(opt, family, config), memory_limit()
    if have is not None and need > have:
        raise ConfigError(
            f"a meta-step would keep at least {need / 2**30:.3g} GiB (num_problems "
            f"{config.num_problems} x truncation {config.truncation} x "
            f"{family.num_params()} parameters x the optimizer's state); "
            f"this device has {have / 2**30:.3g} GiB"
        )
    out = Path(out_dir) if out_dir is not None else None
    if resume and out is None:
        raise ConfigError("resume needs a run directory")
    # With several processes (lopt.distributed) every process runs the loop; only process 0
    # writes files, so only it holds the directory's lock.
    writer = out is not None and distributed.is_main_process()
    if not writer:
        return _meta_train(opt, family, config, key, out, meta_optimizer, resume, progress)
    if resume:
        if not (out / "state.npz").is_file():
            raise rundir.CheckpointError(f"{out}/state.npz: no such file (nothing to resume)")
    else:
        rundir.check_fresh_target(out)
        out.mkdir(parents=True, exist_ok=True)
    with rundir.locked(out):
        if not resume:
            rundir.check_fresh_target(out)  # again: another run may have started meanwhile
        rundir.remove_orphans(out)
        return _meta_train(opt, family, config, key, out, meta_optimizer, resume, progress)


def _meta_train(opt, family, config, key, out, meta_optimizer, resume, progress):
    """:func:`meta_train` once its arguments are checked (and its directory locked)."""
    key = jax.random.key(config.seed) if key is None else key
    k_theta, k_run = jax.random.split(key)
    init_fn, step_fn = _meta_step_for(opt, config, meta_optimizer)

    theta = opt.init(k_theta)
    writer = out is not None and distributed.is_main_process()
    validate = Validation(opt, family, config, out, write=writer)
    record = validate if validate.enabled else None
    checkpoint = None  # the step state.npz holds
    if resume:
        template = jax.eval_shape(init_fn, family, theta, k_run)
        path = out / "state.npz"
        sizes = rundir.tree_sizes(template)
        sizes.update(validate.record_sizes(template.theta))
        arrays = rundir.read_npz(path, STATE_FORMAT, sizes=sizes)
        state = rundir.arrays_to_tree(arrays, template, str(path))
        checkpoint = int(state.step)
        validate.restore(arrays, template.theta, checkpoint)
        done = _finished(out, opt, checkpoint, config, record)
        if done is not None:
            return done
        if writer:
            rundir.truncate_jsonl(out / "metrics.jsonl", lambda r: _logged_before(r, checkpoint))
    else:
        state = init_fn(family, theta, k_run)
        if writer:
            # A fresh run replaces whatever run the directory held.
            for name in ("state.npz", "theta.npz", "best.npz", "metrics.jsonl"):
                (out / name).unlink(missing_ok=True)
            rundir.write_json(out / "config.json", run_config(opt, family, config))

    step = int(state.step)
    saved = None  # the step of this call's last checkpoint
    history: list[dict[str, Any]] = []
    pending: list[dict[str, jax.Array]] = []
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

    # Everything in one iteration (meta-step, validation, metrics, checkpoint) happens or none
    # of it is checkpointed: a signal only stops the loop between iterations (_StopSignals).
    try:
        with _StopSignals(announce=progress) as stop:
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
                        held = saved if saved is not None else checkpoint
                        raise MetaTrainDiverged(
                            f"{streak} consecutive meta-steps had no finite problem "
                            f"(step {step}); theta was left at its last good value"
                            + (
                                f"; the last checkpoint ({out}/state.npz) is from step {held}"
                                if held is not None
                                else ""
                            )
                        )
                if out is not None and step % config.checkpoint_every == 0:
                    save_state(out, opt, state, family, record)
                    saved = step
                if stop.requested and step < config.num_steps:
                    interrupted = True
                    break
            flush()
            if out is not None and saved != step:
                save_state(out, opt, state, family, record)
    finally:
        bar.close()
    theta, selected = _selection(jax.device_get(state.theta), record)
    return MetaTrainResult(theta, step, history, interrupted, out, selected)


def _finished(
    out: Path, opt: Any, step: int, config: MetaTrainConfig, validation: Validation | None
) -> MetaTrainResult | None:
    """The result of a resumed run, read without writing, if it already reached its end.

    ``state.npz`` is the source of truth for where a run stands; ``theta.npz`` is derived
    from it (the selection so far: :func:`_write_theta`). A ``theta.npz`` that is missing,
    unreadable, of another optimizer, of another step or of another selection is reported with
    a warning and rewritten from ``state.npz``.

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
    _, selected = _selection(None, validation)
    if (
        saved_opt.config() != opt.config()
        or meta.get("step") != step
        or meta.get("selected_step") != selected
    ):
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


def _logged_before(row: dict[str, Any], checkpoint: int) -> bool:
    """Whether a ``metrics.jsonl`` row is kept on resume: logged at or before ``checkpoint``.

    A row without ``step`` is kept; one whose ``step`` is not an integer is damaged and dropped.
    """
    step = row.get("step", 0)
    return isinstance(step, int) and not isinstance(step, bool) and step <= checkpoint
