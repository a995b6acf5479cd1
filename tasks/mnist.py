"""A four-layer conv net classifying handwritten digits: the paper's ``mnist`` family.

Data come from local files only, never from the network:

1. ``data_dir`` (an argument), else the environment variable ``LOPT_DATA_DIR``, names a
   directory (searched together with its ``mnist/`` subdirectory) or a ``.npz`` file.
2. In that directory the four standard IDX files ``train-images-idx3-ubyte``,
   ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each
   optionally ``.gz``; ``.idx3-ubyte`` spellings are accepted too) are used, else ``mnist.npz``
   with the arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``.
3. Without files (no ``data_dir``, and ``LOPT_DATA_DIR`` unset or holding no MNIST files) the
   family falls back to scikit-learn's bundled 8×8 handwritten digits (1797 images: the first
   1500 train, the other 297 test). The name stays ``mnist``, but ``data_source`` says
   ``"sklearn-digits-8x8 (fallback, NOT MNIST)"`` and a warning is logged, so no result on the
   fallback can pass for MNIST. An explicit ``data_dir`` without MNIST files is an error.

Malformed files (bad magic number, truncated, mismatched counts, missing ``.npz`` keys, labels
outside 0..9) raise :class:`tasks.TaskError` with one line naming the file. Pixels are scaled to
``[0, 1]`` float32, images shaped ``[N, H, W, 1]``, labels int32.

Model: three 3×3 convolutions with ``channels × (1, 2, 2)`` output channels (default 16, 32,
32), ReLU, ``SAME`` padding, stride 2 while the feature map is wider than 4 pixels and 1 after
(so 28×28 → 14 → 7 → 4 and 8×8 → 4 → 4 → 4), then one dense layer to 10 logits. He-normal
conv weights, LeCun-normal dense weights, zero biases. Loss: mean softmax cross-entropy over a
minibatch of ``batch_size`` training images (default 32) drawn with replacement by the loss
key; ``batch_size=None`` means the full training set. Horizon: 500 updates (a quarter epoch of
MNIST, about ten epochs of the 8×8 fallback).
Reference: Maheswaranathan et al. (2021), section 3 (architecture details left open).
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import struct
import zipfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tasks.base import PyTree, TaskError, TaskFamily, pytree_family, static

logger = logging.getLogger(__name__)

#: The environment variable naming a directory (or ``.npz`` file) with MNIST.
DATA_DIR_ENV = "LOPT_DATA_DIR"
FALLBACK_SOURCE = "sklearn-digits-8x8 (fallback, NOT MNIST)"
NUM_CLASSES = 10
_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
_IDX_FILES = {
    "train_x": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_y": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_x": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_y": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_FALLBACK_TRAIN = 1500


# ----------------------------------------------------------------------------------- readers


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise TaskError(f"mnist: cannot read {path}: {e}") from None


def read_idx(path: str | os.PathLike, magic: int | None = None) -> np.ndarray:
    """Reads an unsigned-byte IDX file (the MNIST format), gzipped if its name ends in ``.gz``.

    Args:
        path: the file.
        magic: the expected magic number (``0x803`` for images, ``0x801`` for labels);
            ``None`` accepts any unsigned-byte IDX file.

    Returns:
        A ``uint8`` array with the shape the header declares.

    Raises:
        TaskError: unreadable file, wrong magic number, or data shorter or longer than the
            header declares.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise TaskError(f"mnist: {path} is not an IDX file (only {len(raw)} bytes)")
    (found,) = struct.unpack(">I", raw[:4])
    ndim = raw[3]
    ok = raw[:3] == b"\x00\x00\x08" and ndim >= 1 and (magic is None or found == magic)
    if not ok:
        want = f"0x{magic:08x}" if magic is not None else "0x000008NN (unsigned-byte IDX)"
        raise TaskError(f"mnist: {path} has bad magic number 0x{found:08x}, expected {want}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise TaskError(f"mnist: {path} is truncated inside its header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected, got = math.prod(dims), len(raw) - header
    if got != expected:
        what = "truncated" if got < expected else "longer than its header says"
        raise TaskError(
            f"mnist: {path} is {what}: header {tuple(dims)} needs {expected} data bytes, "
            f"found {got}"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _find_idx(directory: Path) -> dict[str, Path] | None:
    found, missing = {}, []
    for split, stems in _IDX_FILES.items():
        candidates = [directory / (s + ext) for s in stems for ext in ("", ".gz")]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            missing.append(stems[0])
        else:
            found[split] = hit
    if not found:
        return None
    if missing:
        raise TaskError(
            f"mnist: {directory} has only some MNIST IDX files; missing {', '.join(missing)}"
        )
    return found


def _check_split(images: np.ndarray, labels: np.ndarray, img_name: str, lbl_name: str) -> None:
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3:
        raise TaskError(f"mnist: {img_name} must hold images [N, H, W], got shape {images.shape}")
    if labels.ndim != 1:
        raise TaskError(f"mnist: {lbl_name} must hold labels [N], got shape {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise TaskError(
            f"mnist: {img_name} has {images.shape[0]} images but {lbl_name} has "
            f"{labels.shape[0]} labels"
        )
    if images.shape[0] == 0:
        raise TaskError(f"mnist: {img_name} holds no images")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() > 9:
        raise TaskError(f"mnist: {lbl_name} must hold integer labels in 0..9")


def _to_pixels(images: np.ndarray, name: str) -> np.ndarray:
    """Images ``[N, H, W(, 1)]`` as float32 in ``[0, 1]``, shaped ``[N, H, W, 1]``."""
    if images.ndim == 3:
        images = images[..., None]
    if np.issubdtype(images.dtype, np.integer):
        return images.astype(np.float32) / 255.0
    if not np.issubdtype(images.dtype, np.floating):
        raise TaskError(f"mnist: {name} must hold integer or float pixels, got {images.dtype}")
    images = images.astype(np.float32)
    if not np.all(np.isfinite(images)) or images.min() < 0 or images.max() > 255:
        raise TaskError(f"mnist: {name} pixels must lie in [0, 1] or [0, 255]")
    return images / 255.0 if images.max() > 1.0 else images


def load_idx(files: dict[str, Path]) -> dict[str, np.ndarray]:
    """Reads the four MNIST IDX files (keys ``train_x``, ``train_y``, ``test_x``, ``test_y``)."""
    arrays = {
        split: read_idx(path, _IMAGES_MAGIC if split.endswith("x") else _LABELS_MAGIC)
        for split, path in files.items()
    }
    for s in ("train", "test"):
        _check_split(arrays[f"{s}_x"], arrays[f"{s}_y"], files[f"{s}_x"], files[f"{s}_y"])
    return _arrays(arrays, {k: str(v) for k, v in files.items()})


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads an MNIST ``.npz`` with ``x_train``, ``y_train``, ``x_test``, ``y_test``."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in _NPZ_KEYS if k not in z.files]
            if missing:
                raise TaskError(
                    f"mnist: {path} lacks {', '.join(missing)}; an MNIST .npz needs "
                    f"{', '.join(_NPZ_KEYS)}"
                )
            raw = {k: z[k] for k in _NPZ_KEYS}
    except TaskError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise TaskError(f"mnist: cannot read {path}: {' '.join(str(e).split())}") from None
    arrays = {
        "train_x": raw["x_train"],
        "train_y": raw["y_train"],
        "test_x": raw["x_test"],
        "test_y": raw["y_test"],
    }
    for s in ("train", "test"):
        _check_split(arrays[f"{s}_x"], arrays[f"{s}_y"], f"{path}[x_{s}]", f"{path}[y_{s}]")
    return _arrays(arrays, {k: f"{path}[{k}]" for k in arrays})


def _arrays(arrays: dict[str, np.ndarray], names: dict[str, str]) -> dict[str, np.ndarray]:
    out = {k: _to_pixels(arrays[k], names[k]) for k in ("train_x", "test_x")}
    if out["train_x"].shape[1:] != out["test_x"].shape[1:]:
        raise TaskError(
            f"mnist: train images {out['train_x'].shape[1:3]} and test images "
            f"{out['test_x'].shape[1:3]} differ in size ({names['test_x']})"
        )
    out.update({k: arrays[k].astype(np.int32) for k in ("train_y", "test_y")})
    return out


def load_fallback() -> dict[str, np.ndarray]:
    """scikit-learn's bundled 8×8 digits (offline): first 1500 images train, the rest test."""
    from sklearn.datasets import load_digits  # imported lazily: slow, and only needed here

    digits = load_digits()
    x = (np.asarray(digits.images, np.float32) / 16.0)[..., None]
    y = np.asarray(digits.target, np.int32)
    n = _FALLBACK_TRAIN
    return {"train_x": x[:n], "train_y": y[:n], "test_x": x[n:], "test_y": y[n:]}


def find_data(data_dir: str | os.PathLike | None = None) -> tuple[dict[str, np.ndarray], str, str]:
    """Finds and loads digit data by the rules in the module docstring.

    Args:
        data_dir: a directory with MNIST files, or an MNIST ``.npz`` file; ``None`` consults
            ``LOPT_DATA_DIR`` and then falls back to scikit-learn's 8×8 digits.

    Returns:
        ``(arrays, data_source, data_dir)``: the arrays (``train_x``, ``train_y``, ``test_x``,
        ``test_y``), a description of where they came from, and the resolved path that
        rebuilds the same data (``None`` for the fallback).

    Raises:
        TaskError: an explicit ``data_dir`` that does not exist or holds no MNIST files, or a
            malformed file.
    """
    explicit = data_dir is not None
    if not explicit:
        data_dir = os.environ.get(DATA_DIR_ENV) or None
        if data_dir is None:
            return load_fallback(), FALLBACK_SOURCE, None
    where = f"data_dir {data_dir}" if explicit else f"{DATA_DIR_ENV}={data_dir}"
    path = Path(data_dir).expanduser().resolve()
    if path.is_file():
        if path.suffix != ".npz":
            raise TaskError(f"mnist: {path} is a file but not an .npz; give its directory")
        return load_npz(path), f"mnist-npz:{path}", str(path)
    if not path.is_dir():
        if explicit:
            raise TaskError(f"mnist: {where} does not exist")
        logger.warning("mnist: %s does not exist; using the fallback data set", where)
        return load_fallback(), FALLBACK_SOURCE, None
    for directory in (path, path / "mnist"):
        if not directory.is_dir():
            continue
        files = _find_idx(directory)
        if files is not None:
            return load_idx(files), f"mnist-idx:{directory}", str(path)
        if (directory / "mnist.npz").is_file():
            npz = directory / "mnist.npz"
            return load_npz(npz), f"mnist-npz:{npz}", str(path)
    message = f"mnist: no MNIST IDX files or mnist.npz in {path}"
    if explicit:
        raise TaskError(message)
    logger.warning("%s (from %s); using the fallback data set", message, DATA_DIR_ENV)
    return load_fallback(), FALLBACK_SOURCE, None


# ------------------------------------------------------------------------------------- model


def conv_strides(height: int, width: int, num_layers: int = 3) -> tuple[int, ...]:
    """Stride 2 while the feature map is wider than 4 pixels, then 1 (``SAME`` padding)."""
    strides, size = [], max(height, width)
    for _ in range(num_layers):
        stride = 2 if size > 4 else 1
        strides.append(stride)
        size = -(-size // stride)
    return tuple(strides)


def convnet_init(
    key: jax.Array, image_shape: tuple[int, int, int], channels: int
) -> dict[str, dict[str, jax.Array]]:
    """Parameters of the conv net for images ``[H, W, C]``: ``conv1..3`` and ``dense``."""
    height, width, c_in = image_shape
    outs = (channels, 2 * channels, 2 * channels)
    keys = jax.random.split(key, 4)
    params = {}
    for i, (k, c_out) in enumerate(zip(keys[:3], outs, strict=True)):
        fan_in = 9 * c_in
        w = jax.random.normal(k, (3, 3, c_in, c_out)) * math.sqrt(2.0 / fan_in)
        params[f"conv{i + 1}"] = {"w": w, "b": jnp.zeros((c_out,))}
        c_in = c_out
    h, w = height, width
    for s in conv_strides(height, width):
        h, w = -(-h // s), -(-w // s)
    flat = h * w * c_in
    params["dense"] = {
        "w": jax.random.normal(keys[3], (flat, NUM_CLASSES)) / math.sqrt(flat),
        "b": jnp.zeros((NUM_CLASSES,)),
    }
    return params


def conv3x3(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
    """A 3×3 convolution with ``SAME`` padding, as nine shifted slices and one matmul.

    Equal to ``lax.conv_general_dilated(x, w, (s, s), "SAME", ("NHWC", "HWIO", "NHWC"))`` (to
    float rounding), but far faster here: XLA:CPU's convolution of these tiny maps, and its
    filter gradient, cost about 30 ms per training step inside a scan, and under ``vmap`` over
    problems each problem's kernel becomes a grouped convolution. As slices and a matmul the
    step takes about 1.5 ms and problems batch into one matmul (measured: 22× faster).

    Args:
        x: images ``[N, H, W, C]``.
        w: kernel ``[3, 3, C, C_out]``.
        stride: the same in both directions.

    Returns:
        ``[N, ceil(H/s), ceil(W/s), C_out]``.
    """
    _, h, wd, c = x.shape
    ho, wo = -(-h // stride), -(-wd // stride)
    pad_h = max((ho - 1) * stride + 3 - h, 0)
    pad_w = max((wo - 1) * stride + 3 - wd, 0)
    xp = jnp.pad(
        x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0))
    )
    span_h, span_w = (ho - 1) * stride + 1, (wo - 1) * stride + 1
    cols = [
        xp[:, i : i + span_h : stride, j : j + span_w : stride, :]
        for i in range(3)
        for j in range(3)
    ]
    return jnp.concatenate(cols, axis=-1) @ w.reshape(9 * c, -1)


def convnet_apply(params: dict[str, dict[str, jax.Array]], images: jax.Array) -> jax.Array:
    """Logits ``[N, 10]`` for images ``[N, H, W, C]``."""
    x = images
    strides = conv_strides(images.shape[1], images.shape[2])
    for i, s in enumerate(strides):
        layer = params[f"conv{i + 1}"]
        x = jax.nn.relu(conv3x3(x, layer["w"].astype(x.dtype), s) + layer["b"])
    x = x.reshape(x.shape[0], -1)
    return x @ params["dense"]["w"] + params["dense"]["b"]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of ``logits[N, K]`` against integer ``labels[N]``."""
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


# ------------------------------------------------------------------------------------ family


def _check_int(label: str, value: Any, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise TaskError(f"mnist: {label} must be an int >= {minimum}, got {value!r}")


@pytree_family
class Mnist(TaskFamily):
    """A conv net on handwritten digits; minibatches drawn from the loss key.

    The data arrays are leaves of the family (so they reach jitted code as arguments); every
    problem shares them, so the task is empty and problems differ in their initial parameters
    and minibatch order. Build it with ``tasks.get("mnist", ...)`` (which finds the data, see
    the module docstring) or directly from arrays (pass ``jax.Array``s: NumPy leaves would be
    copied to the device on every jitted call).

    Attributes:
        train_x: training images ``[N, H, W, 1]`` float32 in ``[0, 1]``.
        train_y: training labels ``[N]`` int32.
        test_x: held-out images ``[M, H, W, 1]``.
        test_y: held-out labels ``[M]``.
        num_steps: optimizer updates per unroll (default 500).
        batch_size: images per minibatch (default 32); ``None`` for the full training set.
        channels: output channels of the first conv layer; the others have twice as many
            (default 16).
        data_dir: the directory or file the data came from (``None`` for the fallback).
        data_source: where the data came from, recorded in results (e.g.
            ``"mnist-idx:/data/mnist"`` or ``"sklearn-digits-8x8 (fallback, NOT MNIST)"``).

    Example:
        >>> import jax, tasks
        >>> family = tasks.get("mnist", num_steps=100)  # MNIST files or the 8x8 fallback
        >>> params = family.init(family.sample(jax.random.key(0)), jax.random.key(1))
        >>> sorted(family.metrics({}, params))
        ['accuracy', 'loss']
    """

    train_x: jax.Array
    train_y: jax.Array
    test_x: jax.Array
    test_y: jax.Array
    name: str = static("mnist")
    num_steps: int = static(500)
    batch_size: int | None = static(32)
    channels: int = static(16)
    data_dir: str | None = static(None)
    data_source: str = static("arrays")

    def __post_init__(self):
        # Only static settings are checked: pytree unflattening re-runs __init__ with leaves
        # that may be tracers or placeholders.
        _check_int("num_steps", self.num_steps)
        _check_int("channels", self.channels)
        if self.batch_size is not None:
            _check_int("batch_size", self.batch_size)
        if self.data_dir is not None and not isinstance(self.data_dir, str | os.PathLike):
            raise TaskError(f"mnist: data_dir must be a path, got {self.data_dir!r}")

    @classmethod
    def load(cls, data_dir: str | os.PathLike | None = None, **settings: Any) -> Mnist:
        """Finds the data (see the module docstring) and builds the family.

        Args:
            data_dir: a directory with MNIST files or an MNIST ``.npz``; ``None`` consults
                ``LOPT_DATA_DIR`` and then falls back to scikit-learn's 8×8 digits.
            **settings: ``num_steps``, ``batch_size``, ``channels``.

        Returns:
            The family, with ``data_source`` and the resolved ``data_dir`` recorded.

        Raises:
            TaskError: an unknown or invalid setting, missing or malformed data files.
        """
        known = {"num_steps", "batch_size", "channels"}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise TaskError(
                f"task 'mnist' has no setting {', '.join(map(repr, unknown))}; "
                f"its settings are: {', '.join(sorted(known | {'data_dir'}))}"
            )
        # Check the settings before reading (possibly large) files.
        cls(*(np.zeros((1, 1, 1, 1)),) * 4, **settings)
        if data_dir is not None and not isinstance(data_dir, str | os.PathLike):
            raise TaskError(f"mnist: data_dir must be a path, got {data_dir!r}")
        arrays, source, resolved = find_data(data_dir)
        if source == FALLBACK_SOURCE:
            logger.warning("mnist: no MNIST files found; data source is %s", source)
        else:
            logger.info("mnist: data source is %s", source)
        arrays = {k: jnp.asarray(v) for k, v in arrays.items()}
        return cls(**arrays, data_dir=resolved, data_source=source, **settings)

    def settings(self) -> dict[str, Any]:
        """Static settings that rebuild the family with ``tasks.get("mnist", **settings)``."""
        out = super().settings()
        out.pop("data_source", None)
        return out

    def sample(self, key):  # noqa: D102
        del key
        return {}

    def init(self, task, key):  # noqa: D102
        del task
        return convnet_init(key, tuple(self.train_x.shape[1:]), self.channels)

    def logits(self, params: PyTree, images: jax.Array) -> jax.Array:
        """Logits ``[N, 10]`` for images ``[N, H, W, 1]``."""
        return convnet_apply(params, images)

    def loss(self, task, params, key):  # noqa: D102
        del task
        x, y = self.train_x, self.train_y
        if self.batch_size is not None:
            idx = jax.random.randint(key, (self.batch_size,), 0, x.shape[0])
            x, y = x[idx], y[idx]
        return cross_entropy(self.logits(params, x), y)

    def metrics(self, task, params):
        """Loss and accuracy on the held-out split (evaluated in chunks of 1000 images)."""
        del task

        def one(image):
            return self.logits(params, image[None])[0]

        logits = jax.lax.map(one, self.test_x, batch_size=1000)
        accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == self.test_y)
        return {"loss": cross_entropy(logits, self.test_y), "accuracy": accuracy}
