"""Safe files: atomic writes, JSON and JSON-lines, and pytrees of arrays in ``.npz`` files.

Every file the toolkit writes goes through :func:`atomic_write`: the bytes go to a temporary
name in the same directory, are flushed and ``fsync``'d, and are then renamed over the target,
so a crash (or ``kill -9``) leaves either the old file or the new one, never half of one.
Arrays are stored with ``numpy.savez`` and read with ``allow_pickle=False``; nothing is
pickled.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

FORMAT_KEY = "__format__"
CHECKSUM_KEY = "__sha256__"


class CheckpointError(ValueError):
    """A file the toolkit wrote cannot be read back: missing, truncated, tampered, mismatched."""


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> None:
    """Writes a file atomically: ``write(f)`` fills a temporary file that is then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private; results are meant to be shared like any other file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable where the platform allows it
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def plain(x: Any) -> Any:
    """``x`` as strict JSON data, the one sanitiser behind every JSON file the toolkit writes.

    NumPy/JAX scalars and arrays become Python numbers and lists, tuples become lists, and
    non-finite floats (a diverged run's loss) become ``None``.
    """
    if isinstance(x, Mapping):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [plain(v) for v in x]
    if isinstance(x, np.ndarray | jax.Array):
        return plain(np.asarray(x).tolist())
    if isinstance(x, np.generic):
        return plain(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Writes ``obj`` as indented strict JSON (through :func:`plain`), atomically."""
    data = (json.dumps(plain(obj), indent=2, sort_keys=True, allow_nan=False) + "\n").encode()
    atomic_write(path, lambda f: f.write(data))


def read_json(path: str | os.PathLike) -> Any:
    """Reads a JSON file; a missing or malformed file raises :class:`CheckpointError`."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None


def older_than(derived: str | os.PathLike, source: str | os.PathLike) -> bool:
    """Whether ``derived`` was last written before ``source`` (both existing; by mtime)."""
    derived, source = Path(derived), Path(source)
    return derived.exists() and source.exists() and derived.stat().st_mtime < source.stat().st_mtime


def checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of ``arrays`` in sorted-name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], fmt: str) -> None:
    """Writes ``arrays`` with a format tag and a checksum into one ``.npz``, atomically."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    for reserved in (FORMAT_KEY, CHECKSUM_KEY):
        if reserved in arrays:
            raise ValueError(f"array name {reserved!r} is reserved")
    payload = dict(arrays)
    payload[FORMAT_KEY] = np.asarray(fmt)
    payload[CHECKSUM_KEY] = np.asarray(checksum(arrays))
    atomic_write(path, lambda f: np.savez(f, **payload))


def read_npz(path: str | os.PathLike, fmt: str) -> dict[str, np.ndarray]:
    """Reads a file written by :func:`write_npz` and verifies its format tag and checksum.

    Raises:
        CheckpointError: one line naming the file and what is wrong with it.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path}: unreadable or truncated ({type(e).__name__}: {e})"
        ) from None
    found = str(arrays.pop(FORMAT_KEY, "missing"))
    if found != fmt:
        raise CheckpointError(f"{path}: format {found!r}, expected {fmt!r}")
    stored = str(arrays.pop(CHECKSUM_KEY, ""))
    if stored != checksum(arrays):
        raise CheckpointError(f"{path}: checksum mismatch (file corrupted or modified)")
    return arrays


def _key_name(path: tuple) -> str:
    return "/".join(str(getattr(p, "key", getattr(p, "idx", getattr(p, "name", p)))) for p in path)


def tree_to_arrays(tree: Any) -> dict[str, np.ndarray]:
    """Flattens a pytree of arrays to ``{path: array}``; PRNG keys are stored as key data."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        leaf = jnp.asarray(leaf)
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out[_key_name(path) or "."] = np.asarray(jax.device_get(leaf))
    return out


def arrays_to_tree(arrays: Mapping[str, np.ndarray], template: Any, path: str) -> Any:
    """Rebuilds a pytree shaped like ``template`` from :func:`tree_to_arrays` output.

    Raises:
        CheckpointError: if an entry is missing or its shape or dtype differs from the template.
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for p, like in flat:
        name = _key_name(p) or "."
        if name not in arrays:
            raise CheckpointError(f"{path}: missing entry {name!r}")
        a = arrays[name]
        like = like if isinstance(like, jax.ShapeDtypeStruct) else jnp.asarray(like)
        is_key = jnp.issubdtype(like.dtype, jax.dtypes.prng_key)
        want = jax.eval_shape(jax.random.key_data, like) if is_key else like
        if a.shape != tuple(want.shape) or a.dtype != want.dtype:
            raise CheckpointError(
                f"{path}: entry {name!r} has shape {a.shape} {a.dtype}, "
                f"expected {tuple(want.shape)} {want.dtype}"
            )
        leaves.append(jax.random.wrap_key_data(a) if is_key else jnp.asarray(a))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def save_tree(path: str | os.PathLike, tree: Any, fmt: str) -> None:
    """Saves a pytree of arrays (PRNG keys included) atomically with a checksum."""
    write_npz(path, tree_to_arrays(tree), fmt)


def load_tree(path: str | os.PathLike, template: Any, fmt: str) -> Any:
    """Loads a pytree saved by :func:`save_tree`, checked against ``template``."""
    return arrays_to_tree(read_npz(path, fmt), template, str(path))


def append_jsonl(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """Appends rows to a JSON-lines file (each line is flushed whole)."""
    if not rows:
        return
    with open(path, "a") as f:
        f.write("".join(json.dumps(r, allow_nan=True) + "\n" for r in rows))
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file; ``[]`` if it does not exist.

    A line that is not a JSON object (torn by a crash mid-write, or not UTF-8) is skipped:
    rows are appended one line at a time, so a damaged line never hides the others.
    """
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_bytes().splitlines():
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def truncate_jsonl(path: str | os.PathLike, keep: Callable[[dict[str, Any]], bool]) -> None:
    """Rewrites a JSON-lines file keeping the rows ``keep`` accepts (drops damaged lines)."""
    path = Path(path)
    if not path.exists():
        return
    rows = [r for r in read_jsonl(path) if keep(r)]
    data = "".join(json.dumps(r, allow_nan=True) + "\n" for r in rows).encode()
    atomic_write(path, lambda f: f.write(data))
