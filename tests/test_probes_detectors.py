"""Detectors recover known hyperparameters of hand-designed cells and optax optimizers."""

import json

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
import probes
from lopt.hand_designed import schedule_value


def _corr(a, b):
    return float(np.corrcoef(np.asarray(a, np.float64), np.asarray(b, np.float64))[0, 1])


@pytest.mark.parametrize("lr,beta", [(0.1, 0.9), (0.03, 0.5), (1.0, 0.97)])
def test_momentum_recovered_from_cell(lr, beta):
    a = probes.analyze_cell(lopt.hand_designed.momentum(lr, beta))
    assert a.momentum.detected
    assert abs(a.momentum.beta - beta) <= 0.01
    assert abs(a.momentum.alpha - lr) <= 0.02 * lr
    assert not a.clipping.detected and not a.schedule.detected and not a.adaptation.detected
    assert abs(a.adaptation.slope) <= 1e-3 and not a.adaptation.branches["pos"]["fold_indices"]
    assert not a.damping.detected and np.nanmax(np.abs(a.damping.ratio - 1)) <= 0.01
    json.dumps(a.to_json(), allow_nan=False)


def test_plain_sgd_only_has_a_learning_rate():
    a = probes.analyze_cell(lopt.hand_designed.sgd(0.3))
    assert not (a.momentum.detected or a.clipping.detected or a.schedule.detected)
    assert not a.adaptation.detected
    assert abs(a.momentum.alpha - 0.3) <= 1e-6 and a.momentum.beta == 0.0
    np.testing.assert_allclose(a.schedule.effective_lr, 0.3, rtol=1e-6)
    assert a.to_json()["schema_version"] == 13


@pytest.mark.parametrize("threshold", [0.05, 0.7, 3.0])
def test_clip_threshold_recovered(threshold):
    a = probes.analyze_cell(lopt.hand_designed.clipped_sgd(0.1, threshold))
    assert a.clipping.detected
    assert abs(a.clipping.threshold - threshold) <= 0.05 * threshold
    np.testing.assert_allclose(a.clipping.asymptote_pos, -0.1 * threshold, rtol=1e-5)
    np.testing.assert_allclose(a.clipping.asymptote_neg, 0.1 * threshold, rtol=1e-5)
    assert not a.momentum.detected and not a.adaptation.detected


@pytest.mark.parametrize(
    "warmup,decay,shape",
    [
        (1.0, 1.0, "constant"),
        (30.0, 1.0, "warm-up"),
        (1.0, 0.97, "decay"),
        (20.0, 0.98, "warm-up-then-decay"),
    ],
)
def test_schedule_shape(warmup, decay, shape):
    a = probes.analyze_cell(lopt.hand_designed.scheduled_sgd(0.1, warmup, decay))
    assert a.schedule.shape == shape and a.schedule.detected == (shape != "constant")
    p = {
        k: jnp.float32(v)
        for k, v in dict(learning_rate=0.1, warmup_steps=warmup, decay_rate=decay).items()
    }
    true = np.asarray([schedule_value(p, float(t)) for t in range(len(a.schedule.effective_lr))])
    if shape == "constant":
        np.testing.assert_allclose(a.schedule.effective_lr, true, rtol=1e-5)
    else:
        assert _corr(a.schedule.effective_lr, true) >= 0.99


@pytest.mark.parametrize(
    "cell",
    [
        lopt.hand_designed.rmsprop(0.01, 0.9),
        lopt.hand_designed.rmsprop(0.1, 0.99),
        lopt.hand_designed.adam(0.01),
    ],
)
def test_adaptation_detected_for_adaptive_cells(cell):
    a = probes.analyze_cell(cell)
    assert a.adaptation.detected
    assert -1.1 <= a.adaptation.slope <= -0.9
    # adaptation by magnitude divides both gains alike: no oscillation damping
    assert not a.damping.detected and np.nanmax(np.abs(a.damping.ratio - 1)) <= 0.02
    json.dumps(a.to_json(), allow_nan=False)


def test_rmsprop_lr_vs_magnitude_matches_closed_form():
    lr, rho = 0.01, 0.9
    a = probes.analyze_cell(lopt.hand_designed.rmsprop(lr, rho))
    m = a.adaptation.magnitudes
    expected = lr / np.sqrt(rho * m**2 + 1e-8)
    np.testing.assert_allclose(a.adaptation.lr_vs_magnitude["pos"], expected, rtol=1e-3)
    np.testing.assert_allclose(a.adaptation.lr_vs_magnitude["neg"], expected, rtol=1e-3)
    # Traced along the fixed-point branch from the convergence point (v = 0): one smooth arm each.
    for name in ("pos", "neg"):
        b = a.adaptation.branches[name]
        assert b["method"] == "continuation" and b["detected"]
        assert all(k == "fixed" for k in b["kind"]) and b["fold_indices"] == []
        assert len(b["segments"]) == 1 and b["segments"][0]["falls"]
        assert b["inputs"][0] == 0.0 and np.asarray(b["states_pc"]).shape == (len(m) + 1, 2)
    np.testing.assert_allclose(a.adaptation.gradient_range, [1e-2, 1e1], rtol=1e-6)


