"""experiments/damping_bands.py: the damping per period, on optimizers whose answer is known."""

import importlib.util
from pathlib import Path

import numpy as np
import optax
import pytest

import lopt

_PATH = Path(__file__).resolve().parents[1] / "experiments" / "damping_bands.py"
_SPEC = importlib.util.spec_from_file_location("damping_bands", _PATH)
db = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(db)


def test_a_linear_optimizer_keeps_every_period_whole():
    res = db.bands(db.scalar_run(optax.sgd(0.1, momentum=0.9)), 0.5, bias=0.01)
    assert sorted(res) == sorted(db.PERIODS)
    np.testing.assert_allclose([k for k, _ in res.values()], 1.0, rtol=1e-3)
    np.testing.assert_allclose([p for _, p in res.values()], 1.0, rtol=1e-3)


def test_damp_oscillations_scales_both_alike_and_the_sign_flip_by_its_closed_form():
    # settled (ρ = 0.99, 400 steps): e is the mean squared half-change, A² at period 2, so the
    # factor there is 1/(1 + A/κ) = 1/4 at A = 3κ; both columns carry the same factor at every
    # period, and it rises towards 1 as the oscillation slows
    kappa = 0.1
    tx = optax.chain(lopt.chain.damp_oscillations(kappa, 0.99), optax.sgd(0.5, momentum=0.5))
    res = db.bands(db.scalar_run(tx), 3 * kappa)
    kept = np.array([k for k, _ in res.values()])
    persistent = np.array([p for _, p in res.values()])
    assert res[2][0] == pytest.approx(0.25, rel=0.02)
    np.testing.assert_allclose(persistent, kept, rtol=0.05)
    assert np.all(np.diff(kept) > 0) and kept[-1] > 0.8


def test_random_signs_keep_a_linear_optimizer_whole_and_damp_by_the_flip_rate():
    # under ±A flipping with probability p the mean squared half-change is p·A², so a settled
    # damp_oscillations scales the sequence and a small persistent gradient beside it alike by
    # about 1/(1 + √p·A/κ) (a mean of the factor over the fluctuating energy: within 3%)
    res = db.flips(db.scalar_run(optax.sgd(0.1, momentum=0.9)), 0.5, bias=0.01)
    assert sorted(res) == sorted(db.FLIP_RATES)
    np.testing.assert_allclose(list(res.values()), 1.0, rtol=1e-4)
    kappa = 0.1
    tx = optax.chain(lopt.chain.damp_oscillations(kappa, 0.99), optax.sgd(0.5, momentum=0.5))
    res = db.flips(db.scalar_run(tx), 3 * kappa, rates=(0.0, 0.25, 1.0))
    for p, (kept, persistent) in res.items():
        assert kept == pytest.approx(1 / (1 + 3 * np.sqrt(p)), rel=0.03)
        assert persistent == pytest.approx(kept, rel=0.02)
