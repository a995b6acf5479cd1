import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lopt
import tasks

KEY = jax.random.key(0)

# f(x) = ½x² (curvature 1) from a random start: SGD with step 1 lands on the minimum in one
# update, so the best step of the normalised loss is exactly 1.
QUADRATIC = tasks.custom(
    "unit_quadratic",
    num_steps=30,
    init=lambda task, key: jax.random.normal(key, (3,)),
    loss=lambda task, p, key: 0.5 * jnp.sum(p**2),
)


def test_baseline_matches_optax_and_rejects_bad_input():
    g = {"w": jnp.array([1.0, -2.0])}
    for tx, ref in [
        (lopt.baseline("momentum", learning_rate=0.1, momentum=0.9), optax.sgd(0.1, 0.9)),
        (lopt.baseline("adam", learning_rate=0.1, b1=0.5), optax.adam(0.1, b1=0.5, b2=0.999)),
        (lopt.baseline("rmsprop", learning_rate=0.1, decay=0.99), optax.rmsprop(0.1, 0.99)),
    ]:
        s, r = tx.init(g), ref.init(g)
        for _ in range(3):
            u, s = tx.update(g, s)
            v, r = ref.update(g, r)
        np.testing.assert_allclose(u["w"], v["w"], rtol=1e-6)
    with pytest.raises(ValueError, match="sgd, momentum, rmsprop, adam"):
        lopt.baseline("lion", learning_rate=0.1)
    with pytest.raises(ValueError, match="no hyperparameter 'beta'"):
        lopt.baseline("momentum", learning_rate=0.1, beta=0.9)
    with pytest.raises(ValueError, match="learning_rate"):
        lopt.baseline("sgd", learning_rate=-1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        lopt.baseline("adam", learning_rate=0.1, b1=1.0)


def test_search_spaces():
    for name in lopt.baseline_names():
        space = lopt.search_space(name)
        lrs = np.log10(space.learning_rates)
        np.testing.assert_allclose(np.diff(lrs), 0.5)  # a log grid
        assert 1.0 in space.learning_rates  # so the quadratic's optimum is on the grid
        coarse = space.coarse()
        assert len(coarse["learning_rate"]) == len(lrs) * max(1, len(space.other_values))
    assert lopt.search_space("sgd").other is None
    assert 0.9 in lopt.search_space("momentum").other_values
    assert lopt.search_space("adam").other == "b1"
    assert lopt.search_space("rmsprop").other == "decay"
    # Refinement around β = 0 stays in [0, 1) and has no duplicates.
    ref = lopt.search_space("momentum").refine({"learning_rate": 1.0, "momentum": 0.0})
    assert ref["momentum"].min() == 0.0 and ref["momentum"].max() < 1.0
    assert len(set(zip(ref["learning_rate"], ref["momentum"], strict=True))) == len(ref["momentum"])


def test_tune_finds_the_analytic_step_of_a_unit_quadratic():
    res = lopt.tune("sgd", QUADRATIC, KEY, num_problems=4)
    # The refinement stage steps 1/16 decade around the best coarse point.
    assert abs(np.log10(res.hyperparams["learning_rate"])) < 1 / 32
    assert res.metric == pytest.approx(1 / QUADRATIC.num_steps, rel=1e-4)
    assert not res.at_edge
    # Steps beyond 2 diverge on a curvature-1 quadratic; from 10 on they overflow within 30
    # steps, and those candidates are rejected.
    lr, metric = res.grid["learning_rate"], res.grid["metric"]
    assert np.all(metric[lr > 2.5] > 1)
    assert np.all(np.isinf(metric[lr >= 10])) and np.all(res.grid["diverged"][lr >= 10] == 4)
    # The returned tx is the winner: evaluating it on the same key reproduces its metric.
    again = lopt.summarize(lopt.evaluate(res.tx, QUADRATIC, KEY, num_problems=4))
    assert again.metric == pytest.approx(res.metric, rel=1e-5)


def test_diverging_candidates_are_rejected_even_if_listed_first():
    # lr = 1e4 overflows to inf and then NaN; np.argmin would pick a NaN metric.
    space = lopt.search_space("sgd")._replace(learning_rates=(1e4, 0.3))
    res = lopt.tune("sgd", QUADRATIC, KEY, num_problems=2, space=space, refine=False)
    assert res.hyperparams == {"learning_rate": pytest.approx(0.3)}
    assert np.isinf(res.grid["metric"][0]) and res.grid["diverged"][0] == 2
    with pytest.raises(ValueError, match="every candidate diverged"):
        lopt.tune(
            "sgd", QUADRATIC, KEY, num_problems=2, space=space._replace(learning_rates=(1e4,))
        )


def test_vectorised_and_sequential_pick_the_same_candidate():
    space = lopt.search_space("momentum")._replace(
        learning_rates=(0.1, 0.3, 1.0, 3.0), other_values=(0.0, 0.5, 0.9)
    )
    kw = dict(num_problems=3, num_steps=20, space=space, refine=False)
    a = lopt.tune("momentum", QUADRATIC, KEY, vectorize=True, chunk_size=5, **kw)
    b = lopt.tune("momentum", QUADRATIC, KEY, vectorize=False, **kw)
    assert a.hyperparams == b.hyperparams
    np.testing.assert_allclose(a.grid["metric"], b.grid["metric"], rtol=1e-5)
    assert a.grid["metric"].shape == (12,)


def test_momentum_on_linear_regression_lands_near_the_analytic_optimum():
    # Heavy ball's optimum on a spectrum in [1e-3, 1]: α* = (2 / (1 + √1e-3))² ≈ 3.76,
    # β* = ((√1000 - 1) / (√1000 + 1))² ≈ 0.88 (docs/method.md, Task families).
    family = tasks.get("linear_regression")
    res = lopt.tune("momentum", family, KEY, num_problems=16)
    assert 2.0 < res.hyperparams["learning_rate"] < 6.0
    assert 0.8 < res.hyperparams["momentum"] < 0.95
    assert res.metric < 0.07  # tuned momentum ≈ 0.05 (the paper); plain SGD ≈ 0.3


def test_metric_options_and_held_out_evaluation():
    space = lopt.search_space("sgd")._replace(learning_rates=(0.1, 0.5, 1.0))
    res = lopt.tune(
        "sgd",
        QUADRATIC,
        KEY,
        num_problems=2,
        space=space,
        refine=False,
        metric="final",
        eval_key=lopt.heldout_key(),
        eval_problems=5,
    )
    assert res.metric_name == "final" and res.metric == 0.0
    assert res.heldout.diverged == 0 and res.heldout.final == 0.0
    js = res.to_json()
    assert js["heldout"]["diverged"] == 0 and js["grid"]["learning_rate"] == [0.1, 0.5, 1.0]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "lion"}, "unknown optimizer 'lion'"),
        ({"num_problems": 0}, "num_problems must be a positive int"),
        ({"num_steps": -3}, "num_steps must be a positive int"),
        ({"metric": "median"}, "unknown metric"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
)
def test_bad_input_is_one_clear_value_error(kwargs, match):
    args = {"name": "sgd", **kwargs}
    name = args.pop("name")
    with pytest.raises(ValueError, match=match):
        lopt.tune(name, QUADRATIC, KEY, **args)


