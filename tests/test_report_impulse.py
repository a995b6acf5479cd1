"""The impulse-response fit against the measured response (``probes.report.impulse``)."""

import numpy as np
import pytest

from probes.report.impulse import (
    fit_agreement_lag,
    fit_curve,
    impulse_caption,
    impulse_fit,
    tail_decay,
)


def test_fit_agreement_lag_on_known_pairs():
    k = np.arange(60)
    measured = 0.9**k
    # relative error 0.011·k: first above 10% at k = 10 (9.09 rounds up)
    assert fit_agreement_lag(measured, measured * (1 + 0.011 * k)) == 10
    assert fit_agreement_lag(measured, measured * 1.05) is None
    # one bad lag among good ones
    fitted = measured.copy()
    fitted[7] *= 1.2
    assert fit_agreement_lag(measured, fitted) == 7
    # lags below 1% of the peak are not judged: 0.9^k < 0.01 from k = 44
    far = measured.copy()
    far[44:] = 0.0
    assert fit_agreement_lag(measured, far) is None
    far[43] = 0.0
    assert fit_agreement_lag(measured, far) == 43
    # signs: a fit of the wrong sign is off at once
    assert fit_agreement_lag(-measured, measured) == 0


def test_tail_decay_reads_the_slowest_component():
    k = np.arange(200)
    r = -(2.0 * 0.5**k + 0.01 * 0.97**k)
    assert tail_decay(r) == pytest.approx(0.97, abs=1e-6)
    assert tail_decay([1.0, 0.5]) is None


def test_three_exponentials_fitted_by_two_modes():
    # measured: three modes; fit: the two fast ones exactly, plus an instantaneous term 0
    k = np.arange(200)
    modes = [(1.0, 0.6), (0.3, 0.9), (0.02, 0.98)]
    r = -sum(a * lam**k for a, lam in modes)
    fa, fe = [[0.0, 0.0], [1.0, 0.0], [0.3, 0.0]], [[0.0, 0.0], [0.6, 0.0], [0.9, 0.0]]
    fitted = fit_curve(fa, fe, k.size)
    assert fitted == pytest.approx(-(1.0 * 0.6**k + 0.3 * 0.9**k))
    share = 3.0 / 5.5  # G = α/(1−λ): 1/0.4 = 2.5 and 0.3/0.1 = 3
    m = {"impulse_response": list(r), "fit_alphas": fa, "fit_eigenvalues": fe, "share": share}
    fit = impulse_fit(m)
    assert fit["fitted_steady"] == pytest.approx(5.5)
    measured = 5.5 + (1 - 0.98**200)  # 0.02·Σ 0.98^k over 200 lags
    assert fit["measured_steady"] == pytest.approx(measured)
    assert fit["dominant_gain"] == pytest.approx(3.0)
    assert fit["share_fitted"] == pytest.approx(share)
    assert fit["share_measured"] == pytest.approx(3.0 / measured)
    # the first lag where the missing mode is over 10% of the response, above 1% of the peak
    rel = 0.02 * 0.98**k / np.abs(r)
    expected = int(np.nonzero((rel > 0.1) & (np.abs(r) > 0.01 * np.abs(r).max()))[0][0])
    assert expected == 8 and fit["fit_lag"] == 8  # 0.0170 / 0.163 = 10.4% (lag 7: 9.2%)
    assert fit["tail_decay"] == pytest.approx(0.98, abs=1e-4)
    assert fit["slowest_fitted"] == pytest.approx(0.9) and fit["tail_differs"]


def test_a_fit_that_holds_everywhere():
    k = np.arange(100)
    m = {
        "impulse_response": list(-0.1 * 0.8**k),
        "fit_alphas": [[0.1, 0.0]],
        "fit_eigenvalues": [[0.8, 0.0]],
        "share": 1.0,
    }
    fit = impulse_fit(m)
    assert fit["fit_lag"] is None and not fit["tail_differs"]
    assert fit["share_measured"] == pytest.approx(1.0)
    # no fitted modes: nothing judged, nothing claimed
    none = impulse_fit({"impulse_response": [-1.0, -0.5]})
    assert none["fit_judged"] is False and none["share_measured"] is None


def test_a_fit_off_from_lag_0_is_worded_so():
    k = np.arange(20)
    m = {
        "impulse_response": list(-(0.5**k)),
        "fit_alphas": [[-1.0, 0.0]],  # the wrong sign: off at lag 0
        "fit_eigenvalues": [[0.5, 0.0]],
        "share": 1.0,
    }
    fit = impulse_fit(m)
    assert fit["fit_lag"] == 0 and not fit["sign_like"]
    text = impulse_caption(fit)
    assert "from lag 0" in text and "lag -1" not in text
