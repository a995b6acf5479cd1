import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
import probes
import probes.battery
import tasks
from lopt.chain import build_chain, chain_code, damp_oscillations, soft_clip
from lopt.meta_train import MetaTrainConfig, run_config
from lopt.rundir import write_json
from lopt_cli.lopt import main
from probes.distill import (
    DistillConfig,
    IdentifyConfig,
    RetuneConfig,
    chain_from_analysis,
    distill_analysis,
    distill_run,
    fraction_report,
    identify_chain,
    retune_chain,
)
from probes.to_chain import DAMP_DECAY


def _updates(tx, grads):
    """Updates of ``tx`` on one 3-vector parameter for a sequence of gradients ``[T, 3]``."""
    params = jnp.zeros(3)
    state = tx.init(params)
    out = []
    for g in grads:
        u, state = tx.update(jnp.asarray(g, jnp.float32), state, params)
        params = optax.apply_updates(params, u)
        out.append(np.asarray(u))
    return np.stack(out)


GRADS = np.random.default_rng(0).normal(scale=0.8, size=(25, 3)).astype(np.float32)


def _analysis(beta=0.9, alpha=0.1, *, clip=None, schedule=None, adaptation=False):
    """A hand-built ``analysis.json`` dict with known mechanisms (the schema probes writes)."""
    resp = [-alpha * (beta or 0.0) ** k for k in range(200)]
    eff = schedule if schedule is not None else [alpha] * 100
    return {
        "schema_version": 13,
        "source": "cell",
        "momentum": {
            "detected": beta is not None,
            "beta": beta or 0.0,
            "alpha": alpha,
            "timescale": 9.5,
            "fit_eigenvalues": [[0.0, 0.0], [beta or 0.0, 0.0]],
            "fit_alphas": [[0.0, 0.0], [alpha, 0.0]],
            "impulse_response": resp,
        },
        "clipping": {
            "detected": clip is not None,
            "threshold": clip,
            "slope0": -alpha,
            "gradients": [],
            "updates": [],
        },
        "schedule": {
            "detected": schedule is not None,
            "shape": "decay" if schedule is not None else "constant",
            "effective_lr": eff,
        },
        "adaptation": {"detected": adaptation},
    }


def test_build_chain_round_trips_through_json_and_the_code_string():
    chain = [
        {"transform": "damp_oscillations", "scale": 0.3, "decay": 0.7},
        {"transform": "soft_clip", "scale": 1.5, "mechanism": "clipping"},
        {"transform": "clip", "max_delta": 2.0},
        {"transform": "trace", "decay": 0.8},
        {"transform": "momentum_modes", "decays": [0.0, 0.5], "weights": [0.25, 0.75]},
        {"transform": "scale_by_rms", "decay": 0.9, "eps": 1e-3},
        {
            "transform": "scale_by_learning_rate",
            "learning_rate": 0.2,
            "schedule": {"steps": [0, 3, 10], "values": [3.0, 2.0, 1.5], "tail_ratio": 0.9},
        },
    ]
    again = json.loads(json.dumps(chain))
    ref = _updates(build_chain(chain), GRADS)
    np.testing.assert_array_equal(_updates(build_chain(again), GRADS), ref)
    from_code = eval(chain_code(chain), {"optax": optax, "lopt": lopt})  # noqa: S307
    np.testing.assert_allclose(_updates(from_code, GRADS), ref, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown chain transform"):
        build_chain([{"transform": "nope"}])
    with pytest.raises(ValueError, match="missing decay"):
        build_chain([{"transform": "trace"}])


def test_clip_momentum_chain_equals_hand_written_optax():
    chain = [
        {"transform": "clip", "max_delta": 0.5},
        {"transform": "trace", "decay": 0.9},
        {"transform": "scale_by_learning_rate", "learning_rate": 0.1},
    ]
    ref = optax.chain(optax.clip(0.5), optax.sgd(0.1, momentum=0.9))
    np.testing.assert_allclose(_updates(build_chain(chain), GRADS), _updates(ref, GRADS), rtol=1e-6)


def test_soft_clip_halves_the_slope_at_the_threshold_and_saturates():
    c = 2.0
    f = lambda g: soft_clip(c).update(g, optax.EmptyState())[0]  # noqa: E731
    slope = jax.grad(f)(jnp.float32((np.sqrt(2) - 1) * c))
    assert abs(float(slope) - 0.5) < 1e-5
    assert abs(float(f(jnp.float32(1e6))) - c) < 1e-4 and float(f(jnp.float32(-1e6))) < -c + 1e-4


def test_known_momentum_analysis_gives_momentum_chain():
    chain, _ = chain_from_analysis(_analysis(0.9, 0.1))
    assert [e["transform"] for e in chain] == ["trace", "scale_by_learning_rate"]
    assert chain[0]["decay"] == 0.9 and abs(chain[1]["learning_rate"] - 0.1) < 1e-12
    assert chain[1]["schedule"] is None
    np.testing.assert_allclose(
        _updates(build_chain(chain), GRADS),
        _updates(optax.sgd(0.1, momentum=0.9), GRADS),
        rtol=1e-5,
    )


def test_black_box_clip_momentum_is_distilled_back():
    # probes.analyze_optax on optax's own clip + heavy ball: the chain is that optimizer again,
    # and the hard clip is chosen over the soft one because it fits U(h0, g) better.
    tx = optax.chain(optax.clip(0.5), optax.sgd(0.1, momentum=0.9))
    analysis = probes.analyze_optax(tx, gradient_scale=0.1).to_json()
    chain, notes = chain_from_analysis(analysis)
    assert [e["transform"] for e in chain] == ["clip", "trace", "scale_by_learning_rate"]
    assert notes["clip_fit"]["chosen"] == "clip"
    got, want = _updates(build_chain(chain), GRADS), _updates(tx, GRADS)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)  # threshold found to 1e-5


