"""The bias probe (probes.bias), its chain entry (lopt.chain.offset_gradient) and its words.

Known answers: an optax optimizer's update at g = 0 is exactly 0 (no bias); sgd(lr, β) with a
constant d added to every update comes to rest at g₀ = d(1 − β)/lr; a clip at c caps its steady
update at lr·c/(1 − β), so a larger d leaves no zero at all.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
import probes
from probes.analysis_result import Analysis
from probes.bias import SHARE, probe_bias
from probes.black_box import _run_for
from probes.to_chain import chain_from_analysis
from probes.words import bias_phrase, describe, headline_sentences


def _drift(d, lr=0.1, beta=0.9, clip=None):
    add = optax.stateless(lambda u, p: jax.tree.map(lambda x: x + d, u))
    clipper = [optax.clip(clip)] if clip else []
    return optax.chain(*clipper, optax.sgd(lr, momentum=beta), add)


def test_no_optax_optimizer_moves_at_zero_gradient():
    for tx in (optax.sgd(0.1, momentum=0.9), optax.adam(1e-3), optax.lion(1e-4)):
        b = probe_bias(_run_for(tx), 1e-2, 10.0, 500)
        assert b.update_at_zero == 0.0 and not b.detected and np.isnan(b.stall_gradient)
    line = next(
        x for x in describe(probes.analyze_optax(optax.sgd(0.1)).to_json()) if x.startswith("bias:")
    )
    assert line == (
        "bias: not detected (update 0 after 2000 steps of g = 0, largest steady update 1; "
        "within rounding of 0)"
    )


def test_the_zero_nearest_0_is_found_on_either_side_past_nan_points():
    # Stateless "optimizers" (run: gradients -> updates, each update a map of its gradient).
    # U = 0.01 - g: one zero, at g = 0.01 (U > 0 for every g < 0), with NaN just before it
    def right(gs):
        return jnp.where((gs > 0.0069) & (gs < 0.0095), jnp.nan, 0.01 - gs)

    b = probe_bias(right, 1e-2, 10.0, 3, cached=False)
    assert b.detected and b.stall_gradient == pytest.approx(0.01, rel=1e-4)

    # zeros on both sides, the negative one nearer: U = 0.01 - g for g ≥ 0, 0.01 + 4g for g < 0
    def both(gs):
        return jnp.where(gs >= 0, 0.01 - gs, 0.01 + 4.0 * gs)

    b = probe_bias(both, 1e-2, 10.0, 3, cached=False)
    assert b.stall_gradient == pytest.approx(-0.0025, rel=1e-4)


def test_a_drift_comes_to_rest_at_its_closed_form_gradient():
    d, lr, beta = 2e-3, 0.1, 0.9
    b = probe_bias(_run_for(_drift(d, lr, beta)), 1e-2, 10.0, 2000)
    assert b.detected and b.update_at_zero == pytest.approx(d, rel=1e-5)
    assert b.stall_gradient == pytest.approx(d * (1 - beta) / lr, rel=1e-4)
    assert abs(b.update_at_zero) / b.reference > SHARE
    # the grid reaches two decades below the range, and U falls through 0 at g0
    g, u = b.gradients, b.updates
    assert g[0] == pytest.approx(-10.0) and np.min(np.abs(g[g != 0])) == pytest.approx(1e-4)
    assert np.all(np.diff(g) > 0) and np.all(np.diff(u) < 0)


def test_a_rest_point_closer_to_0_than_the_grid_resolves_is_no_bias():
    # a steep update through 0 (gain 1e5), clipped to ±1, plus 1e-3: U(0) is 0.1% of the
    # largest update, but U vanishes at g0 = 1e-3 / 1e5 = 1e-8, far below the grid's smallest
    # magnitude (1e-4): a minimum to the probe
    add = optax.stateless(lambda u, p: jax.tree.map(lambda x: x + 1e-3, u))
    tx = optax.chain(optax.sgd(1e4, momentum=0.9), optax.clip(1.0), add)
    b = probe_bias(_run_for(tx), 1e-2, 10.0, 2000)
    assert b.update_at_zero == pytest.approx(1e-3, rel=1e-3) and not b.detected
    assert abs(b.stall_gradient) < 1e-4
    lines = describe({**probes.analyze_optax(optax.sgd(0.1)).to_json(), "bias": b.to_json()})
    line = next(x for x in lines if x.startswith("bias:"))
    assert line.startswith("bias: not detected") and "closer to 0 than the probe" in line


def test_stall_share_and_the_last_steps_gradient_come_from_the_samples():
    g0 = 2e-3  # drift 2e-3, lr 0.1, β 0.9
    samples = np.full((2, 5, 3), 0.5)
    samples[:, -1, :] = [[1e-3, -1.9e-3, 2.1e-3], [1.8e-3, 3.0, -2.2e-3]]
    b = probe_bias(_run_for(_drift(2e-3)), 1e-2, 10.0, 2000, samples)
    assert b.stall_gradient == pytest.approx(g0, rel=1e-4)
    assert b.stall_percentile == pytest.approx(100 * 3 / 30)  # 1e-3, 1.9e-3, 1.8e-3 in size
    assert b.final_gradient == pytest.approx(np.median(samples[:, -1, :]))


def test_a_drift_larger_than_any_clipped_step_has_no_zero_and_no_chain_entry():
    # clip 0.5, lr 0.1, β 0.9: steady updates within ±0.5; a drift of 1 never cancels
    a = probes.analyze_optax(_drift(1.0, clip=0.5))
    assert a.bias.detected and np.isnan(a.bias.stall_gradient)
    chain, notes = chain_from_analysis(a.to_json())
    assert "offset_gradient" not in [e["transform"] for e in chain]
    assert notes["detected"]["bias"] and "drift" in notes["bias"]
    assert "drifts" in bias_phrase(a.to_json()["bias"])


@pytest.fixture(scope="module")
def drifting():
    """The black-box analysis of momentum with a drift: g0 = 2e-3 · 0.1 / 0.1 = 2e-3."""
    return probes.analyze_optax(_drift(2e-3))


def test_the_chain_puts_the_offset_first_and_stalls_where_the_optimizer_does(drifting):
    a = drifting.to_json()
    assert a["schema_version"] >= 7
    chain, notes = chain_from_analysis(a)
    assert notes["detected"]["bias"]
    first = chain[0]
    assert first["transform"] == "offset_gradient"
    assert first["offset"] == pytest.approx(2e-3, rel=1e-4)
    tx = lopt.build_chain(chain)
    state, p = tx.init(jnp.float32(0.0)), jnp.float32(0.0)
    for _ in range(300):
        u, state = tx.update(jnp.float32(first["offset"]), state, p)
    assert abs(float(u)) < 1e-6
    assert "lopt.chain.offset_gradient(0.002" in lopt.chain.chain_code(chain)
    # the momentum and learning rate are read as without the drift
    assert drifting.momentum.beta == pytest.approx(0.9, abs=1e-3)
    assert drifting.momentum.alpha == pytest.approx(0.1, rel=1e-3)


def test_offset_gradient_shifts_every_leaf():
    tx = lopt.chain.offset_gradient(0.25)
    g = {"a": jnp.ones(3), "b": (jnp.zeros(2, jnp.bfloat16),)}
    u, _ = tx.update(g, tx.init(g))
    np.testing.assert_allclose(u["a"], 0.75)
    assert u["b"][0].dtype == jnp.bfloat16 and float(u["b"][0][0]) == -0.25


def test_the_reading_round_trips_and_older_analyses_have_none(drifting):
    d = drifting.to_json()
    assert Analysis.from_json(d).to_json() == d
    older = {k: v for k, v in d.items() if k != "bias"}
    assert Analysis.from_json(older).bias is None
    assert "offset_gradient" not in [e["transform"] for e in chain_from_analysis(older)[0]]


def test_words_say_where_the_update_vanishes(drifting):
    d = drifting.to_json()
    sentence = bias_phrase(d["bias"])
    assert "vanishes at g ≈ 0.002" in sentence and "not at a minimum" in sentence
    assert "comes to rest only where its gradient entry is 0.002" in sentence
    assert any(line.startswith("bias: detected") for line in describe(d))
    plain = probes.analyze_optax(optax.sgd(0.1)).to_json()
    assert bias_phrase(plain["bias"]) is None
    assert any(x.startswith("bias: not detected") for x in describe(plain))


def test_the_report_has_a_bias_section_with_its_figure(tmp_path, drifting):
    report = probes.write_report(drifting, tmp_path)
    sec = report["mechanisms"]["bias"]
    assert sec["detected"]
    assert sec["numbers"]["stall_gradient"]["value"] == pytest.approx(2e-3, rel=1e-4)
    assert (tmp_path / "figures" / "bias_steady_update.png").exists()
    assert any(s.startswith("Bias:") for s in report["summary"])


def test_the_plateau_sentence_points_to_the_bias():
    rows = [
        {"name": "learned", "metric": 0.037, "final": 0.022},
        {"name": "momentum", "metric": 0.050, "final": 3e-7},
    ]
    res = {"horizons": [{"multiple": 1, "steps": 201, "rows": rows, "best_baseline": "momentum"}]}
    bias = {"detected": True, "stall_gradient": -0.0077}
    plain = headline_sentences(res)
    pointed = headline_sentences(res, bias)
    assert plain[1].startswith("It plateaus") and "Bias" not in plain[1]
    assert "vanishes at a gradient entry of -0.0077, not 0: see Bias)." in pointed[1]
    assert headline_sentences(res, {**bias, "detected": False}) == plain


def test_the_offset_keeps_the_chains_learning_rate_reconciled():
    from probes.report.rates import _chain_numbers

    chain = [
        {"transform": "trace", "decay": 0.9},
        {"transform": "scale_by_learning_rate", "learning_rate": 0.1, "schedule": None},
    ]
    plain = _chain_numbers({"chain": chain})
    biased = _chain_numbers({"chain": [{"transform": "offset_gradient", "offset": 0.01}, *chain]})
    assert plain["steady_factor"] == pytest.approx(10.0) and biased == plain
