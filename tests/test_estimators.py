import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tiny import TinyMomentum

import tasks
from lopt import estimators

OPT = TinyMomentum()
FAMILY = tasks.get("linear_regression", dim=3, log10_min=-1.0, num_steps=12)
KEY = jax.random.key(3)
THETA = OPT.init(KEY)


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def _cosine(a, b):
    a, b = _flat(a), _flat(b)
    return a @ b / np.linalg.norm(a) / np.linalg.norm(b)


def _grad(est, theta=THETA, key=KEY, state_key=KEY):
    state = jax.jit(est.init)(theta, state_key)
    return jax.jit(est.grad)(theta, state, key)


@pytest.fixture(scope="module")
def g_exact():
    """The full-horizon gradient over 2048 problems, the reference of the ES/PES tests below."""
    _, g, _, _ = _grad(estimators.full_bptt(OPT, FAMILY, num_problems=2048, horizon=12))
    return g


def test_objective_terms():
    losses = jnp.array([4.0, 2.0, 1.0, 3.0])
    np.testing.assert_allclose(
        estimators.objective_terms(losses, 4.0, "mean_normalized").mean(), 10 / 16
    )
    np.testing.assert_allclose(estimators.objective_terms(losses, 4.0, "final").mean(), 0.75)
    np.testing.assert_allclose(estimators.objective_terms(losses, 4.0, "min").mean(), 0.25)
    np.testing.assert_allclose(
        estimators.objective_terms(losses, 4.0, "log").mean(),
        np.mean(np.log([1, 0.5, 0.25, 0.75])),
        rtol=1e-6,
    )


def test_full_bptt_matches_finite_differences_in_float64():
    with jax.enable_x64(True):
        theta = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), THETA)
        est = estimators.full_bptt(OPT, FAMILY, num_problems=4, horizon=12)
        grad = jax.jit(est.grad)
        loss_fn = lambda t: grad(t, (), KEY)[0]  # noqa: E731
        _, g, _, info = grad(theta, (), KEY)
        assert int(info.num_valid) == 4
        for name in theta:
            e = 1e-6
            up = dict(theta, **{name: theta[name] + e})
            down = dict(theta, **{name: theta[name] - e})
            fd = (loss_fn(up) - loss_fn(down)) / (2 * e)
            np.testing.assert_allclose(g[name], fd, rtol=1e-5, atol=1e-9)


def test_truncated_with_truncation_equal_to_horizon_is_full_bptt():
    full = estimators.full_bptt(OPT, FAMILY, num_problems=4, horizon=12)
    tbptt = estimators.truncated_bptt(
        OPT, FAMILY, num_problems=4, horizon=12, truncation=12, stagger=False
    )
    lf, gf, _, _ = _grad(full)
    lt, gt, state, info = _grad(tbptt)
    np.testing.assert_allclose(lt, lf, rtol=1e-6)
    for name in gf:
        np.testing.assert_allclose(gt[name], gf[name], rtol=1e-5)
    # Every slot reached the horizon and was replaced by its next problem.
    assert int(info.resets) == 4
    np.testing.assert_array_equal(state.episode, 1)
    np.testing.assert_array_equal(state.inner.step, 0)


def test_truncated_windows_continue_and_reset_at_the_horizon():
    tbptt = estimators.truncated_bptt(
        OPT, FAMILY, num_problems=8, horizon=12, truncation=4, stagger=True
    )
    state = jax.jit(tbptt.init)(THETA, KEY)
    steps = np.asarray(state.inner.step)
    assert set(steps) <= {0, 4, 8} and len(set(steps)) > 1  # staggered, on window boundaries
    grad = jax.jit(tbptt.grad)
    _, g, state2, info = grad(THETA, state, KEY)
    expected = np.where(steps + 4 >= 12, 0, steps + 4)
    np.testing.assert_array_equal(state2.inner.step, expected)
    assert int(info.resets) == int(np.sum(steps + 4 >= 12))
    assert np.all(np.isfinite(_flat(g)))


@pytest.mark.parametrize("name", ["es", "pes"])
def test_antithetic_estimates_agree_with_the_exact_gradient(name, g_exact):
    # Full-horizon windows: ES and PES are both unbiased here; with 2048 pairs and a smooth
    # 3-parameter objective the sampling error is a few percent, so a cosine of 0.95 leaves
    # margin while any sign or scale error (cosine ~0 or negative) fails.
    kwargs = dict(num_pairs=2048, horizon=12, truncation=12, sigma=0.01)
    est = getattr(estimators, name)(OPT, FAMILY, **kwargs)
    _, g_est, _, info = _grad(est, key=jax.random.key(7))
    assert int(info.num_valid) == 2048
    assert _cosine(g_est, g_exact) > 0.95
    np.testing.assert_allclose(
        np.linalg.norm(_flat(g_est)), np.linalg.norm(_flat(g_exact)), rtol=0.15
    )


