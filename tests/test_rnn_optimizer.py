"""The component-wise RNN optimizer: equations, contract with the Cell, performance shape."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
import tasks
from lopt import networks

H = 6


def _random_theta(opt, key=0, scale=0.3):
    theta = opt.init(jax.random.key(key))
    k1, k2, k3 = jax.random.split(jax.random.key(key + 100), 3)
    theta["readout"]["w"] = scale * jax.random.normal(k1, theta["readout"]["w"].shape)
    theta["readout"]["b"] = jnp.asarray(0.05)
    theta["h0"] = scale * jax.random.normal(k2, theta["h0"].shape)
    leaves, treedef = jax.tree.flatten(theta["rnn"])
    keys = jax.random.split(k3, len(leaves))
    noisy = [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    theta["rnn"] = jax.tree.unflatten(treedef, noisy)
    return theta


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _reference_step(kind, rnn, h, x):
    """The paper's equations (docs/method.md, The learned optimizer) in NumPy, float64."""
    if kind == "gru":
        p = {k: np.asarray(v, np.float64) for k, v in rnn["gru"].items()}
        gx, w_h = x @ p["w_i"] + p["b"], p["w_h"]
        u = _sigmoid(gx[:H] + h @ w_h[:, :H])
        r = _sigmoid(gx[H : 2 * H] + h @ w_h[:, H : 2 * H])
        c = np.tanh(gx[2 * H :] + (r * h) @ w_h[:, 2 * H :])
        return u * h + (1 - u) * c
    if kind == "vanilla":
        p = {k: np.asarray(v, np.float64) for k, v in rnn["vanilla"].items()}
        return np.tanh(x @ p["w_i"] + h @ p["w_h"] + p["b"])
    p = {k: np.asarray(v, np.float64) for k, v in rnn["lstm"].items()}
    hh, cc = h[:H], h[H:]
    z = np.concatenate([x, hh]) @ p["w"] + p["b"]
    i, f, g, o = (z[k * H : (k + 1) * H] for k in range(4))
    cc = _sigmoid(f + 1.0) * cc + _sigmoid(i) * np.tanh(g)
    return np.concatenate([_sigmoid(o) * np.tanh(cc), cc])


@pytest.mark.parametrize(
    "kind,mode", [("gru", "raw"), ("gru", "log1p_sign"), ("lstm", "raw"), ("vanilla", "raw")]
)
def test_update_is_readout_of_new_state_per_paper_equations(kind, mode):
    opt = lopt.RNNOptimizer(kind, H, mode, input_scale=0.5, output_scale=2.0)
    theta = _random_theta(opt)
    grads = {"a": jnp.asarray([0.3, -2.0]), "b": jnp.asarray([[1e-3], [4.0]])}
    tx = opt.optimizer(theta)
    updates, state = jax.jit(tx.update)(grads, tx.init(grads))
    h0 = np.asarray(theta["h0"], np.float64)
    w = np.asarray(theta["readout"]["w"], np.float64)
    for row, g in enumerate([0.3, -2.0, 1e-3, 4.0]):
        gs = 0.5 * g
        x = np.array([gs]) if mode == "raw" else np.array([np.log1p(abs(gs)), np.sign(gs)])
        h1 = _reference_step(kind, theta["rnn"], h0, x)
        np.testing.assert_allclose(state.hidden[row], h1, rtol=1e-5, atol=1e-6)
        expected = 2.0 * (h1[:H] @ w + 0.05)  # readout of h (the LSTM's c is not read)
        got = jax.tree.leaves(updates)[row // 2].ravel()[row % 2]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["gru", "lstm", "vanilla"])
def test_zero_readout_makes_no_update(kind):
    opt = lopt.RNNOptimizer(kind, H)
    theta = opt.init(jax.random.key(0))
    assert not np.any(theta["readout"]["w"]) and float(theta["readout"]["b"]) == 0
    theta["rnn"] = jax.tree.map(lambda x: x + 0.3, theta["rnn"])  # the state itself moves
    tx = opt.optimizer(theta)
    params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2)}
    state = tx.init(params)
    update = jax.jit(tx.update)
    for k in range(3):
        grads = jax.tree.map(lambda x, k=k: (k - 1.5) * x, params)
        updates, new_state = update(grads, state, params)
        assert all(np.all(np.asarray(u) == 0) for u in jax.tree.leaves(updates))
        assert not np.allclose(new_state.hidden, state.hidden)
        state = new_state