@pytest.mark.parametrize("beta, lr", [(0.9, 0.1), (0.6, 0.03)])
def test_nesterov_analysis_gives_all_its_modes_and_reproduces_it(beta, lr):
    # Nesterov's impulse response: lr(1+β) at lag 0, lr β^(k+1) after; two modes, λ = 0 with
    # α = lr (the direct term) and λ = β with α = lr β. The dominant mode alone (a trace) would
    # drop the direct term; the chain keeps both and is Nesterov again.
    a = _analysis(beta, lr * beta)
    a["momentum"]["fit_alphas"] = [[lr, 0.0], [lr * beta, 0.0]]
    a["momentum"]["impulse_response"] = [-lr * (1 + beta)] + [
        -lr * beta ** (k + 1) for k in range(1, 200)
    ]
    chain, _ = chain_from_analysis(a)
    assert [e["transform"] for e in chain] == ["momentum_modes", "scale_by_learning_rate"]
    assert chain[1]["learning_rate"] == pytest.approx(lr * (1 + beta))
    np.testing.assert_allclose(
        _updates(build_chain(chain), GRADS),
        _updates(optax.sgd(lr, momentum=beta, nesterov=True), GRADS),
        rtol=1e-5,
        atol=1e-7,
    )


def test_a_ringing_impulse_response_is_carried_by_real_modes_fitted_to_it():
    # A direct term and the complex pair λ = 0.665 ± 0.073i fitted on one main-job optimizer
    # (this response is built from those modes alone: steady gain 46.2; the optimizer's own
    # response, 45.5, also has a small negative tail): no trace carries the pair. The dominant
    # mode alone (trace β = |λ|, α = 11.88) has a 19% error and a steady gain of 35.9; real
    # modes fitted to the response itself are within 4% and 3%.
    lam, alpha, k = 0.665 + 0.073j, 5.94 - 7.90j, np.arange(200)
    response = 2.5 * (k == 0) + 2 * np.real(alpha * lam**k)  # descent-signed
    a = _analysis(abs(lam), 11.88)
    a["momentum"]["fit_eigenvalues"] = [[0.0, 0.0], [lam.real, lam.imag], [lam.real, -lam.imag]]
    a["momentum"]["fit_alphas"] = [[2.5, 0.0], [alpha.real, alpha.imag], [alpha.real, -alpha.imag]]
    a["momentum"]["impulse_response"] = list(-response)
    chain, _ = chain_from_analysis(a)
    assert [e["transform"] for e in chain] == ["momentum_modes", "scale_by_learning_rate"]
    assert "ring" in chain[0]["mechanism"]
    impulse = np.zeros((200, 3), np.float32)
    impulse[0] = 1.0
    got = -_updates(build_chain(chain), impulse)[:, 0]
    err = np.sqrt(np.sum((got - response) ** 2) / np.sum(response**2))
    assert err < 0.04  # 0.021 measured
    assert got.sum() == pytest.approx(response.sum(), rel=0.03)  # 46.57 against 46.17


def test_real_modes_take_a_single_mode_when_one_fits_best():
    from probes.modes import real_modes

    k = np.arange(100)
    lams, w = real_modes((-0.5) ** k)  # alternating: the best non-negative fit is λ = 0 alone
    assert w[1] == 0 and lams[0] == 0 and w[0] == pytest.approx(1.0)
    lams, w = real_modes(0.5 * (k == 0) + 2 * 0.9**k)  # a direct term and a real mode
    np.testing.assert_allclose(sorted(lams), [0.0, 0.9], atol=1e-3)
    np.testing.assert_allclose(w[np.argsort(lams)], [0.5, 2.0], rtol=1e-2)


def test_the_battery_s_ringing_momentum_is_distilled_into_real_modes():
    # The black box keeps no impulse response: the modes are fitted to the fitted pair's own.
    # Measured: 1.7% update error against 4.2% for a trace of the pair's |λ| and 2 Re α.
    case = probes.battery.ringing()
    analysis = probes.analyze_optax(case.optax()).to_json()
    chain, _ = chain_from_analysis(analysis)
    assert [e["transform"] for e in chain] == ["momentum_modes", "scale_by_learning_rate"]
    grads = np.random.default_rng(0).normal(scale=0.8, size=(60, 3)).astype(np.float32)
    want = _updates(case.optax(), grads)
    mom = analysis["momentum"]
    trace = build_chain(
        [
            {"transform": "trace", "decay": mom["beta"]},
            {"transform": "scale_by_learning_rate", "learning_rate": mom["alpha"]},
        ]
    )

    def error(tx):
        return np.sqrt(np.sum((_updates(tx, grads) - want) ** 2) / np.sum(want**2))

    assert error(build_chain(chain)) < 0.03 and error(build_chain(chain)) < error(trace) / 2