def test_adaptation_grid_covers_the_training_gradients():
    # With gradient samples the grid spans their |g| percentiles 1%–99.9%, and each segment
    # reports the share of training gradients it covers.
    samples = np.random.default_rng(0).lognormal(-3.0, 1.5, size=4000)
    samples *= np.sign(np.random.default_rng(1).normal(size=samples.size))
    a = probes.analyze_cell(lopt.hand_designed.rmsprop(0.01, 0.9), gradient_samples=samples)
    lo, hi = np.percentile(np.abs(samples), [1.0, 99.9])
    np.testing.assert_allclose(a.adaptation.gradient_range, [lo, hi], rtol=1e-6)
    np.testing.assert_allclose(a.adaptation.magnitudes[[0, -1]], [lo, hi], rtol=1e-5)
    assert a.adaptation.gradient_range_source.startswith("training")
    assert a.adaptation.detected
    (seg,) = a.adaptation.branches["pos"]["segments"]
    assert seg["training_fraction"] == 1.0
    json.dumps(a.to_json(), allow_nan=False)


# ----------------------------------------------------------------------------- black box


@pytest.mark.parametrize("lr,beta", [(0.1, 0.9), (0.03, 0.6)])
def test_optax_momentum(lr, beta):
    a = probes.analyze_optax(optax.sgd(lr, momentum=beta))
    assert a.momentum.detected and abs(a.momentum.beta - beta) <= 0.01
    assert abs(a.momentum.alpha - lr) <= 0.02 * lr
    assert not (a.clipping.detected or a.schedule.detected or a.adaptation.detected)


def test_optax_sgd_only_learning_rate():
    a = probes.analyze_optax(optax.sgd(0.2))
    assert not (
        a.momentum.detected or a.clipping.detected or a.schedule.detected or a.adaptation.detected
    )
    assert abs(a.momentum.alpha - 0.2) <= 1e-6


@pytest.mark.parametrize("c", [0.1, 2.0])
def test_optax_clip(c):
    a = probes.analyze_optax(optax.chain(optax.clip(c), optax.sgd(0.1)))
    assert a.clipping.detected and abs(a.clipping.threshold - c) <= 0.05 * c
    assert not a.momentum.detected and not a.adaptation.detected


def test_optax_schedule():
    sched = optax.schedules.warmup_exponential_decay_schedule(0.0, 0.1, 20, 1, 0.97)
    a = probes.analyze_optax(optax.sgd(sched))
    assert a.schedule.shape == "warm-up-then-decay"
    true = np.asarray([sched(t) for t in range(len(a.schedule.effective_lr))])
    assert _corr(a.schedule.effective_lr, true) >= 0.99


def test_optax_rmsprop():
    lr, rho = 0.01, 0.9
    a = probes.analyze_optax(optax.rmsprop(lr, decay=rho))
    assert a.adaptation.detected and -1.1 <= a.adaptation.slope <= -0.9
    assert not a.momentum.detected
    m = a.adaptation.magnitudes
    np.testing.assert_allclose(
        a.adaptation.lr_vs_magnitude["pos"], lr / np.sqrt(rho * m**2 + 1e-8), rtol=1e-2
    )


def test_optax_adam_mixes_b1_and_b2_on_a_background():
    lr, b1, b2 = 0.01, 0.9, 0.999
    a = probes.analyze_optax(optax.adam(lr, b1=b1, b2=b2))
    # A bare impulse at zero background is not finite (√ν at ν = 0): a background is used.
    assert a.meta["impulse_background"] == 1.0
    assert a.momentum.detected and abs(a.momentum.beta - b1) <= 0.01
    assert abs(a.momentum.alpha - lr * (1 - b1)) <= 0.02 * lr * (1 - b1)
    lams = np.real(a.momentum.eigenvalues)
    assert np.min(np.abs(lams - b2)) <= 2e-3  # the ν mode, with the opposite sign
    assert abs(a.meta["steady_response"]) <= 0.2 * lr  # scale invariance: Σ r_k ≈ 0
    assert a.adaptation.detected and -1.1 <= a.adaptation.slope <= -0.9
    json.dumps(a.to_json(), allow_nan=False)


