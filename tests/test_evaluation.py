import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
import tasks
from lopt import rundir
from lopt.evaluation import (
    Evaluation,
    compare,
    format_table,
    paired,
    per_problem_metric,
)
from lopt.meta_train import MetaTrainConfig, meta_train
from lopt.run import evaluate_run

FAMILY = tasks.get("linear_regression", dim=3, num_steps=10)


def test_paired_difference_decides_beats():
    base = np.array([1.0, 2.0, 3.0, 4.0])
    better = base - np.array([0.5, 0.6, 0.4, 0.5])
    v = paired(better, base)
    np.testing.assert_allclose(v["diff"], -0.5)
    np.testing.assert_allclose(v["diff_sem"], np.std([0.5, 0.6, 0.4, 0.5], ddof=1) / 2)
    assert v["beats"]
    noisy = base + np.array([-1.0, 1.0, -1.0, 0.9])
    assert not paired(noisy, base)["beats"]
    assert paired(np.array([np.inf, 1.0]), np.array([1.0, 1.0]))["beats"] is False


def test_a_baseline_that_diverges_can_still_be_beaten():
    # Better on every finite pair, and the baseline diverged on one more problem: beaten, with
    # the difference over the finite pairs and the divergences counted apart.
    learned = np.array([0.1, 0.2, 0.3, 0.2, 0.1, 0.25, 0.15, 0.2])
    baseline = learned + np.array([0.5, 0.6, 0.4, 0.5, 0.55, 0.45, 0.5, 0.0])
    baseline[-1] = np.inf
    v = paired(learned, baseline)
    assert v["beats"] and v["finite_pairs"] == 7
    assert v["baseline_diverged"] == 1 and v["learned_diverged"] == 0
    np.testing.assert_allclose(v["diff"], -np.mean([0.5, 0.6, 0.4, 0.5, 0.55, 0.45, 0.5]))
    # The learned optimizer diverging where the baseline did not rules "beats" out, however
    # good it is elsewhere; both diverging on a problem is a tie, left out.
    swapped = paired(baseline, learned)
    assert not swapped["beats"] and swapped["learned_diverged"] == 1
    both = paired(np.append(learned[:-1], np.inf), baseline)
    assert both["beats"] and both["finite_pairs"] == 7 and both["learned_diverged"] == 0
    # No finite pair at all: beaten only if the baseline diverged and the learned never did.
    assert paired(np.ones(3), np.full(3, np.inf))["beats"]
    assert not paired(np.full(3, np.inf), np.full(3, np.inf))["beats"]
    # One finite pair (no s.e.m.): the learned optimizer must also be lower on it, so more
    # baseline divergences never make beating it harder.
    one = paired(np.ones(3), np.array([np.inf, np.inf, 2.0]))
    assert one["beats"] and one["diff"] == -1.0 and one["diff_sem"] is None
    assert not paired(np.ones(3), np.array([np.inf, np.inf, 0.5]))["beats"]


def test_the_table_says_when_the_learned_optimizer_diverged():
    base = np.array([1.0, 2.0, 3.0, 4.0])
    result = {
        "num_problems": 4,
        "horizons": {
            "10": {
                "optimizers": {
                    n: {"metric": 1.0, "sem": 0.1, "final": 0.5, "diverged": 0}
                    for n in ("learned", "a", "b")
                },
                "versus": {
                    "a": paired(np.append(base[:3] - 0.5, np.inf), base),
                    "b": paired(np.array([0.5, 1.0]), np.array([1.0, np.inf])),
                },
            }
        },
    }
    text = format_table(result)
    assert "not beaten (learned diverged on 1)" in text
    assert "+0.5000±- beaten" in text  # one finite pair: no s.e.m., printed as '-'
    # each baseline's own s.e.m. column stays its own, not the paired difference's
    assert all(line.split()[2] == "0.1000" for line in text.splitlines()[2:])