def test_optimizer_is_the_cell_adapter_of_the_cell():
    opt = lopt.RNNOptimizer("gru", H, output_scale=0.7)
    theta = _random_theta(opt)
    params = {"w": jnp.linspace(-1, 1, 5)}
    a = opt.optimizer(theta, output_scale=0.3)
    b = lopt.cell_optimizer(opt.cell(theta, output_scale=0.3))
    ua, sa = jax.jit(a.update)(params, a.init(params))
    ub, sb = jax.jit(b.update)(params, b.init(params))
    np.testing.assert_array_equal(ua["w"], ub["w"])
    np.testing.assert_array_equal(sa.hidden, sb.hidden)
    assert isinstance(sa, lopt.CellOptimizerState)
    np.testing.assert_array_equal(optax.tree.get(sa, "hidden"), sa.hidden)
    # The Cell's leaves are theta (the GRU's three weight arrays split by gate group into
    # six) plus the two scales, so it crosses jit as an argument.
    cell = opt.cell(theta)
    assert len(jax.tree.leaves(cell.step)) == len(jax.tree.leaves(theta)) + 3 + 2
    np.testing.assert_array_equal(cell.init_state(), theta["h0"])
    # A new theta re-uses the compiled step.
    step = jax.jit(lambda c, h, g: c.step(h, g))
    h, g = jnp.zeros(H), jnp.asarray(0.5)
    step(cell, h, g)
    other = jax.tree.map(lambda x: x + 1.0, theta)
    np.testing.assert_allclose(step(opt.cell(other), h, g), opt.cell(other).step(h, g), rtol=1e-6)
    assert step._cache_size() == 1


def test_gru256_has_about_199k_meta_parameters():
    opt = lopt.RNNOptimizer()
    shapes = jax.eval_shape(opt.init, jax.random.key(0))
    total = sum(x.size for x in jax.tree.leaves(shapes))
    # 3·256·(256 + 1) + 3·256 GRU, 256 + 1 readout, 256 h0.
    assert total == 3 * 256 * 257 + 3 * 256 + 257 + 256 == 198_657
    assert shapes["rnn"]["gru"]["w_h"].shape == (256, 768)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cell": "transformer"},
        {"hidden_size": 0},
        {"hidden_size": 2.5},
        {"hidden_size": True},
        {"input_mode": "log"},
        {"input_scale": 0.0},
        {"output_scale": float("nan")},
        {"output_scale": "1"},
    ],
)
def test_bad_arguments_raise_one_line_value_error(kwargs):
    with pytest.raises(ValueError) as info:
        lopt.RNNOptimizer(**kwargs)
    assert "\n" not in str(info.value) and next(iter(kwargs)) in str(info.value)


@pytest.mark.parametrize(
    "opt",
    [
        lopt.RNNOptimizer("lstm", 12, "log1p_sign", input_scale=0.1, output_scale=3.0),
        lopt.RNNOptimizer(),
        lopt.MLPOptimizer(hidden_sizes=(4,), momentum_decays=(0.9,), timescales=(10.0, 100.0)),
    ],
)
def test_config_round_trip(opt):
    import json

    cfg = json.loads(json.dumps(opt.config()))
    again = lopt.from_config(cfg)
    assert again == opt and again.config() == opt.config()
    assert type(again) is type(opt) and cfg["type"] in ("rnn", "mlp")


def test_from_config_rejects_unknown_type_and_bad_arguments():
    with pytest.raises(ValueError, match="unknown optimizer type"):
        lopt.from_config({"type": "nope"})
    with pytest.raises(ValueError, match="bad config"):
        lopt.from_config({"type": "rnn", "colour": "red"})
    with pytest.raises(ValueError, match="hidden_size"):
        lopt.from_config({"type": "rnn", "hidden_size": -1})


def test_mlp_optimizer_has_no_cell():
    opt = lopt.MLPOptimizer()
    with pytest.raises(TypeError, match="black box"):
        opt.cell(opt.init(jax.random.key(0)))


def _dot_shapes(jaxpr):
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            out.append(tuple(tuple(v.aval.shape) for v in eqn.invars))
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            out.extend(_dot_shapes(sub))
    return out


def _primitives(jaxpr):
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            names |= _primitives(sub)
    return names


