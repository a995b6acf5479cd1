"""The battery of hand-designed optimizers (probes.battery) against the detectors.

Each (case, source, mechanism) is one test. Those that fail today because of a detector rule
carry a strict xfail naming the rule, so fixing the rule turns the xfail into a failure that
asks for the marker to go. Expected answers come from the maths in probes/battery.py.
"""

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import probes
from probes import battery
from probes.detectors import SIGN_CHANGE_LEVEL

CASES = {c.name: c for c in battery.cases()}

_BOTH = ("optax", "cell")
#: (case, sources, mechanism) -> reason, for every fixed case that fails today: a rule found
#: wanting is recorded as a strict xfail with its reason.
_KNOWN: list[tuple[str, tuple[str, ...], str, str]] = []
KNOWN = {(n, s, m): r for n, sources, m, r in _KNOWN for s in sources}


@functools.cache
def _analysis(name, source):
    case = CASES[name]
    if source == "optax":
        return probes.analyze_optax(case.optax())
    return probes.analyze_cell(case.cell())


def _verdict(name, source, mechanism):
    verdicts = {v.mechanism: v for v in battery.check(CASES[name], _analysis(name, source))}
    return verdicts[mechanism]


def _params(pairs, slow=False):
    out = []
    for name, source in pairs:
        if source == "cell" and CASES[name].cell is None:
            continue
        mechanisms = battery.MECHANISMS[:4]
        if CASES[name].expected_for(source).damping is not None:
            mechanisms += ("damping",)
        mechanisms += ("bias",)
        if CASES[name].expected_for(source).agreement.detected is not None:
            mechanisms += ("agreement",)
        for m in mechanisms:
            marks = [pytest.mark.slow] if slow else []
            if (name, source, m) in KNOWN:
                marks.append(pytest.mark.xfail(strict=True, reason=KNOWN[name, source, m]))
            out.append(pytest.param(name, source, m, marks=marks, id=f"{name}-{source}-{m}"))
    return out


#: A representative subset for the default run (each black box ~1-2 s, each cell kind ~10 s).
FAST = [
    *[
        (n, "optax")
        for n in (
            "sgd",
            "momentum",
            "nesterov",
            "cascade",
            "ringing",
            "clip",
            "clip_by_global_norm",
            "clip_warmup_from_zero",
            "sgd_warmup_cosine_late",
            "sgd_piecewise_dip",
            "momentum_exp_decay",
            "rmsprop",
            "adagrad",
            "adam",
            "adam_b2_half",
            "sign_sgd",
            "lion_warmup_cosine",  # a sign-like update's schedule, read from its step size
            "drift_clip_momentum",  # a bias added to the update, behind a clip
            "offset_momentum",  # a bias in front (the gradient shifted)
            "rprop",  # sign agreement, and an update one step late
            "delta_bar_delta",  # sign agreement on a gradient step
            "rmsprop_centered",  # a spread in the denominator: agreement near p = 0
            "novograd",  # a norm at g = 0: adaptation read at a hair
            "amsgrad",  # a running maximum that ties with ν̂: its schedule read from its step
            "yogi",  # a second moment that moves additively, by the sign of ν − g²
        )
    ],
    *[
        (n, "cell")
        for n in ("sgd", "momentum", "clip", "rmsprop", "adam", "drift_momentum", "amsgrad")
    ],
]


@pytest.mark.parametrize("name,source,mechanism", _params(FAST))
def test_battery_fast_subset(name, source, mechanism):
    v = _verdict(name, source, mechanism)
    assert v.ok, v


@pytest.mark.parametrize(
    "name,source,mechanism",
    _params([(n, s) for n in CASES for s in _BOTH if (n, s) not in FAST], slow=True),
)
def test_battery_full(name, source, mechanism):
    v = _verdict(name, source, mechanism)
    assert v.ok, v


#: Families whose white box is a hand-written cell (cheap to compile, no step counter).
_RANDOM_CELLS = {"sgd", "momentum", "two_modes", "ringing", "rmsprop"}


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("family", sorted(battery.FAMILIES))
def test_battery_random_hyperparameters(family, seed):
    case = battery.sample_case(family, jax.random.key(seed))
    analyses = [probes.analyze_optax(case.optax())]
    if family in _RANDOM_CELLS:
        analyses.append(probes.analyze_cell(case.cell()))
    for a in analyses:
        bad = [v for v in battery.check(case, a) if not v.ok]
        assert not bad, (case.hparams, a.source, bad)


# ----------------------------------------------------------------------------- the battery itself


