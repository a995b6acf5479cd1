"""Building blocks on systems with known answers: linear RNN, saddle, random GRU."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lopt
import probes
import tasks
from probes import reference
from probes.fixed_points import FIXED, floor
from probes.linearize import predicted_steady_response, steady_response

H = 6


def _linear(key):
    k1, k2, k3 = jax.random.split(key, 3)
    W = 0.6 * jax.random.orthogonal(k1, H) * jnp.linspace(0.3, 0.9, H)
    return reference.linear_cell(W, jax.random.normal(k2, (H,)), 0.1 * jax.random.normal(k3, (H,)))


def test_linear_rnn_fixed_point_is_exact():
    cell = _linear(jax.random.key(0))
    W, b = np.asarray(cell.step.args[0]["W"], np.float64), np.asarray(cell.step.args[0]["b"])
    inputs = jnp.array([-1.0, 0.0, 0.5, 2.0])
    seeds = jax.random.normal(jax.random.key(1), (5, H))
    fp = probes.fixed_points(cell, inputs, seeds)
    for i, g in enumerate(np.asarray(inputs)):
        slot = int(np.argmax(np.asarray(fp.count[i])))
        assert fp.kind[i, slot] == FIXED and fp.count[i, slot] == 5
        assert int(np.sum(np.asarray(fp.mask[i]))) == 1  # duplicates merged
        exact = np.linalg.solve(np.eye(H) - W, b * g)
        np.testing.assert_allclose(fp.points[i, slot], exact, atol=1e-5)


def test_saddle_and_attractors_found():
    cell = reference.saddle_cell(k=2.0, a=0.5)
    seeds = jnp.stack([jnp.linspace(-1.5, 1.5, 9), jnp.linspace(1, -1, 9)], -1)
    fp = probes.fixed_points(cell, jnp.zeros(1), seeds)
    pts = np.asarray(fp.points[0])[np.asarray(fp.mask[0]) & (np.asarray(fp.kind[0]) == FIXED)]
    x0 = np.sort(pts[:, 0])
    xstar = 0.9575040  # x = tanh(2x)
    np.testing.assert_allclose(x0, [-xstar, 0.0, xstar], atol=1e-5)
    lin = probes.linearize(cell, jnp.zeros(2))
    np.testing.assert_allclose(np.sort(np.real(lin.eigenvalues)), [0.5, 2.0], atol=1e-6)


def test_random_gru_fixed_points_reach_float32_floor():
    cell = reference.random_gru_cell(jax.random.key(3), 12)
    seeds = 0.5 * jax.random.normal(jax.random.key(4), (8, 12))
    fp = probes.fixed_points(cell, jnp.linspace(-2, 2, 5), seeds)
    fixed = np.asarray(fp.mask) & (np.asarray(fp.kind) == FIXED)
    assert fixed.any(axis=1).all()
    assert np.all(np.asarray(fp.residual)[fixed] <= np.asarray(fp.floor)[fixed])
    r = jax.vmap(jax.vmap(lambda h, g: cell.step(h, g) - h, (0, None)))(fp.points, fp.inputs)
    bound = floor(fp.points)
    assert np.all((np.max(np.abs(r), -1) <= bound)[fixed])


def test_linearization_identities_on_random_gru():
    cell = reference.random_gru_cell(jax.random.key(5), 10)
    fp = probes.fixed_points(
        cell, jnp.zeros(1), 0.3 * jax.random.normal(jax.random.key(6), (4, 10))
    )
    h = fp.points[0, int(np.argmax(np.asarray(fp.count[0])))]
    lin = probes.linearize(cell, h)
    # biorthonormal: Lᴴ R = I
    np.testing.assert_allclose(np.conj(lin.left).T @ lin.right, np.eye(10), atol=1e-4)
    np.testing.assert_allclose(np.sum(lin.alpha).real, lin.alpha_eff, rtol=1e-3, atol=1e-6)
    assert abs(np.sum(lin.alpha).imag) < 1e-6
    pred = float(predicted_steady_response(lin))
    actual = float(steady_response(cell, h, delta=1e-3, steps=1000))
    np.testing.assert_allclose(actual, pred, rtol=2e-2)
    pair = np.asarray(lin.pair)
    for i, j in enumerate(pair):
        if j >= 0:
            np.testing.assert_allclose(lin.eigenvalues[j], np.conj(lin.eigenvalues[i]), atol=1e-5)
            np.testing.assert_allclose(lin.alpha[j], np.conj(lin.alpha[i]), atol=1e-5)


def test_update_function_and_effective_lr():
    cell = lopt.hand_designed.clipped_sgd(0.1, 0.5)
    gs = jnp.array([-2.0, -0.2, 0.0, 0.3, 1.0])
    np.testing.assert_allclose(
        probes.update_function(cell, jnp.zeros(1), gs), [0.05, 0.02, 0.0, -0.03, -0.05], atol=1e-7
    )
    np.testing.assert_allclose(probes.effective_lr(cell, jnp.zeros(1)), 0.1, rtol=1e-6)
    gru = reference.random_gru_cell(jax.random.key(0), 8)
    h = gru.init_state()
    eps = 1e-3
    fd = -(
        probes.update_function(gru, h, jnp.array([eps]))[0]
        - probes.update_function(gru, h, jnp.array([-eps]))[0]
    ) / (2 * eps)
    np.testing.assert_allclose(probes.effective_lr(gru, h), fd, rtol=1e-2)
    from probes.update_function import effective_lr_along, update_function_along

    dirs = jnp.eye(8)[:2]
    assert update_function_along(gru, h, dirs, jnp.array([-1.0, 0.0, 1.0]), gs).shape == (2, 3, 5)
    along = effective_lr_along(gru, h, dirs, jnp.array([0.0]))
    np.testing.assert_allclose(along[:, 0], probes.effective_lr(gru, h), rtol=1e-6)


# h' = tanh(k·h + g) (the first coordinate of saddle_cell; the second is linear, h' = h/2 + g).
# Its fixed points satisfy g = atanh(x) - k·x; a branch folds where dg/dx = 0, i.e.
# 1/(1 - x²) = k: x_f = ±√(1 - 1/k), |g_f| = k·x_f - atanh(x_f) (0.5328 for k = 2). For k < 1
# there is one fixed point for every g (no fold).
def _fold_input(k):
    x = np.sqrt(1.0 - 1.0 / k)
    return np.arctanh(x) - k * x


# One grid shape (0, then 40 log-spaced magnitudes: the analysis's layout) for every case, so
# the continuation compiles once for these tests.
_GRID = np.concatenate([[0.0], np.logspace(-3, np.log10(2.0), 40)])


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_continuation_flags_exactly_the_hysteresis_fold(sign):
    cell = reference.saddle_cell(k=2.0, a=0.5)
    g_f = abs(_fold_input(2.0))  # 0.5328
    # Start on the branch that ends at the fold: for g* > 0 the lower one (x < 0).
    x0 = -sign * 0.9575040
    br = probes.continuation(cell, sign * _GRID, jnp.array([x0, 0.0]))
    assert np.all(np.asarray(br.kind) == FIXED)
    fold = np.asarray(br.fold)
    assert fold.sum() == 1
    j = int(np.argmax(fold))
    assert _GRID[j - 1] < g_f <= _GRID[j]  # between the last grid point before and after
    assert np.asarray(br.left_basin)[j] and np.asarray(br.jump_ratio)[j] > 4
    pts = np.asarray(br.points)[:, 0]
    assert np.all(sign * pts[:j] < 0) and np.all(sign * pts[j:] > 0)  # jumped to the other arm


def test_continuation_on_the_other_arm_has_no_fold():
    # Starting on the upper branch for g* > 0: it continues for every g* > 0.
    br = probes.continuation(reference.saddle_cell(k=2.0, a=0.5), _GRID, jnp.array([0.96, 0.0]))
    assert not np.asarray(br.fold).any()
    assert np.all(np.asarray(br.kind) == FIXED)


@pytest.mark.parametrize("k", [0.5, 0.95])
def test_continuation_without_fold_flags_nothing(k):
    # Monostable for k < 1; the jumps grow with g* on the log grid (and are uneven at the
    # first step from 0): none is a fold. k = 0.95 is steep near 0 (slope 1/(1-k) = 20).
    br = probes.continuation(reference.saddle_cell(k=k, a=0.5), _GRID, jnp.zeros(2))
    assert not np.asarray(br.fold).any()
    assert np.all(np.asarray(br.kind) == FIXED)
    assert np.max(np.asarray(br.jump_ratio)) < 2.0
    x = np.asarray(br.points)[:, 0]
    np.testing.assert_allclose(x, np.tanh(k * x + _GRID), atol=1e-5)


def test_trajectories_records_hidden_states_and_pca():
    fam = tasks.get("linear_regression", num_steps=20)
    tr = probes.trajectories(
        lopt.hand_designed.momentum(0.1, 0.9), fam, jax.random.key(0), num_problems=2, max_coords=3
    )
    assert tr.loss.shape == (2, 20) and tr.hidden.shape == (2, 20, 3, 1)
    # momentum's state is m' = βm + g
    np.testing.assert_allclose(
        tr.hidden[:, 1, :, 0], 0.9 * tr.hidden[:, 0, :, 0] + tr.grads[:, 1], rtol=1e-5
    )
    np.testing.assert_allclose(tr.updates, -0.1 * tr.hidden[..., 0], rtol=1e-5)
    p = probes.pca(tr.params, 2)
    assert p.components.shape == (2, 3)
    assert float(p.explained_ratio[0]) >= float(p.explained_ratio[1])


@pytest.mark.parametrize("seed", [0])
def test_dedup_keeps_lowest_q(seed):
    from probes.fixed_points import deduplicate

    pts = jnp.array([[0.0], [1e-4], [1.0], [1.0 + 1e-4], [5.0]])
    q = jnp.array([3.0, 1.0, 2.0, 4.0, 0.5])
    reps, mask, assign, counts = deduplicate(pts, q, jnp.ones(5, bool), tol=1e-2, size=2)
    assert list(np.asarray(reps)) == [4, 1] and np.all(mask)
    assert list(np.asarray(assign)) == [1, 1, -1, -1, 0]
    assert list(np.asarray(counts)) == [1, 2]


def test_a_cell_of_plain_functions_is_analysed_like_a_made_one():
    # lopt.cell_optimizer accepts a Cell of plain functions; the probes do too.
    cell = lopt.Cell(lambda: jnp.zeros(1), lambda h, g: 0.8 * h + g, lambda h: -0.05 * h[0])
    m = probes.analyze_cell(cell).momentum
    assert m.detected
    np.testing.assert_allclose([m.beta, m.alpha], [0.8, 0.05], rtol=1e-4)