def test_pes_is_unbiased_under_truncation_where_es_is_not(g_exact):
    # Over a whole episode of 3 windows, PES's accumulated perturbations recover the
    # full-horizon gradient of the same problems; truncated ES credits only the last window.
    results = {}
    for name in ("es", "pes"):
        est = getattr(estimators, name)(
            OPT, FAMILY, num_pairs=2048, horizon=12, truncation=4, sigma=0.01, stagger=False
        )
        state = jax.jit(est.init)(THETA, KEY)
        grad = jax.jit(est.grad)
        total = None
        for i in range(3):
            _, g, state, _ = grad(THETA, state, jax.random.key(100 + i))
            total = g if total is None else jax.tree.map(jnp.add, total, g)
        results[name] = jax.tree.map(lambda x: x / 3, total)
    assert _cosine(results["pes"], g_exact) > 0.95
    assert _cosine(results["pes"], g_exact) > _cosine(results["es"], g_exact)


def test_nonfinite_problems_are_masked_and_counted():
    # A huge learning rate makes some problems diverge; the estimate stays finite and counts them.
    theta = dict(THETA, log_lr=jnp.asarray(np.log(30.0), jnp.float32))
    full = estimators.full_bptt(
        OPT, tasks.get("linear_regression", dim=3, num_steps=60), num_problems=16, horizon=60
    )
    loss, g, _, info = _grad(full, theta=theta)
    assert int(info.num_nonfinite) > 0
    assert int(info.num_valid) + int(info.num_nonfinite) == 16
    assert np.all(np.isfinite(_flat(g))) and np.isfinite(float(loss))


def test_bad_settings_fail_fast():
    with pytest.raises(ValueError, match="must divide"):
        estimators.truncated_bptt(OPT, FAMILY, num_problems=2, horizon=12, truncation=5)
    with pytest.raises(ValueError, match="needs the whole horizon"):
        estimators.truncated_bptt(
            OPT, FAMILY, num_problems=2, horizon=12, truncation=4, objective="final"
        )
    with pytest.raises(ValueError, match="unknown estimator"):
        estimators.make_estimator("reinforce", OPT, FAMILY)


# --- outlier_threshold: problems whose gradient is > κ x the median's are left out -----------

_BIG = estimators.SMALL_LEAF + 1  # a leaf too large for per-problem copies


def _toy_problem(theta, item):
    """Loss ``s · (½‖w - c‖² + ½ mean(v²) · ‖w‖²)``: per-problem gradients are known exactly."""
    scale, c = item
    w, v = theta["w"], theta["v"]
    loss = scale * (0.5 * jnp.sum((w - c) ** 2) + 0.5 * jnp.mean(v**2) * jnp.sum(w**2))
    return loss, None


def _toy(seed=0, n=8):
    rng = np.random.default_rng(seed)
    theta = {
        "w": jnp.asarray(rng.normal(size=3), jnp.float32),
        "v": jnp.asarray(rng.normal(size=_BIG), jnp.float32),
    }
    scale = np.ones(n, np.float32)
    c = jnp.asarray(rng.normal(size=(n, 3)), jnp.float32)
    return theta, scale, c


def _mean_of(problem, theta, batch, keep):
    grads = jax.vmap(lambda item: jax.grad(lambda t: problem(t, item)[0])(theta))(batch)
    return {k: np.sum(np.asarray(g, np.float64)[keep], 0) / keep.sum() for k, g in grads.items()}


def test_outlier_threshold_leaves_out_the_problem_whose_gradient_explodes():
    theta, scale, c = _toy()
    scale[2] = 1e6  # one problem's gradient is ~10^6 x the others'
    scale[4] = 3.0  # an ordinary spread: kept
    batch = (jnp.asarray(scale), c)
    run = jax.jit(lambda t, b: estimators._masked_mean_grad(_toy_problem, t, b, 10.0))
    loss, g, n, _, outliers = run(theta, batch)
    assert int(outliers) == 1 and int(n) == 7
    want = _mean_of(_toy_problem, theta, batch, np.arange(8) != 2)
    for k in want:
        np.testing.assert_allclose(g[k], want[k], rtol=2e-5, atol=1e-7)
    # The reported loss is the mean over every finite problem, outlier included.
    plain = jax.jit(lambda t, b: estimators._masked_mean_grad(_toy_problem, t, b))(theta, batch)
    np.testing.assert_allclose(loss, plain[0], rtol=1e-6)
    assert int(plain[4]) == 0 and int(plain[2]) == 8


def test_outlier_threshold_without_outliers_is_the_plain_mean():
    theta, scale, c = _toy(seed=1)
    batch = (jnp.asarray(scale), c)
    robust = estimators._masked_mean_grad(_toy_problem, theta, batch, 1e6)
    plain = estimators._masked_mean_grad(_toy_problem, theta, batch)
    assert int(robust[4]) == 0 and int(robust[2]) == 8
    for k in theta:
        np.testing.assert_allclose(robust[1][k], plain[1][k], rtol=1e-6, atol=1e-8)


