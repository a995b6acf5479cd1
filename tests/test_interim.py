"""experiments/interim.py: the best-validated iterate of an unfinished run, evaluated."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from hang import HANG_S

import lopt
import tasks
from lopt.meta_train import MetaTrainConfig, meta_train
from probes.runs import copy_best

ROOT = Path(__file__).resolve().parents[1]


def test_a_run_without_best_npz_or_out_equal_to_run_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(ValueError, match="no best.npz"):
        copy_best(tmp_path / "run", tmp_path / "o")
    (tmp_path / "run" / "best.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="must differ"):
        copy_best(tmp_path / "run", tmp_path / "run")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_interim_evaluates_the_best_iterate_and_leaves_the_run_alone(tmp_path):
    family = tasks.get("linear_regression", dim=3, num_steps=8)
    opt = lopt.RNNOptimizer(hidden_size=4)
    config = MetaTrainConfig(
        num_problems=4, num_steps=4, validate_every=2, validation_problems=4, learning_rate=1e-2
    )
    run = tmp_path / "task" / "seed0"
    meta_train(opt, family, config, out_dir=run, progress=False)
    before = sorted(p.name for p in run.iterdir())
    script = ROOT / "experiments" / "interim.py"
    proc = subprocess.run(
        [sys.executable, str(script), str(run), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in run.iterdir()) == before  # untouched
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    _, best, meta = lopt.load(run / "best.npz")
    assert summary["best_step"] == meta["step"]
    _, theta, _ = lopt.load(tmp_path / "out" / "theta.npz")
    for a, b in zip(jax.tree.leaves(best), jax.tree.leaves(theta), strict=True):
        np.testing.assert_array_equal(a, b)
    for name in ("eval.json", "analysis.json", "report/index.html"):
        assert (tmp_path / "out" / name).exists(), name
    assert (tmp_path / "task" / "tuned.json").exists()
    assert set(summary["heldout"]) == {"learned", "momentum", "rmsprop", "adam"}
