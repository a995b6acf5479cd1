"""The sign-agreement reading (probes.agreement) against closed forms."""

import math
import warnings

import numpy as np
import optax
import pytest

from lopt.chain import damp_oscillations
from probes import agreement, words
from probes.analysis_result import Analysis
from probes.battery_optimizers import delta_bar_delta
from probes.black_box import first_response, scalar_updates


def _read(tx, lo=0.1, hi=10.0, g0=0.0):
    return agreement.probe_agreement(scalar_updates(tx), lo, hi, g0)


@pytest.mark.parametrize("eta_minus,eta_plus", [(0.5, 1.2), (0.3, 1.5)])
def test_rprop_switches_where_its_log_step_stops_drifting(eta_minus, eta_plus):
    lr = 1e-3
    a = _read(optax.rprop(lr, eta_minus=eta_minus, eta_plus=eta_plus))
    assert a.detected
    p_star = math.log(eta_plus) / (math.log(eta_plus) - math.log(eta_minus))
    assert abs(a.switch_rate - p_star) < 0.03
    # a constant sign drives the step to its cap, a flip every step to its floor
    np.testing.assert_allclose(a.ratios[0], 50.0 / lr, rtol=1e-4)
    np.testing.assert_allclose(a.ratios[-1], 1e-6 / lr, rtol=1e-3)


def test_delta_bar_delta_switches_at_up_over_up_plus_down():
    a = _read(delta_bar_delta(0.05, 0.05, 0.1, 1e-2, 1e2))
    assert a.detected and abs(a.switch_rate - 1 / 3) < 0.03
    b = _read(delta_bar_delta(0.05, 0.1, 0.05, 1e-2, 1e2))
    assert b.detected and abs(b.switch_rate - 2 / 3) < 0.03


@pytest.mark.parametrize(
    "tx",
    [
        optax.sgd(0.1, momentum=0.9),
        optax.sgd(optax.cosine_decay_schedule(0.1, 150)),  # the schedule is divided out
        optax.chain(optax.clip(0.5), optax.sgd(0.1)),
        # a fresh step of 0: the reference is the step after the rest history instead
        optax.sgd(optax.linear_schedule(0.0, 0.1, 50)),
    ],
    ids=["momentum", "cosine", "clip", "warmup_from_zero"],
)
def test_linear_and_memoryless_optimizers_read_one(tx):
    a = _read(tx)
    assert not a.detected and math.isnan(a.switch_rate)
    np.testing.assert_allclose(a.agreeing_by_amplitude, 1.0, rtol=1e-3)
    np.testing.assert_allclose(a.disagreeing_by_amplitude, 1.0, rtol=1e-3)


def test_centred_rmsprop_cuts_flips_to_its_fresh_spread():
    rho = 0.9
    a = _read(optax.rmsprop(0.01, decay=rho, centered=True), lo=1.0, hi=1.0)
    assert a.detected and a.agreeing > 10
    # fresh: spread ρ(1-ρ)g²; after alternating signs: g²
    np.testing.assert_allclose(a.ratios[-1], math.sqrt(rho * (1 - rho)), rtol=0.03)


@pytest.mark.parametrize(
    "tx",
    [
        optax.chain(damp_oscillations(0.3), optax.sgd(0.1, momentum=0.9)),
        optax.lion(1e-4),
        optax.adam(1e-3),
        optax.sign_sgd(0.01),
    ],
    ids=["damp_oscillations", "lion", "adam", "sign_sgd"],
)
def test_no_agreement_where_the_step_never_grows_past_a_fresh_one(tx):
    a = _read(tx)
    assert not a.detected
    assert np.all(a.agreeing_by_amplitude <= 1.0 + 1e-3)


def test_the_rest_gradient_centres_the_histories():
    g0 = 0.3
    shifted = optax.chain(
        optax.stateless(lambda u, p: optax.tree.add_scale(u, -1.0, g0)), optax.rprop(1e-3)
    )
    a = _read(shifted, g0=g0)
    assert a.detected and abs(a.switch_rate - _read(optax.rprop(1e-3)).switch_rate) < 1e-6


def test_switch_rate_interpolates_the_log_crossing():
    rates = np.linspace(0, 1, 11)
    ratios = np.exp(-10 * (rates - 0.37))
    assert abs(agreement.switch_rate(rates, ratios) - 0.37) < 1e-9
    assert math.isnan(agreement.switch_rate(rates, np.full(11, 0.5)))  # never above 1
    assert math.isnan(agreement.switch_rate(rates, np.full(11, 2.0)))  # never falls below 1


def test_sign_sequences_flip_at_their_rate_and_start_both_ways():
    s = agreement.sign_sequences(0.3, 400, 200, seed=1)
    assert s.shape == (400, 200) and set(np.unique(s)) == {-1.0, 1.0}
    flips = np.mean(s[:, 1:] != s[:, :-1])
    assert abs(flips - 0.3) < 0.01
    np.testing.assert_array_equal(s[200:], -s[:200])


def test_reading_survives_json():
    import probes

    a = probes.analyze_optax(optax.rprop(1e-3))
    j = a.to_json()
    assert j["agreement"]["detected"] and abs(j["agreement"]["switch_rate"] - 0.21) < 0.03
    assert Analysis.from_json(j).to_json() == j
    line = words.describe(j)[-1]
    assert line.startswith("sign agreement: detected") and "switch at flip rate 0.2" in line
    phrase = words.agreement_phrase(j["agreement"])
    assert "about 0.2" in phrase and "unexplained" in phrase
    quiet = probes.analyze_optax(optax.sgd(0.1)).to_json()
    assert words.agreement_phrase(quiet["agreement"]).startswith("Sign agreement: not detected")


def test_a_step_that_blows_up_is_not_read_as_agreement():
    # the log step grows by 10 per agreeing step without a ceiling: inf within 10 steps
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = _read(delta_bar_delta(0.1, 10.0, 10.0, 1e-30, np.inf))
    assert not a.detected and np.all(np.isnan(a.agreeing_by_amplitude))


def test_first_response_takes_a_later_step_before_a_later_lag():
    def fn(respond):
        return lambda g, t, lag: np.asarray(g, float) * ((t, lag) in respond)

    probe = [-1.0, 1.0]
    assert first_response(fn({(0, 0)}), probe, 5) == (0, 0)
    # a warm-up from 0 (momentum carries step 0's gradient into step 1): step 1, same step
    assert first_response(fn({(1, 0), (0, 1), (1, 1)}), probe, 5) == (1, 0)
    # Rprop: no step's own update moves; the next one does
    assert first_response(fn({(0, 1), (1, 1)}), probe, 5) == (0, 1)
    assert first_response(fn({(3, 1)}), probe, 5) == (3, 1)
    assert first_response(fn(set()), probe, 5) == (0, 0)
