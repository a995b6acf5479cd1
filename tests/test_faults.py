"""Fault injection on a run directory: signals at chosen points, kills after a checkpoint,
deleted and crafted files, a second writer, a full disk, and inputs that do not fit.

Every case is from issue 23; each test fails on the behaviour the issue reports.
"""

import errno
import importlib
import io
import os
import signal
import subprocess
import sys
import time
import tracemalloc
import zipfile
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hang import HANG_S
from tiny import TinyMomentum

import lopt
import tasks
from lopt import rundir
from lopt.meta_train import MetaTrainConfig, MetaTrainDiverged, meta_train
from lopt.validation import RECORD, Validation
from lopt_cli.lopt import main

mt = importlib.import_module("lopt.meta_train")  # the module; lopt.meta_train is the function

FAMILY = tasks.get("linear_regression", dim=3, num_steps=8)
OPT = lopt.RNNOptimizer(hidden_size=4)
# Validation scores of this run at steps 2, 4, 6: 0.73, 0.66, 0.80. The best is step 4, not the
# last, so losing step 4's validation (or trusting the last iterate) changes the selection.
CONFIG = MetaTrainConfig(
    num_problems=4,
    num_steps=6,
    log_every=2,
    checkpoint_every=3,
    learning_rate=0.3,
    seed=1,
    validate_every=2,
    validation_problems=4,
)
BEST = 4


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _same(a, b):
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The uninterrupted run every interrupted one must reproduce bitwise."""
    out = tmp_path_factory.mktemp("full")
    result = meta_train(OPT, FAMILY, CONFIG, out_dir=out, progress=False)
    assert result.selected_step == BEST  # the premise of the tests below
    return result


def _validations(out):
    return [
        (r["validation_step"], r["validation"], r["best_step"])
        for r in lopt.meta_train_metrics(out)
        if "validation_step" in r
    ]


def _signal_during_validation(monkeypatch, at, sig, times=1):
    """Sends ``sig`` to this process ``times`` times from inside the validation at step ``at``."""
    original = Validation.__call__

    def validate(self, step, theta):
        if step == at:
            for _ in range(times):
                os.kill(os.getpid(), sig)
        return original(self, step, theta)

    monkeypatch.setattr(Validation, "__call__", validate)


# 1. A signal during a validation --------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_a_signal_during_a_validation_loses_nothing_and_resume_is_exact(
    tmp_path, monkeypatch, full, sig
):
    _signal_during_validation(monkeypatch, BEST, sig)
    part = meta_train(OPT, FAMILY, CONFIG, out_dir=tmp_path, progress=False)
    monkeypatch.undo()
    # The step and its validation finished, then the loop stopped with a checkpoint.
    assert part.interrupted and part.step == BEST and part.selected_step == BEST
    _, _, meta = lopt.load(tmp_path / "theta.npz")
    assert meta["step"] == BEST and meta["selected_step"] == BEST
    resumed = meta_train(OPT, FAMILY, CONFIG, out_dir=tmp_path, resume=True, progress=False)
    assert not resumed.interrupted and resumed.selected_step == full.selected_step == BEST
    _same(resumed.theta, full.theta)
    _same(lopt.load(tmp_path / "theta.npz")[1], lopt.load(full.out_dir / "theta.npz")[1])
    assert _validations(tmp_path) == _validations(full.out_dir)


def test_a_second_signal_stops_at_once_and_the_last_checkpoint_resumes_exactly(
    tmp_path, monkeypatch, full
):
    _signal_during_validation(monkeypatch, BEST, signal.SIGTERM, times=2)
    with pytest.raises(KeyboardInterrupt):
        meta_train(OPT, FAMILY, CONFIG, out_dir=tmp_path, progress=False)
    monkeypatch.undo()
    # Nothing was written after the periodic checkpoint at step 3 (like a kill -9).
    assert rundir.read_npz(tmp_path / "state.npz", mt.STATE_FORMAT)["step"] == 3
    assert not (tmp_path / rundir.LOCK_NAME).exists()
    resumed = meta_train(OPT, FAMILY, CONFIG, out_dir=tmp_path, resume=True, progress=False)
    assert resumed.selected_step == BEST
    _same(resumed.theta, full.theta)


# 2. A deleted best.npz ------------------------------------------------------------------------


def test_a_deleted_best_npz_is_rewritten_from_state_npz_on_resume(tmp_path, full):
    first = MetaTrainConfig(**{**CONFIG.to_dict(), "num_steps": 5})  # checkpoint at 3 and 5
    meta_train(OPT, FAMILY, first, out_dir=tmp_path, progress=False)
    _, best_before, meta = lopt.load(tmp_path / "best.npz")
    assert meta["step"] == BEST
    (tmp_path / "best.npz").unlink()
    with pytest.warns(UserWarning, match="best.npz: no such checkpoint file; rewriting it"):
        resumed = meta_train(OPT, FAMILY, CONFIG, out_dir=tmp_path, resume=True, progress=False)
    assert resumed.selected_step == BEST
    _same(resumed.theta, full.theta)
    _, best_after, meta = lopt.load(tmp_path / "best.npz")
    assert meta["step"] == BEST
    _same(best_after, best_before)


def test_a_metrics_row_with_a_damaged_step_is_dropped_on_resume(tmp_path, full):
    first = MetaTrainConfig(**{**CONFIG.to_dict(), "num_steps": 5})
    meta_train(OPT, FAMILY, first, out_dir=tmp_path, progress=False)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": "two", "meta_loss": 1.0}\n{"step": [3]}\n')
    resumed = meta_train(OPT, FAMILY, CONFIG, out_dir=tmp_path, resume=True, progress=False)
    _same(resumed.theta, full.theta)
    rows = rundir.read_jsonl(tmp_path / "metrics.jsonl")
    assert all(isinstance(r.get("step", 0), int) for r in rows)


def test_an_older_state_without_the_record_and_no_best_npz_is_refused(tmp_path):
    first = MetaTrainConfig(**{**CONFIG.to_dict(), "num_steps": 5})
    meta_train(OPT, FAMILY, first, out_dir=tmp_path, progress=False)
    arrays = rundir.read_npz(tmp_path / "state.npz", mt.STATE_FORMAT)
    old = {k: v for k, v in arrays.items() if not k.startswith(RECORD)}
    assert len(old) < len(arrays)
    rundir.write_npz(tmp_path / "state.npz", old, mt.STATE_FORMAT)
    (tmp_path / "best.npz").unlink()
    with pytest.raises(lopt.CheckpointError) as e:
        meta_train(OPT, FAMILY, CONFIG, out_dir=tmp_path, resume=True, progress=False)
    message = str(e.value)
    assert "\n" not in message and "best.npz: missing" in message and "start the run" in message


# 3. A kill after the last checkpoint ----------------------------------------------------------


class _Killed(BaseException):
    pass


def test_theta_npz_is_the_selection_even_when_killed_right_after_the_last_checkpoint(
    tmp_path, monkeypatch, full
):
    save_state = mt.save_state

    def killed_after_the_last(out, opt, state, family, validation=None):
        save_state(out, opt, state, family, validation)
        if int(state.step) == CONFIG.num_steps:
            raise _Killed

    monkeypatch.setattr(mt, "save_state", killed_after_the_last)
    with pytest.raises(_Killed):
        meta_train(OPT, FAMILY, CONFIG, out_dir=tmp_path, progress=False)
    monkeypatch.undo()
    # What lopt evaluate, probes and distill read (Run.checkpoint is theta.npz) is the
    # selected theta, not the last iterate.
    from lopt.run import Run

    _, theta, meta = Run(tmp_path).checkpoint()
    assert meta["step"] == CONFIG.num_steps and meta["selected_step"] == BEST
    _same(theta, full.theta)
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    done = meta_train(OPT, FAMILY, CONFIG, out_dir=tmp_path, resume=True, progress=False)
    assert done.selected_step == BEST and not done.interrupted
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == stamps  # finished


def test_a_theta_npz_of_another_selection_is_rewritten_on_resume(tmp_path, full):
    meta_train(OPT, FAMILY, CONFIG, out_dir=tmp_path, progress=False)
    _, last, _ = lopt.load(tmp_path / "best.npz")
    lopt.save(tmp_path / "theta.npz", OPT, last, step=CONFIG.num_steps)  # unselected
    with pytest.warns(UserWarning, match="does not match state.npz"):
        meta_train(OPT, FAMILY, CONFIG, out_dir=tmp_path, resume=True, progress=False)
    _, theta, meta = lopt.load(tmp_path / "theta.npz")
    assert meta["selected_step"] == BEST
    _same(theta, full.theta)


# 4. One writer per run directory --------------------------------------------------------------

_HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, str(os.getpid()).encode())
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def holder(tmp_path):
    """A process holding the lock of ``tmp_path/run`` (as a running meta-train would)."""
    run = tmp_path / "run"
    run.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(run / rundir.LOCK_NAME)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield run, proc.pid
    finally:
        proc.stdin.close()
        proc.wait(timeout=HANG_S)


def test_a_second_writer_is_refused_naming_the_lock_and_its_holder(holder, capsys):
    run, pid = holder
    lock = run / rundir.LOCK_NAME
    with pytest.raises(rundir.RunLocked, match=f"{lock}: .* in use by process {pid}"):
        meta_train(TinyMomentum(), FAMILY, CONFIG, out_dir=run, progress=False)
    argv = ["meta-train", "--task", "linear_regression", "--out", str(run), "--steps", "1"]
    with pytest.raises(SystemExit) as e:
        main([*argv, "--quiet"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("lopt: error: ") and str(lock) in err and f"process {pid}" in err
    assert sorted(p.name for p in run.iterdir()) == [rundir.LOCK_NAME]  # nothing written


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=HANG_S)
    run = tmp_path / "run"
    run.mkdir()
    (run / rundir.LOCK_NAME).write_text(f"{dead.pid}\n")
    config = MetaTrainConfig(num_problems=2, num_steps=1)
    result = meta_train(TinyMomentum(), FAMILY, config, out_dir=run, progress=False)
    assert result.step == 1 and (run / "state.npz").exists()
    assert not (run / rundir.LOCK_NAME).exists()  # released and removed
    with rundir.locked(run) as lock:  # held while the block runs, with this pid inside
        assert lock.read_text().strip() == str(os.getpid())
        with pytest.raises(rundir.RunLocked, match=f"process {os.getpid()}"):
            with rundir.locked(run):
                pass


# 5. Never someone else's directory ------------------------------------------------------------


@pytest.mark.parametrize("config_json", [None, '{"learning_rate": 1}', "not json"])
def test_a_fresh_run_refuses_a_directory_that_is_not_a_run(tmp_path, config_json):
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("my notes")
    if config_json is not None:
        (user / "config.json").write_text(config_json)
    before = {p.name: p.read_bytes() for p in user.iterdir()}
    with pytest.raises(rundir.RunDirError, match="not a run directory") as e:
        meta_train(TinyMomentum(), FAMILY, CONFIG, out_dir=user, progress=False)
    assert "\n" not in str(e.value) and str(user) in str(e.value)
    assert {p.name: p.read_bytes() for p in user.iterdir()} == before


def test_a_fresh_run_may_replace_a_run_and_use_an_empty_directory(tmp_path):
    config = MetaTrainConfig(
        num_problems=2, num_steps=2, log_every=1, validate_every=1, validation_problems=2
    )
    (tmp_path / "empty").mkdir()
    for _ in range(2):  # the second start replaces the first run
        result = meta_train(
            TinyMomentum(), FAMILY, config, out_dir=tmp_path / "empty", progress=False
        )
        assert result.step == 2
    assert [r["step"] for r in lopt.meta_train_metrics(tmp_path / "empty")] == [1, 2]


def test_an_empty_out_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(rundir.RunDirError, match="empty path"):
        meta_train(TinyMomentum(), FAMILY, CONFIG, out_dir="", progress=False)
    with pytest.raises(SystemExit) as e:
        main(["meta-train", "--task", "linear_regression", "--out", "", "--quiet"])
    assert e.value.code == 2
    assert "empty path" in capsys.readouterr().err.strip().splitlines()[-1]
    assert os.listdir(tmp_path) == []


# 6. Orphans and a full disk -------------------------------------------------------------------


def test_orphan_temporary_files_are_removed_when_a_run_starts(tmp_path):
    config = MetaTrainConfig(num_problems=2, num_steps=1)
    meta_train(OPT, FAMILY, config, out_dir=tmp_path, progress=False)
    orphans = [".state.npz.k2j3.tmp", ".theta.npz.x9.tmp", ".metrics.jsonl.a.tmp"]
    keep = [".eval.json.q1.tmp", "mine.tmp"]  # not ours to remove (another command's, a user's)
    for name in orphans + keep:
        (tmp_path / name).write_bytes(b"half a file")
    meta_train(OPT, FAMILY, config, out_dir=tmp_path, resume=True, progress=False)
    left = {p.name for p in tmp_path.iterdir()}
    assert not left & set(orphans) and set(keep) <= left


def test_a_full_disk_names_the_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    path = tmp_path / "theta.npz"
    with pytest.raises(OSError) as e:
        rundir.write_json(tmp_path / "config.json", {"a": 1})
    assert e.value.errno == errno.ENOSPC and str(tmp_path / "config.json") in str(e.value)
    with pytest.raises(OSError) as e:
        rundir.append_jsonl(tmp_path / "metrics.jsonl", [{"step": 1}])
    assert str(tmp_path / "metrics.jsonl") in str(e.value)
    opt = lopt.RNNOptimizer(hidden_size=2)
    with pytest.raises(OSError, match="No space left on device") as e:
        lopt.save(path, opt, opt.init(jax.random.key(0)))
    assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


# 7. Crafted files: a decompression bomb -------------------------------------------------------


def _deflate_bomb(prefix: bytes, mib: int) -> tuple[bytes, int]:
    """A raw deflate stream of ``prefix`` and ``mib`` MiB of zeros, made without compressing
    them: after a full flush the compressor's output depends only on its input, so one MiB's
    block is repeated. Returns the stream and the size it inflates to."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(bytes(2**20)) + c.flush(zlib.Z_FULL_FLUSH)
    assert c.compress(bytes(2**20)) + c.flush(zlib.Z_FULL_FLUSH) == block
    return head + block * mib + c.flush(), len(prefix) + mib * 2**20