def test_outlier_threshold_with_a_gradient_whose_square_overflows():
    # Problem 5's gradient (~1e37) is finite but its squared norm is not: the norm is scaled,
    # so the problem is an ordinary outlier, left out without overflow.
    theta, scale, c = _toy(seed=3)
    scale[5] = 1e37
    batch = (jnp.asarray(scale), c)
    loss, g, n, _, outliers = estimators._masked_mean_grad(_toy_problem, theta, batch, 10.0)
    assert int(outliers) == 1 and int(n) == 7  # none non-finite
    assert np.all(np.isfinite(_flat(g))) and np.isfinite(float(loss))
    want = _mean_of(_toy_problem, theta, batch, np.arange(8) != 5)
    for k in want:
        np.testing.assert_allclose(g[k], want[k], rtol=2e-5, atol=1e-7)


def test_outlier_threshold_needs_a_small_leaf_and_kappa_at_least_one():
    theta = {"v": jnp.zeros(_BIG)}
    batch = (jnp.ones(4), jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="at most 4096 entries"):
        estimators._masked_mean_grad(lambda t, i: (jnp.sum(t["v"]), None), theta, batch, 10.0)
    with pytest.raises(ValueError, match="outlier_threshold must be >= 1"):
        estimators.full_bptt(OPT, FAMILY, num_problems=4, horizon=12, outlier_threshold=0.5)


def test_outliers_with_a_zero_median_flag_nothing():
    norms = jnp.asarray([0.0, 0.0, 0.0, 5.0])
    ok = jnp.ones(4, bool)
    assert not np.any(np.asarray(estimators._outliers(norms, ok, 10.0)))
    flagged = estimators._outliers(
        jnp.asarray([1.0, 1.0, 2.0, 50.0, jnp.inf]), jnp.ones(5, bool), 10.0
    )
    np.testing.assert_array_equal(flagged, [False, False, False, True, True])


def test_outlier_threshold_with_a_nonfinite_gradient_masks_then_drops():
    # Problem 0's loss is finite but its gradient is not (sqrt at 0): the per-problem path
    # masks it and drops the outlier (problem 5) on the full gradient norm.
    theta, scale, c = _toy(seed=2)
    scale[5] = 1e6
    d = np.asarray(theta["w"][0]) + np.where(np.arange(8) == 0, 0.0, 100.0).astype(np.float32)

    def problem(theta, item):
        scale, c, d = item
        loss, _ = _toy_problem(theta, (scale, c))
        return loss + jnp.sqrt(jnp.abs(theta["w"][0] - d)), None

    batch = (jnp.asarray(scale), c, jnp.asarray(d))
    loss, g, n, _, outliers = jax.jit(
        lambda t, b: estimators._masked_mean_grad(problem, t, b, 10.0)
    )(theta, batch)
    assert int(n) == 6 and int(outliers) == 1  # 8 - 1 non-finite - 1 outlier
    assert np.all(np.isfinite(_flat(g))) and np.isfinite(float(loss))
    want = _mean_of(problem, theta, batch, ~np.isin(np.arange(8), [0, 5]))
    for k in want:
        np.testing.assert_allclose(g[k], want[k], rtol=2e-5, atol=1e-7)
    # The loss averages the problems with a finite loss and gradient (the outlier included),
    # with or without the threshold, as before the threshold existed.
    losses = np.asarray(jax.vmap(lambda item: problem(theta, item)[0])(batch), np.float64)
    np.testing.assert_allclose(loss, losses[1:].mean(), rtol=1e-6)
    plain = estimators._masked_mean_grad(problem, theta, batch)
    np.testing.assert_allclose(plain[0], losses[1:].mean(), rtol=1e-6)
    assert int(plain[2]) == 7 and int(plain[4]) == 0


def test_full_bptt_outlier_threshold_counts_the_problems_left_out():
    # A large learning rate gives the problems very different meta-gradients; at κ = 1 every
    # problem above the median is left out, and with a huge κ none is.
    theta = dict(THETA, log_lr=jnp.asarray(np.log(3.0), jnp.float32))
    infos = {}
    for kappa in (1.0, 1e9):
        est = estimators.full_bptt(OPT, FAMILY, num_problems=8, horizon=12, outlier_threshold=kappa)
        infos[kappa] = _grad(est, theta=theta)
    info = infos[1.0][3]
    assert int(info.num_outliers) == 4 and int(info.num_valid) == 4  # above the median of 8
    assert int(info.num_nonfinite) == 0
    assert int(infos[1e9][3].num_outliers) == 0
    plain = _grad(estimators.full_bptt(OPT, FAMILY, num_problems=8, horizon=12), theta=theta)
    for k in THETA:
        np.testing.assert_allclose(infos[1e9][1][k], plain[1][k], rtol=1e-5)
    np.testing.assert_allclose(infos[1.0][0], plain[0], rtol=1e-6)  # loss over all 8
