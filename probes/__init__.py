"""Probes: dissect optimizers into mechanisms (momentum, clipping, schedules, adaptation, damping).

Building blocks (jitted, batched, the cell passed as an argument): :func:`update_function`,
:func:`effective_lr`, :func:`trajectories`, :func:`fixed_points`, :func:`linearize`. Detectors:
:func:`analyze` (a learned optimizer), :func:`analyze_cell` (any :class:`lopt.Cell`),
:func:`analyze_optax` (any coordinate-wise optax transformation, black box).
"""

from probes import battery, compare, faithfulness, runs, words
from probes.analysis import Analysis, analyze, analyze_cell, analyze_optax
from probes.fixed_points import Branch, FixedPoints, continuation, fixed_points
from probes.linearize import Linearization, linearize
from probes.report import report_run, write_report
from probes.trajectories import Trajectories, pca, trajectories
from probes.update_function import effective_lr, update_function

__all__ = [
    "battery",
    "faithfulness",
    "runs",
    "words",
    "compare",
    "Analysis",
    "Branch",
    "FixedPoints",
    "Linearization",
    "Trajectories",
    "analyze",
    "analyze_cell",
    "analyze_optax",
    "continuation",
    "effective_lr",
    "fixed_points",
    "linearize",
    "pca",
    "report_run",
    "trajectories",
    "update_function",
    "write_report",
]