def _with_bomb(src, dst, name, mib=1500):
    """``src`` (a valid checkpoint) with entry ``name`` replaced by a bomb of ``mib`` MiB."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros(mib * 2**18, np.float32))
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    stream, size = _deflate_bomb(buf.getvalue(), mib)
    with zipfile.ZipFile(src) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as z:
        for member, data in members.items():
            if member != name + ".npy":
                z.writestr(member, data)
        info = zipfile.ZipInfo(name + ".npy")
        info.compress_type, info.file_size, info.compress_size = zipfile.ZIP_DEFLATED, size, 0
        info.compress_size, info.CRC = len(stream), zlib.crc32(b"")  # never checked: refused
        info.header_offset = z.fp.tell()
        z.fp.write(info.FileHeader(zip64=False))
        z.fp.write(stream)
        z.filelist.append(info)
        z.NameToInfo[info.filename] = info
        z.start_dir, z._didModify = z.fp.tell(), True
    return stream


@pytest.mark.parametrize("name", ["theta:['h0']", "__json__", "theta:['extra']"])
def test_a_decompression_bomb_is_refused_from_the_zip_directory(tmp_path, name):
    opt = lopt.RNNOptimizer(hidden_size=4)
    lopt.save(tmp_path / "ok.npz", opt, opt.init(jax.random.key(0)))
    bomb = tmp_path / "bomb.npz"
    stream = _with_bomb(tmp_path / "ok.npz", bomb, name)
    # A real bomb: 1.5 MB on disk that inflates (checked on its first 64 MiB) to 1.5 GB.
    assert bomb.stat().st_size < 2_000_000
    assert zlib.decompressobj(-15).decompress(stream, 2**26)[128:] == bytes(2**26 - 128)
    with zipfile.ZipFile(bomb) as z:
        assert z.getinfo(name + ".npy").file_size > 1.5e9
    tracemalloc.start()
    try:
        with pytest.raises(lopt.CheckpointError, match="declares") as e:
            lopt.load(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "\n" not in str(e.value) and str(bomb) in str(e.value)
    assert peak < 2**26, peak  # nothing near the 1.5 GB it claims was allocated


def test_a_state_npz_bomb_is_refused_before_anything_is_decompressed(tmp_path):
    config = MetaTrainConfig(num_problems=2, num_steps=1)
    meta_train(TinyMomentum(), FAMILY, config, out_dir=tmp_path, progress=False)
    _with_bomb(tmp_path / "state.npz", tmp_path / "bomb.npz", "step", mib=1100)
    os.replace(tmp_path / "bomb.npz", tmp_path / "state.npz")
    with pytest.raises(lopt.CheckpointError, match="state.npz: entry 'step' declares"):
        meta_train(TinyMomentum(), FAMILY, config, out_dir=tmp_path, resume=True)


def test_an_npy_header_that_lies_about_its_shape_is_refused(tmp_path):
    path = tmp_path / "lie.npz"
    header = io.BytesIO()  # a header claiming 4 GB over 16 bytes of data
    shape = {"descr": "<f4", "fortran_order": False, "shape": (10**9,)}
    np.lib.format.write_array_header_1_0(header, shape)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a.npy", header.getvalue() + bytes(16))
    with pytest.raises(lopt.CheckpointError, match="does not match its size"):
        rundir.read_npz(path, "x")


# 8. The optax adapter's inputs ----------------------------------------------------------------


def test_a_gradient_tree_that_does_not_match_the_parameters_is_one_clear_error():
    tx = lopt.cell_optimizer(lopt.hand_designed.momentum(learning_rate=0.1, beta=0.9))
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    state = tx.init(params)
    with pytest.raises(ValueError, match="gradient tree has 5 scalars but .* for 4 parameters"):
        tx.update({"w": jnp.ones(4), "b": jnp.ones(())}, state)
    with pytest.raises(ValueError, match="gradient tree does not match the parameters"):
        tx.update({"w": jnp.ones(3), "c": jnp.ones(())}, state, params)
    with pytest.raises(ValueError, match=r"parameter \['w'\] has shape \(1, 3\)"):
        jax.jit(tx.update)({"w": jnp.ones((1, 3)), "b": jnp.ones(())}, state, params)


def test_updates_come_back_in_the_parameters_dtype():
    tx = lopt.cell_optimizer(lopt.hand_designed.momentum(learning_rate=0.1, beta=0.9))
    params = {"w": jnp.zeros(3, jnp.bfloat16), "v": jnp.zeros(2, jnp.float32)}
    grads = {"w": jnp.ones(3, jnp.float32), "v": jnp.ones(2, jnp.bfloat16)}
    updates, _ = tx.update(grads, tx.init(params), params)
    assert updates["w"].dtype == jnp.bfloat16 and updates["v"].dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(updates["v"]), -0.1)
    bare, _ = tx.update(grads, tx.init(params))  # no params: the gradient's dtype
    assert bare["w"].dtype == jnp.float32 and bare["v"].dtype == jnp.bfloat16


# 9. MetaTrainDiverged names only a checkpoint that exists -------------------------------------


class _Exploding(TinyMomentum):
    def init(self, key):
        return dict(super().init(key), log_lr=jnp.asarray(np.log(1e4), jnp.float32))


@pytest.mark.parametrize("checkpoint_every", [100, 1])
def test_divergence_names_the_last_checkpoint_only_when_there_is_one(tmp_path, checkpoint_every):
    family = tasks.get("linear_regression", dim=3, num_steps=40)
    config = MetaTrainConfig(
        num_problems=2,
        num_steps=20,
        log_every=1,
        max_nonfinite_steps=3,
        checkpoint_every=checkpoint_every,
    )
    with pytest.raises(MetaTrainDiverged, match="3 consecutive") as e:
        meta_train(_Exploding(), family, config, out_dir=tmp_path, progress=False)
    if checkpoint_every == 1:
        assert f"{tmp_path}/state.npz) is from step 2" in str(e.value)
    else:
        assert "state.npz" not in str(e.value) and not (tmp_path / "state.npz").exists()
    assert not (tmp_path / rundir.LOCK_NAME).exists()


@pytest.mark.slow
def test_two_concurrent_meta_trains_on_one_directory(tmp_path):
    """The real thing: a second ``lopt meta-train`` while the first one writes the run."""
    out = str(tmp_path / "run")
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    cli = [sys.executable, "-m", "lopt_cli.lopt", "meta-train"]
    first = subprocess.Popen(
        [*cli, "--task", "linear_regression", "--out", out, "--steps", "100000", "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Ready once it has written a checkpoint (compiled and stepping).
        state = os.path.join(out, "state.npz")
        while not os.path.exists(state):
            assert first.poll() is None, first.stderr.read()
            time.sleep(0.2)
        second = subprocess.run(
            [*cli, "--out", out, "--resume", "--quiet"],
            env=env,
            capture_output=True,
            text=True,
            timeout=HANG_S,
        )
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=HANG_S)
    finally:
        first.kill()
    assert second.returncode == 2 and "Traceback" not in second.stderr
    line = second.stderr.strip().splitlines()[-1]  # after the "meta-training ..." line
    assert line.startswith("lopt: error: ") and os.path.join(out, rundir.LOCK_NAME) in line
    assert f"process {first.pid}" in line
    assert first.returncode == 130, err
    assert not os.path.exists(os.path.join(out, rundir.LOCK_NAME))
