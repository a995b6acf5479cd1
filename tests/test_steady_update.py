"""The chain's update under a constant gradient beside the optimizer's (probes.steady_update).

Known answers: heavy-ball momentum behind a clip at ``c`` steps ``−lr·clip(g)/(1 − β)`` after
enough constant gradients, so the same momentum without the clip steps ``max(|g|/c, 1)`` times
as far; the optimizer itself steps exactly as far as itself; under an exponential schedule both
are read at the horizon, where a chain with the same schedule steps as far.
"""

import numpy as np
import optax
import pytest

from probes.bias import BELOW, POINTS
from probes.faithfulness_words import faithfulness_sentence, steady_sentence
from probes.steady_update import TOLERANCE, compare_steady_update

LR, BETA, CLIP, STEPS = 0.1, 0.8, 1.0, 200
LO, HI = 1e-2, 10.0


TX = optax.chain(optax.clip(CLIP), optax.sgd(LR, momentum=BETA))


@pytest.fixture(scope="module")
def clipped():
    """An analysis's gradient grid, as the bias probe lays it over ``[LO, HI]``."""
    mags = np.logspace(np.log10(LO) - BELOW, np.log10(HI), POINTS)
    return {"bias": {"gradients": list(np.concatenate([-mags[::-1], [0.0], mags]))}}


def test_the_optimizer_against_itself_reads_1_and_says_nothing(clipped):
    same = optax.chain(optax.clip(CLIP), optax.sgd(LR, momentum=BETA))
    su = compare_steady_update(TX, same, clipped, STEPS)
    read = [r for r in su["ratio"] if r is not None]
    np.testing.assert_allclose(read, 1.0, rtol=1e-5)
    assert su["within"] == 1.0 and su["training_range"] == pytest.approx([LO, HI], rel=1e-5)
    assert steady_sentence(su) is None


def test_a_chain_without_the_clip_steps_g_over_c_times_as_far_above_it(clipped):
    su = compare_steady_update(
        TX, optax.sgd(LR, momentum=BETA), clipped, STEPS, [0.5, 2.0, -3.0, 1e-4]
    )
    g = np.asarray(clipped["bias"]["gradients"])
    ratio = np.array([np.nan if r is None else r for r in su["ratio"]])
    inside = np.abs(g) >= LO * (1 - 1e-6)
    # below the training range (the grid's lowest BELOW decades) no ratio is read
    assert np.isnan(ratio[~inside]).all() and np.isfinite(ratio[inside]).all()
    assert np.abs(g[~inside]).max() < LO and np.abs(g[g != 0]).min() == pytest.approx(
        LO / 10**BELOW, rel=1e-5
    )
    np.testing.assert_allclose(ratio[inside], np.maximum(np.abs(g[inside]) / CLIP, 1.0), rtol=1e-4)
    assert su["ratio_range"] == pytest.approx([1.0, HI / CLIP], rel=1e-4)
    assert abs(su["worst_gradient"]) == pytest.approx(HI, rel=1e-5)
    assert su["worst_ratio"] == pytest.approx(HI / CLIP, rel=1e-4)
    ok = np.abs(g[inside]) <= CLIP * (1 + TOLERANCE)
    assert su["within"] == pytest.approx(ok.mean())
    # 2.0 and -3.0 sit where the chain steps 2× and 3× as far; 0.5 is matched, 1e-4 outside
    assert su["outside_share"] == pytest.approx(2 / 3)
    text = steady_sentence(su)
    assert text == (
        "under a constant gradient its steady step is 1–10× the optimizer's over the training "
        f"range (10× at g = {su['worst_gradient']:.2g}; 67% of the training gradient entries "
        "fall where it is off by more than a factor 1.25)"
    )


def test_a_chain_stepping_the_other_way_is_the_farthest_off(clipped):
    su = compare_steady_update(TX, optax.sgd(-LR, momentum=BETA), clipped, STEPS)
    assert su["ratio_range"][0] < 0 and su["worst_ratio"] < 0 and su["within"] == 0.0
    assert su["outside_share"] is None
    assert "steady step is -10–-1× the optimizer's" in steady_sentence(su)


def test_a_schedule_is_read_where_training_leaves_it(clipped):
    # lr·0.99ᵗ: after T = 50 steps the update is lr·0.99⁴⁹·g (no momentum), for both alike; a
    # chain holding the first learning rate steps 1/0.99⁴⁹ times as far everywhere
    sched = optax.exponential_decay(LR, 1, 0.99)
    tx = optax.sgd(sched)
    same = compare_steady_update(tx, optax.sgd(sched), clipped, 50)
    np.testing.assert_allclose([r for r in same["ratio"] if r is not None], 1.0, rtol=1e-5)
    expected = -LR * 0.99**49 * np.asarray(same["gradients"])
    np.testing.assert_allclose(same["optimizer"], expected, rtol=1e-4, atol=1e-12)
    held = compare_steady_update(tx, optax.sgd(LR), clipped, 50)
    np.testing.assert_allclose(held["ratio_range"], 0.99**-49, rtol=1e-4)
    # a schedule read over 30 steps only is compared at its window's end, not past it
    window = {**clipped, "schedule": {"detected": True, "effective_lr": [LR] * 30}}
    short = compare_steady_update(tx, optax.sgd(LR), window, 50)
    assert short["steps"] == 30
    np.testing.assert_allclose(short["ratio_range"], 0.99**-29, rtol=1e-4)


def test_no_grid_gives_none():
    tx = optax.sgd(LR)
    assert compare_steady_update(tx, tx, {}, STEPS) is None
    assert compare_steady_update(tx, tx, {"bias": {"gradients": []}}, STEPS) is None
    assert compare_steady_update(tx, tx, {"bias": {"gradients": [0.0, None]}}, STEPS) is None
    assert steady_sentence(None) is None and steady_sentence({"ratio_range": None}) is None


def test_the_faithfulness_sentence_gives_the_mismatch(clipped):
    su = compare_steady_update(TX, optax.sgd(LR, momentum=BETA), clipped, STEPS)
    f = {"update_error": 0.05, "num_problems": 4, "loss_learned": 0.1, "loss_chain": 0.2}
    assert faithfulness_sentence({**f, "steady_update": su}).endswith(f"; {steady_sentence(su)}.")
    assert "constant gradient" not in faithfulness_sentence(f)
