"""The base of the detectors' results: a dataclass that goes to JSON and comes back checked.

Every detector result (:mod:`probes.detectors`, :mod:`probes.bias`) is a dataclass deriving
from :class:`Result`: ``to_json`` writes its fields as plain JSON (non-finite numbers as
``null``, complex numbers as ``[re, im]`` pairs) and ``from_json`` reads them back, checking each
field's kind against its annotation and naming the field that is wrong.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from probes.values import complex_array, plain


class Result:
    """Base of the detector results: JSON out and back (dataclass fields, checked kinds)."""

    #: Array fields that hold complex numbers (``[re, im]`` pairs in JSON).
    _COMPLEX: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (non-finite numbers become ``None``, complex ``[re, im]``)."""
        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Any:
        """The result from its :meth:`to_json` dict (``None`` numbers come back as ``nan``).

        Raises:
            ValueError: ``d`` is not a JSON object, lacks a field without a default, or holds
                a value of the wrong kind (naming the field).
        """
        name = cls.__name__.lower()
        if not isinstance(d, Mapping):
            raise ValueError(f"{name}: expected an object, got {type(d).__name__}")
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise ValueError(f"{name}: missing {f.name!r}")
                continue
            try:
                kwargs[f.name] = _read(str(f.type), d[f.name], f.name in cls._COMPLEX)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{name}.{f.name}: {e}") from None
        return cls(**kwargs)


def _read(kind: str, v: Any, is_complex: bool) -> Any:
    """A JSON value as the field type ``kind`` (a dataclass annotation) of a result."""
    if kind in ("bool", "str"):
        if not isinstance(v, bool if kind == "bool" else str):
            raise TypeError(f"expected a {kind}, got {v!r}")
        return v
    if kind == "float":
        return float("nan") if v is None else float(v)
    if kind == "int":
        return int(v)
    if kind == "np.ndarray":
        if is_complex:
            return complex_array(v)
        return np.asarray([np.nan if x is None else x for x in v])
    if kind == "tuple[float, float]":
        lo, hi = v
        return (_read("float", lo, False), _read("float", hi, False))
    if kind == "dict[str, np.ndarray]":
        return {k: _read("np.ndarray", x, False) for k, x in v.items()}
    if not isinstance(v, dict):
        raise TypeError(f"expected an object, got {v!r}")
    return v