def test_per_problem_metric_marks_divergence():
    losses = np.array([[2.0, 1.0], [1.0, np.nan]])
    np.testing.assert_allclose(per_problem_metric(losses), [0.75, np.inf])


def test_compare_is_paired_and_covers_both_horizons():
    opts = {"good": optax.sgd(1.0, momentum=0.5), "bad": optax.sgd(0.01), "diverge": optax.sgd(1e5)}
    res = compare(opts, FAMILY, learned="good", num_problems=16, key=jax.random.key(0))
    assert set(res["horizons"]) == {"10", "20"}
    block = res["horizons"]["10"]
    assert block["versus"]["bad"]["beats"]
    # sgd(1e5) diverges on every problem; "good" never does, so it beats it.
    assert block["versus"]["diverge"]["diff"] is None and block["versus"]["diverge"]["beats"]
    assert block["versus"]["diverge"]["baseline_diverged"] == 16
    assert block["best_baseline"] == "bad" and block["beats_all"]
    assert block["optimizers"]["diverge"]["diverged"] > 0
    # The same key gives the same problems: f0 agrees, so curves start at exactly 1.
    assert block["optimizers"]["good"]["curve_mean"][0] == 1.0
    assert "good" in format_table(res)


def test_evaluate_run_writes_eval_json(tmp_path):
    opt = lopt.RNNOptimizer(hidden_size=4)
    config = MetaTrainConfig(num_problems=4, num_steps=2, log_every=1)
    meta_train(opt, FAMILY, config, out_dir=tmp_path, progress=False)
    res = evaluate_run(tmp_path, baselines=("momentum",), num_problems=8, progress=False)
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["schema"] == "lopt.eval/1"
    assert (
        saved["task"]["name"] == "linear_regression" and saved["task"]["data_source"] == "synthetic"
    )
    assert saved["meta_step"] == saved["selected_step"] == 2 and saved["horizon"] == 10
    assert set(saved["horizons"]["10"]["optimizers"]) == {"learned", "momentum"}
    hp = saved["horizons"]["10"]["optimizers"]["momentum"]["hyperparams"]
    assert set(hp) == {"learning_rate", "momentum"}
    assert len(saved["horizons"]["20"]["optimizers"]["learned"]["curve_mean"]) == 20
    assert res["horizons"]["10"]["versus"]["momentum"]["beats"] is False  # 2 meta-steps: no
    ev = Evaluation.read(tmp_path)
    assert ev.horizon == 10 and set(ev.horizons) == {10, 20} and ev.selected_step == 2
    assert ev.main.metric("learned") == saved["horizons"]["10"]["optimizers"]["learned"]["metric"]
    assert ev.main.best_baseline == "momentum" and ev.main.beats_all is False


@pytest.mark.parametrize(
    "damage, field",
    [
        ([], "(top level)"),
        ({"horizons": {}}, "horizons"),
        ({"horizons": {"ten": {}}}, "horizons.ten"),
        ({"horizons": {"10": {"optimizers": []}}}, "horizons.10.optimizers"),
        ({"horizons": {"10": {"optimizers": {"a": 1}}}}, "horizons.10.optimizers.a"),
        ({"horizon": 7, "horizons": {"10": {"optimizers": {}}}}, "horizon"),
    ],
)
def test_a_malformed_eval_json_is_one_error_naming_the_file_and_field(tmp_path, damage, field):
    (tmp_path / "eval.json").write_text(json.dumps(damage))
    with pytest.raises(lopt.CheckpointError, match="eval.json") as e:
        Evaluation.read(tmp_path)
    assert repr(field) in str(e.value)


def test_json_files_are_written_strict_through_one_sanitiser(tmp_path):
    obj = {"a": np.float32(1.5), "b": (np.inf, float("nan")), "c": jnp.arange(2), 3: np.bool_(1)}
    rundir.write_json(tmp_path / "x.json", obj)
    assert json.loads((tmp_path / "x.json").read_text()) == {
        "a": 1.5,
        "b": [None, None],
        "c": [0, 1],
        "3": True,
    }