def test_battery_covers_the_optax_library():
    assert len(CASES) == len(battery.cases()) >= 40  # names are unique
    families = {c.family for c in CASES.values()}
    assert {"sgd", "momentum", "nesterov", "clipped", "agc", "scheduled", "rmsprop"} <= families
    assert {"adam", "adagrad", "adabelief", "sign", "two_modes", "cascade", "damped"} <= families
    assert {"drifting", "rprop", "sign_agreement"} <= families
    assert set(battery.SCHEDULES) <= {c.hparams.get("schedule") for c in CASES.values()}
    for case in CASES.values():
        tx = case.optax()
        u, _ = tx.update(jnp.float32(0.5), tx.init(jnp.float32(0.0)), jnp.float32(0.0))
        assert np.isfinite(float(u)), case.name


@pytest.mark.parametrize("name", ["nesterov", "cascade", "adam_warmup_cosine", "rmsprop_centered"])
def test_optax_cell_runs_the_same_updates(name):
    tx = CASES[name].optax()
    cell = battery.optax_cell(tx)
    gs = jax.random.normal(jax.random.key(1), (40,))
    state, h, p0 = tx.init(jnp.float32(0.0)), cell.init_state(), jnp.float32(0.0)
    for g in gs:
        u, state = tx.update(g, state, p0)
        h = cell.step(h, g)
        np.testing.assert_allclose(cell.readout(h), u, rtol=1e-5, atol=1e-8)


def _fake(case, **changes):
    """An analysis with exactly the expected black-box answer, then ``changes`` applied."""
    e = case.expected
    lr = e.schedule.lr(np.arange(100)) if e.schedule.lr else np.ones(100)
    ns = types.SimpleNamespace
    a = ns(
        source="optax",
        momentum=ns(detected=e.momentum.detected, beta=e.momentum.beta or 0.0, alpha=0.1),
        clipping=ns(
            detected=e.clipping.detected,
            threshold=e.clipping.threshold or np.inf,
            slope0=1.0,
            gradients=np.logspace(-4, 4, 9),
        ),
        schedule=ns(
            detected=e.schedule.shape != "constant", shape=e.schedule.shape, effective_lr=lr
        ),
        adaptation=ns(detected=e.adaptation.detected, slope=e.adaptation.slope or 0.0),
        damping=ns(detected=bool(e.damping)),
        bias=ns(detected=e.bias != 0, stall_gradient=e.bias or np.nan, update_at_zero=0.0),
    )
    for path, value in changes.items():
        mech, field = path.split("__")
        setattr(getattr(a, mech), field, value)
    return a


def test_check_names_each_outcome():
    mom, clip = CASES["momentum"], CASES["clip"]
    assert all(v.ok for v in battery.check(mom, _fake(mom)))
    outcomes = {v.mechanism: v.outcome for v in battery.check(mom, _fake(mom))}
    assert outcomes == {
        "momentum": "true positive",
        "clipping": "true negative",
        "schedule": "true negative",
        "adaptation": "true negative",
        "damping": "true negative",
        "bias": "true negative",
    }
    (v,) = [v for v in battery.check(mom, _fake(mom, momentum__beta=0.8)) if not v.ok]
    assert (v.mechanism, v.outcome, v.measured, v.expected) == ("momentum", "value error", 0.8, 0.9)
    (v,) = [v for v in battery.check(mom, _fake(mom, momentum__detected=False)) if not v.ok]
    assert v.outcome == "false negative"
    (v,) = [v for v in battery.check(mom, _fake(mom, clipping__detected=True)) if not v.ok]
    assert (v.mechanism, v.outcome) == ("clipping", "false positive")
    (v,) = [v for v in battery.check(clip, _fake(clip, clipping__threshold=0.6)) if not v.ok]
    assert (v.outcome, v.expected) == ("value error", 0.5)
    lr = np.full(100, 0.1)
    lr[37] = 0.2
    (v,) = [v for v in battery.check(mom, _fake(mom, schedule__effective_lr=lr)) if not v.ok]
    assert v.outcome == "value error" and v.detail == "effective lr at t=37"


