"""Safe files: atomic writes, JSON, arrays in ``.npz`` files, a run directory's one writer.

Every file the toolkit writes goes through :func:`atomic_write`: the bytes go to a temporary
name in the same directory, are flushed and ``fsync``'d, and are then renamed over the target,
so a crash (or ``kill -9``) leaves either the old file or the new one, never half of one; a
failed write (a full disk) names the file it was writing. Arrays are stored with
``numpy.savez`` and read back by :class:`NpzReader`, which checks every entry's size in the
zip directory before it decompresses anything and never unpickles.

A run directory has one writer at a time: :func:`locked` holds an exclusive ``flock`` on its
``.lock`` file (released by the operating system however the holder dies, ``kill -9``
included), and :func:`check_fresh_target` refuses to start a run in a directory that holds
someone else's files.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import math
import os
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

FORMAT_KEY = "__format__"
CHECKSUM_KEY = "__sha256__"


class CheckpointError(ValueError):
    """A file the toolkit wrote cannot be read back: missing, truncated, tampered, mismatched."""


class RunDirError(ValueError):
    """A directory that cannot take a run: not a run directory, or an empty path."""


class RunLocked(RunDirError):
    """Another process is writing the run directory (it holds the directory's lock)."""


def _naming(e: OSError, path: Path) -> OSError:
    """``e`` as an ``OSError`` (same errno, so the same subclass) that names ``path``."""
    if e.errno is None:
        return OSError(f"{e}: cannot write {path}")
    return OSError(e.errno, e.strerror or str(e), str(path))


def atomic_write(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> None:
    """Writes a file atomically: ``write(f)`` fills a temporary file that is then renamed.

    The temporary file is ``.<name>.<random>.tmp`` beside ``path``; it is removed if anything
    fails (an orphan is left only by a hard kill; :func:`remove_orphans` clears those).

    Raises:
        OSError: the write failed (a full disk, no permission); the message names ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _naming(e, path) from e
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
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise _naming(e, path) from e
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


#: Most bytes one ``.npz`` entry, and all of a file's entries together, may hold when the
#: reader has no better bound (:class:`NpzReader`): far above any checkpoint this toolkit
#: writes, far below what a decompression bomb claims.
MAX_NPZ_BYTES = 2**31

#: Most bytes of an ``.npy`` header inside an ``.npz`` (NumPy's own default limit).
MAX_NPY_HEADER = 10_000

#: The few bytes a format tag or checksum entry takes.
SMALL_ENTRY_BYTES = 4096


class NpzReader:
    """Reads an ``.npz`` file without trusting it: sizes first, then bounded reads.

    Opening reads only the zip directory. :meth:`check` compares every entry's declared size
    with what it may hold before anything is decompressed; :meth:`read` parses an entry's
    ``.npy`` header itself (no pickle, no object arrays), requires the header's shape and
    dtype to account for the entry's declared size exactly, and reads exactly that many bytes,
    so neither a lying header nor a decompression bomb can make it allocate more than the
    declared, checked size. A corrupted entry fails its CRC at the end of the read.

    Args:
        path: the file.
        unreadable: what to call a file that is not a readable ``.npz`` in error messages.

    Raises:
        CheckpointError: one line naming the file and what is wrong with it.
    """

    def __init__(self, path: str | os.PathLike, unreadable: str = "unreadable or truncated"):
        self.path, self._unreadable = os.fspath(path), unreadable
        try:
            self._zip = zipfile.ZipFile(self.path)
        except FileNotFoundError:
            raise CheckpointError(f"{self.path}: no such file") from None
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise self.error(e) from None
        self.sizes: dict[str, int] = {}
        self._infos: dict[str, zipfile.ZipInfo] = {}
        for info in self._zip.infolist():
            name = info.filename[:-4] if info.filename.endswith(".npy") else None
            if name is None or name in self.sizes:
                self.close()
                what = "duplicate" if name is not None else "not an array"
                raise self.fail(f"entry {info.filename!r} is {what} (not a NumPy .npz file)")
            self.sizes[name], self._infos[name] = info.file_size, info

    def __enter__(self) -> NpzReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Closes the file."""
        self._zip.close()

    def fail(self, problem: str) -> CheckpointError:
        """A one-line :class:`CheckpointError` naming the file."""
        return CheckpointError(" ".join(f"{self.path}: {problem}".split()))

    def error(self, e: BaseException) -> CheckpointError:
        """The error for a file that cannot be read as an ``.npz``."""
        return self.fail(f"{self._unreadable} ({type(e).__name__}: {e})")

    def check(self, limits: Mapping[str, int], *, total: int = MAX_NPZ_BYTES) -> None:
        """Refuses the file if an entry is unexpected or declares more bytes than it may hold.

        Args:
            limits: the entries allowed, each with the most bytes of data it may hold (its
                ``.npy`` header comes on top, up to :data:`MAX_NPY_HEADER`).
            total: the most bytes all entries may declare together.
        """
        for name, size in self.sizes.items():
            if name not in limits:
                raise self.fail(f"unexpected entry {name!r}")
            if size > limits[name] + MAX_NPY_HEADER:
                raise self.fail(
                    f"entry {name!r} declares {size} bytes, more than the "
                    f"{limits[name]} it can hold (a corrupted or malicious file)"
                )
        if sum(self.sizes.values()) > total:
            raise self.fail(
                f"entries declare {sum(self.sizes.values())} bytes in all, more than {total}"
            )

    def read(self, name: str) -> np.ndarray:
        """Reads one entry (call :meth:`check` first); exactly its declared size."""
        info = self._infos[name]
        try:
            with self._zip.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    header = np.lib.format.read_array_header_1_0
                elif version == (2, 0):
                    header = np.lib.format.read_array_header_2_0
                else:
                    raise self.fail(f"entry {name!r}: unsupported .npy version {version}")
                shape, fortran, dtype = header(f, max_header_size=MAX_NPY_HEADER)
                if dtype.hasobject:
                    raise self.fail(f"entry {name!r} holds Python objects (refused: no pickle)")
                nbytes = math.prod(shape) * dtype.itemsize
                if f.tell() + nbytes != info.file_size:
                    raise self.fail(
                        f"entry {name!r}: its header ({shape} {dtype}) does not match its "
                        f"size ({info.file_size} bytes)"
                    )
                data = f.read(nbytes)
                f.read(1)  # reach the end, where the CRC is checked
            if len(data) != nbytes:
                raise self.fail(f"entry {name!r} is truncated")
            flat = np.frombuffer(data, dtype) if nbytes else np.zeros(0, dtype)
            return flat.reshape(shape, order="F" if fortran else "C")
        except CheckpointError:
            raise
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, zlib.error) as e:
            raise self.error(e) from None
        except (NotImplementedError, RuntimeError) as e:  # unknown compression, encryption
            raise self.error(e) from None

    def read_all(self) -> dict[str, np.ndarray]:
        """Every entry (call :meth:`check` first)."""
        return {name: self.read(name) for name in self.sizes}


def read_npz(
    path: str | os.PathLike, fmt: str, *, sizes: Mapping[str, int] | None = None
) -> dict[str, np.ndarray]:
    """Reads a file written by :func:`write_npz` and verifies its format tag and checksum.

    Args:
        path: the file.
        fmt: the format tag it must carry.
        sizes: the entries it may hold, each with its size in bytes (:func:`tree_sizes`);
            ``None`` allows any entries of up to :data:`MAX_NPZ_BYTES` in all. Sizes are
            checked in the zip directory, before anything is decompressed.

    Raises:
        CheckpointError: one line naming the file and what is wrong with it.
    """
    with NpzReader(path) as z:
        if sizes is None:
            limits = dict.fromkeys(z.sizes, MAX_NPZ_BYTES)
        else:
            limits = dict(sizes)
            limits[FORMAT_KEY] = limits[CHECKSUM_KEY] = SMALL_ENTRY_BYTES
        z.check(limits)
        arrays = z.read_all()
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


def tree_sizes(template: Any, prefix: str = "") -> dict[str, int]:
    """``{name: bytes}`` of the entries :func:`tree_to_arrays` makes of a tree like ``template``.

    ``template`` may hold ``jax.ShapeDtypeStruct`` s (from ``jax.eval_shape``); nothing is
    computed. ``prefix`` is put before every name.
    """
    out = {}
    for p, like in jax.tree_util.tree_flatten_with_path(template)[0]:
        like = like if isinstance(like, jax.ShapeDtypeStruct) else jnp.asarray(like)
        if jnp.issubdtype(like.dtype, jax.dtypes.prng_key):
            like = jax.eval_shape(jax.random.key_data, like)
        out[prefix + (_key_name(p) or ".")] = math.prod(like.shape) * np.dtype(like.dtype).itemsize
    return out


def save_tree(path: str | os.PathLike, tree: Any, fmt: str) -> None:
    """Saves a pytree of arrays (PRNG keys included) atomically with a checksum."""
    write_npz(path, tree_to_arrays(tree), fmt)


def load_tree(path: str | os.PathLike, template: Any, fmt: str) -> Any:
    """Loads a pytree saved by :func:`save_tree`, checked against ``template``."""
    return arrays_to_tree(read_npz(path, fmt, sizes=tree_sizes(template)), template, str(path))


def append_jsonl(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """Appends rows to a JSON-lines file (each line is flushed whole)."""
    if not rows:
        return
    try:
        with open(path, "a") as f:
            f.write("".join(json.dumps(r, allow_nan=True) + "\n" for r in rows))
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise _naming(e, Path(path)) from e


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


# ---------------------------------------------------------------------------------------------
# The run directory: one writer, never someone else's folder, no orphans

#: The lock file of a run directory (see :func:`locked`).
LOCK_NAME = ".lock"

#: Files a run writes with :func:`atomic_write`; orphaned temporaries of these are removed.
RUN_FILES = ("config.json", "state.npz", "theta.npz", "best.npz", "metrics.jsonl")


def _holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        pid = ""
    return f"process {pid}" if pid.isdigit() else "another process"


@contextlib.contextmanager
def locked(directory: str | os.PathLike) -> Iterator[Path]:
    """Holds the exclusive lock of a run directory for the block; yields the lock file's path.

    The lock is an ``fcntl.flock`` on ``directory/.lock``, which holds the holder's pid. The
    operating system releases it when its holder exits, however it exits (``kill -9``
    included), so a lock file left by a dead process is simply taken over. The file is removed
    when the block ends.

    Raises:
        RunLocked: another process holds the lock (one line naming the lock file and pid).
    """
    path = Path(directory) / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise _naming(e, path) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _holder(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise _naming(e, path) from e
            raise RunLocked(
                f"{path}: the run directory is in use by {holder} (another lopt meta-train); "
                "wait for it to end or stop it, or use another --out"
            ) from None
        # The previous holder removes the file as it releases it: if that happened between
        # our open and our flock, we hold a lock on a file nobody else will ever open. Retry.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        path.unlink(missing_ok=True)  # while still holding it (see the retry above)
        os.close(fd)


def _transient(name: str) -> bool:
    """The lock file or a temporary file of :func:`atomic_write`."""
    return name == LOCK_NAME or (name.startswith(".") and name.endswith(".tmp"))


def is_run_config(cfg: Any) -> bool:
    """Whether ``cfg`` (a parsed ``config.json``) looks like one a meta-training run wrote."""
    return isinstance(cfg, dict) and {"optimizer", "task", "meta_train"} <= set(cfg)


def check_fresh_target(directory: str | os.PathLike) -> None:
    """Refuses to start a fresh run in a directory that holds files of something else.

    A missing or empty directory, or a run directory (its ``config.json`` written by a
    meta-training run), may take a fresh run.

    Raises:
        RunDirError: the path is empty, not a directory, or a directory with files but no
            run configuration (one line).
    """
    if os.fspath(directory) == "":
        raise RunDirError("the run directory is an empty path; name one (e.g. --out runs/NAME)")
    path = Path(directory)
    if not path.exists():
        return
    if not path.is_dir():
        raise RunDirError(f"{path}: not a directory")
    if not any(not _transient(p.name) for p in path.iterdir()):
        return
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        cfg = None
    if not is_run_config(cfg):
        raise RunDirError(
            f"{path}: not a run directory (it holds files but no config.json of a lopt run); "
            "refusing to write into it: use a new or empty directory"
        )


def remove_orphans(directory: str | os.PathLike) -> list[Path]:
    """Removes the temporary files a hard kill left from writing a run's files.

    Only ``.<name>.*.tmp`` for the names in :data:`RUN_FILES`: those are written by the run
    alone, so call it while holding the directory's lock (:func:`locked`). Returns the paths
    removed.
    """
    removed = []
    for p in Path(directory).iterdir():
        if p.name.endswith(".tmp") and any(p.name.startswith(f".{n}.") for n in RUN_FILES):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed
