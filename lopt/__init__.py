"""Learned optimizers in JAX: component-wise RNN optimizers, baselines, meta-training.

The public names are re-exported here; see the README for a tour.
"""

from lopt import chain, distributed, estimators, evaluation, hand_designed, presets
from lopt.base import LearnedOptimizer, from_config
from lopt.baselines import SearchSpace, baseline, baseline_names, search_space
from lopt.cell import Cell, CellOptimizerState, apply_cell, cell_optimizer, make_cell
from lopt.chain import build_chain
from lopt.checkpoint import CheckpointError, load, save
from lopt.evaluation import heldout_key
from lopt.meta_train import (
    PRODUCT_BUDGET,
    PRODUCT_MIN_HIDDEN,
    ConfigError,
    MetaTrainConfig,
    MetaTrainDiverged,
    MetaTrainResult,
    meta_train,
    meta_train_metrics,
)
from lopt.mlp_optimizer import MLPOptimizer, MLPOptimizerState
from lopt.rnn import RNNOptimizer
from lopt.tune import TuneResult, tune
from lopt.unroll import (
    InnerState,
    StepRecord,
    Summary,
    evaluate,
    init_inner,
    normalized_loss,
    product_floats,
    summarize,
    unroll,
)
from lopt.validation import VALIDATION_SEED
from lopt.zoo import pretrained, pretrained_names

__all__ = [
    "PRODUCT_BUDGET",
    "PRODUCT_MIN_HIDDEN",
    "VALIDATION_SEED",
    "evaluation",
    "presets",
    "ConfigError",
    "MetaTrainConfig",
    "MetaTrainDiverged",
    "MetaTrainResult",
    "build_chain",
    "chain",
    "distributed",
    "estimators",
    "meta_train",
    "meta_train_metrics",
    "Cell",
    "CellOptimizerState",
    "InnerState",
    "StepRecord",
    "Summary",
    "apply_cell",
    "cell_optimizer",
    "hand_designed",
    "evaluate",
    "init_inner",
    "make_cell",
    "normalized_loss",
    "product_floats",
    "summarize",
    "unroll",
    "SearchSpace",
    "TuneResult",
    "baseline",
    "baseline_names",
    "heldout_key",
    "search_space",
    "tune",
    "CheckpointError",
    "LearnedOptimizer",
    "MLPOptimizer",
    "MLPOptimizerState",
    "RNNOptimizer",
    "from_config",
    "load",
    "save",
    "pretrained",
    "pretrained_names",
]
