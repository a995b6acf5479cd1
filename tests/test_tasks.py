"""Task families: registry, analytic answers, data generation and loading, jit behaviour."""

import functools
import gzip
import logging
import math
import socket
import struct

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
import tasks
from tasks import mnist as mnist_module


@functools.partial(jax.jit, static_argnums=2)
def _problems(family, key, n):
    """``n`` problems: tasks, initial parameters, first losses (one compilation per family)."""
    k_task, k_init, k_loss = jax.random.split(key, 3)
    batch = jax.vmap(family.sample)(jax.random.split(k_task, n))
    params = jax.vmap(family.init)(batch, jax.random.split(k_init, n))
    losses = jax.vmap(family.loss, in_axes=(0, 0, None))(batch, params, k_loss)
    return batch, params, losses


def _random_params(family, task, seed=0, scale=0.3):
    """Parameters shaped like ``family.init``'s, drawn with NumPy (no compilation)."""
    shapes = jax.eval_shape(family.init, task, jax.random.key(0))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(scale * rng.normal(size=s.shape), s.dtype), shapes)


# ------------------------------------------------------------------------------ registry


def test_names_lists_the_four_paper_families():
    assert {"linear_regression", "mnist", "rosenbrock", "two_moons"} <= set(tasks.names())
    assert tasks.names() == sorted(tasks.names())


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(tasks.TaskError) as e:
        tasks.get("mnsit")
    message = str(e.value)
    assert "'mnsit'" in message and "\n" not in message
    for name in tasks.names():
        assert name in message


@pytest.mark.parametrize(
    "name, overrides, fragment",
    [
        ("linear_regression", {"dim": 0}, "dim"),
        ("linear_regression", {"dimension": 3}, "dimension"),
        ("rosenbrock", {"x_min": 3.0}, "x_min < x_max"),
        ("rosenbrock", {"num_steps": 0}, "num_steps"),
        ("rosenbrock", {"y_max": float("nan")}, "y_max"),
        ("two_moons", {"activation": "sigmoid"}, "activation"),
        ("two_moons", {"num_points": 1023}, "even"),
        ("two_moons", {"noise": -0.1}, "noise"),
        ("two_moons", {"batch_size": 0}, "batch_size"),
        ("two_moons", {"colour": "red"}, "colour"),
        ("mnist", {"batch_size": 0}, "batch_size"),
        ("mnist", {"colour": "red"}, "colour"),
        ("mnist", {"data_dir": "/nonexistent/lopt-mnist"}, "/nonexistent/lopt-mnist"),
    ],
)
def test_bad_override_is_a_one_line_task_error(name, overrides, fragment):
    with pytest.raises(tasks.TaskError) as e:
        tasks.get(name, **overrides)
    assert fragment in str(e.value) and "\n" not in str(e.value)


# --------------------------------------------------------------------- linear regression

LR = tasks.get("linear_regression")


def test_linear_regression_minimum_and_expanded_form_in_float64():
    with jax.enable_x64(True):
        sample, loss = jax.jit(LR.sample), jax.jit(LR.loss)
        grad = jax.jit(jax.grad(LR.loss, argnums=1))
        for i in range(6):
            task = sample(jax.random.key(i))
            h = np.asarray(task["hessian"])
            x_star = np.asarray(task["optimum"])
            lam = np.asarray(task["eigenvalues"])
            assert h.dtype == np.float64
            np.testing.assert_allclose(h, h.T, atol=1e-14)
            np.testing.assert_allclose(np.linalg.eigvalsh(h), np.sort(lam), rtol=1e-10)
            assert np.all((lam >= 1e-3) & (lam <= 1.0))
            # The textbook form: v = -H x*, c such that min f = 0.
            v = -h @ x_star
            c = 0.5 * x_star @ h @ x_star
            np.testing.assert_allclose(np.linalg.solve(h, -v), x_star, rtol=1e-8)
            assert float(loss(task, jnp.asarray(x_star), None)) == 0.0
            np.testing.assert_allclose(grad(task, x_star, None), 0.0)
            for x in np.random.default_rng(i).normal(size=(4, LR.dim)) * 3:
                expanded = 0.5 * x @ h @ x + v @ x + c
                np.testing.assert_allclose(loss(task, jnp.asarray(x), None), expanded, rtol=1e-9)
                assert expanded > 0


