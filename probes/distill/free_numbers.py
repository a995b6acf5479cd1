"""The numbers of a chain that identification and re-tuning fit, and their coordinates.

Every positive number of a chain entry is fitted in log space (a sign-agreement gain squashed
within its bounds), every decay (and sign-agreement rate) in ``(0, 1)`` through a logistic, the
learning rate linearly in units of its detected magnitude (its sign may flip: a probed α can
have the wrong sign, e.g. at g = 0 for the ``log1p_sign`` input, where the input's derivative
vanishes), and a schedule's multipliers through an exponent ``γ`` (``m(t)^γ``: ``γ = 1`` is the
detected schedule, ``γ = 0`` none); the modes of ``momentum_modes`` each have a free decay
(logistic) and weight (linear). :func:`encode` maps a chain to these coordinates (the starting
chain sits at ``γ = 1``, ``log``/``logit`` of its numbers and ±1 for the learning rate),
:func:`decode` maps coordinates (possibly traced) back to a chain.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lopt.chain import AGREEMENT_BOUND

#: ``B = ln AGREEMENT_BOUND``: the sign-agreement gains' log-bound.
_BOUND = math.log(AGREEMENT_BOUND)

#: How each number of a chain entry is fitted: in log space (positive numbers), in log space
#: squashed into ``±ln AGREEMENT_BOUND`` (``ln v = B·tanh(x/B)``: the sign-agreement gains,
#: which :func:`lopt.chain.scale_by_agreement` takes within those bounds, so the fitted number
#: is the one that acts and never sits where it has no gradient), through a logistic (decays
#: and rates in (0, 1)), or linearly in units of the detected magnitude.
FREE_FIELDS = {
    "scale": "log",
    "max_delta": "log",
    "learning_rate": "signed",
    "eps": "log",
    "decay": "logit",
    "offset": "signed",
    "agreeing": "bounded_log",
    "disagreeing": "bounded_log",
    "rise": "logit",
    "fall": "logit",
}
#: The same for list-valued numbers (``momentum_modes``): each element is a free number,
#: ``(index, "<field>.<element>")``; a mode's decay of exactly 0 (a direct term) stays fixed.
FREE_LISTS = {"decays": "logit", "weights": "signed"}


def _kind(field: str) -> str:
    return FREE_LISTS[field.split(".")[0]] if "." in field else FREE_FIELDS[field]


def _value(entry: Mapping[str, Any], field: str) -> float:
    if "." in field:
        name, j = field.split(".")
        return float(entry[name][int(j)])
    return float(entry[field])


def _representable(v: Any, kind: str) -> bool:
    if not isinstance(v, int | float) or isinstance(v, bool):
        return False
    if kind == "signed":
        return v != 0
    if kind == "bounded_log":
        return 0 < v and abs(math.log(v)) < _BOUND
    return v > 0 and (kind == "log" or v < 1)


_POWER = ", multipliers raised to the power "


def free_numbers(chain: Sequence[Mapping[str, Any]]) -> list[tuple[int, str]]:
    """``(entry index, field)`` of each number that is fitted (``"gamma"``: a schedule's γ)."""
    free = []
    for i, e in enumerate(chain):
        for k, kind in FREE_FIELDS.items():
            if _representable(e.get(k), kind):
                free.append((i, k))  # a number the coordinates can represent exactly
        for k, kind in FREE_LISTS.items():
            v = e.get(k)
            if isinstance(v, list | tuple):
                free += [(i, f"{k}.{j}") for j, x in enumerate(v) if _representable(x, kind)]
        s = e.get("schedule")
        if s is not None and all(float(v) > 0 for v in s.get("values", [])):
            free.append((i, "gamma"))  # m(t)^γ is defined for positive multipliers only
    return free


def encode(chain: Sequence[Mapping[str, Any]], free: list[tuple[int, str]]) -> dict:
    """The coordinates of ``chain``'s free numbers, ``{"<index>.<field>": float32}``."""
    z = {}
    for i, k in free:
        if k == "gamma":
            z[f"{i}.{k}"] = jnp.float32(1.0)
        elif _kind(k) == "log":
            z[f"{i}.{k}"] = jnp.float32(math.log(_value(chain[i], k)))
        elif _kind(k) == "bounded_log":
            z[f"{i}.{k}"] = jnp.float32(_BOUND * math.atanh(math.log(_value(chain[i], k)) / _BOUND))
        elif _kind(k) == "signed":
            z[f"{i}.{k}"] = jnp.float32(math.copysign(1.0, _value(chain[i], k)))
        else:
            v = _value(chain[i], k)
            z[f"{i}.{k}"] = jnp.float32(math.log(v / (1.0 - v)))
    return z


def decode(chain: Sequence[Mapping[str, Any]], free: list[tuple[int, str]], z: Mapping) -> list:
    """The chain with the numbers ``z`` (may be traced); a schedule's knots raised to ``γ``."""
    out = [dict(e) for e in chain]
    for i, k in free:
        x = z[f"{i}.{k}"]
        if k == "gamma":
            s = dict(out[i]["schedule"])
            s["values"] = [jnp.float32(v) ** x for v in chain[i]["schedule"]["values"]]
            out[i]["schedule"] = s
        else:
            kind = _kind(k)
            if kind == "log":
                v = jnp.exp(x)
            elif kind == "bounded_log":
                v = jnp.exp(_BOUND * jnp.tanh(x / _BOUND))
            elif kind == "signed":
                v = abs(_value(chain[i], k)) * x
            else:
                v = jax.nn.sigmoid(x)
            if "." in k:
                name, j = k.split(".")
                out[i][name] = list(out[i][name])
                out[i][name][int(j)] = v
            else:
                out[i][k] = v
    return out


def _plain_entry(e: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in e.items():
        if k == "schedule" and isinstance(v, Mapping):
            v = {**v, "values": [float(x) for x in v["values"]]}
        elif k in FREE_LISTS and isinstance(v, list | tuple):
            v = [float(x) for x in v]
        elif isinstance(v, jax.Array | np.ndarray | np.floating):
            v = float(v)
        out[k] = v
    return out


def relabel(
    chain: Sequence[Mapping[str, Any]], free: list[tuple[int, str]], z: Mapping, tag: str
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """``chain`` with the numbers ``z`` (plain floats), relabelled, and its schedule exponents.

    The mechanisms of the entries that have free numbers are relabelled ``(<tag>)``; a
    schedule exponent is named in the label (relative to the probed schedule, so composed with
    one the label already names), since a negative one turns the shape upside down.
    """
    out = [_plain_entry(e) for e in decode(chain, free, z)]
    gamma = {f"{i}": float(z[f"{i}.gamma"]) for i, k in free if k == "gamma"}
    for i in sorted({i for i, _ in free}):
        m = out[i].get("mechanism")
        if m:
            base, power = m.split(" (")[0], 1.0
            found = re.search(f"{_POWER}(\\S+)$", base)
            if found:  # a chain refitted again: its multipliers carry an earlier exponent
                base, power = base[: found.start()], float(found.group(1))
            if f"{i}" in gamma:
                base += f"{_POWER}{power * gamma[f'{i}']:.2g}"
            out[i]["mechanism"] = f"{base} ({tag})"
    return out, gamma
