"""The chain's update under a constant gradient beside the optimizer's (probes.steady_update).

Known answers: heavy-ball momentum behind a clip at ``c`` steps ``−lr·clip(g)/(1 − β)`` after
enough constant gradients, so the same momentum without the clip steps ``max(|g|/c, 1)`` times
as far; the optimizer itself steps exactly as far as itself; under an exponential schedule both
are read at the horizon, where a chain with the same schedule steps as far.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import probes
from lopt.chain import build_chain
from probes import battery
from probes.bias import BELOW, POINTS
from probes.faithfulness_words import faithfulness_sentence, steady_sentence
from probes.steady_update import TOLERANCE, compare_steady_update
from probes.to_chain import chain_from_analysis

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
    # 2.0 and -3.0 sit where the chain steps 2× and 3× as far; 0.5 is matched, 1e-4 outside the
    # range; 1.01·LO goes to the range's first grid point (matched), not to one below it
    assert su["outside_share"] == pytest.approx(2 / 3) and su["compared_share"] == 1.0
    edge = compare_steady_update(TX, optax.sgd(2 * LR, momentum=BETA), clipped, STEPS, [1.01 * LO])
    assert edge["outside_share"] == 1.0  # twice as far everywhere: off wherever it sits
    text = steady_sentence(su)
    assert text == (
        "under a constant gradient the chain's steady step is 1 to 10 times the optimizer's "
        f"over the training range (10× at g = {su['worst_gradient']:.3g}; 67% of the training "
        "gradient entries compared (100% of those in the training range) fall where it is off "
        "by more than a factor 1.25)"
    ).replace("= -", "= −")


def test_a_chain_stepping_the_other_way_or_not_at_all_is_the_farthest_off(clipped):
    su = compare_steady_update(TX, optax.sgd(-LR, momentum=BETA), clipped, STEPS)
    assert su["ratio_range"] == pytest.approx([-HI / CLIP, -1.0], rel=1e-4)
    # among wrong-sign ratios the farthest from 1 in log: -10 at |g| = 10
    assert su["worst_ratio"] == pytest.approx(-HI / CLIP, rel=1e-4) and su["within"] == 0.0
    assert su["outside_share"] is None and su["not_finite"] == []
    assert "steady step is −10 to −1 times" in steady_sentence(su)
    assert "it steps the other way at g = " in steady_sentence(su)
    # a chain whose update is not finite above |g| = 1 is off there, not skipped
    wild = optax.chain(
        optax.stateless(lambda u, p: jax.tree.map(lambda x: jnp.where(abs(x) > 1, jnp.nan, x), u)),
        optax.sgd(LR, momentum=BETA),
    )
    bad = compare_steady_update(TX, wild, clipped, STEPS, [0.5, 2.0])
    g = np.asarray(clipped["bias"]["gradients"])
    assert bad["not_finite"] == [float(x) for x in g[np.abs(g) > 1]]
    assert abs(bad["worst_gradient"]) > 1 and bad["worst_ratio"] is None
    assert bad["ratio_range"] == pytest.approx([1.0, 1.0], rel=1e-5)
    inside = g[np.abs(g) >= LO * (1 - 1e-6)]
    assert bad["within"] == pytest.approx(np.mean(np.abs(inside) <= 1))
    assert bad["outside_share"] == 0.5 and bad["compared_share"] == 1.0
    n = int(np.sum(np.abs(g) > 1))
    assert steady_sentence(bad).startswith(
        f"under a constant gradient the chain's update is not finite at {n} of the gradients "
        "compared"
    )


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
    # a schedule read over 30 steps only (the rest not finite) is compared at its end
    window = {**clipped, "schedule": {"detected": True, "effective_lr": [LR] * 30 + [None] * 9}}
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


def test_the_report_draws_both_updates_and_their_ratio(tmp_path, clipped):
    su = compare_steady_update(TX, optax.sgd(LR, momentum=BETA), clipped, STEPS)
    a = probes.analyze_optax(TX).to_json()
    a["faithfulness"] = {
        "chain": [],
        "update_error": 0.1,
        "update_error_range": [0.0, 0.2],
        "residual": {},
        "loss_learned": 0.1,
        "loss_chain": 0.1,
        "curve_error": 0.0,
        "num_problems": 1,
        "num_steps": STEPS,
        "steady_update": su,
    }
    report = probes.write_report(a, tmp_path)
    entry = [f for f in report["figures"] if f["file"] == "figures/chain_steady_update.png"]
    assert len(entry) == 1 and f"the task's {STEPS} steps" in entry[0]["caption"]
    assert (tmp_path / "figures" / "chain_steady_update.png").exists()
    assert report["faithfulness"]["steady_update"]["worst_ratio"] == su["worst_ratio"]
    assert any("steady step is 1 to 10 times" in s for s in report["summary"])


def test_a_biased_optimizer_is_compared_around_its_rest_point():
    # momentum on g − 0.05: U(g) ∝ (g − 0.05) vanishes at g₀ = 0.05; the chain reads the offset
    # and steps as far at every gradient where the optimizer's update is resolved
    case = battery.drifting("offset_momentum", lr=0.02, beta=0.95, stall=0.05, shift="gradient")
    tx = case.optax()
    a = probes.analyze_optax(tx).to_json()
    chain, _ = chain_from_analysis(a)
    su = compare_steady_update(tx, build_chain(chain), a, STEPS)
    g, u = np.asarray(su["gradients"]), np.asarray(su["optimizer"], np.float64)
    np.testing.assert_allclose(u, -0.02 * (g - 0.05) / (1 - 0.95), rtol=1e-3, atol=1e-6)
    assert su["ratio_range"] == pytest.approx([1.0, 1.0], abs=1e-4) and su["within"] == 1.0
    # the grid points within |g₀| of g₀ carry no ratio; every other one in the range does
    near = np.abs(g - 0.05) < 0.05
    inside = np.abs(g) >= su["training_range"][0] * (1 - 1e-6)
    assert near.any() and all(su["ratio"][i] is None for i in np.flatnonzero(near))
    assert all(su["ratio"][i] is not None for i in np.flatnonzero(inside & ~near))
    # training gradients at g₀ go to a point that is not compared: left out of the share
    shares = compare_steady_update(tx, build_chain(chain), a, STEPS, [0.05, 0.05, 5.0, -5.0])
    assert shares["compared_share"] == 0.5 and shares["outside_share"] == 0.0