def test_linear_regression_distribution():
    n = 512
    batch, x0, f0 = _problems(LR, jax.random.key(1), n)
    assert bool(jnp.all(f0 > 0)) and LR.data_source == "synthetic"
    lam = np.asarray(batch["eigenvalues"], np.float64)
    h = np.asarray(batch["hessian"], np.float64)
    x_star = np.asarray(batch["optimum"], np.float64)
    assert lam.shape == (n, 5) and h.shape == (n, 5, 5)
    assert lam.min() >= 1e-3 * (1 - 1e-6) and lam.max() <= 1.0 * (1 + 1e-6)
    # log10 λ ~ U[-3, 0]: mean -1.5, standard deviation 3/√12.
    logs = np.log10(lam).ravel()
    assert abs(logs.mean() + 1.5) < 0.1 and abs(logs.std() - 3 / math.sqrt(12)) < 0.1
    # A Haar rotation makes E[H] = E[λ] I, E[λ] = (1 - 10⁻³)/(3 ln 10) ≈ 0.1446.
    mean_h = h.mean(axis=0)
    np.testing.assert_allclose(np.diag(mean_h), 0.999 / (3 * math.log(10)), atol=0.04)
    assert np.abs(mean_h - np.diag(np.diag(mean_h))).max() < 0.04
    # ...with eigenvectors that are not axis-aligned: off-diagonal entries are substantial.
    off = np.abs(h[:, ~np.eye(5, dtype=bool)]).mean()
    assert off > 0.2 * np.abs(np.diagonal(h, axis1=1, axis2=2)).mean()
    # v = -H x* ~ N(0, I).
    v = -np.einsum("bij,bj->bi", h, x_star)
    assert np.abs(v.mean(axis=0)).max() < 0.2
    np.testing.assert_allclose(np.cov(v.T), np.eye(5), atol=0.25)
    # x0 ~ N(0, I).
    x0 = np.asarray(x0)
    assert x0.shape == (n, 5) and np.abs(x0.mean()) < 0.1 and abs(x0.std() - 1) < 0.1


@jax.jit
def _descend(task, x0, lr, beta):
    """Heavy-ball (beta > 0) or gradient descent (beta = 0) on LR; iterates x_0..x_{T-1}."""
    tx = optax.sgd(lr, momentum=beta)

    def body(carry, _):
        x, state = carry
        g = jax.grad(LR.loss, argnums=1)(task, x, None)
        updates, state = tx.update(g, state, x)
        return (optax.apply_updates(x, updates), state), x

    return jax.lax.scan(body, (x0, tx.init(x0)), length=LR.num_steps)[1]


def _run_linear_regression(method):
    """Errors e_t = x_t - x* in the eigenbasis for 4 problems; returns (errors, r, λ)."""
    with jax.enable_x64(True):
        batch, x0, _ = _problems(LR, jax.random.key(7), 4)
        h = np.asarray(batch["hessian"])
        lam, q = np.linalg.eigh(h)  # ascending; actual λmin = lam[:, 0], λmax = lam[:, -1]
        lo, hi = lam[:, 0], lam[:, -1]
        if method == "gd":
            lr, beta = 2 / (lo + hi), np.zeros(4)
            rate = (hi - lo) / (hi + lo)  # (κ-1)/(κ+1)
        else:
            lr = 4 / (np.sqrt(lo) + np.sqrt(hi)) ** 2
            beta = ((np.sqrt(hi) - np.sqrt(lo)) / (np.sqrt(hi) + np.sqrt(lo))) ** 2
            rate = np.sqrt(beta)  # (√κ-1)/(√κ+1)
        xs = np.asarray(jax.vmap(_descend)(batch, x0, lr, beta))
    err = xs - np.asarray(batch["optimum"])[:, None]
    modes = np.einsum("bij,bti->btj", q, err)  # component along each eigenvector
    return err, modes, rate


