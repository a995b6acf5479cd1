"""The optax contrib contract (optax/contrib/_common_test.py), for every learned optimizer.

Plus the generic Cell adapter against optax itself: heavy-ball momentum written as a Cell
matches ``optax.sgd(lr, momentum=β)``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt

H = 8


def _rnn(cell):
    opt = lopt.RNNOptimizer(cell=cell, hidden_size=H, input_mode="log1p_sign")
    theta = opt.init(jax.random.key(1))
    # A non-zero readout and h0, so updates and state are not trivially zero.
    k1, k2 = jax.random.split(jax.random.key(2))
    theta["readout"]["w"] = 0.1 * jax.random.normal(k1, theta["readout"]["w"].shape)
    theta["h0"] = 0.1 * jax.random.normal(k2, theta["h0"].shape)
    return opt, theta


def _mlp():
    opt = lopt.MLPOptimizer(hidden_sizes=(8, 8))
    return opt, opt.init(jax.random.key(1))


OPTIMIZERS = {"gru": _rnn("gru"), "lstm": _rnn("lstm"), "vanilla": _rnn("vanilla"), "mlp": _mlp()}
NAMES = list(OPTIMIZERS)


def _params(dtype=jnp.float32):
    return {
        "w": jnp.linspace(-1.0, 1.0, 6, dtype=dtype).reshape(2, 3),
        "b": [jnp.asarray([0.5, -0.25], dtype), jnp.asarray(2.0, dtype)],
    }


def _loss(params):
    return sum(jnp.sum((x.astype(jnp.float32) - 0.3) ** 2) for x in jax.tree.leaves(params))


def _grads(params):
    return jax.grad(_loss)(params)


def _assert_trees_close(a, b, **kw):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, **kw), a, b)


@pytest.mark.parametrize("name", NAMES)
def test_accepts_unknown_extra_args(name):
    opt, theta = OPTIMIZERS[name]
    tx = opt.optimizer(theta)
    params = _params()
    state = tx.init(params)
    u1, _ = jax.jit(lambda s: tx.update(_grads(params), s, params, value=1.0, foo=1, bar="x"))(
        state
    )
    u2, _ = jax.jit(tx.update)(_grads(params), state, params)
    _assert_trees_close(u1, u2, rtol=1e-6)
    assert any(np.any(np.asarray(x) != 0) for x in jax.tree.leaves(u1))


@pytest.mark.parametrize("name", NAMES)
def test_no_recompilation_on_second_update_or_new_theta(name):
    opt, theta = OPTIMIZERS[name]
    traces = []

    @jax.jit
    def step(theta, params, state):
        traces.append(None)  # runs only while tracing
        tx = opt.optimizer(theta)
        updates, state = tx.update(_grads(params), state, params)
        return optax.apply_updates(params, updates), state

    params = _params()
    state = opt.optimizer(theta).init(params)
    params, state = step(theta, params, state)
    params, state = step(theta, params, state)
    # A different theta with the same structure re-uses the compiled step too.
    theta2 = jax.tree.map(lambda x: x * 1.01, theta)
    step(theta2, params, state)
    assert len(traces) == 1


@pytest.mark.parametrize("name", NAMES)
def test_state_can_be_donated(name):
    opt, theta = OPTIMIZERS[name]
    tx = opt.optimizer(theta)

    def step(params, state):
        updates, state = tx.update(_grads(params), state, params)
        return optax.apply_updates(params, updates), state

    step = jax.jit(step, donate_argnums=(0, 1))
    params = _params()
    params, state = step(params, tx.init(params))  # no buffer appears twice in the state
    params, state = step(params, state)
    assert int(state.count) == 2


@pytest.mark.parametrize("name", NAMES)
def test_works_in_chain_after_clipping(name):
    opt, theta = OPTIMIZERS[name]
    tx = opt.optimizer(theta)
    chained = optax.chain(optax.clip_by_global_norm(0.1), tx)
    params = _params()
    grads = _grads(params)
    updates, state = jax.jit(chained.update)(grads, chained.init(params), params)
    clipped, _ = optax.clip_by_global_norm(0.1).update(grads, optax.EmptyState())
    expected, _ = jax.jit(tx.update)(clipped, tx.init(params), params)
    _assert_trees_close(updates, expected, rtol=1e-6, atol=1e-9)
    # The hidden state is reachable by name through the chain.
    hidden = optax.tree.get(state, "hidden") if name != "mlp" else state[1].momentum
    assert np.all(np.isfinite(hidden))


@pytest.mark.parametrize("name", NAMES)
def test_works_in_multisteps(name):
    opt, theta = OPTIMIZERS[name]
    tx = opt.optimizer(theta)
    multi = optax.MultiSteps(tx, every_k_schedule=3)
    params = _params()
    state = multi.init(params)
    grads = [jax.tree.map(lambda x, k=k: (k + 1.0) * x, _grads(params)) for k in range(3)]
    update = jax.jit(multi.update)
    for k, g in enumerate(grads):
        updates, state = update(g, state, params)
        if k < 2:
            assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(updates))
    mean = jax.tree.map(lambda *xs: sum(xs) / 3.0, *grads)
    expected, _ = jax.jit(tx.update)(mean, tx.init(params), params)
    _assert_trees_close(updates, expected, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name", NAMES)
def test_works_with_inject_hyperparams(name):
    opt, theta = OPTIMIZERS[name]
    injected = optax.inject_hyperparams(opt.optimizer)(theta, output_scale=0.5)
    params = _params()
    grads = _grads(params)
    state = injected.init(params)
    assert float(state.hyperparams["output_scale"]) == 0.5
    update = jax.jit(injected.update)
    half, _ = update(grads, state, params)
    tx = opt.optimizer(theta)
    full, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    # The update is linear in the output scale (default 1.0 for RNNs, step_mult for the MLP).
    base_scale = 1.0 if name != "mlp" else opt.step_mult
    _assert_trees_close(half, jax.tree.map(lambda x: x * 0.5 / base_scale, full), rtol=1e-5)
    state.hyperparams["output_scale"] = jnp.asarray(base_scale)
    again, _ = update(grads, state, params)
    _assert_trees_close(again, full, rtol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("name", NAMES)
def test_preserves_dtype(name, dtype):
    opt, theta = OPTIMIZERS[name]
    tx = opt.optimizer(theta)
    params = _params(dtype)
    grads = jax.tree.map(lambda x: x.astype(dtype), _grads(params))
    updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
    for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params), strict=True):
        assert u.dtype == p.dtype and u.shape == p.shape
    new_params = optax.apply_updates(params, updates)
    assert all(x.dtype == dtype for x in jax.tree.leaves(new_params))
    # Optimizer state stays float32 whatever the parameters' dtype.
    assert all(x.dtype in (jnp.float32, jnp.int32) for x in jax.tree.leaves(state)), jax.tree.map(
        lambda x: x.dtype, state
    )


@pytest.mark.parametrize("name", NAMES)
def test_state_stable_through_cond(name):
    opt, theta = OPTIMIZERS[name]
    tx = opt.optimizer(theta)
    params = _params()
    state = tx.init(params)

    @jax.jit
    def maybe_update(pred, state):
        def do(s):
            return tx.update(_grads(params), s, params)[1]

        return jax.lax.cond(pred, do, lambda s: s, state)

    stepped = maybe_update(True, state)
    kept = maybe_update(False, state)
    shape_dtype = lambda t: jax.tree.map(lambda x: (x.shape, x.dtype), t)  # noqa: E731
    assert shape_dtype(stepped) == shape_dtype(state) == shape_dtype(kept)
    assert int(stepped.count) == 1 and int(kept.count) == 0


@pytest.mark.parametrize("name", NAMES)
def test_nan_gradient_skips_the_step(name):
    opt, theta = OPTIMIZERS[name]
    tx = opt.optimizer(theta)
    update = jax.jit(tx.update)
    params = _params()
    state = tx.init(params)
    u1, s1 = update(_grads(params), state, params)
    params1 = optax.apply_updates(params, u1)
    bad = jax.tree.map(lambda x: x.at[...].set(jnp.nan) if x.ndim == 0 else x, _grads(params1))
    u2, s2 = update(bad, s1, params1)
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(u2))
    assert int(s2.skipped) == 1 and int(s2.count) == int(s1.count) == 1
    for a, b in zip(jax.tree.leaves(s1)[1:-1], jax.tree.leaves(s2)[1:-1], strict=True):
        np.testing.assert_array_equal(a, b)  # hidden state / accumulators unchanged
    # The next good step is exactly the step the run would have taken without the bad one.
    u3, s3 = update(_grads(params1), s2, params1)
    u3_ref, s3_ref = update(_grads(params1), s1, params1)
    _assert_trees_close(u3, u3_ref, rtol=0, atol=0)
    assert int(s3.count) == 2 and int(s3.skipped) == 1
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(u3))


def test_momentum_cell_matches_optax_sgd_momentum_on_nested_pytree():
    lr, beta = 0.05, 0.9
    params = {
        "layer": {"w": jnp.linspace(-1.0, 2.0, 12).reshape(3, 4), "b": jnp.arange(4.0) / 4},
        "scalars": [jnp.asarray(1.5), (jnp.ones((2, 1, 2)), jnp.asarray([-3.0]))],
    }
    targets = jax.tree.map(
        lambda x: jnp.cos(jnp.arange(x.size, dtype=jnp.float32)).reshape(x.shape), params
    )

    def loss(p):
        terms = jax.tree.map(
            lambda x, t: jnp.sum(jnp.arange(1, x.size + 1).reshape(x.shape) * (x - t) ** 2),
            p,
            targets,
        )
        return sum(jax.tree.leaves(terms)) / 10.0

    def run(tx):
        def body(carry, _):
            p, s = carry
            u, s = tx.update(jax.grad(loss)(p), s, p)
            p = optax.apply_updates(p, u)
            return (p, s), p

        return jax.lax.scan(body, (params, tx.init(params)), length=100)[1]

    ours = jax.jit(lambda: run(lopt.cell_optimizer(lopt.hand_designed.momentum(lr, beta))))()
    ref = jax.jit(lambda: run(optax.sgd(lr, momentum=beta)))()
    _assert_trees_close(ours, ref, rtol=1e-5, atol=1e-6)
    # The run really moved: the final parameters differ from the start by O(1).
    moved = jax.tree.map(lambda a, p: float(jnp.max(jnp.abs(a[-1] - p))), ours, params)
    assert max(jax.tree.leaves(moved)) > 0.5
