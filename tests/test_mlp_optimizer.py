"""MLPOptimizer's update against a float64 NumPy reference written from its docstring."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lopt


def _reference_steps(opt, theta, params, grads_seq):
    """Float64, per-leaf, a loop over the docstring's equations; returns each step's updates."""
    mlp = [
        (np.asarray(layer["w"], np.float64), np.asarray(layer["b"], np.float64))
        for _, layer in sorted(theta["mlp"].items(), key=lambda kv: int(kv[0].rsplit("_", 1)[1]))
    ]
    decays = np.asarray(opt.momentum_decays)
    leaves = [np.asarray(x, np.float64) for x in jax.tree.leaves(params)]
    m = [np.zeros(x.shape + (len(decays),)) for x in leaves]
    v = [np.zeros(x.shape) for x in leaves]
    out = []
    for t, grads in enumerate(grads_seq):
        step_updates = []
        for i, g in enumerate(np.asarray(x, np.float64) for x in jax.tree.leaves(grads)):
            m[i] = decays * m[i] + (1 - decays) * g[..., None]
            v[i] = opt.rms_decay * v[i] + (1 - opt.rms_decay) * g * g
            inv = 1.0 / np.sqrt(v[i] + 1e-8)
            feats = np.concatenate(
                [
                    g[..., None],
                    leaves[i][..., None],
                    m[i],
                    np.sqrt(v[i])[..., None],
                    (g * inv)[..., None],
                    m[i] * inv[..., None],
                ],
                axis=-1,
            ).reshape(-1, 4 + 2 * len(decays))
            feats = feats / np.sqrt(np.mean(feats**2, axis=0) + 1e-6)
            embed = np.tanh(t / np.asarray(opt.timescales))
            x = np.concatenate([feats, np.broadcast_to(embed, (feats.shape[0], embed.size))], 1)
            for k, (w, b) in enumerate(mlp):
                x = x @ w + b
                if k < len(mlp) - 1:
                    x = np.maximum(x, 0.0)
            delta = x[:, 0] * np.exp(opt.exp_mult * x[:, 1]) * opt.step_mult
            step_updates.append(delta.reshape(g.shape))
        leaves = [p + d for p, d in zip(leaves, step_updates, strict=True)]
        out.append(step_updates)
    return out


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"hidden_sizes": (8, 5, 3), "momentum_decays": (0.1, 0.9), "timescales": (3.0,)},
    ],
)
def test_update_matches_float64_reference(kwargs):
    opt = lopt.MLPOptimizer(exp_mult=0.5, step_mult=0.1, **kwargs)
    theta = opt.init(jax.random.key(0))
    keys = jax.random.split(jax.random.key(1), 8)
    params = {
        "w": jax.random.normal(keys[0], (37, 11)),
        "b": [jax.random.normal(keys[1], (11,)), jnp.asarray(0.7)],
        "c": 3.0 * jax.random.normal(keys[2], (2, 3, 4)),
    }
    grads_seq = [jax.tree.map(lambda x, k=k: jnp.sin((k + 2.0) * x + k), params) for k in range(4)]
    expected = _reference_steps(opt, theta, params, grads_seq)
    tx = opt.optimizer(theta)
    update = jax.jit(tx.update)
    state = tx.init(params)
    for grads, want in zip(grads_seq, expected, strict=True):
        updates, state = update(grads, state, params)
        got = jax.tree.leaves(updates)
        scale = max(np.max(np.abs(w)) for w in want)
        for g, w in zip(got, want, strict=True):
            assert g.shape == w.shape and g.dtype == jnp.float32
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * scale)
        params = jax.tree.map(lambda p, u: p + u, params, updates)


def test_bad_gradient_skips_the_step():
    opt = lopt.MLPOptimizer()
    tx = opt.optimizer(opt.init(jax.random.key(0)))
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    state = tx.init(params)
    updates, state = tx.update(jax.tree.map(jnp.ones_like, params), state, params)
    bad = {"w": jnp.ones((3, 2)).at[0, 0].set(jnp.nan), "b": jnp.ones(2)}
    skipped, after = tx.update(bad, state, params)
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(skipped))
    assert int(after.count) == 1 and int(after.skipped) == 1
    np.testing.assert_array_equal(after.momentum, state.momentum)
    np.testing.assert_array_equal(after.rms, state.rms)
