"""The report's learning rates, reconciled (``probes.report.rates``), on heavy ball.

Heavy ball ``m' = βm + g``, ``Δx = −α m'`` has one gain per unit gradient at every place the
report measures one: ``α_eff(h0) = α_eff(h*) = Σα_i = α`` and steady gain ``α/(1−β)``.
"""

import math

import optax
import pytest

import lopt
import probes
from probes.report.rates import lr_reconciliation

LR, BETA = 0.1, 0.9


@pytest.fixture(scope="module")
def heavy_ball_cell():
    return probes.analyze_cell(lopt.hand_designed.momentum(LR, BETA), gradient_scale=1.0).to_json()


def _eval(lr, beta):
    block = {
        "optimizers": {
            "learned": {"metric": 0.1, "hyperparams": {}},
            "momentum": {"metric": 0.1, "hyperparams": {"learning_rate": lr, "momentum": beta}},
            "adam": {"metric": 0.1, "hyperparams": {"learning_rate": 0.3, "b1": 0.9}},
        }
    }
    return {"schema": "lopt.eval/1", "horizon": 10, "horizons": {"10": block, "20": block}}


def _distill(lr, decay, first):
    return {
        "chain": [
            {"transform": "soft_clip", "scale": 1.0},
            {"transform": "momentum_modes", "decays": [0.0, decay], "weights": [0.25, 0.75]},
            {
                "transform": "scale_by_learning_rate",
                "learning_rate": lr,
                "schedule": {"steps": [0, 10], "values": [first, 1.0], "tail_ratio": 0.0},
            },
        ]
    }


def _rel(rec, key):
    return next(r for r in rec["relations"] if r["key"] == key)


def test_heavy_ball_cell_every_gain_is_lr_and_steady_gain_is_lr_over_one_minus_beta(
    heavy_ball_cell,
):
    rec = lr_reconciliation(heavy_ball_cell, _eval(LR, BETA), _distill(LR, BETA, 2.0))
    v = {k: x["value"] for k, x in rec["values"].items()}
    for key in ("alpha_eff_h0", "clip_slope0", "schedule_first", "schedule_last"):
        assert v[key] == pytest.approx(LR, rel=1e-4), key
    for key in ("alpha_eff_star", "sum_alpha", "dominant_alpha", "tuned_momentum_lr"):
        assert v[key] == pytest.approx(LR, rel=1e-4), key
    steady = LR / (1 - BETA)
    for key in ("steady_gain", "measured_steady", "dominant_steady", "tuned_momentum_steady"):
        assert v[key] == pytest.approx(steady, rel=1e-4), key
    assert v["tuned_adam_lr"] == 0.3 and v["tuned_rmsprop_lr"] is None
    # the chain: lr × multiplier × Σw at step 0 and at the last knot; Σ w/(1−λ) in the steady gain
    assert v["chain_first"] == pytest.approx(2 * LR)
    assert v["chain_last"] == pytest.approx(LR)
    assert v["chain_steady"] == pytest.approx(LR * (0.25 + 0.75 / (1 - BETA)))
    for key in ("h0_clip", "h0_schedule", "star_sum", "star_schedule", "steady_measured"):
        assert _rel(rec, key)["holds"] is True, key
    assert _rel(rec, "steady_tuned")["holds"] is True
    assert _rel(rec, "steady_tuned")["ratio"] == pytest.approx(1.0, rel=1e-4)
    # an identity that fails is reported as such, with both numbers
    bad = _rel(rec, "h0_chain")
    assert bad["holds"] is False and bad["ratio"] == pytest.approx(0.5, rel=1e-4)
    assert bad["left_value"] == pytest.approx(LR) and bad["right_value"] == pytest.approx(2 * LR)


