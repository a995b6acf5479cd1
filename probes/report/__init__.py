"""Interpretation reports: ``index.html`` + ``report.json`` + ``figures/*.png`` .

:func:`write_report` turns an :class:`probes.Analysis` (or its ``to_json()`` dict) into a
self-contained page: a plain-language summary generated from the numbers
(:mod:`probes.words`), the comparison with tuned baselines (from ``eval.json``), one section
per mechanism with its numbers and figures, and the distilled optimizer (from ``distill.json``)
when there is one. Every figure is embedded as a base64 PNG, the styles are inline, and nothing
is fetched: the page opens offline. ``report.json`` (``"schema": "probes.report/1"``) holds
every number the page shows.

White-box figures (states near the convergence point, update functions along the slow mode and
along the S-curve of fixed points, the eigenvalues) need *evidence* beyond the analysis:
:func:`white_box_evidence` computes it from a :class:`lopt.Cell` with the public probes.
Black-box analyses (any optax optimizer, the per-parameter MLP optimizer) get the behavioural
figures only. :func:`report_run` does everything for a meta-training run directory and writes
``RUN/report/``.

Modules: :mod:`~probes.report.evidence` (JAX probes for the white-box figures),
:mod:`~probes.report.sections` (results, clipping, schedule, damping),
:mod:`~probes.report.momentum`, :mod:`~probes.report.adaptation`,
:mod:`~probes.report.distillation` (one section each), :mod:`~probes.report.page` (HTML and
stylesheet, shared with :mod:`probes.compare`), :mod:`~probes.report.pipeline` (assembly).
"""

from probes.report.evidence import heavy_ball_optimum, white_box_evidence
from probes.report.pipeline import SCHEMA, report_run, write_report

__all__ = ["SCHEMA", "heavy_ball_optimum", "report_run", "white_box_evidence", "write_report"]
