import importlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import TinyMomentum

import lopt
import tasks
from lopt import rundir
from lopt.meta_train import ConfigError, MetaTrainConfig, MetaTrainDiverged, meta_train

FAMILY = tasks.get("linear_regression", dim=3, num_steps=8)
OPT = lopt.RNNOptimizer(hidden_size=4)
CONFIG = MetaTrainConfig(
    num_problems=4, num_steps=6, log_every=2, checkpoint_every=3, learning_rate=1e-2, seed=1
)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("estimator", ["full_bptt", "tbptt", "pes"])
def test_resume_is_bitwise_exact(tmp_path, estimator):
    config = MetaTrainConfig(**{**CONFIG.to_dict(), "estimator": estimator})
    if estimator != "full_bptt":
        config = MetaTrainConfig(**{**config.to_dict(), "truncation": 4})
    full = meta_train(OPT, FAMILY, config, out_dir=tmp_path / "a", progress=False)
    first = MetaTrainConfig(**{**config.to_dict(), "num_steps": 3})
    meta_train(OPT, FAMILY, first, out_dir=tmp_path / "b", progress=False)
    resumed = meta_train(OPT, FAMILY, config, out_dir=tmp_path / "b", resume=True, progress=False)
    assert resumed.step == full.step == 6
    for a, b in zip(_leaves(full.theta), _leaves(resumed.theta), strict=True):
        np.testing.assert_array_equal(a, b)
    # Metrics of the resumed run continue the first part's without duplicates.
    steps = [r["step"] for r in lopt.meta_train_metrics(tmp_path / "b")]
    assert steps == [2, 3, 4, 6]


def test_run_directory_contents(tmp_path):
    result = meta_train(OPT, FAMILY, CONFIG, out_dir=tmp_path, progress=False)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["task"]["name"] == "linear_regression"
    assert cfg["task"]["settings"]["dim"] == 3
    assert cfg["optimizer"] == OPT.config()
    assert MetaTrainConfig.from_dict(cfg["meta_train"]).num_problems == 4
    opt, theta, meta = lopt.load(tmp_path / "theta.npz")
    assert opt.config() == OPT.config() and meta["step"] == 6
    for a, b in zip(_leaves(theta), _leaves(result.theta), strict=True):
        np.testing.assert_array_equal(a, b)
    rows = lopt.meta_train_metrics(tmp_path)
    assert [r["step"] for r in rows] == [2, 4, 6]
    assert all(np.isfinite(r["meta_loss"]) for r in rows)


def test_outlier_threshold_counts_the_problems_left_out_in_the_metrics(tmp_path):
    # At κ = 1 every problem above the median is left out: 2 of the 4 each step.
    config = MetaTrainConfig(**{**CONFIG.to_dict(), "outlier_threshold": 1.0})
    result = meta_train(OPT, FAMILY, config, out_dir=tmp_path, progress=False)
    rows = lopt.meta_train_metrics(tmp_path)
    assert [r["outliers"] for r in rows] == [4, 4, 4]  # 2 steps per row
    assert all(r["num_nonfinite"] == 0 and r["skipped"] == 0 for r in rows)
    assert all(np.all(np.isfinite(x)) for x in _leaves(result.theta))
    plain = meta_train(OPT, FAMILY, CONFIG, progress=False)
    assert all(r["outliers"] == 0 for r in plain.metrics)


def test_a_metrics_line_torn_by_a_crash_is_skipped(tmp_path):
    meta_train(OPT, FAMILY, CONFIG, out_dir=tmp_path, progress=False)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 8, "meta_lo')  # a kill -9 in the middle of a write
    assert [r["step"] for r in lopt.meta_train_metrics(tmp_path)] == [2, 4, 6]


def test_meta_training_lowers_the_meta_loss():
    config = MetaTrainConfig(num_problems=8, num_steps=60, log_every=10, learning_rate=1e-2)
    result = meta_train(OPT, FAMILY, config, progress=False)
    assert result.metrics[-1]["meta_loss"] < 0.8 * result.metrics[0]["meta_loss"]


class _Exploding(TinyMomentum):
    def init(self, key):
        return dict(super().init(key), log_lr=jnp.asarray(np.log(1e4), jnp.float32))


def test_all_nonfinite_steps_stop_the_run_with_theta_intact(tmp_path):
    opt = _Exploding()
    family = tasks.get("linear_regression", dim=3, num_steps=40)
    config = MetaTrainConfig(num_problems=4, num_steps=20, log_every=1, max_nonfinite_steps=3)
    with pytest.raises(MetaTrainDiverged, match="3 consecutive") as e:
        meta_train(opt, family, config, out_dir=tmp_path, progress=False)
    assert "state.npz" not in str(e.value)  # no checkpoint holds it yet
    rows = lopt.meta_train_metrics(tmp_path)
    assert [r["skipped"] for r in rows] == [1, 1, 1]
    assert all(r["num_nonfinite"] == 4 for r in rows)
    state = (
        rundir.read_npz(tmp_path / "state.npz", "lopt.meta_train.state/1")
        if (tmp_path / "state.npz").exists()
        else None
    )
    assert state is None  # no checkpoint was due; nothing non-finite was written


