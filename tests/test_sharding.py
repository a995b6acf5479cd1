"""Sharding the problem batch over devices does not change the meta-gradient.

The device count of the host platform is fixed when JAX starts, so each configuration runs in
its own Python subprocess (``XLA_FLAGS=--xla_force_host_platform_device_count=N``): one with a
single device, one with four, which shards the 8 problems (or PES pairs) two per device. Both
write their results to an ``.npz`` file and the parent compares them to float tolerance
(the mean over problems becomes an all-reduce, which sums in a different order).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hang import HANG_S

ROOT = Path(__file__).resolve().parents[1]

# Runs in the subprocess. Tiny sizes: GRU-4, 3-d linear regression, horizon 8, 8 problems.
WORKER = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
import lopt, tasks
from lopt import estimators
from lopt.meta_train import MetaTrainConfig, batch_sharding, make_meta_step

out = sys.argv[1]
family = tasks.get("linear_regression", dim=3, num_steps=8)
opt = lopt.RNNOptimizer(hidden_size=4)
theta = opt.init(jax.random.key(0))
# A non-zero readout, so every meta-parameter (not only the readout) gets a gradient.
theta["readout"]["w"] = 0.3 * jax.random.normal(jax.random.key(1), (4,))
theta["readout"]["b"] = jnp.asarray(0.05, jnp.float32)
shard = batch_sharding()
results, info = {}, {"device_count": jax.device_count()}

def put(prefix, tree):
    for path, x in jax.tree_util.tree_leaves_with_path(tree):
        results[prefix + jax.tree_util.keystr(path)] = np.asarray(jax.device_get(x))

def spans(tree):
    return sorted({len(x.sharding.device_set) for x in jax.tree.leaves(tree)})

full = estimators.full_bptt(opt, family, num_problems=8, horizon=8, shard=shard)
grad_fn = jax.jit(full.grad)
key = jax.random.key(2)
loss, g, _, est_info = grad_fn(theta, (), key)
put("full/loss", loss); put("full/grad", g)
info["full_num_valid"] = int(est_info.num_valid)
hlo = grad_fn.lower(theta, (), key).compile().as_text()
info["full_all_reduce"] = hlo.count("all-reduce")

# Outliers left out (κ = 1: the problems above the median, so the second pass runs). A small
# SMALL_LEAF keeps w_h (4 x 12) shared, so both the shared and the per-problem-copy leaves
# are exercised under sharding.
estimators.SMALL_LEAF = 16
robust = estimators.full_bptt(
    opt, family, num_problems=8, horizon=8, shard=shard, outlier_threshold=1.0
)
loss, g, _, est_info = jax.jit(robust.grad)(theta, (), key)
put("outliers/loss", loss); put("outliers/grad", g)
info["outliers"] = int(est_info.num_outliers)

pes = estimators.pes(opt, family, num_pairs=8, horizon=8, truncation=4, shard=shard)
state = jax.jit(pes.init)(theta, jax.random.key(3))
info["pes_state_spans"] = spans(state)
pes_grad = jax.jit(pes.grad)
for i in range(2):  # the second window exercises the persistent (sharded) state
    loss, g, state, _ = pes_grad(theta, state, jax.random.key(10 + i))
    put(f"pes{i}/loss", loss); put(f"pes{i}/grad", g)
info["pes_state_spans_after"] = spans(state)

config = MetaTrainConfig(num_problems=8, num_steps=1, learning_rate=1e-2).resolved(family)
init_fn, step_fn = make_meta_step(opt, config, config.meta_optimizer())
train = init_fn(family, theta, jax.random.key(4))
train, metrics = step_fn(family, train)
put("step/theta", train.theta); put("step/loss", metrics["meta_loss"])
info["step_theta_spans"] = spans(train.theta)
np.savez(out, **results)
print("INFO " + json.dumps(info))
"""


def _start(num_devices: int, out: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(out)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen, out: Path) -> tuple[dict, dict]:
    try:
        stdout, stderr = proc.communicate(timeout=HANG_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-4000:]
    line = next(x for x in stdout.splitlines() if x.startswith("INFO "))
    with np.load(out) as data:
        return dict(data), json.loads(line[5:])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    # Both configurations run at once (one per core): the test takes the time of the slower.
    tmp = tmp_path_factory.mktemp("sharding")
    outs = {n: tmp / f"devices{n}.npz" for n in (1, 4)}
    procs = {n: _start(n, out) for n, out in outs.items()}
    try:
        return _finish(procs[1], outs[1]), _finish(procs[4], outs[4])
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def test_arrays_really_are_sharded(runs):
    (_, one), (_, four) = runs
    assert one["device_count"] == 1 and four["device_count"] == 4
    # The batch-leading PES state is laid out over all four devices, before and after a step.
    assert four["pes_state_spans"] == [4] and four["pes_state_spans_after"] == [4]
    # The mean over problems is an all-reduce in the compiled program; none on one device.
    assert four["full_all_reduce"] > 0 and one["full_all_reduce"] == 0
    assert one["full_num_valid"] == four["full_num_valid"] == 8
    assert one["outliers"] == four["outliers"] == 4


@pytest.mark.parametrize("prefix", ["full/", "outliers/", "pes0/", "pes1/", "step/"])
def test_sharded_meta_gradient_equals_single_device(runs, prefix):
    (one, _), (four, _) = runs
    names = sorted(k for k in one if k.startswith(prefix))
    assert names and names == sorted(k for k in four if k.startswith(prefix))
    for name in names:
        a, b = one[name], four[name]
        assert np.all(np.isfinite(a)), name
        scale = max(float(np.max(np.abs(a))), 1e-12)
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * scale, err_msg=name)


def test_gradient_is_not_trivially_zero(runs):
    # Guards the comparison above: equal zeros would prove nothing.
    (one, _), _ = runs
    for prefix in ("full/grad", "outliers/grad", "pes0/grad"):
        leaves = [v for k, v in one.items() if k.startswith(prefix)]
        assert sum(int(np.count_nonzero(v)) for v in leaves) > 10, prefix
