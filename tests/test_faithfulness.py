"""The faithfulness score on optimizers whose mechanisms are known exactly."""

import copy

import numpy as np
import optax
import pytest

import probes
import tasks
from probes.faithfulness import Faithfulness, faithfulness

FAMILY = tasks.get("linear_regression", num_steps=40)
TX = optax.chain(optax.clip(0.5), optax.sgd(0.1, momentum=0.9))


@pytest.fixture(scope="module")
def analysis():
    return probes.analyze_optax(TX).to_json()


def test_exact_mechanisms_reproduce_the_optimizer(analysis):
    f = faithfulness(analysis, TX, FAMILY, num_problems=8, heldout_problems=16)
    # clip(0.5) -> trace(0.9) -> scale(-0.1), read off by behaviour alone: the chain replays
    # the same updates and trains the held-out problems to the same losses.
    assert [e["transform"] for e in f.chain] == ["clip", "trace", "scale_by_learning_rate"]
    assert f.update_error < 1e-3 and f.update_error_range[1] < 1e-3
    assert f.curve_error < 1e-3
    np.testing.assert_allclose(f.loss_chain, f.loss_learned, rtol=1e-3)
    for part in f.residual.values():
        assert sum(v["update_share"] for v in part.values()) == pytest.approx(1.0)
    assert f.num_problems == 8 and f.num_steps == 40
    # a heavy ball remembers the same everywhere: (1 − 0.9⁴⁰)/(1 − 0.9) steps along its own
    # trajectories (40 lags from step 0) and at its convergence point
    ma = f.memory_along
    assert ma["starts"] == [0] and ma["state_dependent"] is False
    np.testing.assert_allclose(ma["memory"], (1 - 0.9**40) / 0.1, rtol=1e-3)
    np.testing.assert_allclose(ma["convergence_memory"], (1 - 0.9**40) / 0.1, rtol=1e-3)
    # and the exact chain moves as far as the optimizer along those trajectories
    assert ma["gain_ratio"] == pytest.approx(1.0, rel=1e-3)
    # and steps as far under every constant gradient of the training range
    su = f.steady_update
    assert su["within"] == 1.0 and su["outside_share"] == 0.0
    np.testing.assert_allclose(su["ratio_range"], 1.0, rtol=1e-3)
    assert Faithfulness.from_json(f.to_json()) == f


def test_a_mechanism_left_out_shows_as_error_where_it_acts(analysis):
    no_momentum = copy.deepcopy(analysis)
    no_momentum["momentum"]["detected"] = False
    f = faithfulness(no_momentum, TX, FAMILY, num_problems=8, heldout_problems=16)
    # Plain (clipped) SGD at the steady learning rate instead of heavy-ball momentum: the
    # updates differ by a large fraction of their size, and so do the loss curves.
    assert "trace" not in [e["transform"] for e in f.chain]
    assert f.update_error > 0.3 and f.curve_error > 0.1
    # Momentum's missing memory builds up from the start: no third of the horizon is spared.
    assert all(v["error_share"] > 0.05 for v in f.residual["steps"].values())
    # after the horizon's 40 constant gradients the trace has summed (1 − 0.9⁴⁰)/(1 − 0.9) of
    # them: without it the chain steps that much less far under every one of the training range
    expected = (1 - 0.9) / (1 - 0.9**40)
    np.testing.assert_allclose(f.steady_update["ratio_range"], expected, rtol=1e-4)
    assert f.steady_update["within"] == 0.0
