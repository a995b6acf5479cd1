"""experiments/interim.py: the best-validated iterate of an unfinished run, evaluated."""

import importlib.util
import json
from pathlib import Path

import jax
import numpy as np
import pytest

import lopt
import tasks
from lopt.meta_train import MetaTrainConfig, meta_train

ROOT = Path(__file__).resolve().parents[1]


def _interim():
    spec = importlib.util.spec_from_file_location("interim", ROOT / "experiments" / "interim.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_run_without_best_npz_or_out_equal_to_run_is_refused(tmp_path, capsys):
    mod = _interim()
    (tmp_path / "run").mkdir()
    with pytest.raises(SystemExit):
        mod.main([str(tmp_path / "run"), "--out", str(tmp_path / "o")])
    assert "no best.npz" in capsys.readouterr().err
    (tmp_path / "run" / "best.npz").write_bytes(b"")
    with pytest.raises(SystemExit):
        mod.main([str(tmp_path / "run"), "--out", str(tmp_path / "run")])
    assert "must differ" in capsys.readouterr().err


@pytest.mark.slow
def test_interim_evaluates_the_best_iterate_and_leaves_the_run_alone(tmp_path, capsys):
    family = tasks.get("linear_regression", dim=3, num_steps=8)
    opt = lopt.RNNOptimizer(hidden_size=4)
    config = MetaTrainConfig(
        num_problems=4, num_steps=4, validate_every=2, validation_problems=4, learning_rate=1e-2
    )
    run = tmp_path / "task" / "seed0"
    meta_train(opt, family, config, out_dir=run, progress=False)
    before = sorted(p.name for p in run.iterdir())
    assert _interim().main([str(run), "--out", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in run.iterdir()) == before  # untouched
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    _, best, meta = lopt.load(run / "best.npz")
    assert summary["best_step"] == meta["step"]
    _, theta, _ = lopt.load(tmp_path / "out" / "theta.npz")
    for a, b in zip(jax.tree.leaves(best), jax.tree.leaves(theta), strict=True):
        np.testing.assert_array_equal(a, b)
    for name in ("eval.json", "analysis.json", "report/index.html"):
        assert (tmp_path / "out" / name).exists(), name
    assert (tmp_path / "task" / "tuned.json").exists()
    assert set(summary["heldout"]) == {"learned", "momentum", "rmsprop", "adam"}