def test_check_judges_the_bias_stall_gradient():
    drift = CASES["drift_momentum"]  # g0 = 0.01
    assert {v.mechanism: v.outcome for v in battery.check(drift, _fake(drift))}["bias"] == (
        "true positive"
    )
    (v,) = [v for v in battery.check(drift, _fake(drift, bias__stall_gradient=0.0102)) if not v.ok]
    assert (v.mechanism, v.outcome, v.expected) == ("bias", "value error", 0.01)
    (v,) = [v for v in battery.check(drift, _fake(drift, bias__detected=False)) if not v.ok]
    assert (v.mechanism, v.outcome) == ("bias", "false negative")
    mom = CASES["momentum"]
    (v,) = [v for v in battery.check(mom, _fake(mom, bias__detected=True)) if not v.ok]
    assert (v.mechanism, v.outcome) == ("bias", "false positive")
    no_reading = _fake(drift)
    del no_reading.bias  # an analysis written before the bias was read
    (v,) = [v for v in battery.check(drift, no_reading) if not v.ok]
    assert (v.mechanism, v.outcome) == ("bias", "false negative")


@pytest.mark.parametrize(
    "name", ["drift_momentum", "drift_sgd", "drift_clip_momentum", "offset_momentum"]
)
def test_drifting_cases_stall_where_their_docstring_says(name):
    # Independent of the probes: W steps of the expected g0 leave an update of ~0, while the
    # update at g = 0 is not 0 and g0 ± 10% give updates of opposite signs.
    case = CASES[name]
    tx, g0 = case.optax(), case.expected.bias

    def steady(g):
        state, p, u = tx.init(jnp.float32(0.0)), jnp.float32(0.0), 0.0
        run = jax.jit(lambda s, p: tx.update(jnp.float32(g), s, p))
        for _ in range(battery.W):
            u, state = run(state, p)
            p = p + u
        return float(u)

    assert abs(steady(0.0)) > 0
    assert abs(steady(g0)) < 1e-4 * abs(steady(10 * g0))
    assert steady(0.9 * g0) * steady(1.1 * g0) < 0


def test_sign_like_threshold_passes_only_below_the_grid():
    case = CASES["sign_sgd"]  # expected threshold 0: anything up to the grid's first point
    assert all(v.ok for v in battery.check(case, _fake(case, clipping__threshold=1e-4)))
    bad = [v for v in battery.check(case, _fake(case, clipping__threshold=1e-3)) if not v.ok]
    assert [v.outcome for v in bad] == ["value error"]


def test_expected_answers_match_simulated_responses():
    # Independent of the detectors: the exact impulse response of each linear case has the
    # expected momentum mode, r_k ≈ -α β^k at lags where the other modes have died out.
    for name in ("momentum", "nesterov", "cascade", "two_modes", "ema_momentum"):
        case = CASES[name]
        tx = case.optax()
        state, r = tx.init(jnp.float32(0.0)), []
        for k in range(60):
            u, state = tx.update(jnp.float32(k == 0), state, jnp.float32(0.0))
            r.append(float(u))
        m = case.expected.momentum
        k = np.arange(40, 60)
        np.testing.assert_allclose(np.asarray(r)[k], -m.alpha * m.beta**k, rtol=1e-3)


def test_the_ringing_case_rings_as_its_docstring_says():
    # r_k = -a ρ^k cos kθ, simulated; its first sign change comes after the envelope has fallen
    # below the momentum rule's level (so a pair that rings this slowly is momentum).
    case = CASES["ringing"]
    a, rho, phase = (case.hparams[k] for k in ("a", "rho", "phase"))
    theta = phase * np.pi * np.log(rho) / (2 * np.log(SIGN_CHANGE_LEVEL))
    tx = case.optax()
    state, r = tx.init(jnp.float32(0.0)), []
    for k in range(80):
        u, state = tx.update(jnp.float32(k == 0), state, jnp.float32(0.0))
        r.append(float(u))
    k = np.arange(80)
    np.testing.assert_allclose(r, -a * rho**k * np.cos(k * theta), rtol=1e-4, atol=1e-9)
    first = int(np.argmax(np.asarray(r) > 0))
    assert first > 0 and rho**first < SIGN_CHANGE_LEVEL


def test_sample_case_draws_within_the_ranges_and_repeats():
    for family, (_, ranges) in battery.FAMILIES.items():
        a = battery.sample_case(family, jax.random.key(3))
        b = battery.sample_case(family, jax.random.key(3))
        assert a.hparams == b.hparams
        for k, spec in ranges.items():
            if spec[-1] in (battery.LOG, battery.LIN):
                assert spec[0] <= a.hparams[k] <= spec[1]
            else:
                assert a.hparams[k] in spec
        tx = a.optax()
        u, _ = tx.update(jnp.float32(0.5), tx.init(jnp.float32(0.0)), jnp.float32(0.0))
        assert np.isfinite(float(u))
