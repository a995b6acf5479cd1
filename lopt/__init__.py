"""Learned optimizers in JAX: component-wise RNN optimizers, baselines, meta-training.

The public names are re-exported here; see the README for a tour.
"""

from lopt import cells
from lopt.baselines import SearchSpace, baseline, baseline_names, search_space
from lopt.cell import Cell, CellOptimizerState, apply_cell, cell_optimizer, make_cell
from lopt.tune import TuneResult, heldout_key, tune
from lopt.unroll import (
    InnerState,
    StepRecord,
    Summary,
    evaluate,
    init_inner,
    normalized_loss,
    summarize,
    unroll,
)

__all__ = [
    "Cell",
    "CellOptimizerState",
    "InnerState",
    "StepRecord",
    "Summary",
    "apply_cell",
    "cell_optimizer",
    "cells",
    "evaluate",
    "init_inner",
    "make_cell",
    "normalized_loss",
    "summarize",
    "unroll",
    "SearchSpace",
    "TuneResult",
    "baseline",
    "baseline_names",
    "heldout_key",
    "search_space",
    "tune",
]
