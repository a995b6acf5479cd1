"""Plain values for JSON files and pages: finite floats, strict-JSON data, complex pairs.

Every result the probes write (``analysis.json``, ``report.json``, ``compare.json``) goes
through :func:`plain`, and every number read back from one goes through :func:`finite`,
:func:`floats` or :func:`complex_array`, so a ``None`` (a non-finite number on disk) is handled
the same way everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np


def finite(x: Any) -> float | None:
    """``x`` as a finite float, or ``None`` (not a number, ``nan`` or ``±inf``)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def plain(x: Any) -> Any:
    """Strict-JSON version of ``x``: arrays to lists, non-finite to ``None``, complex to pairs.

    Mappings keep their order (keys become strings), tuples become lists, NumPy and JAX scalars
    become Python numbers, and a complex number becomes ``[re, im]``.
    """
    if isinstance(x, Mapping):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [plain(v) for v in x]
    if isinstance(x, np.ndarray) or (hasattr(x, "__array__") and not isinstance(x, str)):
        arr = np.asarray(x)
        return plain(arr.item()) if arr.ndim == 0 else [plain(v) for v in arr.tolist()]
    if isinstance(x, bool | np.bool_):
        return bool(x)
    if isinstance(x, int | np.integer):
        return int(x)
    if isinstance(x, complex | np.complexfloating):
        return [finite(x.real), finite(x.imag)]
    if isinstance(x, float | np.floating):
        return finite(x)
    return x


def floats(values: Any) -> np.ndarray:
    """A float array from a JSON list (``None`` entries become ``nan``; ``None`` is empty)."""
    return np.asarray([np.nan if v is None else v for v in values or []], float)


def finite_prefix(values: Any) -> np.ndarray:
    """A float array from a JSON list (``None`` as ``nan``) up to its first non-finite value."""
    e = floats(values)
    return e if np.all(np.isfinite(e)) else e[: int(np.argmax(~np.isfinite(e)))]


def complex_array(pairs: Any) -> np.ndarray:
    """``[[re, im], ...]`` (or reals) to a complex array; ``None`` entries become ``nan``."""
    if pairs is None:
        return np.zeros(0, complex)
    out = []
    for p in pairs:
        if isinstance(p, list | tuple):
            re, im = (np.nan if v is None else v for v in (list(p) + [0.0])[:2])
            out.append(complex(re, im))
        else:
            out.append(complex(np.nan if p is None else p))
    return np.asarray(out, complex)
