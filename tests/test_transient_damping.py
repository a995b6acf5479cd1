"""Damping read from the first steps of alternating gradients (probes.transient)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import probes
import tasks
from lopt.chain import damp_oscillations
from probes.analysis_result import Analysis
from probes.faithfulness import faithfulness
from probes.to_chain import chain_from_analysis
from probes.transient import GATE, gate
from probes.words import describe, summary_sentences, transient_damping_phrase

KAPPA, RHO, UNTIL = 0.3, 0.8, 40


def early_damping(kappa: float, rho: float, until: int) -> optax.GradientTransformation:
    """``damp_oscillations(κ, ρ)`` for the first ``until`` steps, the identity after."""
    inner = damp_oscillations(kappa, rho)

    def init(params):
        return inner.init(params), jnp.zeros([], jnp.int32)

    def update(g, state, params=None):
        s, count = state
        damped, s = inner.update(g, s, params)
        out = jax.tree.map(lambda a, b: jnp.where(count < until, a, b), damped, g)
        return out, (s, count + 1)

    return optax.GradientTransformation(init, update)


def _early():
    return optax.chain(early_damping(KAPPA, RHO, UNTIL), optax.sgd(0.1, momentum=0.9))


@functools.cache
def _analysis(name):
    return probes.analyze_optax(OPTIMIZERS[name]())


OPTIMIZERS = {
    "early_damping": _early,
    "momentum": lambda: optax.sgd(0.05, momentum=0.8),
    "clip_momentum": lambda: optax.chain(optax.clip(0.4), optax.sgd(0.1, momentum=0.9)),
    "rmsprop": lambda: optax.rmsprop(0.01),
    "adam": lambda: optax.adam(1e-3),
    "novograd": lambda: optax.novograd(0.01),
}


def test_damping_that_fades_is_missed_in_steady_state_and_read_from_the_first_steps():
    a = _analysis("early_damping")
    # After 200 steps the damping has switched off: the steady probe sees plain momentum.
    assert not a.damping.detected
    t = a.damping_transient
    assert t.detected and t.steps == 20
    # The grid holds 10**-0.5 ~ 0.316 (nearest to kappa = 0.3) and rho = 0.8 exactly.
    assert t.kappa == pytest.approx(10**-0.5, rel=1e-4) and t.memory == pytest.approx(RHO)
    assert t.error_with < 0.05 * t.error_without
    assert Analysis.from_json(a.to_json()).to_json() == a.to_json()


def test_the_chain_carries_the_transient_damping_and_replays_the_optimizer():
    d = _analysis("early_damping").to_json()
    chain, notes = chain_from_analysis(d)
    assert [e["transform"] for e in chain] == [
        "damp_oscillations",
        "trace",
        "scale_by_learning_rate",
    ]
    assert notes["damping_from"] == "the first 20 steps"
    family = tasks.get("linear_regression", num_steps=30)  # inside the damping's 40 steps
    with_it = faithfulness(d, _early(), family, num_problems=4, coords=32, heldout_problems=8)
    without = {k: v for k, v in d.items() if k != "damping_transient"}
    plain = faithfulness(without, _early(), family, num_problems=4, coords=32, heldout_problems=8)
    assert with_it.update_error < 0.5 * plain.update_error


@pytest.mark.parametrize("name", ["momentum", "clip_momentum", "rmsprop", "adam"])
def test_no_transient_damping_where_there_is_none(name):
    t = _analysis(name).damping_transient
    assert t is not None and not t.detected
    # The other mechanisms already reproduce these optimizers' first steps.
    assert t.error_without < 0.01


def test_the_reading_is_put_in_words():
    d = _analysis("early_damping").to_json()
    assert any("first 20 steps it damps oscillations" in s for s in summary_sentences(d))
    assert any("κ ≈ 0.32" in line for line in describe(d))
    quiet = _analysis("momentum").to_json()
    # Nothing found: the summary keeps one sentence per mechanism, the line says why.
    assert len(summary_sentences(quiet)) == 5
    assert "no damping to find" not in " ".join(summary_sentences(quiet))
    assert any("in the first 20 steps: not detected" in line for line in describe(quiet))
    assert "no damping to find" in transient_damping_phrase(quiet["damping_transient"])


def test_the_gate_is_the_largest_fall_of_the_kept_share_as_the_amplitude_grows():
    amps = np.geomspace(0.01, 10.0, 4)
    persistent = np.ones((5, 4)) * amps
    # the same share at every amplitude (linear, or scale-free): no gate
    assert gate(0.3 * persistent, persistent) == pytest.approx(0.0, abs=1e-12)
    # 0.5, 0.4, 0.45, 0.1 of the persistent update: from 0.5 down to 0.1
    shares = np.array([0.5, 0.4, 0.45, 0.1])
    assert gate(shares * persistent, persistent) == pytest.approx(0.8)
    # a share that grows (a clip behind a momentum) is no damping; zero or undefined shares
    # (a persistent update of 0) are left out
    assert gate(np.array([0.1, 0.2, 0.0, 0.4]) * persistent, persistent) == 0.0
    # the fall is from the largest share so far, not from the smallest amplitude's
    assert gate(np.array([0.1, 0.5, 0.25, 0.3]) * persistent, persistent) == pytest.approx(0.5)
    silent = persistent * np.array([1.0, 0.0, 1.0, 1.0])  # no persistent update at 0.1
    shares = np.array([0.4, 0.1, 0.2, 0.3]) * persistent
    assert gate(shares, silent) == pytest.approx(0.5)  # 0.4 → 0.2, the 0.1 left out
    assert gate(shares[:, :1], persistent[:, :1]) == 0.0  # one amplitude: nothing to compare


def test_a_scale_free_optimizer_has_no_gate_for_a_damping_to_explain():
    # NovoGrad's normaliser makes the other readings' chain miss its first steps (a damping in
    # front removes most of that error) but it keeps the same share of an alternating gradient
    # at every amplitude; the early damping keeps less of a large one than of a small one
    t = _analysis("novograd").damping_transient
    assert t.error_with <= 0.75 * t.error_without and t.error_without >= 0.01
    assert t.gate < 1e-3 and not t.detected
    assert _analysis("early_damping").damping_transient.gate >= GATE
    assert "same share of an alternating gradient" in transient_damping_phrase(t.to_json())
    assert any(
        "falls by 0% as it grows" in line for line in describe(_analysis("novograd").to_json())
    )
