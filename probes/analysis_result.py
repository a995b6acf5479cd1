"""The :class:`Analysis`: what the detectors found about one optimizer, to and from JSON."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from probes.detectors import Adaptation, Clipping, Damping, Momentum, Schedule
from probes.values import plain

#: 2: adds ``damping`` (oscillation damping). Analyses of an older version are re-computed by
#: ``probes report`` and ``lopt distill`` rather than re-used (:func:`is_current`).
SCHEMA_VERSION = 2


def is_current(analysis: dict[str, Any]) -> bool:
    """Whether an ``analysis.json`` dict has every result this version computes."""
    return int(analysis.get("schema_version") or 0) >= SCHEMA_VERSION


@dataclasses.dataclass
class Analysis:
    """What :func:`analyze_cell` / :func:`analyze_optax` found.

    Attributes:
        momentum, clipping, schedule, adaptation: the four detector results.
        source: ``"cell"`` or ``"optax"``.
        meta: settings and context (gradient scale, typical step, ...).
        damping: oscillation damping (:class:`probes.detectors.Damping`), a mechanism beyond
            the paper's four; ``None`` for analyses written before it existed.
    """

    momentum: Momentum
    clipping: Clipping
    schedule: Schedule
    adaptation: Adaptation
    source: str
    meta: dict[str, Any]
    damping: Damping | None = None

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
        if not isinstance(d["source"], str):
            raise ValueError(f"analysis.source: expected a string, got {d['source']!r}")
        meta = d.get("meta") or {}
        if not isinstance(meta, Mapping):
            raise ValueError(f"analysis.meta: expected an object, got {meta!r}")
        damping = d.get("damping")
        return cls(
            Momentum.from_json(d["momentum"]),
            Clipping.from_json(d["clipping"]),
            Schedule.from_json(d["schedule"]),
            Adaptation.from_json(d["adaptation"]),
            d["source"],
            dict(meta),
            None if damping is None else Damping.from_json(damping),
        )