def test_the_fair_comparison_with_tuned_momentum_is_the_steady_gain(heavy_ball_cell):
    # same lag-0 gain (0.1), different β: the steady gains differ by (1−0.5)/(1−0.9) = 5
    rec = lr_reconciliation(heavy_ball_cell, _eval(LR, 0.5))
    assert _rel(rec, "star_tuned")["holds"] is True
    steady = _rel(rec, "steady_tuned")
    assert steady["holds"] is False and steady["ratio"] == pytest.approx(5.0, rel=1e-4)
    assert rec["values"]["tuned_momentum_steady"]["value"] == pytest.approx(0.2)
    # without eval.json or distill.json their rows are missing, not guessed
    bare = lr_reconciliation(heavy_ball_cell)
    assert bare["values"]["tuned_momentum_lr"]["value"] is None
    assert bare["values"]["chain_first"]["value"] is None
    assert _rel(bare, "steady_tuned")["holds"] is None


def test_black_box_heavy_ball_and_the_report_page(tmp_path):
    a = probes.analyze_optax(optax.sgd(LR, momentum=BETA)).to_json()
    rec = lr_reconciliation(a, _eval(LR, BETA))
    v = {k: x["value"] for k, x in rec["values"].items()}
    assert v["alpha_eff_h0"] is None  # a black box does not record it: not claimed
    assert _rel(rec, "h0_clip")["holds"] is None
    assert v["clip_slope0"] == pytest.approx(LR, rel=1e-4)
    assert v["alpha_eff_star"] == pytest.approx(LR, rel=1e-4)
    assert v["steady_gain"] == pytest.approx(LR / (1 - BETA), rel=1e-4)
    assert _rel(rec, "clip_schedule")["holds"] and _rel(rec, "steady_tuned")["holds"]

    report = probes.write_report(a, tmp_path, evaluation=_eval(LR, BETA))
    assert "learning_rates" not in report["mechanisms"]
    got = report["learning_rates"]["values"]["steady_gain"]["value"]
    assert math.isclose(got, LR / (1 - BETA), rel_tol=1e-4)
    page = (tmp_path / "index.html").read_text()
    assert 'id="learning_rates"' in page
    nums = report["mechanisms"]["momentum"]["numbers"]
    assert nums["share_measured"]["value"] == pytest.approx(1.0, rel=1e-3)
    # the fit holds at every lag: the last one recorded
    lags = len(a["momentum"]["impulse_response"] or a["meta"]["impulse_response"])
    assert lags > 100 and nums["fit_lag"]["value"] == lags - 1


def test_a_sign_like_update_gets_no_gains_and_no_impulse_fit(tmp_path):
    # Lion's update is lr·sign(·): its slopes are 0 and its "response" is flip counts, so no
    # gain per unit gradient, steady response or fit may be derived from them
    a = probes.analyze_optax(optax.lion(LR, b1=0.9, b2=0.99)).to_json()
    assert a["momentum"]["point_kind"] == "sign flips"
    rec = lr_reconciliation(a)
    assert rec["sign_like"]
    assert all(x["value"] is None for x in rec["values"].values())
    assert all(r["holds"] is None for r in rec["relations"])

    # the white box records α_eff(h0) too: a sign's slope, 0, not a gain to compare
    from probes.battery import optax_cell

    white = probes.analyze_cell(optax_cell(optax.sign_sgd(LR))).to_json()
    assert white["meta"]["alpha_eff_h0"] == 0.0
    assert all(x["value"] is None for x in lr_reconciliation(white)["values"].values())

    report = probes.write_report(a, tmp_path)
    nums = report["mechanisms"]["momentum"]["numbers"]
    for key in ("share_measured", "measured_steady", "fit_lag", "tail_decay"):
        assert key not in nums
    counts = nums["flip_counts"]["value"]
    assert counts == a["momentum"]["impulse_response"] and max(counts) > 1
    files = [f["file"] for f in report["figures"]]
    assert "figures/momentum_impulse_response.png" not in files
    assert "figures/momentum_alpha_beta.png" in files  # the other figures are still drawn
    assert report["learning_rates"]["sign_like"]
    assert "update is sign-like" in (tmp_path / "index.html").read_text()