def test_momentum_modes_with_one_mode_is_a_trace():
    one = lopt.chain.momentum_modes([0.7], [1.0])
    np.testing.assert_allclose(
        _updates(one, GRADS), _updates(optax.trace(decay=0.7), GRADS), rtol=1e-6
    )
    with pytest.raises(ValueError, match="equally long"):
        lopt.chain.momentum_modes([0.7, 0.1], [1.0])


def test_schedule_is_normalised_to_the_steady_state_learning_rate():
    eff = list(np.linspace(0.3, 0.1, 40)) + [0.1] * 60  # decay from 3× the steady rate
    chain, _ = chain_from_analysis(_analysis(0.9, 0.1, schedule=eff))
    sched = chain[-1]["schedule"]
    assert sched["values"][0] == pytest.approx(3.0) and sched["values"][-1] == pytest.approx(1.0)
    ref = optax.sgd(optax.linear_schedule(0.3, 0.1, 39), momentum=0.9)
    np.testing.assert_allclose(_updates(build_chain(chain), GRADS), _updates(ref, GRADS), rtol=1e-4)


def test_adaptation_adds_scale_by_rms_and_undetected_mechanisms_are_left_out():
    a = _analysis(None, 0.2)
    a["adaptation"] = {
        "detected": True,
        "magnitudes": [0.01, 0.1, 1.0, 10.0],
        "lr_vs_magnitude": {"pos": [1.0, 0.9, 0.2, 0.02], "neg": [1.0, 0.9, 0.2, 0.02]},
        "slope_pos": -0.6,
        "slope_neg": -0.6,
    }
    chain, _ = chain_from_analysis(a)
    assert [e["transform"] for e in chain] == ["scale_by_rms", "scale_by_learning_rate"]
    assert 0 < chain[0]["eps"] < 1


def test_detected_damping_comes_first_with_the_probed_kappa():
    a = _analysis(0.9, 0.1)
    a["damping"] = {"detected": True, "kappa": 0.25, "memory": 0.8}
    chain, notes = chain_from_analysis(a)
    kinds = [e["transform"] for e in chain]
    assert kinds == ["damp_oscillations", "trace", "scale_by_learning_rate"]
    assert chain[0]["scale"] == 0.25 and chain[0]["decay"] == 0.8
    assert notes["detected"]["damping"]
    # the chain is damp_oscillations in front of the heavy ball
    tx = build_chain(chain)
    ref = optax.chain(damp_oscillations(0.25, 0.8), optax.sgd(0.1, momentum=0.9))
    np.testing.assert_allclose(_updates(tx, GRADS), _updates(ref, GRADS), rtol=1e-6)
    # an analysis without a measured memory falls back to DAMP_DECAY
    a["damping"] = {"detected": True, "kappa": 0.25}
    assert chain_from_analysis(a)[0][0]["decay"] == DAMP_DECAY
    a["damping"] = {"detected": False, "kappa": None}
    assert [e["transform"] for e in chain_from_analysis(a)[0]][0] == "trace"


def test_black_box_damped_momentum_is_distilled_back():
    # analyze_optax finds damping, momentum and (through the damping) a falling α_eff; the
    # chain keeps the damping and leaves out scale_by_rms, and trains like the original.
    tx = optax.chain(damp_oscillations(0.2, 0.9), optax.sgd(0.5, momentum=0.8))
    analysis = probes.analyze_optax(tx).to_json()
    assert analysis["adaptation"]["detected"]
    chain, notes = chain_from_analysis(analysis)
    kinds = [e["transform"] for e in chain]
    assert kinds == ["damp_oscillations", "trace", "scale_by_learning_rate"]
    assert notes["adaptation_from_damping"]
    assert abs(chain[0]["scale"] - 0.2) <= 0.02 * 0.2 and abs(chain[0]["decay"] - 0.9) <= 0.005
    got, want = _updates(build_chain(chain), GRADS), _updates(tx, GRADS)
    np.testing.assert_allclose(got, want, rtol=0.03, atol=1e-3)
    # RMSProp's fall is not explained by a damping of the same κ: scale_by_rms stays
    rms = probes.analyze_optax(optax.rmsprop(0.01)).to_json()
    rms["damping"] = {"detected": True, "kappa": 0.2, "memory": 0.9}
    chain, notes = chain_from_analysis(rms)
    assert "scale_by_rms" in [e["transform"] for e in chain]
    assert not notes["adaptation_from_damping"]