def test_tuned_baselines_cache_round_trip_and_invalidation(tmp_path, monkeypatch):
    import lopt.evaluation as compare

    cache = tmp_path / "tuned.json"
    first = compare.tune_baselines(QUADRATIC, ("sgd", "momentum"), cache=cache)
    assert cache.exists()
    assert first["sgd"].hyperparams["learning_rate"] == pytest.approx(1.0, rel=0.2)

    def no_tuning(*args, **kwargs):
        raise AssertionError("tuned again although the cache matches")

    monkeypatch.setattr(compare, "tune", no_tuning)
    again = compare.tune_baselines(QUADRATIC, ("sgd", "momentum"), cache=cache)
    for name in ("sgd", "momentum"):
        assert again[name].hyperparams == first[name].hyperparams
        assert again[name].metric == first[name].metric
        np.testing.assert_array_equal(again[name].grid["metric"], first[name].grid["metric"])
        g = {"w": jnp.array([1.0, -2.0])}
        u1, _ = again[name].tx.update(g, again[name].tx.init(g))
        u2, _ = first[name].tx.update(g, first[name].tx.init(g))
        np.testing.assert_array_equal(u1["w"], u2["w"])
    # A different key, baseline list or family setting is not a cache hit: it tunes.
    calls = []
    monkeypatch.setattr(compare, "tune", lambda name, *a, **k: calls.append(name) or first[name])
    compare.tune_baselines(QUADRATIC, ("sgd", "momentum"), key=jax.random.key(1), cache=cache)
    compare.tune_baselines(QUADRATIC, ("sgd",), cache=cache)
    other = tasks.custom(
        "unit_quadratic", num_steps=31, init=QUADRATIC.init_fn, loss=QUADRATIC.loss_fn
    )
    compare.tune_baselines(other, ("sgd",), cache=cache)
    # ... and neither is a corrupted file.
    cache.write_text("{not json")
    compare.tune_baselines(QUADRATIC, ("sgd",), cache=cache)
    cache.write_text("[1, 2]")
    compare.tune_baselines(QUADRATIC, ("sgd",), cache=cache)
    stored = json.loads(cache.read_text())
    del stored["results"]["sgd"]["hyperparams"]  # a matching identity with a broken entry
    cache.write_text(json.dumps(stored))
    compare.tune_baselines(QUADRATIC, ("sgd",), cache=cache)
    assert calls == ["sgd", "momentum", "sgd", "sgd", "sgd", "sgd", "sgd"]
