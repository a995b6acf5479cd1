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
