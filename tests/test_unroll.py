import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
import tasks

FAMILY = tasks.get("linear_regression", num_steps=60)
KEY = jax.random.key(0)


def test_evaluate_records_loss_before_each_update():
    losses = lopt.evaluate(optax.sgd(0.5), FAMILY, KEY, num_problems=4)
    assert losses.shape == (4, 60)
    # losses[:, 0] is f0 at the initial point drawn from the same key.
    k_task, k_init, _ = jax.random.split(jax.random.split(KEY, 4)[2], 3)
    task = FAMILY.sample(k_task)
    f0 = FAMILY.loss(task, FAMILY.init(task, k_init), None)
    np.testing.assert_allclose(losses[2, 0], f0, rtol=1e-6)


def test_same_key_gives_same_problems_for_every_optimizer():
    a = lopt.evaluate(optax.sgd(0.1), FAMILY, KEY, num_problems=8, num_steps=3)
    b = lopt.evaluate(optax.adam(0.3), FAMILY, KEY, num_problems=8, num_steps=3)
    np.testing.assert_array_equal(a[:, 0], b[:, 0])
    assert not np.array_equal(a[:, 2], b[:, 2])


def test_divergent_runs_are_kept_and_flagged():
    losses = lopt.evaluate(optax.sgd(1e3), FAMILY, KEY, num_problems=8)
    assert not np.all(np.isfinite(losses))
    summary = lopt.summarize(losses)
    assert summary.diverged == 8
    assert summary.metric == np.inf
    ok = lopt.summarize(lopt.evaluate(optax.sgd(1.0), FAMILY, KEY, num_problems=8))
    assert ok.diverged == 0 and 0 < ok.metric < 1


def test_summary_of_known_losses():
    losses = jnp.array([[2.0, 1.0, 0.0], [4.0, 4.0, 4.0], [1.0, jnp.nan, 1.0]])
    s = lopt.summarize(losses)
    assert s.diverged == 1 and s.metric == np.inf
    s = lopt.summarize(losses[:2])
    np.testing.assert_allclose(s.metric, (0.5 + 1.0) / 2)
    np.testing.assert_allclose(s.sem, np.std([0.5, 1.0], ddof=1) / np.sqrt(2))
    np.testing.assert_allclose(s.curve_mean, [1.0, 0.75, 0.5])
    np.testing.assert_allclose(s.final, 2.0)


@pytest.mark.parametrize("checkpoint", [False, True])
def test_unroll_gradient_matches_with_and_without_remat(checkpoint):
    def meta_loss(lr):
        t = optax.with_extra_args_support(optax.sgd(lr))
        state = lopt.init_inner(t, FAMILY, KEY)
        return jnp.mean(lopt.unroll(t, FAMILY, state, 10, checkpoint=checkpoint)[1])

    g = jax.grad(meta_loss)(0.3)
    eps = 1e-2
    fd = (meta_loss(0.3 + eps) - meta_loss(0.3 - eps)) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=2e-2)


def test_saved_products_give_the_same_meta_gradient_as_recomputing_them():
    opt = lopt.RNNOptimizer(hidden_size=4, output_scale=0.1)
    theta = jax.tree.map(
        lambda x: x + 0.1 * jax.random.normal(KEY, x.shape), opt.init(jax.random.key(1))
    )

    def meta_loss(theta, **kw):
        tx = opt.optimizer(theta)
        state = lopt.init_inner(tx, FAMILY, KEY)
        return jnp.mean(lopt.unroll(tx, FAMILY, state, 10, **kw)[1])

    ref = jax.grad(meta_loss)(theta)
    for kw in ({"checkpoint": True}, {"checkpoint": True, "save_products": True}):
        g = jax.grad(lambda t, kw=kw: meta_loss(t, **kw))(theta)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), g, ref)


@pytest.mark.parametrize("cell, floats", [("gru", 3 * 8), ("lstm", 4 * 8), ("vanilla", 8)])
def test_product_floats_counts_the_recurrent_products(cell, floats):
    opt = lopt.RNNOptimizer(cell=cell, hidden_size=8)
    assert lopt.product_floats(opt.optimizer(opt.init(KEY))) == floats


def test_product_floats_is_zero_without_recurrent_products():
    assert lopt.product_floats(optax.adam(1e-3)) == 0
    mlp = lopt.MLPOptimizer()
    assert lopt.product_floats(mlp.optimizer(mlp.init(KEY))) == 0