def test_scaled_linear_regression_spreads_gradient_scales_over_four_decades():
    plain, scaled = LR, tasks.get("linear_regression_scaled")
    keys = jax.random.split(jax.random.key(2), 2000)
    a, b = jax.vmap(plain.sample)(keys), jax.vmap(scaled.sample)(keys)
    # The same quadratics, each loss (so each gradient) times s, log10 s ~ U[-2, 2].
    for name in ("hessian", "optimum", "eigenvalues"):
        np.testing.assert_array_equal(a[name], b[name])
    logs = np.log10(np.asarray(b["scale"]))
    assert -2 <= logs.min() < -1.9 and 1.9 < logs.max() <= 2
    assert abs(logs.mean()) < 0.1 and abs(logs.std() - 4 / math.sqrt(12)) < 0.05
    x = jnp.ones(5)
    task = jax.tree.map(lambda t: t[0], b)
    g_plain = jax.grad(plain.loss, argnums=1)(jax.tree.map(lambda t: t[0], a), x, None)
    g_scaled = jax.grad(scaled.loss, argnums=1)(task, x, None)
    want = task["scale"] * g_plain  # to float32 rounding (the gradient cancels in part)
    np.testing.assert_allclose(g_scaled, want, atol=1e-5 * float(jnp.abs(want).max()))
    assert "scale" not in a and tasks.get("linear_regression", scale_decades=0).settings() == {
        **plain.settings()
    }
    with pytest.raises(tasks.TaskError, match="scale_decades"):
        tasks.get("linear_regression", scale_decades=-1)


def test_method_reference_constants():
    lo, hi = 1e-3, 1.0
    assert 2 / (lo + hi) == pytest.approx(1.998, abs=1e-3)
    assert 4 / (math.sqrt(lo) + math.sqrt(hi)) ** 2 == pytest.approx(3.7585, abs=1e-4)
    assert ((1 - math.sqrt(lo)) / (1 + math.sqrt(lo))) ** 2 == pytest.approx(0.8811, abs=1e-4)


def test_gradient_descent_converges_at_the_theoretical_rate():
    err, modes, rho = _run_linear_regression("gd")
    t = np.arange(err.shape[1])
    norms = np.linalg.norm(err, axis=-1)
    # ‖e_{t+1}‖ ≤ ρ ‖e_t‖ at every step, ρ = (κ-1)/(κ+1)...
    floor = 1e-12 * norms[:, :1]  # roundoff, relative to the starting error
    assert np.all(norms[:, 1:] <= rho[:, None] * norms[:, :-1] * (1 + 1e-9) + floor)
    # ...and the bound is attained: the extreme modes contract by exactly ±ρ per step.
    low = modes[:, :1, 0] * rho[:, None] ** t
    top = modes[:, :1, -1] * (-rho[:, None]) ** t
    assert np.all(np.abs(modes[..., 0] - low) <= 1e-7 * np.abs(low) + floor)
    assert np.all(np.abs(modes[..., -1] - top) <= 1e-7 * np.abs(top) + floor)
    # Asymptotically the measured rate is ρ.
    np.testing.assert_allclose(norms[:, -1] / norms[:, -2], rho, rtol=1e-3)


def test_heavy_ball_converges_at_the_theoretical_rate():
    err, modes, r = _run_linear_regression("hb")
    gd_err, _, _ = _run_linear_regression("gd")
    t = np.arange(err.shape[1])[None, :]
    r_ = r[:, None]
    norms = np.linalg.norm(err, axis=-1)
    # With (α*, β*) both extreme modes have a double root ±r, r = √β* = (√κ-1)/(√κ+1), and
    # start at rest (x_{-1} = x_0): e_t = e_0 (1 + (1 ∓ r) t)(±r)^t exactly.
    # (A double root is ill-conditioned: compare to the scale of e_0, not of e_t.)
    atol = 1e-11 * norms[:, :1]
    low = modes[:, :1, 0] * (1 + (1 - r_) * t) * r_**t
    assert np.all(np.abs(modes[..., 0] - low) <= 1e-6 * np.abs(low) + atol)
    top = modes[:, :1, -1] * (1 + (1 + r_) * t) * (-r_) ** t
    assert np.all(np.abs(modes[..., -1] - top) <= 1e-6 * np.abs(top) + atol)
    # Every mode obeys |e_t| ≤ (1 + (1 + r) t) r^t |e_0|, hence so does the norm.
    assert np.all(norms <= (1 + (1 + r_) * t) * r_**t * norms[:, :1] * (1 + 1e-9) + atol)
    # Faster than gradient descent on these ill-conditioned problems.
    assert np.all(norms[:, -1] < 1e-2 * np.linalg.norm(gd_err[:, -1], axis=-1))


# ---------------------------------------------------------------------------- rosenbrock


