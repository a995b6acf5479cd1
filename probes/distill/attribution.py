"""Which mechanism's probed numbers the distilled chain's shortfall comes from.

The probed chain (numbers read by the probes) and the identified chain (the same mechanisms,
numbers fitted to the learned optimizer's updates) score differently on held-out problems.
Exchanging one mechanism's numbers at a time between the two attributes that difference to
mechanisms, in two directions:

- *identified here only*: the probed chain with this one mechanism's numbers identified. A
  large gain over the probed chain says this probe misreads the optimizer.
- *probed here only*: the identified chain with this one mechanism's numbers probed. A large
  loss against the identified chain says the same from the other side; the two need not agree,
  since mechanisms interact (damping holds a chain stable that a larger learning rate would
  otherwise push over).

Mechanisms are matched by transform (:mod:`lopt.chain`). A mechanism the identification added
(damping or a sign-agreement gain, :func:`probes.distill.identify_chain`) has no probed
numbers: it appears in the first direction only, inserted where the identified chain has it.
The exchange uses no loss to choose anything; the held-out scores only measure.

Examples:
    >>> from probes.distill.attribution import exchanges
    >>> probed = [{"transform": "soft_clip", "scale": 1.0}, {"transform": "trace", "decay": 0.7}]
    >>> ident = [{"transform": "soft_clip", "scale": 0.5}, {"transform": "trace", "decay": 0.8}]
    >>> [(e["transform"], e["direction"]) for e in exchanges(probed, ident)][:2]
    [('soft_clip', 'identified_here_only'), ('soft_clip', 'probed_here_only')]
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from lopt.chain import META_KEYS, build_chain
from lopt.unroll import evaluate, per_problem_metric
from probes.distill.stats import BootstrapConfig, mean_sem, recovered_fraction
from tasks.base import TaskFamily

#: The two directions of an exchange, in the order :func:`exchanges` lists them.
DIRECTIONS = ("identified_here_only", "probed_here_only")


def _by_transform(chain: Sequence[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]] | None:
    names = [str(e.get("transform")) for e in chain]
    if len(set(names)) != len(names):
        return None  # a transform twice: no one-to-one match
    return dict(zip(names, chain, strict=True))


def _same(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]) -> bool:
    """Whether two chains are the same transforms with the same numbers."""

    def numbers(chain):
        return [{k: v for k, v in e.items() if k not in META_KEYS} for e in chain]

    return len(a) == len(b) and numbers(a) == numbers(b)


def exchanges(
    chain: Sequence[Mapping[str, Any]], chain_identified: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The chains of the one-mechanism exchanges between a probed and an identified chain.

    Args:
        chain: the probed chain (:func:`probes.to_chain.chain_from_analysis`).
        chain_identified: the identified chain (:func:`probes.distill.identify_chain`).

    Returns:
        ``[{"transform", "direction", "chain"}]``, per mechanism of the identified chain in its
        order: ``identified_here_only`` then (if the mechanism has probed numbers)
        ``probed_here_only``. Empty when the two chains cannot be matched one to one (a
        transform twice, or a probed mechanism the identified chain lacks).
    """
    probed, ident = _by_transform(chain), _by_transform(chain_identified)
    if probed is None or ident is None or not set(probed) <= set(ident):
        return []
    out = []
    for name in ident:
        # the identified chain's order; a mechanism only the identified chain has is kept
        # only where it is the one exchanged
        mixed = [
            copy.deepcopy(ident[t] if t == name else probed[t])
            for t in ident
            if t in probed or t == name
        ]
        out.append({"transform": name, "direction": DIRECTIONS[0], "chain": mixed})
        if name in probed:
            mixed = [copy.deepcopy(probed[t] if t == name else ident[t]) for t in ident]
            out.append({"transform": name, "direction": DIRECTIONS[1], "chain": mixed})
    return out


def attribute(
    chain: Sequence[Mapping[str, Any]],
    chain_identified: Sequence[Mapping[str, Any]],
    family: TaskFamily,
    key: jax.Array,
    num_problems: int,
    num_steps: int,
    learned: np.ndarray,
    baseline: np.ndarray,
    *,
    fractions: bool = True,
    bootstrap: BootstrapConfig | None = None,
    say: Callable[[str], None] = lambda msg: None,
    known: Sequence[tuple[Sequence[Mapping[str, Any]], np.ndarray]] = (),
) -> list[dict[str, Any]]:
    """Evaluates every exchange of :func:`exchanges` on the held-out problems.

    Args:
        chain: the probed chain.
        chain_identified: the identified chain.
        family: the task family.
        key: the held-out key (:func:`lopt.heldout_key`), as for the chains themselves.
        num_problems: held-out problems.
        num_steps: the horizon.
        learned: the learned optimizer's per-problem metrics on those problems.
        baseline: the best baseline's.
        fractions: also give the fraction of the learned optimizer's gain each exchanged chain
            recovers (:func:`probes.distill.recovered_fraction`; pass ``False`` when the gain
            is not significant).
        bootstrap: the fractions' intervals (default :class:`BootstrapConfig`).
        say: progress lines.
        known: ``(chain, per-problem metrics)`` pairs already evaluated on these problems (the
            probed and the identified chain): an exchange that gives one of them back (a
            mechanism with the same numbers in both) re-uses its metrics.

    Returns:
        Per mechanism of the identified chain: ``{"transform", "mechanism",
        "identified_here_only", "probed_here_only"}``, each direction ``{"metric", "sem",
        "fraction"}`` (``fraction`` ``None`` without ``fractions`` or for a diverged chain) or
        ``None`` where the mechanism has no probed numbers.
    """
    bootstrap = BootstrapConfig() if bootstrap is None else bootstrap
    probed = _by_transform(chain) or {}
    out: dict[str, dict[str, Any]] = {}
    for ex in exchanges(chain, chain_identified):
        name = ex["transform"]
        per = next((np.asarray(m) for c, m in known if _same(c, ex["chain"])), None)
        if per is None:
            say(f"evaluating the exchange {name}: {ex['direction'].replace('_', ' ')}")
            losses = np.asarray(
                evaluate(build_chain(ex["chain"]), family, key, num_problems, num_steps)
            )
            per = np.asarray(per_problem_metric(losses), np.float64)
        mean, sem = mean_sem(per) if np.all(np.isfinite(per)) else (None, None)
        row = out.setdefault(
            name,
            {
                "transform": name,
                "mechanism": str(
                    (probed.get(name) or {}).get("mechanism") or "added by identification"
                ),
                **dict.fromkeys(DIRECTIONS),
            },
        )
        row[ex["direction"]] = {
            "metric": mean,
            "sem": sem,
            "fraction": recovered_fraction(learned, baseline, per, bootstrap)
            if fractions
            else None,
        }
    return list(out.values())
