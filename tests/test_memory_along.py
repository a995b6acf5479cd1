"""The memory along training trajectories, on optimizers whose memory is known exactly."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import tasks
from probes.faithfulness import Faithfulness
from probes.faithfulness_words import gain_along_sentence, memory_along_sentence
from probes.memory_along import TOLERANCE, chain_gain_along, memory_along, starts
from probes.replay import coordinates, record

FAMILY = tasks.get("linear_regression", dim=4, num_steps=120)
LAGS = 20


def _seqs(tx):
    keys = jax.random.split(jax.random.key(5), 4)
    return jax.jit(lambda k: record(tx, FAMILY, k, coordinates(FAMILY.num_params(), 16)))(keys)


def _trace_memory(beta, lags=LAGS):
    return (1 - beta**lags) / (1 - beta)


class _SwitchState(NamedTuple):
    m: jax.Array
    count: jax.Array


def _switching_momentum(lr, before, after, switch):
    """``m ← λ_t m + g``, ``u = −lr·m``; ``λ_t = before`` for ``t < switch``, else ``after``."""

    def init(params):
        return _SwitchState(jnp.zeros_like(params), jnp.zeros([], jnp.int32))

    def update(g, state, params=None):
        lam = jnp.where(state.count < switch, before, after)
        m = lam * state.m + g
        return -lr * m, _SwitchState(m, state.count + 1)

    return optax.GradientTransformation(init, update)


def test_starts_halve_down_from_the_last_full_window():
    assert starts(201, 40) == [0, 2, 5, 10, 20, 40, 80, 161]
    assert starts(120, 20) == [0, 3, 6, 12, 25, 50, 100]
    assert starts(40, 40) == [0] and starts(30, 40) == []


def test_heavy_ball_has_the_same_memory_everywhere_and_matches_its_convergence_point():
    lr, beta = 0.05, 0.8
    tx = optax.sgd(lr, momentum=beta)
    reference = {"momentum": {"impulse_response": list(-lr * beta ** np.arange(200))}}
    ma = memory_along(tx, _seqs(tx), reference, lags=LAGS)
    np.testing.assert_allclose(ma["memory"], _trace_memory(beta), rtol=1e-4)
    np.testing.assert_allclose(ma["gain"], lr, rtol=1e-4)
    np.testing.assert_allclose(ma["convergence_memory"], _trace_memory(beta), rtol=1e-6)
    assert ma["convergence_gain"] == pytest.approx(lr)
    assert ma["state_dependent"] is False
    assert np.asarray(ma["response"]).shape == (len(starts(120, LAGS)), LAGS)
    assert "holds along training" in memory_along_sentence(ma)


def test_a_memory_that_changes_during_training_is_state_dependent():
    # decay 0.5 until step 60, 0.9 after: windows that end before 60 see 0.5, those starting
    # after it see 0.9, and the one across it (s = 50) the product of both
    lr, switch = 0.05, 60
    tx = _switching_momentum(lr, 0.5, 0.9, switch)
    # its convergence point: the late decay (the black box keeps it under meta)
    reference = {"meta": {"impulse_response": list(-lr * 0.9 ** np.arange(200))}}
    ma = memory_along(tx, _seqs(tx), reference, lags=LAGS)
    mem = dict(zip(ma["starts"], ma["memory"], strict=True))
    for s in (0, 3, 6, 12, 25):
        assert mem[s] == pytest.approx(_trace_memory(0.5), rel=1e-4), s
    assert mem[100] == pytest.approx(_trace_memory(0.9), rel=1e-4)
    lam = np.where(np.arange(51, 51 + LAGS - 1) < switch, 0.5, 0.9)
    across = 1 + np.cumprod(lam).sum()
    assert mem[50] == pytest.approx(across, rel=1e-4)
    assert _trace_memory(0.5) < _trace_memory(0.9) / (1 + TOLERANCE)
    assert ma["state_dependent"] is True
    text = memory_along_sentence(ma)
    assert "is 2–8.8 times its immediate step" in text
    assert "against 8.8 at the convergence point" in text
    # without a convergence-point reading nothing is compared
    alone = memory_along(tx, _seqs(tx), None, lags=LAGS)
    assert alone["state_dependent"] is None and alone["memory"] == ma["memory"]
    assert "no convergence-point impulse response" in alone["not_compared"]
    assert memory_along_sentence(alone).endswith(
        "(no convergence-point impulse response to compare with)."
    )


def test_a_schedule_is_divided_out_and_a_normaliser_is_not_compared():
    # momentum under a learning rate that jumps up 4x at step 30: undivided, the window across
    # the jump (from step 25) sums Σ_{k<5} 0.8^k + 4 Σ_{5≤k<K} 0.8^k; with the schedule's curve
    # divided out, every start reads the momentum's own (1 - 0.8^K)/(1 - 0.8)
    lr = optax.piecewise_constant_schedule(0.01, {30: 4.0})
    tx = optax.sgd(lr, momentum=0.8)
    curve = [float(lr(t)) for t in range(FAMILY.num_steps)]
    ref = {"momentum": {"impulse_response": list(-0.01 * 0.8 ** np.arange(200))}}
    plain = memory_along(tx, _seqs(tx), ref, lags=LAGS)
    across = dict(zip(plain["starts"], plain["memory"], strict=True))[25]
    k = np.arange(LAGS)
    assert across == pytest.approx(np.sum(np.where(k < 5, 1.0, 4.0) * 0.8**k), rel=1e-4)
    assert plain["schedule_divided"] is False and plain["state_dependent"] is True
    sched = {**ref, "schedule": {"detected": True, "effective_lr": curve}}
    ma = memory_along(tx, _seqs(tx), sched, lags=LAGS)
    assert ma["schedule_divided"] is True and ma["state_dependent"] is False
    np.testing.assert_allclose(ma["memory"], _trace_memory(0.8), rtol=1e-4)
    assert "the detected schedule divided out" in memory_along_sentence(ma)
    # RMSProp: its first update is sign-like (derivative 0), so step 0 has no memory; with
    # adaptation detected nothing is compared
    tx = optax.rmsprop(0.01, decay=0.9)
    ada = {**ref, "adaptation": {"detected": True}}
    ma = memory_along(tx, _seqs(tx), ada, lags=LAGS)
    assert np.isnan(ma["memory"][0]) and np.all(np.isfinite(ma["memory"][1:]))
    assert ma["state_dependent"] is None and "adaptation detected" in ma["not_compared"]


def test_what_cannot_be_read_cleanly_is_not_compared():
    lr = optax.piecewise_constant_schedule(0.01, {30: 4.0})
    tx = optax.sgd(lr, momentum=0.8)
    seqs = _seqs(tx)
    ref = {"momentum": {"impulse_response": list(-0.01 * 0.8 ** np.arange(200))}}
    curve = [float(lr(t)) for t in range(FAMILY.num_steps)]
    # a zero in the curve (a warm-up from 0) leaves out the starts whose window holds it
    zero = {**ref, "schedule": {"detected": True, "effective_lr": [0.0, *curve[1:]]}}
    ma = memory_along(tx, seqs, zero)
    assert np.isnan(ma["memory"][0]) and ma["schedule_divided"] is True
    np.testing.assert_allclose(ma["memory"][1:], _trace_memory(0.8, 40), rtol=1e-4)
    assert ma["state_dependent"] is False
    # a detected schedule whose curve cannot be divided out: too short, or cut by a null
    for bad in (curve[:90], [*curve[:50], None, *curve[51:]]):
        ma = memory_along(tx, seqs, {**ref, "schedule": {"detected": True, "effective_lr": bad}})
        assert ma["schedule_divided"] is False and ma["state_dependent"] is None
        assert "could not be divided out" in ma["not_compared"]
    # a curve one step short of the last window is held at its last value
    ma = memory_along(tx, seqs, {**ref, "schedule": {"detected": True, "effective_lr": curve[:-1]}})
    assert ma["schedule_divided"] is True and ma["state_dependent"] is False
    # a problem whose gradients are not finite is left out, the others still read
    g = np.asarray(seqs["g"]).copy()
    g[0, 7, 0] = np.nan
    ma = memory_along(tx, {**seqs, "g": jnp.asarray(g)}, ref)
    assert ma["problems"] == 3 and np.all(np.isfinite(ma["memory"]))
    # an optimizer that mixes coordinates is not read on a subset of them
    assert memory_along(tx, seqs, ref, coordinatewise=False) is None


def test_a_horizon_shorter_than_the_lags_reads_nothing_and_old_analyses_still_load():
    tx = optax.sgd(0.05, momentum=0.8)
    assert memory_along(tx, _seqs(tx), None, lags=200) is None
    assert memory_along_sentence(None) is None
    old = {
        "chain": [],
        "update_error": 0.1,
        "update_error_range": (0.0, 0.2),
        "residual": {},
        "loss_learned": 0.1,
        "loss_chain": 0.1,
        "curve_error": 0.0,
        "num_problems": 1,
        "num_steps": 10,
    }
    # nor those written before the steady update was compared
    loaded = Faithfulness.from_json(old)
    assert loaded.memory_along is None and loaded.steady_update is None


def test_the_chain_gain_along_training_is_the_ratio_of_steady_responses():
    # the same recorded gradients replayed through a chain with twice the learning rate and a
    # longer memory: steady gain 2·(1 − 0.9ᴷ)/(1 − 0.9) against (1 − 0.8ᴷ)/(1 − 0.8), per start
    lr = 0.05
    tx = optax.sgd(lr, momentum=0.8)
    seqs = _seqs(tx)
    along = memory_along(tx, seqs, None, lags=LAGS)
    same = chain_gain_along(tx, seqs, None, along)
    assert same["gain_ratio"] == pytest.approx(1.0, rel=1e-5)
    assert gain_along_sentence({**along, **same}) is None
    other = chain_gain_along(optax.sgd(2 * lr, momentum=0.9), seqs, None, along)
    expected = 2 * _trace_memory(0.9) / _trace_memory(0.8)
    np.testing.assert_allclose(other["chain_gain"], 2 * lr * _trace_memory(0.9), rtol=1e-4)
    np.testing.assert_allclose(other["steady_gain"], lr * _trace_memory(0.8), rtol=1e-4)
    assert other["gain_ratio"] == pytest.approx(expected, rel=1e-4)
    text = gain_along_sentence({**along, **other})
    assert f"moves {expected:.2g}× as far as the optimizer" in text
    # a chain that diverges on the recorded gradients gives no ratio, and no sentence
    wild = optax.scale(jnp.inf)
    none = chain_gain_along(wild, seqs, None, along)
    assert none["gain_ratio"] is None and gain_along_sentence({**along, **none}) is None
    # nor one where adaptation was detected (a normaliser's steady sums are near 0)
    ada = chain_gain_along(tx, seqs, {"adaptation": {"detected": True}}, along)
    assert ada["gain_ratio"] is None and ada["chain_gain"] == same["chain_gain"]