@pytest.mark.parametrize(
    "change, message",
    [
        ({"estimator": "sgd"}, "unknown estimator"),
        ({"truncation": 16}, "longer than the horizon"),
        ({"estimator": "tbptt", "truncation": 3}, "must divide"),
        ({"num_problems": 0}, "num_problems must be a positive integer"),
        ({"learning_rate": -1.0}, "learning_rate must be a positive number"),
        ({"objective": "loss"}, "unknown objective"),
        ({"estimator": "tbptt", "truncation": 4, "objective": "final"}, "needs the whole horizon"),
        ({"outlier_threshold": 0.5}, "outlier_threshold must be a number >= 1"),
        ({"outlier_threshold": float("inf")}, "outlier_threshold must be a number >= 1"),
        ({"outlier_threshold": True}, "outlier_threshold must be a number >= 1"),
        (
            {"estimator": "es", "truncation": 4, "outlier_threshold": 10.0},
            "outlier_threshold needs",
        ),
        ({"save_products": "yes"}, "save_products must be true, false or null"),
        ({"remat": 1}, "remat must be true or false"),
    ],
)
def test_bad_configs_fail_fast(change, message):
    with pytest.raises(ConfigError, match=message):
        MetaTrainConfig(**{**CONFIG.to_dict(), **change}).resolved(FAMILY)


def test_unknown_config_keys_are_rejected():
    with pytest.raises(ConfigError, match="unknown meta-training setting"):
        MetaTrainConfig.from_dict({"num_problem": 3})