def test_hot_path_is_one_batched_matmul_per_gate_group_whatever_the_leaves():
    opt = lopt.RNNOptimizer("gru", 16)
    theta = opt.init(jax.random.key(0))
    tx = opt.optimizer(theta)
    one_leaf = {"w": jnp.zeros(1000)}
    many_leaves = {f"w{k}": jnp.zeros((10, 10)) for k in range(10)}
    dots = []
    for params in (one_leaf, many_leaves):
        jaxpr = jax.make_jaxpr(tx.update)(params, tx.init(params)).jaxpr
        assert not _primitives(jaxpr) & {"while", "scan"}  # no per-coordinate loop
        dots.append(_dot_shapes(jaxpr))
    assert dots[0] == dots[1]  # no per-leaf work
    assert ((1000, 16), (16, 32)) in dots[0]  # u, r: (P, H) @ (H, 2H)
    assert ((1000, 16), (16, 16)) in dots[0]  # c:    (P, H) @ (H, H)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_blocked_step_equals_unblocked_step_with_a_ragged_last_block(kind):
    # 1000 coordinates in blocks of 64: the last block is aligned to the end and overlaps.
    opt = lopt.RNNOptimizer(kind, H)
    theta = _random_theta(opt)
    cell = opt.cell(theta)
    k1, k2 = jax.random.split(jax.random.key(3))
    hidden = 0.5 * jax.random.normal(k1, (1000, cell.init_state().shape[0]))
    grads = jax.random.normal(k2, (1000,))

    def run(block_rows):
        def loss(theta, hidden):
            h, d = lopt.apply_cell(opt.cell(theta), hidden, grads, block_rows=block_rows)
            return jnp.sum(jnp.sin(h)) + jnp.sum(d**2), (h, d)

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(theta, hidden)

    (_, (h_ref, d_ref)), g_ref = run(0)
    (_, (h_blk, d_blk)), g_blk = run(64)
    np.testing.assert_allclose(h_blk, h_ref, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(d_blk, d_ref, rtol=1e-6, atol=1e-7)
    # Gradients through the blocks (overlapping rows counted once) match too.
    for a, b in zip(jax.tree.leaves(g_blk), jax.tree.leaves(g_ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


def test_large_parameter_counts_run_in_cache_sized_blocks():
    opt = lopt.RNNOptimizer("gru", 256)
    cell = opt.cell(opt.init(jax.random.key(0)))
    hidden, grads = jnp.zeros((5000, 256)), jnp.zeros(5000)
    jaxpr = jax.make_jaxpr(lambda h, g: lopt.apply_cell(cell, h, g))(hidden, grads).jaxpr
    assert ((1024, 256), (256, 512)) in _dot_shapes(jaxpr)  # 2^18 / 256 rows per block
    assert ((5000, 256), (256, 512)) not in _dot_shapes(jaxpr)
    with pytest.raises(ValueError, match="block_rows"):
        lopt.apply_cell(cell, hidden, grads, block_rows=-1)


FAMILY = tasks.get("linear_regression", num_steps=60)


def test_hand_set_rnn_is_heavy_ball_momentum_and_trains():
    # A tanh RNN whose first unit runs h ← tanh(s·g + 0.9h) ≈ s·g + 0.9h (s tiny keeps tanh
    # linear) read out as Δx = -(0.3/s)·h: momentum with α = 0.3, β = 0.9.
    s = 1e-4
    opt = lopt.RNNOptimizer("vanilla", 4, input_scale=s, output_scale=0.3 / s)
    theta = jax.tree.map(jnp.zeros_like, opt.init(jax.random.key(0)))
    theta["rnn"]["vanilla"]["w_i"] = theta["rnn"]["vanilla"]["w_i"].at[0, 0].set(1.0)
    theta["rnn"]["vanilla"]["w_h"] = theta["rnn"]["vanilla"]["w_h"].at[0, 0].set(0.9)
    theta["readout"]["w"] = theta["readout"]["w"].at[0].set(-1.0)
    key = jax.random.key(7)
    ours = lopt.evaluate(opt.optimizer(theta), FAMILY, key, num_problems=8)
    ref = lopt.evaluate(optax.sgd(0.3, momentum=0.9), FAMILY, key, num_problems=8)
    assert np.all(np.isfinite(ours))
    np.testing.assert_allclose(lopt.normalized_loss(ours), lopt.normalized_loss(ref), rtol=1e-2)
    assert float(jnp.mean(ours[:, -1] / ours[:, 0])) < 0.5  # it really trains


def test_small_random_gru_stays_finite_on_linear_regression():
    opt = lopt.RNNOptimizer("gru", 8, output_scale=0.01)
    theta = _random_theta(opt, scale=0.5)
    losses = lopt.evaluate(opt.optimizer(theta), FAMILY, jax.random.key(3), num_problems=8)
    assert losses.shape == (8, 60) and np.all(np.isfinite(losses))
    assert not np.allclose(losses[:, -1], losses[:, 0])  # it moved


@pytest.mark.parametrize("cell", ["gru", "lstm", "vanilla"])
def test_core_step_on_prepared_weights_is_apply(cell):
    core = networks.recurrent_core(cell, H, 2)
    params = core.init(jax.random.key(0))
    state = jax.random.normal(jax.random.key(1), (core.state_size,))
    x = jnp.array([0.3, -1.2])
    np.testing.assert_array_equal(
        core.step(core.prepare(params), state, x), core.apply(params, state, x)
    )