def test_rosenbrock_minimum_and_values():
    fam = tasks.get("rosenbrock")
    assert fam.num_steps == 300
    one = jnp.array([1.0, 1.0])
    assert float(fam.loss({}, one, None)) == 0.0
    np.testing.assert_array_equal(jax.grad(fam.loss, argnums=1)({}, one, None), [0.0, 0.0])
    hessian = jax.jit(jax.hessian(fam.loss, argnums=1))({}, one, None)
    np.testing.assert_allclose(hessian, [[802.0, -400.0], [-400.0, 200.0]], rtol=1e-6)
    assert np.all(np.linalg.eigvalsh(np.asarray(hessian)) > 0)
    for x, y in [(-1.0, 1.0), (0.0, 0.0), (1.5, -0.5)]:
        expected = (1 - x) ** 2 + 100 * (y - x**2) ** 2
        np.testing.assert_allclose(fam.loss({}, jnp.array([x, y]), None), expected, rtol=1e-6)
    # Anywhere else on a grid the loss is positive.
    grid = jnp.stack(jnp.meshgrid(jnp.linspace(-2, 2, 41), jnp.linspace(-1, 3, 41)), -1)
    values = jax.jit(jax.vmap(jax.vmap(lambda p: fam.loss({}, p, None))))(grid)
    assert int(jnp.sum(values == 0)) == 1


def test_rosenbrock_start_points_fill_the_box():
    fam = tasks.get("rosenbrock", x_min=-1.0, y_max=2.0)
    batch, start, f0 = _problems(fam, jax.random.key(0), 2000)
    start = np.asarray(start)
    np.testing.assert_array_equal(start, np.asarray(batch["start"]))
    np.testing.assert_allclose(
        f0, (1 - start[:, 0]) ** 2 + 100 * (start[:, 1] - start[:, 0] ** 2) ** 2, rtol=1e-5
    )
    for axis, (lo, hi) in enumerate([(-1.0, 2.0), (-1.0, 2.0)]):
        assert lo <= start[:, axis].min() < lo + 0.02 and hi - 0.02 < start[:, axis].max() <= hi
        assert abs(start[:, axis].mean() - (lo + hi) / 2) < 0.1
    assert fam.settings() == {
        "num_steps": 300,
        "x_min": -1.0,
        "x_max": 2.0,
        "y_min": -1.0,
        "y_max": 2.0,
    }
    assert tasks.get("rosenbrock", **fam.settings()) == fam


# ----------------------------------------------------------------------------- two moons


def test_two_moons_data_are_balanced_moons():
    fam = tasks.get("two_moons")
    batch, params, f0 = _problems(fam, jax.random.key(0), 3)
    assert bool(jnp.all(f0 > 0)) and fam.data_source == "synthetic"
    assert batch["x"].shape == (3, 1024, 2) and batch["x_test"].shape == (3, 512, 2)
    np.testing.assert_array_equal(batch["y"].sum(axis=1), 512)
    np.testing.assert_array_equal(batch["y_test"].sum(axis=1), 256)
    assert not np.allclose(batch["x"][0], batch["x"][1])
    x = np.asarray(batch["x"]).reshape(-1, 2) + [0.5, 0.25]  # undo the centring
    y = np.asarray(batch["y"]).ravel()
    upper, lower = x[y == 0], x[y == 1] - [1.0, 0.5]
    # Each class lies on a unit half circle, blurred by noise of standard deviation 0.1.
    for points in (upper, lower):
        radius = np.linalg.norm(points, axis=1)
        assert abs(radius.mean() - 1) < 0.02 and abs(radius.std() - 0.1) < 0.015
    assert upper[:, 1].mean() > 0.5 and lower[:, 1].mean() < -0.5
    # Two hidden layers of 32; LeCun-normal init (weight variance 1/fan_in), zero biases.
    assert [p["w"].shape for p in params] == [(3, 2, 32), (3, 32, 32), (3, 32, 1)]
    assert abs(float(jnp.std(params[1]["w"])) * math.sqrt(32) - 1) < 0.05
    assert all(float(jnp.abs(p["b"]).max()) == 0 for p in params)


