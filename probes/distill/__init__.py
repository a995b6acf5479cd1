"""Distillation: the probes' findings about a learned optimizer as an interpretable optax chain.

Split by concern:

- :mod:`probes.to_chain`: an analysis (``analysis.json``) → a chain of
  :mod:`lopt.chain` transformations, one per detected mechanism (:func:`chain_from_analysis`).
- :mod:`probes.distill.identify`: the chain's numbers fitted to the learned optimizer's updates
  (:func:`identify_chain`, :class:`IdentifyConfig`).
- :mod:`probes.distill.retune`: the chain's numbers tuned on the loss (:func:`retune_chain`,
  :func:`retune_cost`, :func:`validation_scores`, :class:`RetuneConfig`).
- :mod:`probes.distill.stats`: the fraction of the learned optimizer's gain a chain recovers
  (:func:`recovered_fraction`, :func:`fraction_report`, :class:`BootstrapConfig`).
- :mod:`probes.distill.pipeline`: all of it for a run (:func:`distill_analysis`,
  :func:`distill_run`, which writes ``RUN/distill.json``; :class:`DistillConfig`;
  :func:`format_report`).

Example:
    >>> from probes.distill import distill_run, format_report
    >>> print(format_report(distill_run("runs/quickstart")))  # doctest: +SKIP
"""

from probes.distill.identify import IdentifyConfig, identify_chain
from probes.distill.pipeline import (
    SCHEMA,
    Distillation,
    DistillConfig,
    distill_analysis,
    distill_run,
    format_report,
)
from probes.distill.retune import RetuneConfig, retune_chain, retune_cost, validation_scores
from probes.distill.stats import BootstrapConfig, fraction_report, recovered_fraction
from probes.to_chain import DistillError, chain_from_analysis

__all__ = [
    "SCHEMA",
    "BootstrapConfig",
    "DistillConfig",
    "DistillError",
    "Distillation",
    "IdentifyConfig",
    "RetuneConfig",
    "chain_from_analysis",
    "distill_analysis",
    "distill_run",
    "format_report",
    "fraction_report",
    "identify_chain",
    "recovered_fraction",
    "retune_chain",
    "retune_cost",
    "validation_scores",
]
