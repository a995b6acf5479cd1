"""The probes on GRU optimizers meta-trained on linear regression (quick preset). Slow.

Each seed is meta-trained once per session (about 30 s each on two cores) and analysed with
:func:`probes.analyze` on its own task family. What is asserted, per seed:

* **convergence point**: the fixed-point search at ``g* = 0`` (seeds: states visited on
  training problems and along the autonomous trajectory) finds exactly one fixed point at the
  float32 floor, it is stable (spectral radius < 1), and every seed iterated under ``F(·, 0)``
  lands on it;
* **momentum**: its dominant fitted mode is real (or a complex pair whose own response keeps
  its sign until it has decayed below 5%: a monotone response, see
  :data:`probes.detectors.SIGN_CHANGE_LEVEL`) with ``|λ|`` in ``[0.7, 0.97]``;
* **clipping**: ``U(h0, g)`` saturates, with the threshold inside the probed grid and inside
  the range of gradients seen in training;
* **adaptation**, along the branches traced from the convergence point over the training range
  (percentiles 1%–99.9% of ``|g|``): every branch point is a fixed point (at most one next to
  a fold may be slow or failed: the ghost of the vanished branch); the branch connected
  to ``h*(0)`` (where about 90% of the training gradients lie) has a flat ``α_eff`` (log-log
  slope within ±0.1); each arm folds onto a second stable branch inside the training range, and
  on the segment that reaches the largest training ``|g*|`` ``α_eff`` falls (slope ≤ -0.2, a drop
  of ≥ 20%) on at least one arm. Which arm folds varies with the seed (docs/reproduction.md).

Seeds 0 and 2: with the current GRU formulation seed 1's meta-training blows up (its
meta-gradient norm explodes from meta-step ~260; validation keeps step 100's theta, which scores
0.0807 against tuned momentum's 0.0504), so it is not the trained optimizer these claims are
about.

The paper's claim as stated (``α_eff`` falls as ``|g*|`` grows over the range of gradients
seen in training, on each arm) does **not** hold for these optimizers, because the branch past
the fold starts far above the flat branch: ``test_alpha_eff_falls_over_the_whole_training_range``
records it as an expected failure (strict, so it is noticed if training changes).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
import probes
import tasks
from probes.detectors import ADAPT_DROP, ADAPT_SLOPE
from probes.fixed_points import FIXED

pytestmark = pytest.mark.slow

SEEDS = (0, 2)


@dataclasses.dataclass
class Trained:
    cell: lopt.Cell
    analysis: probes.Analysis
    hidden: np.ndarray  # (S, H) visited states
    grads: np.ndarray
    tx: optax.GradientTransformation | None = None  # the optimizer as an optax transformation


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> dict[int, Trained]:
    from lopt.meta_train import meta_train
    from lopt.presets import preset

    p = preset("linear_regression", "quick")
    family = tasks.get("linear_regression", **p.task_settings)
    out = {}
    for seed in SEEDS:
        opt, config = p.build()
        run = tmp_path_factory.mktemp(f"linear_regression_quick_seed{seed}")
        meta_train(opt, family, dataclasses.replace(config, seed=seed), out_dir=run, progress=False)
        opt, theta, _ = lopt.load(run / "theta.npz")
        key = jax.random.key(0)
        analysis = probes.analyze(opt, theta, family=family, key=key)
        tr = probes.trajectories(opt, family, key, theta=theta)
        hidden = np.asarray(tr.hidden)  # (B, T, C, H)
        B, T, C, H = hidden.shape
        steps = np.linspace(0, T - 1, 8).astype(int)
        visited = hidden[:, steps, : min(C, 4)].reshape(-1, H)
        tx = opt.optimizer(theta)
        out[seed] = Trained(opt.cell(theta), analysis, visited, np.asarray(tr.grads), tx)
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_one_stable_fixed_point_at_zero_reached_by_every_seed(trained, seed):
    t = trained[seed]
    cell = t.cell
    h0 = jnp.asarray(cell.init_state(), jnp.float32)
    auto = jax.lax.scan(lambda h, _: (cell.step(h, jnp.float32(0)), h), h0, None, length=100)[1]
    seeds = np.concatenate([t.hidden, np.asarray(auto)[::10]])
    fp = probes.fixed_points(cell, jnp.zeros(1), seeds[None], max_unique=8)
    fixed = np.asarray(fp.mask[0]) & (np.asarray(fp.kind[0]) == FIXED)
    radii = [
        float(np.max(np.abs(np.asarray(probes.linearize(cell, jnp.asarray(p)).eigenvalues))))
        for p in np.asarray(fp.points[0])[fixed]
    ]
    # on failure: how many seeds reached each fixed point, and its spectral radius
    assert fixed.sum() == 1, list(zip(np.asarray(fp.count[0])[fixed].tolist(), radii, strict=True))
    h_star = np.asarray(fp.points[0])[np.argmax(fixed)]
    lin = probes.linearize(cell, jnp.asarray(h_star))
    assert np.max(np.abs(np.asarray(lin.eigenvalues))) < 1.0
    # Every seed, left to the dynamics at g = 0, converges to it.
    ends = jax.vmap(
        lambda h: jax.lax.fori_loop(0, 2000, lambda _, x: cell.step(x, jnp.float32(0)), h)
    )(jnp.asarray(seeds, jnp.float32))
    assert np.max(np.abs(np.asarray(ends) - h_star)) <= 1e-4
    # The analysis linearised at that point.
    assert t.analysis.meta["linearized_at"] == "fixed"
    assert t.analysis.meta["fixed_points_at_zero"] == 1


@pytest.mark.parametrize("seed", SEEDS)
def test_momentum_is_real_with_beta_near_the_heavy_ball_optimum(trained, seed):
    m = trained[seed].analysis.momentum
    # detected: real, or a pair whose response stays monotone down to SIGN_CHANGE_LEVEL
    assert m.detected, (m.is_real, m.sign_change_level, m.share)
    assert 0.7 <= abs(m.beta) <= 0.97, m.beta


@pytest.mark.parametrize("seed", SEEDS)
def test_update_saturates_within_the_probed_and_training_gradients(trained, seed):
    t = trained[seed]
    c = t.analysis.clipping
    assert c.detected
    grid = np.abs(c.gradients[c.gradients != 0])
    assert grid.min() < c.threshold < grid.max()
    assert c.threshold < np.percentile(np.abs(t.grads), 99.9)


def _arms(trained, seed):
    a = trained[seed].analysis.adaptation
    assert a.gradient_range_source.startswith("training")
    return a, a.branches


@pytest.mark.parametrize("seed", SEEDS)
def test_alpha_eff_along_the_branches(trained, seed):
    # What holds on every seed (which arm folds, and where, varies from seed to seed and with
    # float rounding; docs/reproduction.md gives the per-seed numbers): every branch point is a
    # fixed point except at most one next to a fold, the branch of the convergence point is
    # flat where most training gradients lie, and at least one arm folds inside the training
    # range onto a branch where α_eff falls with |g*|.
    a, branches = _arms(trained, seed)
    folding = []
    for name in ("pos", "neg"):
        b = branches[name]
        assert b["method"] == "continuation"
        # The ghost of the vanished branch slows the relaxation next to a fold.
        odd = [j for j, k in enumerate(b["kind"]) if k != "fixed"]
        near = {j + d for j in b["fold_indices"] for d in (0, 1, 2)}  # fold_indices: magnitudes
        assert len(odd) <= 1 and set(odd) <= near, (odd, b["fold_indices"], b["kind"])
        first, last = b["segments"][0], b["segments"][-1]
        assert last["stop"] == len(a.magnitudes)
        if b["fold_indices"]:
            assert abs(first["slope"]) <= 0.1, first
            assert first["training_fraction"] >= 0.5, first
            if a.gradient_range[0] < b["fold_magnitudes"][0] < a.gradient_range[1]:
                folding.append((name, last))
    assert folding, "no arm folds inside the training range"
    assert any(
        last["slope"] <= ADAPT_SLOPE and last["drop"] >= ADAPT_DROP and last["falls"]
        for _, last in folding
    ), folding


@pytest.mark.xfail(
    strict=True,
    reason="the paper's adaptation is not reproduced on linear regression (docs/reproduction.md)",
)
@pytest.mark.parametrize("seed", SEEDS)
def test_alpha_eff_falls_over_the_whole_training_range(trained, seed):
    a, branches = _arms(trained, seed)
    for name in ("pos", "neg"):
        alpha = branches[name]["alpha_eff"][1:]
        assert alpha[-1] < alpha[0]
    assert a.detected


@pytest.mark.parametrize("seed", SEEDS)
def test_oscillation_damping_follows_its_rule_on_each_seed(trained, seed):
    # Beyond the paper, and not universal: under the current rule (the sign-flipping gain must
    # halve by itself and relative to persistent ones, max(R, N) <= DAMP_RATIO) 2 of 8 seeds
    # damp (docs/reproduction.md); seed 0 keeps max(R, N) >= 78%, seed 2 reaches 0.52.
    # What holds on every seed: the analysis's gains are the optimizer's own, measured again
    # here through its optax transformation; its verdict is the rule applied to them; and a
    # detected half-point is not above the training range.
    from probes.detectors import DAMP_RATIO

    t = trained[seed]
    d = t.analysis.damping
    lo, hi = d.gradient_range
    # The gains, measured again on the optimizer itself: its optax transformation on a scalar
    # parameter (not the probe's cell path), by the definitions of probes.damping_gains.
    a = np.asarray(d.amplitudes, np.float64)
    const = np.ones(200, np.float32)
    alt = np.where(np.arange(200) % 2 == 0, 1.0, -1.0).astype(np.float32)

    def run(gs):
        def body(carry, g):
            p, s = carry
            u, s = t.tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), u

        p = jnp.zeros((), jnp.float32)
        return jax.lax.scan(body, (p, t.tx.init(p)), gs)[1][-20:]

    signs = jnp.asarray([const, -const, alt, -alt])
    u = np.asarray(
        jax.jit(jax.vmap(jax.vmap(run)))(jnp.asarray(a, jnp.float32)[:, None, None] * signs)
    )
    dc = -(u[:, 0].mean(-1) - u[:, 1].mean(-1)) / (2 * a)
    ny = -((u[:, 2] - u[:, 3]) * alt[-20:]).mean(-1) / (2 * a)
    ok = np.isfinite(np.asarray(d.dc_gain)) & np.isfinite(np.asarray(d.nyquist_gain))
    inside = ok & (a >= lo * (1 - 1e-6)) & (a <= hi * (1 + 1e-6))
    assert inside.sum() >= 5
    # Inside the training range the gains are the optimizer's own. Below it they are differences
    # of updates 2a apart on a learned bias, and float32 rounds the two code paths differently
    # (measured on seed 2 at the smallest amplitude: Nyquist gain 1.64 here against 1.37).
    np.testing.assert_allclose(np.asarray(d.dc_gain)[inside], dc[inside], rtol=0.02)
    np.testing.assert_allclose(np.asarray(d.nyquist_gain)[inside], ny[inside], rtol=0.02)
    # the rule on the re-measured gains, relative to the first amplitude in the training range:
    # away from the threshold the verdict must agree
    first = int(np.argmax(inside))
    both = np.maximum((ny / dc) / (ny[first] / dc[first]), ny / ny[first])
    low = float(np.min(both[inside]))
    if abs(low - DAMP_RATIO) > 0.1 and abs(d.min_ratio - DAMP_RATIO) > 0.1:
        assert d.detected == (low <= DAMP_RATIO), (low, d.min_ratio, d.detected)
    if d.detected:  # the half-point may lie below the training range, never above it
        assert d.kappa <= hi, (d.kappa, d.gradient_range)