def test_two_moons_loss_is_logistic_plus_l2_and_minibatches_follow_the_key():
    fam = tasks.get("two_moons", l2=1e-2, width=8, depth=3, activation="relu")
    mini = tasks.get("two_moons", l2=1e-2, width=8, depth=3, activation="relu", batch_size=16)
    batch, _, _ = _problems(tasks.get("two_moons"), jax.random.key(0), 3)  # compiled above
    task = jax.tree.map(lambda a: a[0], batch)
    params = _random_params(fam, task)
    assert [p["w"].shape for p in params] == [(2, 8), (8, 8), (8, 8), (8, 1)]

    @jax.jit
    def losses(fam, mini, task, params):
        keys = [jax.random.key(k) for k in (5, 6, 5)]
        return [fam.loss(task, params, k) for k in keys], [mini.loss(task, params, k) for k in keys]

    (full5, full6, _), (mini5, mini6, mini5_again) = losses(fam, mini, task, params)
    # Reference in NumPy float64.
    h = np.asarray(task["x"], np.float64)
    for layer in params[:-1]:
        h = np.maximum(h @ np.asarray(layer["w"]) + np.asarray(layer["b"]), 0)
    z = (h @ np.asarray(params[-1]["w"]) + np.asarray(params[-1]["b"]))[:, 0]
    y = np.asarray(task["y"])
    logistic = np.mean(np.logaddexp(0, z) - y * z)
    l2 = 0.5 * 1e-2 * sum(np.sum(np.asarray(p["w"], np.float64) ** 2) for p in params)
    np.testing.assert_allclose(full5, logistic + l2, rtol=1e-5)
    assert float(full6) == float(full5)  # full batch: the key is ignored
    assert float(mini5) == float(mini5_again) != float(mini6)


def test_two_moons_mlp_separates_the_classes():
    fam = tasks.get("two_moons", num_points=256, num_test=512, num_steps=150)
    # Adam tuned on the family (a small grid keeps the test fast), then trained on new problems.
    space = lopt.SearchSpace("adam", (0.003, 0.01, 0.03, 0.1), "b1", (0.9,))
    tuned = lopt.tune("adam", fam, jax.random.key(1), num_problems=4, space=space, refine=False)
    assert tuned.hyperparams["learning_rate"] in (0.01, 0.03, 0.1)
    tx = optax.with_extra_args_support(tuned.tx)

    @jax.jit
    def train(family, key):
        state = lopt.init_inner(tx, family, key)
        before = family.metrics(state.task, state.params)
        state, losses = lopt.unroll(tx, family, state, family.num_steps)
        return losses, before, family.metrics(state.task, state.params)

    losses, before, after = jax.vmap(lambda k: train(fam, k))(
        jax.random.split(jax.random.key(0), 3)
    )
    assert np.all(after["accuracy"] >= 0.95), after
    assert np.all(after["loss"] < 0.1 * before["loss"])
    assert np.all(losses[:, -1] < 0.1 * losses[:, 0])


# --------------------------------------------------------------------------------- mnist


def _write_idx(path, array, magic, *, gz=False):
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def _tiny_digits(seed=0, n_train=20, n_test=10, size=12):
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


_IDX_NAMES = {
    "x_train": ("train-images-idx3-ubyte", 0x803),
    "y_train": ("train-labels-idx1-ubyte", 0x801),
    "x_test": ("t10k-images-idx3-ubyte", 0x803),
    "y_test": ("t10k-labels-idx1-ubyte", 0x801),
}


def _write_mnist_idx(directory, digits, *, gz=False):
    directory.mkdir(parents=True, exist_ok=True)
    return {
        k: _write_idx(directory / name, digits[k], magic, gz=gz)
        for k, (name, magic) in _IDX_NAMES.items()
    }


