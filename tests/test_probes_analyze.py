"""analyze() on the project's learned optimizers (random theta; the meta-trained test is slow)."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lopt
import probes
import tasks

FAMILY = tasks.get("linear_regression", num_steps=20)


def _theta(opt):
    theta = opt.init(jax.random.key(0))
    # The readout starts at zero (no updates): give it a random direction so U is not flat.
    w = theta["readout"]["w"] if "readout" in theta else None
    if w is not None:
        theta["readout"]["w"] = 0.1 * jax.random.normal(jax.random.key(1), w.shape)
    return theta


def test_analyze_rnn_optimizer_with_trajectories():
    opt = lopt.RNNOptimizer(hidden_size=8)
    theta = _theta(opt)
    # A family without a key still records trajectories (drawn from key(0)): every probe grid
    # then sits at the gradients of training.
    a = probes.analyze(opt, theta, family=FAMILY)
    assert a.source == "cell" and a.meta["hidden_size"] == 8
    assert a.clipping.histogram_counts.sum() > 0
    # The adaptation grid covers the gradients seen along the recorded trajectories.
    assert a.adaptation.gradient_range_source.startswith("training")
    assert set(a.adaptation.branches) == {"pos", "neg"}
    for b in a.adaptation.branches.values():
        assert len(b["alpha_eff"]) == len(a.adaptation.magnitudes) + 1
    out = json.dumps(a.to_json(), allow_nan=False)
    assert '"schema_version": 13' in out
    # analysis.json reads back into the same Analysis (arrays, complex modes, branches)
    back = probes.Analysis.from_json(json.loads(out))
    assert back.to_json() == a.to_json()
    assert back.momentum.eigenvalues.dtype == complex and back.momentum.beta == a.momentum.beta
    # h* is recorded where the linearisation was taken
    assert np.asarray(a.meta["convergence_point"]).shape == (8,)
    # the momentum number is the dominant mode of the linearisation at the convergence point
    lin = probes.linearize(opt.cell(theta), jnp.zeros(8))
    assert np.isfinite(np.asarray(lin.alpha)).all()


def test_analyze_falls_back_to_black_box_without_a_cell():
    opt = lopt.MLPOptimizer()
    theta = opt.init(jax.random.key(0))
    a = probes.analyze(opt, theta)
    assert a.source == "optax"
    json.dumps(a.to_json(), allow_nan=False)
    assert probes.Analysis.from_json(a.to_json()).to_json() == a.to_json()
    # with a family, the black box gets the training gradients too (histogram, last step)
    family = tasks.get("linear_regression", num_steps=6)
    b = probes.analyze(opt, theta, family=family, key=jax.random.key(1))
    assert b.source == "optax" and sum(b.clipping.histogram_counts) > 0
    assert np.isfinite(b.bias.final_gradient)


def test_analysis_from_json_names_what_is_wrong():
    import optax
    import pytest

    good = probes.analyze_optax(optax.sgd(0.1)).to_json()
    assert probes.Analysis.from_json({**good, "task": {}, "key_seed": 3}).to_json() == good
    older = {k: v for k, v in good.items() if k != "damping"}  # before the damping probe
    assert probes.Analysis.from_json(older).damping is None
    cases = [
        ([], "analysis: expected an object"),
        ({k: v for k, v in good.items() if k != "schedule"}, "analysis: missing 'schedule'"),
        ({**good, "meta": [1]}, "analysis.meta"),
        ({**good, "clipping": {**good["clipping"], "detected": "yes"}}, "clipping.detected"),
        ({**good, "momentum": {**good["momentum"], "beta": "fast"}}, "momentum.beta"),
        ({**good, "damping": {**good["damping"], "amplitudes": 3}}, "damping.amplitudes"),
    ]
    for bad, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            probes.Analysis.from_json(bad)


def test_analyze_optax_twice_on_one_transformation_compiles_once():
    # The probe programs are cached per transformation object: the second analysis compiles
    # nothing and gives the same numbers.
    import optax

    compiles = []

    def listen(event, duration, **kwargs):
        del duration, kwargs
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    tx = optax.sgd(0.1, momentum=0.7)
    first = probes.analyze_optax(tx, warmup=50, impulse_steps=40, schedule_steps=20)
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        again = probes.analyze_optax(tx, warmup=50, impulse_steps=40, schedule_steps=20)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert compiles == []
    assert again.momentum.beta == first.momentum.beta == pytest.approx(0.7, abs=1e-3)
    np.testing.assert_array_equal(again.schedule.effective_lr, first.schedule.effective_lr)
    # another horizon is another program: compiled, and the schedule has the new length
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        longer = probes.analyze_optax(tx, warmup=50, impulse_steps=40, schedule_steps=30)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert compiles and len(longer.schedule.effective_lr) == 30


def test_a_run_made_per_call_leaves_no_program_in_the_cache():
    # analyze_cell's fallback builds a new run function per analysis: caching its programs
    # would never hit and would keep the cell (its weights) alive
    from probes.black_box import flip_program, impulse_program, momentum_from_response

    before = impulse_program.cache_info().currsize, flip_program.cache_info().currsize
    for decay in (0.5, 0.8):

        def run(gs, decay=decay):  # heavy ball, β = decay
            def body(m, g):
                m = decay * m + g
                return m, -0.1 * m

            return jax.lax.scan(body, jnp.float32(0), gs)[1]

        m, _, _ = momentum_from_response(run, 1.0, 20, 30, cached=False)
        assert m.beta == pytest.approx(decay, abs=1e-3)
    after = impulse_program.cache_info().currsize, flip_program.cache_info().currsize
    assert after == before