@pytest.mark.parametrize("kind", ["cell", "optax"])
def test_every_detector_result_reads_back_from_json(kind):
    from probes import detectors

    if kind == "cell":
        a = probes.analyze_cell(lopt.hand_designed.adam(0.01), gradient_scale=1.0)
    else:
        a = probes.analyze_optax(optax.chain(optax.clip(0.5), optax.sgd(0.1, momentum=0.9)))
    for name in detectors.MECHANISMS:
        result = getattr(a, name)
        d = json.loads(json.dumps(result.to_json(), allow_nan=False))
        back = type(result).from_json(d)
        assert back.to_json() == result.to_json(), name
        assert back.detected == result.detected
    m = detectors.Momentum.from_json(a.momentum.to_json())
    np.testing.assert_allclose(m.eigenvalues, a.momentum.eigenvalues, rtol=1e-6)
    c = detectors.Clipping.from_json(a.clipping.to_json())
    np.testing.assert_allclose(c.updates, a.clipping.updates)
    with pytest.raises(ValueError, match="schedule: missing 'shape'"):
        detectors.Schedule.from_json({"detected": False})


def test_the_gain_along_a_constant_gradient_is_read_on_the_growing_branch():
    from probes.black_box import scalar_updates, schedule_program

    def curves(tx):
        a, c = schedule_program(scalar_updates(tx), 40)(jnp.float32(1e-8), jnp.float32(0.5))
        return np.asarray(a), np.asarray(c)

    # AMSGrad's max(ν_max, ν̂) ties at every step of a constant gradient; a growing gradient
    # sets the normaliser as Adam's does, so the two gains along it agree (rising with the
    # bias corrections), where the frozen branch would fall with m's correction alone
    _, amsgrad = curves(optax.amsgrad(0.01))
    _, adam = curves(optax.adam(0.01))
    np.testing.assert_allclose(amsgrad, adam, rtol=1e-4)
    assert np.all(np.diff(amsgrad[1:]) > 0) and amsgrad[-1] > 3 * amsgrad[1] > 0
    # a linear optimizer's gain is the same on either side of b: the learning rate
    sched = optax.piecewise_constant_schedule(0.1, {2: 0.8})
    a, c = curves(optax.sgd(sched, momentum=0.9))
    np.testing.assert_allclose(c[:4], [0.1, 0.1, 0.08, 0.08], rtol=1e-5)
    np.testing.assert_allclose(a, c, rtol=1e-5)
    assert probes.detectors.detect_schedule(a, c).shape == "decay"


def test_a_normalisers_schedule_is_read_from_its_step_along_a_constant_gradient():
    from probes.black_box import scalar_updates, schedule_program, step_size_program

    # Yogi (b1 0.82, b2 0.9936, eps 0.0013) has no multiplier: its gain after zero gradients
    # rises with ν̂'s bias correction of a ν that stays at v0, and its gain along a constant
    # gradient rises as the normaliser's reaction to the newest gradient fades; both rise, so
    # the gains alone read a warm-up. Its step along the gradient dips by a fifth and recovers
    # (ν̂ overshoots b² while ν climbs): no shared rise, constant.
    tx = optax.yogi(3e-4, 0.8162, 0.9936, 0.0013)
    run = scalar_updates(tx)
    a, c = (np.asarray(x) for x in schedule_program(run, 200)(jnp.float32(1e-8), jnp.float32(1)))
    step = np.asarray(step_size_program(run, 200)(jnp.float32(1.0))[1])
    assert probes.detectors.detect_schedule(a, c).shape == "warm-up"
    assert 0.75 < step.min() / step[0] < 0.85 and step[-1] > step.min()
    analysis = probes.analyze_optax(tx)
    s = analysis.schedule
    assert (s.shape, s.constant_gradient_measure) == ("constant", "step size")
    np.testing.assert_allclose(s.constant_gradient_lr, step, rtol=1e-5)
    words = probes.words.schedule_phrase(analysis.to_json()["schedule"])
    assert "α_eff and its step along a constant gradient: no shared rise or fall" in words
    # the rule on the step: a multiplier moves it (Adam under a decay reads decay), a linear
    # optimizer keeps its gain curve
    decayed = probes.analyze_optax(optax.adam(optax.exponential_decay(1e-3, 50, 0.5)))
    assert decayed.schedule.shape == "decay"
    assert decayed.schedule.constant_gradient_measure == "step size"
    plain = probes.analyze_optax(optax.sgd(0.1, momentum=0.9)).schedule
    assert (plain.shape, plain.constant_gradient_measure) == ("constant", "gain")


def test_half_slope_has_its_closed_forms_at_the_ends():
    from probes.battery_common import C23, SQRT2M1, half_slope

    np.testing.assert_allclose(half_slope(0.0, 1e-3), SQRT2M1 * 1e-3, rtol=1e-9)
    np.testing.assert_allclose(half_slope(1e-4, 0.0), np.sqrt(C23 * 1e-4), rtol=1e-9)
    e, c = 1e-3, 1e-3  # f' = (e + c s)/(s (s + c)²) at s = √(g² + e) is half of 1/(√e + c)
    s = np.sqrt(half_slope(e, c) ** 2 + e)
    np.testing.assert_allclose((e + c * s) / (s * (s + c) ** 2), 0.5 / (np.sqrt(e) + c), rtol=1e-9)