def test_damp_oscillations_passes_persistent_and_damps_alternating_gradients():
    tx = damp_oscillations(0.5, decay=0.0)  # e is the last squared half-change
    state = tx.init(jnp.zeros(2))
    outs = []
    for t in range(4):
        g = jnp.array([2.0, 2.0 * (-1) ** t])
        u, state = tx.update(g, state)
        outs.append(np.asarray(u))
    np.testing.assert_allclose(outs[0], [2.0, 2.0])  # the first step has no change to measure
    for t in (1, 2, 3):  # constant: unchanged; alternating ±2: half-change 2, 2/(1 + 2/0.5)
        np.testing.assert_allclose(outs[t], [2.0, 2.0 * (-1) ** t / 5.0], rtol=1e-6)
    # parameter trees holding tuples (and NamedTuples) are mapped leaf by leaf
    params = {"layer": (jnp.zeros(2), jnp.zeros(3)), "s": optax.EmptyState(), "t": (jnp.zeros(()),)}
    st = tx.init(params)
    for t in range(3):
        sign = 2.0 * (-1) ** t
        g = jax.tree.map(lambda x, v=sign: jnp.full(x.shape, v), params)
        u, st = tx.update(g, st)
    np.testing.assert_allclose(u["layer"][1], np.full(3, 2.0 / 5.0), rtol=1e-6)
    np.testing.assert_allclose(u["t"][0], 2.0 / 5.0, rtol=1e-6)
    # float16 in, float16 out; the state stays float32
    u16, s16 = tx.update(jnp.ones(2, jnp.float16), tx.init(jnp.zeros(2, jnp.float16)))
    assert u16.dtype == jnp.float16 and s16.energy.dtype == jnp.float32


def test_fraction_is_null_when_the_gain_is_not_significant():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.04, 0.06, 64)
    learned = base + rng.normal(0, 0.01, 64)  # no systematic gain
    rep = fraction_report(learned, base, base + 0.001)
    assert rep["significant"] is False and rep["fraction"] is None and rep["reason"]
    distilled = base - 0.005 + rng.normal(0, 0.002, 64)
    rep = fraction_report(base - 0.01, base, distilled)
    frac = rep["fraction"]
    assert rep["significant"] and frac["mean"] == pytest.approx(np.mean(base - distilled) / 0.01)
    lo, hi = frac["ci"]
    assert lo < frac["mean"] < hi and 0.3 < lo and hi < 0.7


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    # A run directory written directly (no meta-training): an untrained GRU-4 (zero readout,
    # so it makes no update and the gain over the baseline is negative: fraction null).
    run = tmp_path_factory.mktemp("run")
    family = tasks.get("linear_regression", dim=3, num_steps=8)
    opt = lopt.RNNOptimizer(hidden_size=4)
    lopt.save(run / "theta.npz", opt, opt.init(jax.random.key(0)), step=0)
    write_json(run / "config.json", run_config(opt, family, MetaTrainConfig(num_steps=1)))
    write_json(run / "analysis.json", _analysis(0.5, 0.05, clip=1.0))
    write_json(
        run / "eval.json",
        {
            "schema": "lopt.eval/1",
            "horizon": 8,
            "num_problems": 16,
            "horizons": {
                "8": {
                    "best_baseline": "momentum",
                    "optimizers": {
                        "learned": {"metric": None},
                        "momentum": {"hyperparams": {"learning_rate": 0.1, "momentum": 0.5}},
                    },
                }
            },
        },
    )
    return run


