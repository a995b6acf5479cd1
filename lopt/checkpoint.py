"""Saving and loading a learned optimizer with its meta-parameters: one ``.npz`` file.

Layout of the file (a plain NumPy ``.npz``; nothing is pickled):

* ``theta:<path>``: one array per leaf of ``theta``; ``<path>`` is
  ``jax.tree_util.keystr`` of the leaf's path (e.g. ``theta:['rnn']['gru']['w_h']``).
* ``__json__``: ``uint8`` bytes of the UTF-8 JSON ``{"optimizer": opt.config(),
  "metadata": {...}}``.
* ``__format__``: ``int64[1]``, the format version (:data:`FORMAT_VERSION`).
* ``__sha256__``: ``uint8[32]``, SHA-256 over every other entry, in sorted name order, of the
  entry's name, dtype, shape and raw C-order bytes.

Writes go to a temporary file in the destination directory, are flushed and ``fsync``'d, then
renamed over the destination (``os.replace``), so readers see the old file or the new one,
never a partial one. On load, the theta leaves must match the structure, shapes and dtypes
that ``opt.init`` produces for the stored config (checked with ``jax.eval_shape``, no compute).
Nothing is trusted before it is bounded: every entry's size in the zip directory is checked
before anything is decompressed, the JSON entry is read first (at most :data:`MAX_JSON_BYTES`),
and each theta entry may hold no more than the config implies, so a decompression bomb is
refused from the directory alone and the checksum is computed over bounded data.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lopt.base import LearnedOptimizer, from_config
from lopt.rundir import (
    MAX_NPZ_BYTES,
    SMALL_ENTRY_BYTES,
    CheckpointError,
    NpzReader,
    atomic_write,
    checksum,
)

FORMAT_VERSION = 1
_THETA = "theta:"
_JSON = "__json__"
_FORMAT = "__format__"
_SHA = "__sha256__"

#: Most bytes the JSON entry (optimizer config and metadata) may hold.
MAX_JSON_BYTES = 2**24


def _digest(arrays: dict[str, np.ndarray]) -> np.ndarray:
    return np.frombuffer(
        bytes.fromhex(checksum({k: v for k, v in arrays.items() if k != _SHA})), np.uint8
    )


def _leaf_names(tree: Any) -> list[str]:
    return [
        _THETA + jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(tree)
    ]


def _mismatch(expected: Any, arrays: dict[str, Any]) -> str | None:
    """Says how ``arrays`` (``theta:<path>`` entries) differ from ``expected``'s leaves."""
    names = _leaf_names(expected)
    missing = sorted(set(names) - set(arrays))
    extra = sorted(set(arrays) - set(names))
    if missing or extra:
        return f"theta does not match the config: missing {missing}, unexpected {extra}"
    for name, spec in zip(names, jax.tree.leaves(expected), strict=True):
        a = arrays[name]
        if tuple(a.shape) != tuple(spec.shape) or np.dtype(a.dtype) != np.dtype(spec.dtype):
            return (
                f"theta{name[len(_THETA) :]} has shape {tuple(a.shape)} {np.dtype(a.dtype)}, "
                f"config implies {tuple(spec.shape)} {np.dtype(spec.dtype)}"
            )
    return None