def test_resume_from_a_corrupted_state_is_a_clear_error(tmp_path):
    meta_train(OPT, FAMILY, CONFIG, out_dir=tmp_path, progress=False)
    data = (tmp_path / "state.npz").read_bytes()
    (tmp_path / "state.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(lopt.CheckpointError, match="state.npz"):
        meta_train(OPT, FAMILY, CONFIG, out_dir=tmp_path, resume=True, progress=False)


def test_validation_keeps_the_best_theta_and_resumes_exactly(tmp_path):
    from lopt.unroll import per_problem_metric
    from lopt.validation import VALIDATION_SEED

    config = MetaTrainConfig(
        **{**CONFIG.to_dict(), "learning_rate": 0.1, "validate_every": 2, "validation_problems": 4}
    )
    full = meta_train(OPT, FAMILY, config, out_dir=tmp_path / "a", progress=False)
    rows = lopt.meta_train_metrics(tmp_path / "a")
    scores = {r["validation_step"]: r["validation"] for r in rows if "validation" in r}
    assert sorted(scores) == [2, 4, 6]
    best_step = min(scores, key=scores.get)
    assert full.selected_step == best_step
    # theta.npz is the selected theta, best.npz the same, and its score is reproducible with
    # lopt.evaluate on the validation problems.
    _, theta, meta = lopt.load(tmp_path / "a" / "theta.npz")
    _, best, best_meta = lopt.load(tmp_path / "a" / "best.npz")
    assert meta["selected_step"] == best_meta["step"] == best_step and meta["step"] == 6
    for a, b, c in zip(_leaves(theta), _leaves(best), _leaves(full.theta), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    losses = lopt.evaluate(
        OPT.optimizer(theta), FAMILY, jax.random.key(VALIDATION_SEED), 4, FAMILY.num_steps
    )
    np.testing.assert_allclose(
        per_problem_metric(np.asarray(losses)).mean(), scores[best_step], rtol=1e-5
    )
    # Stopped after step 4 (both validations also happen in the full run) and resumed: the
    # same selection, bitwise.
    first = MetaTrainConfig(**{**config.to_dict(), "num_steps": 4})
    part = meta_train(OPT, FAMILY, first, out_dir=tmp_path / "b", progress=False)
    assert part.selected_step == min((2, 4), key=scores.get)
    resumed = meta_train(OPT, FAMILY, config, out_dir=tmp_path / "b", resume=True, progress=False)
    assert resumed.selected_step == full.selected_step
    for a, b in zip(_leaves(full.theta), _leaves(resumed.theta), strict=True):
        np.testing.assert_array_equal(a, b)


def test_validate_every_must_be_non_negative():
    with pytest.raises(ConfigError, match="validate_every"):
        MetaTrainConfig(validate_every=-1).resolved(FAMILY)


def test_every_preset_builds_a_valid_config_for_its_family():
    from lopt.presets import preset, preset_names

    names = preset_names()
    for task in tasks.names():
        assert (task, "quick") in names
    for task in ("linear_regression", "rosenbrock", "two_moons", "mnist"):  # the paper's
        assert (task, "paper") in names
    for task, name in names:
        p = preset(task, name)
        family = tasks.get(task, **p.task_settings)
        opt, config = p.build()
        resolved = config.resolved(family)  # raises ConfigError on a bad combination
        assert resolved.horizon == family.num_steps
        assert resolved.horizon % resolved.truncation == 0
        assert opt.config()["hidden_size"] in (16, 32, 256)


def test_saved_products_are_decided_by_their_size(monkeypatch):
    mt = importlib.import_module("lopt.meta_train")  # the module; lopt.meta_train is the function
    monkeypatch.setattr(mt, "PRODUCT_MIN_HIDDEN", 8)  # the size rule alone here

    gru = lopt.RNNOptimizer(hidden_size=8)
    family = tasks.get("linear_regression", dim=5, num_steps=20)
    config = MetaTrainConfig(num_problems=4).resolved(family)
    # 4 problems x 20 steps x 5 coordinates x 24 floats x 4 bytes = 38,400 bytes.
    monkeypatch.setattr(mt, "PRODUCT_BUDGET", 38_400)
    assert mt.saves_products(gru, family, config)
    monkeypatch.setattr(mt, "PRODUCT_BUDGET", 38_399)
    assert not mt.saves_products(gru, family, config)
    # An explicit setting wins; nothing is stored without remat, by ES, or without products.
    assert mt.saves_products(gru, family, MetaTrainConfig(num_problems=4, save_products=True))
    monkeypatch.setattr(mt, "PRODUCT_BUDGET", 2**30)
    assert not mt.saves_products(gru, family, MetaTrainConfig(save_products=False))
    assert not mt.saves_products(gru, family, MetaTrainConfig(remat=False, save_products=True))
    es = MetaTrainConfig(estimator="es", truncation=10).resolved(family)
    assert not mt.saves_products(gru, family, es)
    assert not mt.saves_products(TinyMomentum(), family, config)


def test_narrow_cells_recompute_their_products_wide_ones_store_them():
    mt = importlib.import_module("lopt.meta_train")
    family = tasks.get("linear_regression", dim=5, num_steps=20)
    config = MetaTrainConfig(num_problems=4).resolved(family)
    narrow = lopt.RNNOptimizer(hidden_size=mt.PRODUCT_MIN_HIDDEN - 1)
    wide = lopt.RNNOptimizer(hidden_size=mt.PRODUCT_MIN_HIDDEN)
    assert not mt.saves_products(narrow, family, config)
    assert mt.saves_products(wide, family, config)
    # an explicit setting still wins
    assert mt.saves_products(narrow, family, MetaTrainConfig(num_problems=4, save_products=True))
    # a width given as a NumPy integer (read from a config array) is a width too

    class NumpyWidth:
        hidden_size = np.int64(mt.PRODUCT_MIN_HIDDEN - 1)

    assert not mt.saves_products(NumpyWidth(), family, config)


def test_resuming_a_finished_run_writes_nothing_and_returns_its_result(tmp_path):
    done = meta_train(OPT, FAMILY, CONFIG, out_dir=tmp_path, progress=False)
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    again = meta_train(OPT, FAMILY, CONFIG, out_dir=tmp_path, resume=True, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == stamps
    assert again.step == done.step and [r["step"] for r in again.metrics] == [2, 4, 6]
    for a, b in zip(_leaves(done.theta), _leaves(again.theta), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_state_npz_is_the_source_of_truth_and_a_bad_theta_npz_is_rewritten(tmp_path, damage):
    done = meta_train(OPT, FAMILY, CONFIG, out_dir=tmp_path, progress=False)
    if damage == "missing":
        (tmp_path / "theta.npz").unlink()
    else:
        (tmp_path / "theta.npz").write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="theta.npz is unreadable"):
        again = meta_train(OPT, FAMILY, CONFIG, out_dir=tmp_path, resume=True, progress=False)
    _, theta, meta = lopt.load(tmp_path / "theta.npz")
    assert meta["step"] == 6 == again.step
    for a, b in zip(_leaves(done.theta), _leaves(theta), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_damaged_metrics_line_is_skipped_on_read_and_on_resume(tmp_path):
    first = MetaTrainConfig(**{**CONFIG.to_dict(), "num_steps": 4})
    meta_train(OPT, FAMILY, first, out_dir=tmp_path, progress=False)
    with open(tmp_path / "metrics.jsonl", "ab") as f:
        f.write(b'{"step": \xff\xfe}\n[1, 2]\n{"step": 3')  # not UTF-8, not a row, torn
    assert [r["step"] for r in lopt.meta_train_metrics(tmp_path)] == [2, 4]
    meta_train(OPT, FAMILY, CONFIG, out_dir=tmp_path, resume=True, progress=False)
    assert [r["step"] for r in lopt.meta_train_metrics(tmp_path)] == [2, 4, 6]