def test_cli_distill_writes_distill_json(tiny_run, capsys):
    assert main(["distill", str(tiny_run), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "distilled chain" in out and "soft_clip" in out
    text = (tiny_run / "distill.json").read_text()
    d = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert d["schema"] == "lopt.distill/2"
    assert d["task"] == {"name": "linear_regression", "data_source": "synthetic"}
    assert {"chain", "optax_code", "results", "gain", "significant", "fraction"} <= set(d)
    assert {"fraction_retuned", "fraction_identified", "reason", "curves"} <= set(d)
    assert [e["transform"] for e in d["chain"]] == ["soft_clip", "trace", "scale_by_learning_rate"]
    r = d["results"]
    assert r["best_baseline"]["name"] == "momentum" and r["distilled_retuned"] is not None
    # nothing identified: the re-tuning starts from the detected numbers, on training problems
    assert "from the detected numbers" in r["distilled_retuned"]["label"]
    rt = d["notes"]["retune"]
    assert rt["start"] == "detected"
    assert rt["validation_problems"] == RetuneConfig().validation
    assert [e["transform"] for e in d["chain_retuned"]] == [e["transform"] for e in d["chain"]]
    assert len(d["curves"]["distilled"]["mean"]) == 8
    # the untrained GRU makes no update: nothing to identify, no identified variant
    assert d["chain_identified"] is None and d["results"]["distilled_identified"] is None
    assert d["attribution"] is None  # nothing identified, nothing to exchange
    assert "nothing to identify" in d["notes"]["identify"]["note"]
    assert d["significant"] is False and d["fraction"] is None and "not above" in d["reason"]
    build_chain(d["chain"])  # what a user loads from distill.json trains


def test_distill_redoes_an_outdated_analysis(tiny_run, tmp_path):
    # analysis.json is re-used only while probes.runs.saved_analysis accepts it: one from before
    # the damping probe, one older than the weights it describes and one drawn with another
    # seed are all refused (each rule is tested in test_probes_cli); distill redoes a refused
    # one (key seed 0) before the chain is built.
    import os
    import shutil

    from probes.runs import saved_analysis

    run = tmp_path / "old"
    shutil.copytree(tiny_run, run)
    chain_only = DistillConfig(identify=None, retune=None)
    hand_made = _analysis(0.5, 0.05, clip=1.0)
    theta = run / "theta.npz"
    for outdated in ("older", "seed", "schema"):
        write_json(run / "analysis.json", hand_made)
        t = os.stat(run / "analysis.json").st_mtime
        os.utime(theta, (t - 10, t - 10))
        if outdated == "schema":
            write_json(run / "analysis.json", {**hand_made, "schema_version": 1})
        elif outdated == "older":
            os.utime(theta, (t + 10, t + 10))
        else:
            write_json(run / "analysis.json", {**hand_made, "key_seed": 3})
        assert saved_analysis(run)[0] is None, outdated
    d = distill_run(run, chain_only, progress=False)  # the last: an older schema
    redone = json.loads((run / "analysis.json").read_text())
    assert redone["schema_version"] == 13 and "damping" in redone
    assert redone["key_seed"] == 0
    # the untrained GRU (zero readout) has no momentum or clipping: the hand-built ones go
    assert [e["transform"] for e in d["chain"]] == ["scale_by_learning_rate"]
    assert "identify" not in d["notes"] and "retune" not in d["notes"]
    # a current analysis is used as it is
    write_json(run / "analysis.json", hand_made)
    d = distill_run(run, chain_only, progress=False)
    assert json.loads((run / "analysis.json").read_text()) == hand_made
    assert [e["transform"] for e in d["chain"]] == ["soft_clip", "trace", "scale_by_learning_rate"]


def test_cli_distill_missing_run_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["distill", str(tmp_path / "nope")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lopt: error:") and "\n" not in err and "nope" in err


def _schedule(values):
    return {"steps": list(range(len(values))), "values": list(values), "tail_ratio": 0.0}


WARM = [0.3, 0.5, 0.7, 0.85, 1.0]


def test_identify_chain_recovers_the_numbers_of_a_chain_teacher():
    # The "learned" optimizer is itself a chain with known numbers (its schedule the square root
    # of the detected one, so γ = 0.5); identification starts from other numbers and must find
    # the teacher's, since the teacher lies inside the fitted family.
    truth = [
        {"transform": "damp_oscillations", "scale": 0.3, "decay": 0.9},
        {"transform": "soft_clip", "scale": 1.0},
        {"transform": "trace", "decay": 0.8},
        {
            "transform": "scale_by_learning_rate",
            "learning_rate": 0.2,
            "schedule": _schedule([v**0.5 for v in WARM]),
        },
    ]
    start = [
        {"transform": "damp_oscillations", "scale": 0.6, "decay": 0.7},
        {"transform": "soft_clip", "scale": 0.6},
        {"transform": "trace", "decay": 0.6},
        {"transform": "scale_by_learning_rate", "learning_rate": 0.1, "schedule": _schedule(WARM)},
    ]
    family = tasks.get("linear_regression", dim=3, num_steps=30)
    chain, notes = identify_chain(
        start,
        build_chain(truth),
        family,
        IdentifyConfig(rounds=2, num_problems=16, try_agreement=False),
    )
    assert [e["transform"] for e in chain] == [e["transform"] for e in truth]
    got = [chain[0]["scale"], chain[0]["decay"], chain[1]["scale"], chain[2]["decay"]]
    got.append(chain[3]["learning_rate"])
    want = [0.3, 0.9, 1.0, 0.8, 0.2]
    # the teacher is inside the family, so the fit goes to the float32 floor (~1e-5 measured)
    np.testing.assert_allclose(got, want, rtol=1e-3)
    np.testing.assert_allclose(notes["schedule_exponent"]["3"], 0.5, atol=1e-3)
    np.testing.assert_allclose(
        chain[3]["schedule"]["values"], truth[3]["schedule"]["values"], rtol=1e-3
    )
    assert notes["selected_round"] >= 1 and notes["candidates"][0]["validation_error"] > 0.01
    assert notes["candidates"][notes["selected"]]["validation_error"] < 1e-6
    # the chain has damping already: no structure is added
    assert not notes["damping_added"] and notes["damping_start"] is None
    json.dumps(chain, allow_nan=False)  # plain floats: distill.json stays strict JSON


def test_identify_chain_starting_from_a_diverging_chain():
    # The detected numbers diverge in closed loop (learning rate 20 on curvatures up to 1): that
    # candidate scores inf and is never selected; the first fit, on the learned optimizer's own
    # trajectories, still finds the teacher.
    truth = [
        {"transform": "trace", "decay": 0.5},
        {"transform": "scale_by_learning_rate", "learning_rate": 0.3},
    ]
    start = [
        {"transform": "trace", "decay": 0.5},
        {"transform": "scale_by_learning_rate", "learning_rate": 20.0},
    ]
    family = tasks.get("linear_regression", dim=3, num_steps=30)
    chain, notes = identify_chain(
        start, build_chain(truth), family, IdentifyConfig(rounds=1, num_problems=8)
    )
    assert notes["candidates"][0]["validation_error"] == np.inf and notes["selected_round"] == 1
    np.testing.assert_allclose(
        [chain[0]["decay"], chain[1]["learning_rate"]], [0.5, 0.3], rtol=1e-3
    )
    # the teacher lies in the detected structure: the damping tried in front does not describe
    # it better (both fits reach the float32 floor), so the simpler structure is kept
    assert notes["damping_start"] > 0 and not notes["damping_added"]
    assert notes["agreement_start"] > 0 and notes["added"] is None
    structures = [c["structure"] for c in notes["candidates"]]
    assert structures.count("detected + damping") == structures.count("detected + sign agreement")
    assert structures.count("detected + damping") == 1
    assert notes["structure"] == "detected" and len(chain) == 2
    chosen = notes["candidates"][notes["selected"]]
    assert chosen["structure"] == "detected" and chosen["round"] == notes["selected_round"]


def test_identify_chain_adds_damping_the_probes_did_not_detect():
    # The teacher damps sign-flipping gradients; the detected chain has no damping (as when the
    # steady-state probe misses it). The structure with damping added contains the teacher, so
    # its fit finds the teacher's numbers and is kept, labelled as added by identification.
    truth = [
        {"transform": "damp_oscillations", "scale": 0.3, "decay": 0.9},
        {"transform": "trace", "decay": 0.8},
        {"transform": "scale_by_learning_rate", "learning_rate": 0.2},
    ]
    start = [
        {"transform": "trace", "decay": 0.6, "mechanism": "momentum"},
        {"transform": "scale_by_learning_rate", "learning_rate": 0.1, "mechanism": "learning rate"},
    ]
    family = tasks.get("linear_regression", dim=3, num_steps=30)
    chain, notes = identify_chain(
        start, build_chain(truth), family, IdentifyConfig(rounds=2, num_problems=16)
    )
    assert notes["damping_added"] and notes["structure"] == "detected + damping"
    # the sign-agreement gain was tried too and also beats the detected structure, but the
    # damping, which holds the teacher, beats it: the better extension is kept
    assert notes["added"] == "damping" and notes["agreement_start"] > 0
    best = {}
    for c in notes["candidates"]:
        best[c["structure"]] = min(c["validation_error"], best.get(c["structure"], np.inf))
    assert best["detected + damping"] < 1e-6 < best["detected + sign agreement"]
    assert best["detected + sign agreement"] < 0.98 * best["detected"]
    assert [e["transform"] for e in chain] == [e["transform"] for e in truth]
    got = [chain[0]["scale"], chain[0]["decay"], chain[1]["decay"], chain[2]["learning_rate"]]
    np.testing.assert_allclose(got, [0.3, 0.9, 0.8, 0.2], rtol=1e-3)
    assert "added by identification" in chain[0]["mechanism"]
    chosen = notes["candidates"][notes["selected"]]
    assert chosen["structure"] == "detected + damping" and chosen["validation_error"] < 1e-6
    assert chosen["round"] == notes["selected_round"] >= 1
    plain = [c["validation_error"] for c in notes["candidates"] if c["structure"] == "detected"]
    assert min(plain) > 1e-3  # without damping the teacher cannot be described


def test_identify_chain_can_flip_the_sign_of_the_learning_rate():
    # A probed α can have the wrong sign (at g = 0 the log1p_sign input has no derivative); the
    # fit measures the learning rate in units of its detected magnitude, so it can cross zero.
    truth = [{"transform": "scale_by_learning_rate", "learning_rate": 0.3}]
    start = [{"transform": "scale_by_learning_rate", "learning_rate": -0.1}]
    family = tasks.get("linear_regression", dim=3, num_steps=30)
    chain, _ = identify_chain(
        start,
        build_chain(truth),
        family,
        IdentifyConfig(rounds=1, num_problems=8, try_agreement=False),
    )
    np.testing.assert_allclose(chain[0]["learning_rate"], 0.3, rtol=1e-3)


def test_distill_reports_the_identified_variant_of_a_moving_gru(tiny_run, tmp_path):
    # The tiny run's GRU with a non-zero readout makes updates, so the identified chain exists,
    # is evaluated on the held-out problems and labelled; two rounds keep the test short.
    import shutil

    run = tmp_path / "moving"
    shutil.copytree(tiny_run, run)
    opt = lopt.RNNOptimizer(hidden_size=4)
    theta = opt.init(jax.random.key(0))
    theta["readout"]["w"] = 0.1 * jax.random.normal(jax.random.key(1), (4,))
    lopt.save(run / "theta.npz", opt, theta, step=0)
    # the hand-made analysis stands for one of these weights: written after them
    analysis = json.loads((run / "analysis.json").read_text())
    config = DistillConfig(
        identify=IdentifyConfig(rounds=2, num_problems=8, try_damping=False, try_agreement=False),
        retune=None,
    )
    d = distill_analysis(analysis, run, config, progress=False)
    assert d.chain_identified is not None and d.tx_identified is not None
    assert [e["transform"] for e in d.chain_identified] == [e["transform"] for e in d.chain]
    ident = d.notes["identify"]
    assert len(ident["candidates"]) == 3 and ident["coords"] == 3
    # the hand-made analysis has nothing to do with this GRU: a fit beats the detected numbers
    assert ident["selected_round"] >= 1
    best = ident["candidates"][ident["selected"]]["validation_error"]
    assert best < ident["candidates"][0]["validation_error"]
    assert all(
        e["mechanism"].endswith("(numbers identified)")
        for e in d.chain_identified
        if e.get("mechanism")
    )
    r = d.results["distilled_identified"]
    assert np.isfinite(r["metric"]) and "no loss used" in r["label"]
    assert "distilled_identified" in d.curves
    out = d.to_json()
    json.dumps(out, allow_nan=False)
    assert out["optax_code_identified"].startswith("optax.chain(")
    # each mechanism's numbers exchanged both ways, scored on the same held-out problems
    rows = out["attribution"]
    assert [r["transform"] for r in rows] == [e["transform"] for e in d.chain_identified]
    cells = [r[k] for r in rows for k in ("identified_here_only", "probed_here_only")]
    assert all(
        c is not None and c["metric"] is not None and np.isfinite(c["metric"]) for c in cells
    )


def test_retune_chain_finds_the_best_numbers_on_identity_quadratics():
    # With H = I, momentum-free SGD whose first step has learning rate 1 lands on the optimum,
    # so the best possible mean normalised loss is f_0/f_0 / T = 1/T; the tuning must get there
    # from β = 0.5, α = 0.3 and a warm-up that halves the first step (α · 0.5^γ = 1 is a ridge:
    # after the first step the gradient is zero, so only the first step's rate is pinned down).
    family = tasks.get("linear_regression", dim=3, num_steps=20, log10_min=0.0, log10_max=0.0)
    start = [
        {"transform": "trace", "decay": 0.5, "mechanism": "momentum (dominant mode)"},
        {
            "transform": "scale_by_learning_rate",
            "learning_rate": 0.3,
            "schedule": {"steps": [0, 1], "values": [0.5, 1.0], "tail_ratio": 0.0},
            # as identified: the probed multipliers raised to 0.5 (the label composes the powers)
            "mechanism": "learning rate with a warm-up schedule, multipliers raised to the power "
            "0.5 (numbers identified)",
        },
    ]
    config = RetuneConfig(steps=200, num_problems=4, validation=4, every=20, learning_rate=0.05)
    chain, notes = retune_chain(start, family, jax.random.key(3), config)
    lr = chain[1]["learning_rate"] * chain[1]["schedule"]["values"][0]
    assert chain[0]["decay"] < 0.1 and lr == pytest.approx(1.0, rel=0.03)
    gamma = notes["schedule_exponent"]["1"]
    assert chain[1]["schedule"]["values"][0] == pytest.approx(0.5**gamma, rel=1e-5)
    assert chain[0]["mechanism"] == "momentum (numbers tuned on the loss)"
    assert chain[1]["mechanism"] == (
        f"learning rate with a warm-up schedule, multipliers raised to the power {0.5 * gamma:.2g} "
        "(numbers tuned on the loss)"
    )
    val = notes["validation_metric"]
    assert val[0] > 0.08 and notes["selected_step"] > 0
    assert min(val) == pytest.approx(1 / 20, rel=0.01)
    json.dumps(chain, allow_nan=False)
    # the score that picks re-tuning's start is re-tuning's own score at its start
    from probes.distill import validation_scores

    (start_score,) = validation_scores([start], family, jax.random.key(3), config)
    assert start_score == pytest.approx(val[0], rel=1e-6)


def test_validation_scores_are_the_mean_normalised_loss_and_inf_on_divergence():
    # H = I: SGD with learning rate a scales the loss by (1 - a)^2 per step, so the mean over
    # T steps of f_t/f_0 is (1/T) * sum_t (1 - a)^(2t); a = 1000 overflows float32 (inf).
    from probes.distill import validation_scores

    family = tasks.get("linear_regression", dim=3, num_steps=20, log10_min=0.0, log10_max=0.0)

    def sgd(a):
        return [{"transform": "scale_by_learning_rate", "learning_rate": a}]

    scores = validation_scores(
        [sgd(1.0), sgd(0.5), sgd(1000.0)], family, jax.random.key(3), RetuneConfig(validation=4)
    )
    expected = np.mean(0.25 ** np.arange(20))
    assert scores[0] == pytest.approx(1 / 20, rel=1e-5)
    assert scores[1] == pytest.approx(expected, rel=1e-5)
    assert scores[2] == float("inf")


def test_retune_chain_leaves_diverging_problems_out_of_each_step():
    # At a learning rate of 20 most problems diverge (curvatures up to 1), some to inf or NaN
    # and some to finite losses near the float32 limit. The first are left out problem by
    # problem (a NaN summed into the mean would turn every number into NaN), the second must
    # not overflow the clipped mean (it would zero or NaN the step); two numbers are tuned, so
    # the mean's norm is a real sum of squares. The chain must reach numbers that train.
    family = tasks.get("linear_regression", dim=3, num_steps=30)
    start = [
        {"transform": "trace", "decay": 0.5},
        {"transform": "scale_by_learning_rate", "learning_rate": 20.0},
    ]
    rounds = []
    chain, notes = retune_chain(
        start,
        family,
        jax.random.key(3),
        RetuneConfig(steps=200, num_problems=16, validation=16, every=20),
        progress=lambda done, total: rounds.append((done, total)),
    )
    assert rounds == [(r, 10) for r in range(1, 11)]  # one progress call per validation round
    val = notes["validation_metric"]
    assert val[0] is None and notes["masked"] > 0
    assert chain is not None and 0 < chain[1]["learning_rate"] < 10
    assert val[notes["selected_step"] // 20] < 1.0


def test_distill_skips_a_re_tuning_over_its_budget(tiny_run, tmp_path, capsys):
    # Over the budget the re-tuning is not run (the note says how to ask); without a budget it
    # runs whatever the cost, which is what the command line's explicit settings ask for.
    import shutil

    run = tmp_path / "costly"
    shutil.copytree(tiny_run, run)
    analysis = json.loads((run / "analysis.json").read_text())
    costly = DistillConfig(identify=None, retune=RetuneConfig(budget=1.0))
    d = distill_analysis(analysis, run, costly, progress=False)
    assert d.chain_retuned is None and d.results["distilled_retuned"] is None
    assert "--retune-steps" in d.notes["retune"]["note"] and d.notes["retune"]["cost"] > 1.0
    asked = DistillConfig(identify=None, retune=RetuneConfig(steps=25, num_problems=4, budget=None))
    d = distill_analysis(analysis, run, asked, progress=False)
    assert d.chain_retuned is not None and d.notes["retune"]["steps"] == 25
    assert d.notes["retune"]["num_problems"] == 4
    args = ["distill", str(run), "--quiet", "--no-identify", "--retune-steps", "25"]
    assert main([*args, "--retune-problems", "4"]) == 0
    notes = json.loads((run / "distill.json").read_text())["notes"]
    assert "identify" not in notes and notes["retune"]["steps"] == 25
    assert notes["retune"]["num_problems"] == 4 and notes["retune"]["validation_problems"] == 256
    assert main(["distill", str(run), "--quiet", "--no-identify", "--no-retune"]) == 0
    assert json.loads((run / "distill.json").read_text())["chain_retuned"] is None
    capsys.readouterr()


def test_configs_refuse_what_cannot_run():
    with pytest.raises(ValueError, match="must be >= 1"):
        RetuneConfig(every=0)


def test_momentum_modes_numbers_are_free_except_a_direct_term():
    from probes.distill.free_numbers import decode, encode, free_numbers, relabel

    chain = [
        {"transform": "momentum_modes", "decays": [0.0, 0.9, 0.5], "weights": [0.1, 0.6, 0.3]},
        {"transform": "scale_by_learning_rate", "learning_rate": 2.0, "schedule": None},
    ]
    free = free_numbers(chain)
    assert free == [
        (0, "decays.1"),
        (0, "decays.2"),
        (0, "weights.0"),
        (0, "weights.1"),
        (0, "weights.2"),
        (1, "learning_rate"),
    ]
    again, _ = relabel(chain, free, encode(chain, free), "fitted")
    np.testing.assert_allclose(again[0]["decays"], [0.0, 0.9, 0.5], rtol=1e-6)
    np.testing.assert_allclose(again[0]["weights"], [0.1, 0.6, 0.3], rtol=1e-6)
    z = encode(chain, free) | {"0.decays.1": jnp.float32(0.0)}  # logit 0: decay 0.5
    assert float(decode(chain, free, z)[0]["decays"][1]) == pytest.approx(0.5)


def test_the_report_says_when_identification_added_damping():
    from probes.distill import format_report
    from probes.report.distillation import distill_section
    from probes.words import distill_sentence, identified_added_sentence

    cands = [
        {"structure": "detected", "round": 0, "validation_error": 0.19},
        {"structure": "detected", "round": 1, "validation_error": 0.127},
        {"structure": "detected + damping", "round": 1, "validation_error": 0.118},
    ]
    entry = {"transform": "damp_oscillations", "scale": 0.77, "decay": 0.74}
    distill = {
        "chain": [{"transform": "trace", "decay": 0.9}],
        "chain_identified": [entry, {"transform": "trace", "decay": 0.9}],
        "notes": {"identify": {"damping_added": True, "candidates": cands}},
        "results": {},
    }
    text = identified_added_sentence(distill)
    assert "κ = 0.77" in text and "ρ = 0.74" in text and "0.118 against 0.127" in text
    assert text in distill_section(distill)["notes"]
    row = {"metric": 0.05, "sem": 0.001}
    result = {
        **distill,
        "optax_code": chain_code(distill["chain"]),
        "results": {"learned": row, "best_baseline": {**row, "name": "momentum"}, "distilled": row},
        "gain": None,
    }
    assert text in format_report(result).splitlines()
    frac = {"mean": 0.67, "ci": [0.23, 1.0]}
    summary = distill_sentence({**distill, "fraction": frac, "fraction_identified": frac})
    assert "fitted to its updates (and oscillation damping added) 67%" in summary
    distill["notes"]["identify"]["damping_added"] = False
    assert identified_added_sentence(distill) is None
    assert not any("added oscillation damping" in n for n in distill_section(distill)["notes"])
    assert "damping added" not in distill_sentence({**distill, "fraction_identified": frac})
    # a damping entry that is not first (or a chain without one) is not reported as added
    distill["notes"]["identify"]["damping_added"] = True
    distill["chain_identified"] = distill["chain_identified"][::-1]
    assert identified_added_sentence(distill) is None