def save(path: str | os.PathLike, opt: LearnedOptimizer, theta: Any, **metadata: Any) -> None:
    """Writes ``opt`` (its config), ``theta`` and JSON-able ``metadata`` to one ``.npz`` file.

    The file is written atomically (temporary file, ``fsync``, rename) exactly at ``path``.

    Args:
        path: destination file (``.npz`` by convention; no suffix is added).
        opt: the learned optimizer; ``opt.config()`` is stored.
        theta: its meta-parameters (a pytree of arrays, e.g. from ``opt.init`` or training).
        **metadata: anything JSON-able (step, task name, scores...). Tuples come back as lists.

    Raises:
        TypeError: ``metadata`` is not JSON-able.
        CheckpointError: ``theta`` does not have the structure, shapes and dtypes of
            ``opt.init``'s result (nothing is written).

    Example:
        >>> opt = lopt.RNNOptimizer(hidden_size=8)
        >>> lopt.save("gru8.npz", opt, opt.init(jax.random.key(0)), step=0)
        >>> opt, theta, meta = lopt.load("gru8.npz")
    """
    path = os.fspath(path)
    leaves = jax.device_get(jax.tree.leaves(theta))
    arrays = {name: np.asarray(x) for name, x in zip(_leaf_names(theta), leaves, strict=True)}
    problem = _mismatch(jax.eval_shape(opt.init, jax.random.key(0)), arrays)
    if problem:
        raise CheckpointError(f"{path}: not saved: {problem}")
    text = json.dumps({"optimizer": opt.config(), "metadata": metadata}, sort_keys=True)
    arrays[_JSON] = np.frombuffer(text.encode(), np.uint8)
    arrays[_FORMAT] = np.array([FORMAT_VERSION], np.int64)
    arrays[_SHA] = _digest(arrays)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load(path: str | os.PathLike) -> tuple[LearnedOptimizer, Any, dict[str, Any]]:
    """Reads a file written by :func:`save`.

    Args:
        path: the file.

    Returns:
        ``(opt, theta, metadata)``; ``theta`` has the structure of ``opt.init``'s result and
        holds ``jax.Array`` s bit-identical to what was saved.

    Raises:
        CheckpointError: (one line naming the file) the file is missing or not a readable
            ``.npz`` (e.g. truncated), has an unknown format version, fails its checksum, has a
            bad config, or its arrays do not match the structure, shapes or dtypes the config
            implies.
    """
    path = os.fspath(path)

    def fail(problem: str) -> CheckpointError:
        return CheckpointError(" ".join(f"{path}: {problem}".split()))  # always one line

    if not os.path.isfile(path):
        raise fail("no such checkpoint file")
    with NpzReader(path, "not a readable .npz checkpoint (truncated or corrupted?)") as z:
        for name in (_FORMAT, _SHA, _JSON):
            if name not in z.sizes:
                raise fail(f"not a lopt checkpoint (no {name!r} entry)")
        # Sizes from the zip directory, before anything is decompressed.
        limits = {_FORMAT: SMALL_ENTRY_BYTES, _SHA: SMALL_ENTRY_BYTES, _JSON: MAX_JSON_BYTES}
        limits.update({n: MAX_NPZ_BYTES for n in z.sizes if n.startswith(_THETA)})
        z.check(limits)
        version = z.read(_FORMAT)
        if version.shape != (1,) or version.dtype.kind not in "iu":
            raise fail("malformed format version entry")
        if int(version[0]) != FORMAT_VERSION:
            raise fail(
                f"unknown format version {int(version[0])} (this lopt reads {FORMAT_VERSION})"
            )
        text = z.read(_JSON)
        try:
            doc = json.loads(text.tobytes().decode())
            opt = from_config(doc["optimizer"])
            metadata = doc["metadata"]
        except (ValueError, KeyError, TypeError) as e:
            raise fail(f"bad optimizer config: {e}") from None
        # Each theta entry may hold at most what the config implies, one the config does not
        # have nothing but a header (mismatches are reported below, after the checksum).
        expected = jax.eval_shape(opt.init, jax.random.key(0))
        implied = {
            name: math.prod(spec.shape) * np.dtype(spec.dtype).itemsize
            for name, spec in zip(_leaf_names(expected), jax.tree.leaves(expected), strict=True)
        }
        limits.update({n: implied.get(n, 0) for n in z.sizes if n.startswith(_THETA)})
        z.check(limits, total=MAX_JSON_BYTES + sum(limits.values()))
        arrays = {_FORMAT: version, _JSON: text, _SHA: z.read(_SHA)}
        arrays.update({n: z.read(n) for n in z.sizes if n.startswith(_THETA)})
    stored = arrays[_SHA]
    if stored.dtype != np.uint8 or not np.array_equal(stored, _digest(arrays)):
        raise fail("checksum mismatch (file tampered with or corrupted)")

    problem = _mismatch(expected, {k: v for k, v in arrays.items() if k.startswith(_THETA)})
    if problem:
        raise fail(problem)
    leaves = [jnp.asarray(arrays[name]) for name in _leaf_names(expected)]
    theta = jax.tree.unflatten(jax.tree.structure(expected), leaves)
    return opt, theta, metadata
