"""The damping sentence states the rule's own measure and caps the build-up at the probe."""

import pytest

from probes.words import buildup_steps, damping_dip, damping_phrase


def _not_detected():
    # As on a learned optimizer past a fold: R halves because the persistent (DC) gain doubles,
    # while the sign-flipping gain N stays at its small-gradient value.
    return {
        "detected": False,
        "kappa": None,
        "min_ratio": 0.78,
        "amplitudes": [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0],
        "dc_gain": [24.0, 24.0, 24.0, 48.0, 30.0, 1.0],
        "nyquist_gain": [2.0, 2.0, 2.0, 1.96, 1.6, 0.1],
        "ratio": [1.0, 1.0, 1.0, 0.49, 0.64, 1.2],
        "gradient_range": [1e-3, 2.0],
        "gradient_range_source": "training |g| percentiles 1%-99.9%",
    }


def test_dip_of_r_is_traced_to_the_persistent_gain():
    dip = damping_dip(_not_detected())
    assert dip["ratio"] == 0.49 and dip["amplitude"] == 0.1
    assert dip["dc"] == pytest.approx(2.0) and dip["nyquist"] == pytest.approx(0.98)
    # The gains are relative to the detector's reference: the median over the (up to three)
    # smallest amplitudes below the range, not the smallest one alone (here read 10% high).
    d = {
        **_not_detected(),
        "gradient_range": [0.05, 2.0],
        "nyquist_gain": [2.2, 2.0, 2.0, 1.96, 1.6, 0.1],
    }
    assert damping_dip(d)["nyquist"] == pytest.approx(0.98) and damping_dip(d)["dc"] == 2.0
    # Outside the gradient range the dip is not the rule's concern.
    d = {**_not_detected(), "gradient_range": [1e-3, 0.05]}
    assert damping_dip(d)["ratio"] == 1.0


def test_not_detected_sentence_names_max_r_n_and_the_dip():
    text = damping_phrase(_not_detected())
    assert "max(R, N)" in text and "78%" in text and "49%" in text
    flat = {**_not_detected(), "ratio": [1.0] * 6, "dc_gain": [24.0] * 6}
    assert "49%" not in damping_phrase(flat)


@pytest.mark.parametrize(
    ("rho", "horizon", "expected"),
    [(0.9, 200, (10.0, False)), (0.999, 200, (200.0, True)), (0.999, None, (1000.0, False))],
)
def test_buildup_is_capped_at_the_probe_horizon(rho, horizon, expected):
    steps, beyond = buildup_steps(rho, horizon)
    assert (steps, beyond) == (pytest.approx(expected[0]), expected[1])


def test_detected_sentence_never_claims_a_buildup_beyond_the_probe():
    d = {"detected": True, "kappa": 0.1, "min_ratio": 0.2, "memory": 0.999, "buildup": [1.0] * 50}
    text = damping_phrase(d)
    assert "1000" not in text and "50-step probe" in text