def _assert_same_data(fam, digits):
    assert fam.name == "mnist"
    assert fam.train_x.dtype == jnp.float32 and fam.train_y.dtype == jnp.int32
    np.testing.assert_allclose(fam.train_x[..., 0], digits["x_train"] / 255.0, rtol=1e-6)
    np.testing.assert_allclose(fam.test_x[..., 0], digits["x_test"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(fam.train_y, digits["y_train"])
    np.testing.assert_array_equal(fam.test_y, digits["y_test"])


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(mnist_module.DATA_DIR_ENV, raising=False)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_idx_files(tmp_path, gz, no_env, caplog):
    digits = _tiny_digits()
    _write_mnist_idx(tmp_path, digits, gz=gz)
    with caplog.at_level(logging.INFO, logger="tasks.mnist"):
        fam = tasks.get("mnist", data_dir=str(tmp_path), batch_size=4)
    _assert_same_data(fam, digits)
    assert fam.data_source == f"mnist-idx:{tmp_path.resolve()}"
    assert fam.data_source in caplog.text
    settings = fam.settings()
    assert settings == {
        "num_steps": 500,
        "batch_size": 4,
        "channels": 16,
        "data_dir": str(tmp_path.resolve()),
    }
    again = tasks.get("mnist", **settings)
    _assert_same_data(again, digits)
    assert again.data_source == fam.data_source


def test_mnist_reads_npz_directly_and_through_the_env_var(tmp_path, monkeypatch):
    digits = _tiny_digits(1)
    npz = tmp_path / "sub" / "mnist" / "mnist.npz"
    npz.parent.mkdir(parents=True)
    np.savez(npz, **digits)
    fam = tasks.get("mnist", data_dir=npz)
    _assert_same_data(fam, digits)
    assert fam.data_source == f"mnist-npz:{npz.resolve()}"
    # LOPT_DATA_DIR names a general data directory; MNIST may sit in its mnist/ folder.
    monkeypatch.setenv(mnist_module.DATA_DIR_ENV, str(tmp_path / "sub"))
    fam = tasks.get("mnist")
    _assert_same_data(fam, digits)
    assert fam.data_source == f"mnist-npz:{npz.resolve()}"
    assert fam.settings()["data_dir"] == str((tmp_path / "sub").resolve())


def _corrupt(kind, tmp_path):
    """Writes a malformed data set; returns (data_dir, the file the error must name)."""
    digits = _tiny_digits()
    if kind.startswith("npz"):
        path = tmp_path / "mnist.npz"
        if kind == "npz-missing-key":
            np.savez(path, **{k: v for k, v in digits.items() if k != "y_test"})
        elif kind == "npz-not-a-zip":
            path.write_bytes(b"this is not a zip archive")
        elif kind == "npz-count-mismatch":
            np.savez(path, **{**digits, "y_train": digits["y_train"][:-1]})
        return tmp_path, path
    files = _write_mnist_idx(tmp_path, digits, gz=kind == "gz-garbage")
    if kind == "bad-magic":
        bad = _write_idx(files["x_train"], digits["x_train"], 0x801)
    elif kind == "truncated":
        bad = files["x_test"]
        bad.write_bytes(bad.read_bytes()[:-5])
    elif kind == "too-long":
        bad = files["y_test"]
        bad.write_bytes(bad.read_bytes() + b"\x00")
    elif kind == "count-mismatch":
        bad = _write_idx(files["y_train"], digits["y_train"][:-1], 0x801)
    elif kind == "label-out-of-range":
        bad = _write_idx(files["y_test"], digits["y_test"] + 10, 0x801)
    elif kind == "gz-garbage":
        bad = files["x_train"]
        bad.write_bytes(b"\x1f\x8b garbage")
    elif kind == "missing-file":
        files["y_test"].unlink()
        bad = "t10k-labels-idx1-ubyte"
    return tmp_path, bad


@pytest.mark.parametrize(
    "kind",
    [
        "bad-magic",
        "truncated",
        "too-long",
        "count-mismatch",
        "label-out-of-range",
        "gz-garbage",
        "missing-file",
        "npz-missing-key",
        "npz-not-a-zip",
        "npz-count-mismatch",
    ],
)
def test_mnist_rejects_malformed_files_in_one_line(tmp_path, kind, no_env):
    directory, bad = _corrupt(kind, tmp_path)
    with pytest.raises(tasks.TaskError) as e:
        tasks.get("mnist", data_dir=str(directory))
    message = str(e.value)
    assert "\n" not in message
    assert str(bad) in message or str(getattr(bad, "name", bad)) in message, message


def test_read_idx_reports_the_magic_number(tmp_path):
    path = _write_idx(tmp_path / "labels", np.arange(7, dtype=np.uint8), 0x801)
    with pytest.raises(tasks.TaskError, match="bad magic number 0x00000801, expected 0x00000803"):
        mnist_module.read_idx(path, 0x803)
    np.testing.assert_array_equal(mnist_module.read_idx(path), np.arange(7))
    path.write_bytes(b"\x00\x00\x0d\x01" + path.read_bytes()[4:])  # float32 type code
    with pytest.raises(tasks.TaskError, match="bad magic number 0x00000d01"):
        mnist_module.read_idx(path)


@pytest.fixture(scope="module")
def fallback():
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(mnist_module.DATA_DIR_ENV, raising=False)

        def no_network(*args, **kwargs):
            raise OSError("network access in a test")

        mp.setattr(socket.socket, "connect", no_network)
        mp.setattr(socket, "create_connection", no_network)
        return tasks.get("mnist")


def test_mnist_falls_back_offline_and_says_so(fallback, tmp_path, monkeypatch, caplog):
    fam = fallback
    assert fam.name == "mnist"
    assert "fallback" in fam.data_source and "NOT MNIST" in fam.data_source
    assert fam.train_x.shape == (1500, 8, 8, 1) and fam.test_x.shape == (297, 8, 8, 1)
    assert float(fam.train_x.min()) == 0.0 and float(fam.train_x.max()) == 1.0
    assert set(np.unique(fam.train_y)) == set(range(10))
    assert fam.settings() == {"num_steps": 500, "batch_size": 32, "channels": 16, "data_dir": None}
    # LOPT_DATA_DIR without MNIST in it: the fallback, with a warning that names the folder.
    monkeypatch.setenv(mnist_module.DATA_DIR_ENV, str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="tasks.mnist"):
        again = tasks.get("mnist", num_steps=7)
    assert again.data_source == fam.data_source and again.num_steps == 7
    assert str(tmp_path) in caplog.text and "NOT MNIST" in caplog.text


@pytest.mark.parametrize("size, strides", [(28, (2, 2, 2)), (8, (2, 1, 1)), (12, (2, 2, 1))])
def test_conv_net_shapes(size, strides):
    assert mnist_module.conv_strides(size, size) == strides
    params = jax.eval_shape(
        lambda k: mnist_module.convnet_init(k, (size, size, 1), channels=4), jax.random.key(0)
    )
    assert [params[f"conv{i}"]["w"].shape for i in (1, 2, 3)] == [
        (3, 3, 1, 4),
        (3, 3, 4, 8),
        (3, 3, 8, 8),
    ]
    side = size
    for s in strides:
        side = -(-side // s)
    assert params["dense"]["w"].shape == (side * side * 8, 10)
    images = jax.ShapeDtypeStruct((5, size, size, 1), jnp.float32)
    logits = jax.eval_shape(mnist_module.convnet_apply, params, images)
    assert logits.shape == (5, 10) and logits.dtype == jnp.float32


def test_mnist_loss_and_metrics_are_cross_entropy_and_accuracy(fallback):
    fam = tasks.Mnist(
        fallback.train_x[:256], fallback.train_y[:256], fallback.test_x, fallback.test_y
    )
    full = tasks.Mnist(fam.train_x, fam.train_y, fam.test_x, fam.test_y, batch_size=None)

    @jax.jit
    def probe(fam, full, params):
        keys = jax.random.key(3), jax.random.key(3), jax.random.key(4)
        return (
            fam.logits(params, fam.test_x),
            fam.logits(params, fam.train_x),
            fam.metrics({}, params),
            [fam.loss({}, params, k) for k in keys],
            full.loss({}, params, keys[0]),
        )

    params = _random_params(fam, {})
    test_logits, train_logits, metrics, (a, b, c), full_loss = probe(fam, full, params)

    def cross_entropy(logits, y):
        shifted = np.asarray(logits, np.float64) - np.max(logits, axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
        return -np.mean(logp[np.arange(len(y)), np.asarray(y)])

    y = np.asarray(fam.test_y)
    np.testing.assert_allclose(metrics["loss"], cross_entropy(test_logits, y), rtol=1e-5)
    accuracy = np.mean(np.argmax(test_logits, 1) == y)
    np.testing.assert_allclose(metrics["accuracy"], accuracy, rtol=1e-6)
    # Minibatches follow the key; the full batch is the mean over the training set.
    assert float(a) == float(b) != float(c)
    np.testing.assert_allclose(full_loss, cross_entropy(train_logits, fam.train_y), rtol=1e-5)


@pytest.mark.slow
def test_mnist_conv_net_learns_the_fallback_digits(fallback):
    fam = tasks.Mnist(
        fallback.train_x, fallback.train_y, fallback.test_x, fallback.test_y, num_steps=150
    )
    losses = lopt.evaluate(optax.adam(3e-3), fam, jax.random.key(0), num_problems=1)
    assert float(losses[0, -10:].mean()) < 0.2 * float(losses[0, 0])


# --------------------------------------------------------------------------- custom families


def test_custom_family_without_data_trains_at_the_known_rate():
    fam = tasks.custom(
        "shifted_bowl",
        num_steps=20,
        sample=lambda key: {"target": jax.random.normal(key, (3,))},
        init=lambda task, key: jnp.zeros(3),
        loss=lambda task, p, key: jnp.sum((p - task["target"]) ** 2),
    )
    batch = jax.jit(jax.vmap(fam.sample))(jax.random.split(jax.random.key(0), 4))
    assert batch["target"].shape == (4, 3)
    losses = np.asarray(lopt.evaluate(optax.sgd(0.25), fam, jax.random.key(1), num_problems=4))
    # The gradient step 0.25 · 2(p - t) halves the distance: f_t = f_0 / 4^t.
    t = np.arange(6)
    np.testing.assert_allclose(losses[:, :6], losses[:, :1] * 0.25**t, rtol=1e-4)
    assert np.all(losses[:, 0] > 0)


def _ls_init(task, key, data):
    del task, key
    return jnp.zeros(data["x"].shape[1])


def _ls_loss(task, w, key, data):
    del task
    idx = jax.random.randint(key, (32,), 0, data["x"].shape[0])  # a minibatch
    return jnp.mean((data["x"][idx] @ w - data["y"][idx]) ** 2)


def _least_squares(x, y, num_steps=100):
    """The README's custom-family example: least squares on the user's arrays."""
    return tasks.custom(
        "least_squares", init=_ls_init, loss=_ls_loss, num_steps=num_steps, data={"x": x, "y": y}
    )


def test_custom_family_with_data_trains_with_evaluate():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 3)).astype(np.float32)
    y = x @ np.array([1.0, -2.0, 0.5], np.float32)
    fam = _least_squares(x, y)
    assert jax.vmap(fam.sample)(jax.random.split(jax.random.key(0), 2)) == {}
    losses = np.asarray(lopt.evaluate(optax.sgd(0.1), fam, jax.random.key(1), num_problems=4))
    assert losses.shape == (4, 100)
    # Interpolation: y = x w exactly, so minibatch SGD reaches the minimum 0.
    assert np.all(losses[:, -1] < 1e-4 * losses[:, 0])


# ------------------------------------------------------------------------ jit and pytrees


def test_families_are_jit_arguments_and_do_not_recompile_for_new_data():
    traces = []

    @jax.jit
    def first_loss(family, params, key):
        traces.append(type(family).__name__)  # runs only while tracing
        return family.loss(family.sample(key), params, key)

    rng = np.random.default_rng(0)

    def digits(seed):
        r = np.random.default_rng(seed)
        return (
            jnp.asarray(r.uniform(size=(16, 8, 8, 1)), jnp.float32),
            jnp.asarray(r.integers(0, 10, 16), jnp.int32),
            jnp.asarray(r.uniform(size=(4, 8, 8, 1)), jnp.float32),
            jnp.asarray(r.integers(0, 10, 4), jnp.int32),
        )

    key = jax.random.key(0)
    fam_a, fam_b = tasks.Mnist(*digits(1), batch_size=8), tasks.Mnist(*digits(2), batch_size=8)
    params = _random_params(fam_a, {})
    a, b = first_loss(fam_a, params, key), first_loss(fam_b, params, key)
    assert traces == ["Mnist"] and float(a) != float(b)  # new data, same program
    x1, x2 = (rng.normal(size=(64, 3)).astype(np.float32) for _ in range(2))
    w = jnp.zeros(3)
    c = first_loss(_least_squares(x1, x1 @ np.ones(3, np.float32)), w, key)
    d = first_loss(_least_squares(x2, x2 @ np.ones(3, np.float32)), w, key)
    assert traces == ["Mnist", "CustomFamily"] and float(c) != float(d)
    # A static setting is part of the program: changing it retraces (the counter works).
    first_loss(_least_squares(x1, x1 @ np.ones(3, np.float32), num_steps=5), w, key)
    assert traces == ["Mnist", "CustomFamily", "CustomFamily"]
    leaves = jax.tree.leaves(tasks.Mnist(*digits(1)))
    assert len(leaves) == 4  # data arrays are leaves; settings are not


@pytest.mark.parametrize("size, stride", [(8, 2), (4, 1), (28, 2), (7, 2)])
def test_conv3x3_equals_lax_convolution(size, stride):
    from tasks.mnist import conv3x3

    x = jax.random.normal(jax.random.key(0), (2, size, size, 3))
    w = jax.random.normal(jax.random.key(1), (3, 3, 3, 5))
    ref = jax.lax.conv_general_dilated(
        x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_allclose(conv3x3(x, w, stride), ref, rtol=1e-5, atol=1e-5)


def test_num_params_counts_a_problems_scalar_parameters():
    assert tasks.get("linear_regression", dim=7).num_params() == 7
    assert tasks.get("rosenbrock").num_params() == 2
    family = tasks.get("two_moons")
    params = family.init(family.sample(jax.random.key(0)), jax.random.key(1))
    assert family.num_params() == sum(x.size for x in jax.tree.leaves(params)) > 100
