"""The sign-agreement chain entry (:func:`lopt.chain.scale_by_agreement`) and its identification."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
import tasks
from lopt.chain import build_chain, chain_code, scale_by_agreement
from probes.distill import IdentifyConfig, identify_chain
from probes.distill.free_numbers import decode, encode, free_numbers
from probes.words import (
    addition_name,
    distill_sentence,
    identified_added_sentence,
    identified_addition,
)


def _outputs(tx, grads):
    state = tx.init(jnp.zeros(len(grads[0])))
    out = []
    for g in grads:
        u, state = tx.update(jnp.asarray(g, jnp.float32), state)
        out.append(np.asarray(u))
    return np.stack(out)


def test_scale_by_agreement_follows_its_closed_form():
    # Entry 0 keeps its sign (c = tanh(4/0.01) = 1), entry 1 alternates (c = −1), entry 2 is far
    # below κ (c = tanh(10⁻⁶/0.01) ≈ 10⁻⁴), entry 3 is zero (no agreement either way).
    agreeing, disagreeing, rise, fall = 3.0, 0.25, 0.3, 0.6
    tx = scale_by_agreement(0.1, agreeing, disagreeing, rise, fall)
    grads = [[2.0, 2.0 * (-1) ** t, 1e-3, 0.0] for t in range(6)]
    out = _outputs(tx, grads)
    t = np.arange(1, 7)
    gain_agree = agreeing ** (1 - (1 - rise) ** (t - 1))  # the first step has nothing to agree with
    gain_flip = disagreeing ** (1 - (1 - fall) ** (t - 1))
    np.testing.assert_allclose(out[:, 0], 2.0 * gain_agree, rtol=1e-5)
    np.testing.assert_allclose(out[:, 1], 2.0 * (-1.0) ** (t - 1) * gain_flip, rtol=1e-5)
    c = np.tanh(1e-6 / 0.01)
    np.testing.assert_allclose(
        out[:, 2], 1e-3 * agreeing ** (1 - (1 - rise * c) ** (t - 1)), rtol=1e-5
    )
    assert abs(out[-1, 2] / 1e-3 - 1.0) < 1e-3  # barely moved
    np.testing.assert_array_equal(out[:, 3], 0.0)
    # a flip after a run of agreement moves the log-gain a share `fall` toward ln disagreeing
    a5 = np.log(gain_agree[-1])
    u, _ = tx.update(
        jnp.array([-2.0, 0.0, 0.0, 0.0]),
        _state_after(tx, grads),
    )
    want = a5 + fall * (np.log(disagreeing) - a5)
    np.testing.assert_allclose(float(u[0]), -2.0 * np.exp(want), rtol=1e-5)


def _state_after(tx, grads):
    state = tx.init(jnp.zeros(4))
    for g in grads:
        _, state = tx.update(jnp.asarray(g, jnp.float32), state)
    return state


def test_scale_by_agreement_maps_trees_and_keeps_dtypes():
    tx = scale_by_agreement(1.0, 2.0, 0.5, 0.5, 0.5)
    params = {"w": (jnp.zeros(2), jnp.zeros(3)), "b": jnp.zeros(())}
    state = tx.init(params)
    for _ in range(3):
        g = jax.tree.map(lambda x: jnp.full(x.shape, 5.0), params)
        u, state = tx.update(g, state)
    # two agreeing steps (c = tanh(25) = 1): a = ln2·(1 − 0.5²)
    np.testing.assert_allclose(u["w"][1], np.full(3, 5.0 * 2.0**0.75), rtol=1e-5)
    np.testing.assert_allclose(u["b"], 5.0 * 2.0**0.75, rtol=1e-5)
    u16, s16 = tx.update(jnp.ones(2, jnp.float16), tx.init(jnp.zeros(2, jnp.float16)))
    assert u16.dtype == jnp.float16 and s16.log_gain.dtype == jnp.float32


def test_scale_by_agreement_bounds_its_gains_and_rejects_rates_outside_0_1():
    # gains of 0 and 1e8 act as 1e-4 and 1e4 (no 0·(−inf)); a κ whose square underflows is fine
    tx = scale_by_agreement(1e-20, 1e8, 0.0, 1.0, 1.0)
    out = _outputs(tx, [[1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[:, 0], [1.0, 1e4, 1e4], rtol=1e-4)  # rise 1: all the way
    np.testing.assert_allclose(out[:, 1], [1.0, -1e-4, 1e-4], rtol=1e-4)
    for bad in ({"rise": 1.5}, {"fall": -0.1}):
        args = {"rise": 0.1, "fall": 0.1, **bad}
        with pytest.raises(ValueError, match="must lie in"):
            scale_by_agreement(1.0, 2.0, 0.5, **args)


def test_agreement_gains_are_fitted_within_their_bounds():
    # the fit's coordinate for a gain is squashed: any coordinate decodes inside the bounds,
    # with a gradient that never vanishes, and the written number is the one that acts
    entry = {
        "transform": "scale_by_agreement",
        "scale": 1.0,
        "agreeing": 3.0,
        "disagreeing": 1e-3,
        "rise": 0.5,
        "fall": 0.5,
    }
    free = free_numbers([entry])
    z = encode([entry], free)
    np.testing.assert_allclose(float(decode([entry], free, z)[0]["disagreeing"]), 1e-3, rtol=1e-5)
    for x in (-1e3, -30.0, 30.0, 1e3):
        v = float(decode([entry], free, {**z, "0.agreeing": jnp.float32(x)})[0]["agreeing"])
        assert 1e-4 * (1 - 1e-5) <= v <= 1e4 * (1 + 1e-5)  # float32 at the bounds

    def log_gain(x):
        return jnp.log(decode([entry], free, {**z, "0.agreeing": x})[0]["agreeing"])

    assert float(jax.grad(log_gain)(jnp.float32(20.0))) > 0.05
    # a gain at or beyond a bound is not a number the coordinates can hold: it stays fixed
    assert (0, "agreeing") not in free_numbers([{**entry, "agreeing": 1e5}])


def test_an_agreement_entry_builds_writes_and_has_free_numbers():
    entry = {
        "transform": "scale_by_agreement",
        "scale": 0.2,
        "agreeing": 1.8,
        "disagreeing": 0.3,
        "rise": 0.2,
        "fall": 0.4,
        "mechanism": "sign agreement",
    }
    chain = [entry, {"transform": "scale_by_learning_rate", "learning_rate": 0.1}]
    code = chain_code(chain)
    assert code.startswith("optax.chain(lopt.chain.scale_by_agreement(0.2, agreeing=1.8,")
    grads = np.random.default_rng(0).normal(size=(8, 3))
    np.testing.assert_allclose(
        _outputs(eval(code, {"optax": optax, "lopt": lopt}), grads),
        _outputs(build_chain(chain), grads),
    )
    free = free_numbers(chain)
    assert [k for i, k in free if i == 0] == ["scale", "agreeing", "disagreeing", "rise", "fall"]
    back = decode(chain, free, encode(chain, free))
    for k in ("scale", "agreeing", "disagreeing", "rise", "fall"):
        np.testing.assert_allclose(float(back[0][k]), entry[k], rtol=1e-6)


def test_identification_adds_a_sign_agreement_gain_the_chain_lacks():
    # The teacher's gain follows the signs; the detected chain has none. The structure with the
    # agreement gain added contains the teacher, so its fit finds the teacher's numbers and is
    # kept; the damping tried beside it does not describe the teacher as well.
    truth = [
        {
            "transform": "scale_by_agreement",
            "scale": 0.3,
            "agreeing": 2.0,
            "disagreeing": 0.4,
            "rise": 0.3,
            "fall": 0.5,
        },
        {"transform": "trace", "decay": 0.5},
        {"transform": "scale_by_learning_rate", "learning_rate": 0.1},
    ]
    start = [
        {"transform": "trace", "decay": 0.6, "mechanism": "momentum"},
        {"transform": "scale_by_learning_rate", "learning_rate": 0.05, "mechanism": "lr"},
    ]
    family = tasks.get("linear_regression", dim=3, num_steps=30)
    chain, notes = identify_chain(
        start, build_chain(truth), family, IdentifyConfig(rounds=2, num_problems=16)
    )
    assert notes["added"] == "sign agreement" and not notes["damping_added"]
    assert notes["structure"] == "detected + sign agreement" and notes["agreement_start"] > 0
    assert [e["transform"] for e in chain] == [e["transform"] for e in truth]
    got = [chain[0][k] for k in ("scale", "agreeing", "disagreeing", "rise", "fall")]
    got += [chain[1]["decay"], chain[2]["learning_rate"]]
    np.testing.assert_allclose(got, [0.3, 2.0, 0.4, 0.3, 0.5, 0.5, 0.1], rtol=1e-2)
    assert "added by identification" in chain[0]["mechanism"]
    chosen = notes["candidates"][notes["selected"]]
    assert chosen["structure"] == "detected + sign agreement"
    assert chosen["round"] == notes["selected_round"] >= 1
    errors = {}
    for c in notes["candidates"]:
        errors[c["structure"]] = min(c["validation_error"], errors.get(c["structure"], np.inf))
    assert errors["detected + sign agreement"] < 1e-4 < errors["detected + damping"]
    # the words say what was added (with the teacher's numbers, which the fit found to 1%)
    exact = [{**e, "mechanism": c.get("mechanism")} for e, c in zip(truth, chain, strict=True)]
    distill = {"chain_identified": exact, "notes": {"identify": notes}}
    assert identified_addition(distill) == "sign agreement"
    text = identified_added_sentence(distill)
    assert "follows the signs" in text and "toward ×2 while" in text and "×0.4 while" in text
    idle = [{**exact[0], "fall": 1e-9, "disagreeing": 1e4}, *exact[1:]]
    text = identified_added_sentence({**distill, "chain_identified": idle})
    assert "barely moved while they flip" in text and "1e+04" not in text
    # a flip that pulls the gain back to ×1 is not idle, though ln 1 = 0
    back = [{**exact[0], "agreeing": 3.6, "rise": 0.125, "disagreeing": 1.0, "fall": 0.5}]
    text = identified_added_sentence({**distill, "chain_identified": back + exact[1:]})
    assert "toward ×1 while they flip" in text and "barely" not in text
    assert addition_name("sign agreement") == "a sign-agreement gain"
    assert addition_name("damping") == "oscillation damping" and addition_name(None) is None
    frac = {"mean": 0.8, "ci": [0.7, 0.9]}
    summary = distill_sentence({**distill, "fraction_identified": frac})
    assert "(and a sign-agreement gain added) 80%" in summary


def test_files_from_before_agreement_could_be_added_still_read():
    legacy = {"notes": {"identify": {"damping_added": True}}}
    assert identified_addition(legacy) == "damping"
    assert identified_addition({"notes": {"identify": {"damping_added": False}}}) is None
    assert identified_addition({"notes": {"identify": {"added": None}}}) is None
    assert identified_addition({}) is None
