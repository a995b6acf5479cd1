"""lopt.save / lopt.load: one .npz file, bit-exact round trip, and every documented failure."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lopt
from lopt import checkpoint

META = {"step": 1234, "task": "linear_regression", "score": 0.037, "tags": ["a", "b"]}


def _trained_theta(opt, key=0):
    theta = opt.init(jax.random.key(key))
    leaves, treedef = jax.tree.flatten(theta)
    keys = jax.random.split(jax.random.key(key + 1), len(leaves))
    # Values with full mantissas, so a lossy round trip could not go unnoticed.
    noisy = [x + jax.random.normal(k, x.shape) / 3 for x, k in zip(leaves, keys, strict=True)]
    return jax.tree.unflatten(treedef, noisy)


OPTS = {
    "gru": lopt.RNNOptimizer("gru", 8, "log1p_sign", input_scale=0.5),
    "lstm": lopt.RNNOptimizer("lstm", 4),
    "mlp": lopt.MLPOptimizer(hidden_sizes=(6, 5)),
}


@pytest.mark.parametrize("name", list(OPTS))
def test_round_trip_is_bit_exact(tmp_path, name):
    opt = OPTS[name]
    theta = _trained_theta(opt)
    path = tmp_path / "opt.npz"
    lopt.save(path, opt, theta, **META)
    assert os.listdir(tmp_path) == ["opt.npz"]  # no temporary file left behind
    opt2, theta2, meta2 = lopt.load(path)
    assert opt2 == opt and opt2.config() == opt.config()
    assert meta2 == META
    assert jax.tree.structure(theta2) == jax.tree.structure(theta)
    for a, b in zip(jax.tree.leaves(theta), jax.tree.leaves(theta2), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def test_the_file_is_plain_npz_without_pickle(tmp_path):
    opt = OPTS["gru"]
    path = tmp_path / "opt.npz"
    lopt.save(path, opt, opt.init(jax.random.key(0)))
    with np.load(path, allow_pickle=False) as data:
        names = set(data.files)
        doc = json.loads(data["__json__"].tobytes().decode())
        assert int(data["__format__"][0]) == checkpoint.FORMAT_VERSION
        assert data["__sha256__"].shape == (32,)
    assert "theta:['rnn']['gru']['w_h']" in names
    assert doc == {"optimizer": opt.config(), "metadata": {}}


def test_save_overwrites_atomically_and_refuses_mismatched_theta(tmp_path):
    path = tmp_path / "opt.npz"
    opt = OPTS["lstm"]
    lopt.save(path, opt, opt.init(jax.random.key(0)), step=1)
    lopt.save(path, opt, opt.init(jax.random.key(0)), step=2)
    assert lopt.load(path)[2] == {"step": 2}
    with pytest.raises(lopt.CheckpointError, match="not saved"):
        lopt.save(path, lopt.RNNOptimizer("lstm", 5), opt.init(jax.random.key(0)), step=3)
    assert lopt.load(path)[2] == {"step": 2}  # the old file is untouched
    assert sorted(os.listdir(tmp_path)) == ["opt.npz"]
    with pytest.raises(TypeError):
        lopt.save(path, opt, opt.init(jax.random.key(0)), bad=object())
    assert sorted(os.listdir(tmp_path)) == ["opt.npz"]


@pytest.fixture
def saved(tmp_path):
    opt = OPTS["gru"]
    path = tmp_path / "opt.npz"
    lopt.save(path, opt, _trained_theta(opt), **META)
    return path


def _rewrite(path, edit, *, rehash):
    """Rewrites a checkpoint with ``edit(arrays)`` applied, recomputing the checksum or not."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    edit(arrays)
    if rehash:
        arrays["__sha256__"] = checkpoint._digest(arrays)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _load_error(path):
    with pytest.raises(lopt.CheckpointError) as info:
        lopt.load(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert isinstance(info.value, ValueError)
    return message


def test_missing_file(tmp_path):
    assert "no such checkpoint file" in _load_error(tmp_path / "nope.npz")


def test_truncated_file(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    assert "not a readable .npz" in _load_error(saved)


def test_not_an_npz_file(tmp_path):
    path = tmp_path / "opt.npz"
    path.write_text("hello")
    assert "not a readable .npz" in _load_error(path)


def test_flipped_bytes_are_detected(saved):
    data = bytearray(saved.read_bytes())
    # Flip bytes inside the largest array's payload (the GRU's recurrent weights).
    offset = data.find(b"w_h") + 400
    data[offset : offset + 8] = bytes(b ^ 0xFF for b in data[offset : offset + 8])
    saved.write_bytes(bytes(data))
    message = _load_error(saved)
    assert "checksum mismatch" in message or "not a readable" in message


def test_tampered_array_fails_the_checksum(saved):
    def edit(arrays):
        name = "theta:['readout']['w']"
        arrays[name] = arrays[name] + np.float32(1e-3)

    _rewrite(saved, edit, rehash=False)
    assert "checksum mismatch" in _load_error(saved)


def test_tampered_config_fails_the_checksum(saved):
    def edit(arrays):
        text = arrays["__json__"].tobytes().decode().replace('"step": 1234', '"step": 1')
        arrays["__json__"] = np.frombuffer(text.encode(), np.uint8)

    _rewrite(saved, edit, rehash=False)
    assert "checksum mismatch" in _load_error(saved)


def test_unknown_format_version(saved):
    def edit(arrays):
        arrays["__format__"] = np.array([99], np.int64)

    _rewrite(saved, edit, rehash=True)
    assert "unknown format version 99" in _load_error(saved)


def test_shapes_that_do_not_match_the_config(saved):
    def edit(arrays):
        doc = json.loads(arrays["__json__"].tobytes().decode())
        doc["optimizer"]["hidden_size"] = 16
        arrays["__json__"] = np.frombuffer(json.dumps(doc).encode(), np.uint8)

    _rewrite(saved, edit, rehash=True)
    message = _load_error(saved)
    assert "theta['h0'] has shape (8,)" in message and "config implies (16,)" in message


def test_wrong_dtype_and_missing_leaf(saved, tmp_path):
    def to_f16(arrays):
        arrays["theta:['h0']"] = arrays["theta:['h0']"].astype(np.float16)

    _rewrite(saved, to_f16, rehash=True)
    assert "float16" in _load_error(saved)

    def drop(arrays):
        del arrays["theta:['h0']"]

    _rewrite(saved, drop, rehash=True)
    assert "missing" in _load_error(saved)


def test_bad_config(saved):
    def edit(arrays):
        doc = {"optimizer": {"type": "transformer"}, "metadata": {}}
        arrays["__json__"] = np.frombuffer(json.dumps(doc).encode(), np.uint8)

    _rewrite(saved, edit, rehash=True)
    assert "unknown optimizer type" in _load_error(saved)


def test_loaded_optimizer_runs(saved):
    opt, theta, _ = lopt.load(saved)
    tx = opt.optimizer(theta)
    params = {"w": jnp.ones(3)}
    updates, _ = jax.jit(tx.update)(params, tx.init(params))
    assert np.all(np.isfinite(updates["w"])) and np.any(updates["w"] != 0)
