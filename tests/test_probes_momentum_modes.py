"""Momentum spread over several eigenmodes, with cancelling α_i, is still found (issue 5).

A linear cell ``h' = A h + b g``, ``U = w·h'`` with chosen eigenvalues ``λ_i`` and per-mode
learning rates ``α_i``: its impulse response is ``-Σ α_i λ_iᵏ``. Heavy-ball momentum
``(α, β) = (0.1, 0.9)`` is split over three close modes (none with half of ``Σ|α|``) next to a
near-degenerate pair at ``λ ≈ 0.5`` with ``α = ±2`` that almost cancels in the response, the
pattern of a trained GRU. The largest ``|α_i|`` is the distractor; the response is momentum.
"""

import jax.numpy as jnp
import numpy as np
import pytest

import probes
from lopt.cell import make_cell
from probes import detectors
from probes.linearize import impulse_response, predicted_steady_response


def _init(p):
    return jnp.zeros(p["A"].shape[0], jnp.float32)


def _step(p, h, g):
    return p["A"] @ h + p["b"] * g


def _readout(p, h):
    return p["w"] @ h


def _linear_cell(lams, alphas, seed=0):
    lams = np.asarray(lams, np.float64)
    n = lams.size
    V = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))[0] + 0.3 * np.eye(n)
    A = V @ np.diag(lams) @ np.linalg.inv(V)
    b = V @ np.ones(n)  # l_i·b = 1
    w = -np.linalg.inv(V).T @ np.asarray(alphas, np.float64)  # w·r_i = -α_i
    p = {k: jnp.asarray(v, jnp.float32) for k, v in dict(A=A, b=b, w=w).items()}
    return make_cell(p, _init, _step, _readout)


CASES = {
    "split": ([0.899, 0.9, 0.901, 0.2], [0.04, 0.03, 0.03, 0.005]),
    "split+cancelling": (
        [0.899, 0.9, 0.901, 0.5, 0.5005, 0.2],
        [0.04, 0.03, 0.03, 2.0, -2.0, 0.005],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_momentum_spread_over_modes_is_detected(case):
    lams, alphas = CASES[case]
    cell = _linear_cell(lams, alphas)
    h = jnp.zeros(len(lams))
    lin = probes.linearize(cell, h)
    # the raw modes miss the momentum: share below MIN_SHARE, or the λ = 0.5 distractor
    raw = detectors.detect_momentum(
        np.asarray(lin.eigenvalues), np.asarray(lin.alpha), point_kind="fixed"
    )
    assert not (raw.detected and abs(raw.beta - 0.9) <= 0.01)
    # the linearised impulse response is exact and sums to the steady response
    r = impulse_response(lin, 400)
    k = np.arange(5)
    np.testing.assert_allclose(
        r[:5], -np.sum(np.asarray(alphas)[None] * np.asarray(lams)[None] ** k[:, None], 1), 1e-4
    )
    np.testing.assert_allclose(r.sum(), float(predicted_steady_response(lin)), rtol=1e-4)

    a = probes.analyze_cell(cell)
    assert a.momentum.point_kind == "fixed" and a.momentum.detected and a.momentum.is_real
    assert abs(a.momentum.beta - 0.9) <= 0.01
    assert abs(a.momentum.alpha - 0.1) <= 0.02 * 0.1
    assert a.momentum.eigenvalues.shape == (len(lams),)  # raw spectrum kept as evidence
    assert a.momentum.impulse_response.size > 0
    assert not (a.clipping.detected or a.schedule.detected or a.adaptation.detected)


def _pair_response(r, theta, alpha, phi=0.0, n=200):
    """Impulse response of a complex pair ``r e^{±iθ}`` with lag-0 weight ``α`` (phase φ)."""
    k = np.arange(n)
    return -alpha * r**k * np.cos(k * theta + phi) / np.cos(phi)


@pytest.mark.parametrize(
    "r, theta, phi, detected",
    [
        (0.70, 0.11, 0.0, True),  # first sign change at lag 15, envelope 0.5%: monotone
        (0.90, 0.04, 0.0, True),  # lag 40, 1.5%
        (0.90, 0.50, 0.0, False),  # lag 4, 66%: a visibly ringing response is not momentum
        (0.70, 0.40, 0.0, False),  # lag 4, 24%
        (0.70, 0.11, 1.2, False),  # the same pair as the first with a phase: lag 4, 24%
    ],
)
def test_near_real_complex_pair_counts_as_momentum(r, theta, phi, detected):
    m = detectors.detect_momentum(
        np.zeros(1), np.zeros(1), point_kind="fixed", response=_pair_response(r, theta, 2.0, phi)
    )
    assert not m.is_real
    np.testing.assert_allclose(m.phase, theta * -1.0 / np.log(r), rtol=1e-3)
    first = int(np.ceil((np.pi / 2 - phi) / theta))  # first k with cos(kθ + φ) < 0
    np.testing.assert_allclose(m.sign_change_level, r**first, rtol=1e-3)
    assert m.detected is detected
    np.testing.assert_allclose(m.beta, r, rtol=1e-4)
    np.testing.assert_allclose(m.alpha, 2.0, rtol=1e-3)


def test_real_mode_has_zero_phase():
    m = detectors.detect_momentum(
        np.zeros(1), np.zeros(1), point_kind="fixed", response=-0.1 * 0.9 ** np.arange(200)
    )
    assert m.is_real and m.phase == 0.0 and m.sign_change_level == 0.0 and m.detected
