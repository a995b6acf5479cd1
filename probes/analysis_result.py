"""The :class:`Analysis`: what the detectors found about one optimizer, to and from JSON."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from probes.agreement import Agreement
from probes.bias import Bias
from probes.detectors import Adaptation, Clipping, Damping, Momentum, Schedule
from probes.transient import TransientDamping
from probes.values import plain

#: 2: adds ``damping`` (oscillation damping). 3: damping needs the Nyquist gain itself to fall.
#: 4: adds ``damping_transient`` (damping read from the first steps). 5: the faithfulness chain
#: carries a ringing impulse response as real modes fitted to it (:mod:`probes.to_chain`), and
#: the black box's ``meta.gain_at_warmup`` (the schedule's gain where adaptation is read).
#: 6: adds ``faithfulness.memory_along`` (:mod:`probes.memory_along`). 7: adds ``bias`` (the
#: update at zero gradient and the gradient where the update vanishes, :mod:`probes.bias`).
#: 8: adds the damping's ``persistent_kept`` and ``sparing``, and the chain's gain along
#: training (``faithfulness.memory_along.gain_ratio``,
#: :func:`probes.memory_along.chain_gain_along`). 9: adds ``faithfulness.steady_update`` (the
#: chain's steady update beside the optimizer's, :mod:`probes.steady_update`). 10: adds
#: ``agreement`` (the step size's dependence on sign agreement, :mod:`probes.agreement`).
#: 11: the schedule's gain along a constant gradient is read on a growing gradient's branch
#: (:data:`probes.black_box.KINK`). 12: the first-steps damping reading has a ``gate``
#: (:func:`probes.transient.gate`) and detects damping only where it is at least ``GATE``.
#: 13: where adaptation is detected, the schedule's second curve is the step along the constant
#: gradient (``schedule.constant_gradient_measure``, :func:`probes.detectors.detect_schedule`).
#: Analyses of an older version are re-computed by ``probes report`` and ``lopt distill`` rather
#: than re-used (:func:`is_current`).
SCHEMA_VERSION = 13


def is_current(analysis: dict[str, Any]) -> bool:
    """Whether an ``analysis.json`` dict has every result this version computes."""
    version = analysis.get("schema_version") if isinstance(analysis, Mapping) else None
    return isinstance(version, int) and not isinstance(version, bool) and version >= SCHEMA_VERSION


_RESULTS = {
    "momentum": Momentum,
    "clipping": Clipping,
    "schedule": Schedule,
    "adaptation": Adaptation,
    "damping": Damping,
}


def _kind_ok(kind: str, v: Any) -> bool:
    """Whether the JSON value ``v`` can be read as a result field annotated ``kind``."""

    def number(x: Any) -> bool:
        return x is None or (isinstance(x, int | float) and not isinstance(x, bool))

    def numbers(x: Any) -> bool:  # real numbers, or [re, im] pairs of complex ones
        return isinstance(x, list) and all(
            number(y) or (isinstance(y, list) and all(map(number, y))) for y in x
        )

    if kind == "bool":
        return isinstance(v, bool)
    if kind == "str":
        return isinstance(v, str)
    if kind == "float":
        return number(v)
    if kind == "int":
        return isinstance(v, int) and not isinstance(v, bool)
    if kind == "np.ndarray":
        return numbers(v)
    if kind == "tuple[float, float]":
        return isinstance(v, list) and len(v) == 2 and all(map(number, v))
    if kind == "dict[str, np.ndarray]":
        return isinstance(v, dict) and all(map(numbers, v.values()))
    return isinstance(v, dict)


def check_partial(d: Any) -> None:
    """Checks the fields an ``analysis.json`` dict has, allowing fields it leaves out.

    For consumers that read an analysis with defaults (the distillation reads hand-made and
    older ones): the four mechanisms of the paper are objects (damping may be left out) and
    every field present has its type.

    Raises:
        ValueError: one line naming the mechanism and field (``momentum.beta: ...``).
    """
    if not isinstance(d, Mapping):
        raise ValueError(f"analysis: expected an object, got {type(d).__name__}")
    if "source" in d and d["source"] not in ("cell", "optax"):
        raise ValueError(f"analysis.source: expected 'cell' or 'optax', got {d['source']!r:.80}")
    if d.get("meta") is not None and not isinstance(d["meta"], Mapping):
        raise ValueError(f"analysis.meta: expected an object, got {d['meta']!r:.80}")
    for name, cls in _RESULTS.items():
        sub = d.get(name)
        if sub is None and name != "damping":  # damping: not in analyses that predate it
            raise ValueError(f"analysis: missing {name!r}")
        if sub is None:
            continue
        if not isinstance(sub, Mapping):
            raise ValueError(f"{name}: expected an object, got {type(sub).__name__}")
        for f in dataclasses.fields(cls):
            if f.name in sub and not _kind_ok(str(f.type), sub[f.name]):
                raise ValueError(f"{name}.{f.name}: expected a {f.type}, got {sub[f.name]!r:.80}")


@dataclasses.dataclass
class Analysis:
    """What :func:`analyze_cell` / :func:`analyze_optax` found.

    Attributes:
        momentum, clipping, schedule, adaptation: the four detector results.
        source: ``"cell"`` or ``"optax"``.
        meta: settings and context (gradient scale, typical step, ...).
        damping: oscillation damping (:class:`probes.detectors.Damping`), a mechanism beyond
            the paper's four; ``None`` for analyses written before it existed.
        damping_transient: the damping read from the first steps of alternating gradients
            (:class:`probes.transient.TransientDamping`), where the steady reading found none;
            ``None`` otherwise and for analyses written before it existed.
        bias: the update at zero gradient and the gradient where it vanishes
            (:class:`probes.bias.Bias`); ``None`` for analyses written before it existed.
        agreement: the step size after histories of agreeing and flipping gradient signs
            (:class:`probes.agreement.Agreement`); ``None`` for analyses written before it.
    """

    momentum: Momentum
    clipping: Clipping
    schedule: Schedule
    adaptation: Adaptation
    source: str
    meta: dict[str, Any]
    damping: Damping | None = None
    damping_transient: TransientDamping | None = None
    bias: Bias | None = None
    agreement: Agreement | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict with ``schema_version``; every number finite or ``None``."""
        out = {
            "schema_version": SCHEMA_VERSION,
            "source": self.source,
            "meta": plain(self.meta),
            "momentum": self.momentum.to_json(),
            "clipping": self.clipping.to_json(),
            "schedule": self.schedule.to_json(),
            "adaptation": self.adaptation.to_json(),
        }
        if self.damping is not None:
            out["damping"] = self.damping.to_json()
        if self.damping_transient is not None:
            out["damping_transient"] = self.damping_transient.to_json()
        if self.bias is not None:
            out["bias"] = self.bias.to_json()
        if self.agreement is not None:
            out["agreement"] = self.agreement.to_json()
        json.dumps(out, allow_nan=False)  # fails loudly if anything non-finite slipped through
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Analysis:
        """The analysis from its :meth:`to_json` dict (the contents of ``analysis.json``).

        Numbers stored as ``None`` (not finite) come back as ``nan``; ``damping`` is ``None`` for
        an analysis that predates it; fields other tools add (``task``, ``key_seed``) are left
        out. ``Analysis.from_json(a.to_json()).to_json() == a.to_json()``.

        Raises:
            ValueError: one line naming the result and field that is missing or malformed.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"analysis: expected an object, got {type(d).__name__}")
        for key in ("source", "momentum", "clipping", "schedule", "adaptation"):
            if key not in d:
                raise ValueError(f"analysis: missing {key!r}")
        if d["source"] not in ("cell", "optax"):
            got = f"{d['source']!r:.80}"
            raise ValueError(f"analysis.source: expected 'cell' or 'optax', got {got}")
        meta = d.get("meta") or {}
        if not isinstance(meta, Mapping):
            raise ValueError(f"analysis.meta: expected an object, got {meta!r}")
        damping, transient = d.get("damping"), d.get("damping_transient")
        if transient is not None and not isinstance(transient, Mapping):
            raise ValueError(
                f"analysis.damping_transient: expected an object, got {transient!r:.80}"
            )
        return cls(
            Momentum.from_json(d["momentum"]),
            Clipping.from_json(d["clipping"]),
            Schedule.from_json(d["schedule"]),
            Adaptation.from_json(d["adaptation"]),
            d["source"],
            dict(meta),
            None if damping is None else Damping.from_json(damping),
            None if transient is None else TransientDamping.from_json(transient),
            None if d.get("bias") is None else Bias.from_json(d["bias"]),
            None if d.get("agreement") is None else Agreement.from_json(d["agreement"]),
        )
