"""Two processes on localhost form one mesh and meta-train exactly like one process.

Two Python processes, each with two CPU devices, join through ``lopt.distributed.initialize``
(coordinator on 127.0.0.1, a free port, gloo CPU collectives) into one 4-device mesh. They
compute a full-BPTT meta-gradient and run ``lopt.meta_train`` for two meta-steps of PES, whose
persistent state is sharded across both processes, then stop a run and resume it from the
checkpoint that process 0 wrote into a directory both see. A third process with four
local devices computes the same things; results must agree to float tolerance, and only
process 0 may write the run directory. Every child has a bounded timeout and is killed on
failure, so the test cannot hang.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hang import HANG_S

ROOT = Path(__file__).resolve().parents[1]

WORKER = r"""
import json, sys
from pathlib import Path
num_processes, process_id, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
import jax
import lopt
if num_processes > 1:
    try:
        lopt.distributed.initialize(
            f"127.0.0.1:{port}", num_processes, process_id, initialization_timeout=90
        )
    except Exception as e:  # e.g. a jaxlib built without gloo
        print("UNSUPPORTED " + f"{type(e).__name__}: {e}".splitlines()[0], flush=True)
        sys.exit(3)
import jax.numpy as jnp, numpy as np
import tasks
from lopt import estimators
from lopt.meta_train import MetaTrainConfig, batch_sharding, meta_train

family = tasks.get("linear_regression", dim=3, num_steps=8)
opt = lopt.RNNOptimizer(hidden_size=4)
theta = opt.init(jax.random.key(0))
theta["readout"]["w"] = 0.3 * jax.random.normal(jax.random.key(1), (4,))
shard = batch_sharding()
info = {
    "process_count": jax.process_count(),
    "device_count": jax.device_count(),
    "local_device_count": jax.local_device_count(),
}
results = {}

def put(prefix, tree):
    for path, x in jax.tree_util.tree_leaves_with_path(lopt.distributed.to_host(tree)):
        results[prefix + jax.tree_util.keystr(path)] = np.asarray(x)

full = estimators.full_bptt(opt, family, num_problems=8, horizon=8, shard=shard)
loss, g, _, _ = jax.jit(full.grad)(theta, (), jax.random.key(2))
put("grad/loss", loss); put("grad/theta", g)

pes = estimators.pes(opt, family, num_pairs=8, horizon=8, truncation=4, shard=shard)
state = jax.jit(pes.init)(theta, jax.random.key(3))
leaf = jax.tree.leaves(state)[0]
info["pes_state_processes"] = sorted({d.process_index for d in leaf.sharding.device_set})
info["pes_state_devices"] = len(leaf.sharding.device_set)

for name, extra in (("pes", {"truncation": 4}),):
    config = MetaTrainConfig(
        estimator=name, num_problems=8, num_steps=2, log_every=1, checkpoint_every=1,
        learning_rate=1e-2, seed=5, **extra,
    )
    run = Path(out) / f"run_{name}_{num_processes}_{process_id}"
    result = meta_train(opt, family, config, out_dir=run, progress=False)
    put(f"{name}/theta", result.theta)
    results[f"{name}/meta_loss"] = np.asarray([r["meta_loss"] for r in result.metrics])
    info[f"{name}_files"] = sorted(p.name for p in run.iterdir()) if run.exists() else []

# Resume: the 2-step run above, in the directory process 0 wrote and every process sees, is
# resumed by every process to 4 steps; compared with 4 uninterrupted steps.
import dataclasses
from jax.experimental import multihost_utils
assert config.num_steps == 2
shared = Path(out) / f"run_pes_{num_processes}_0"
if num_processes > 1:
    multihost_utils.sync_global_devices("checkpoint written")
config4 = dataclasses.replace(config, num_steps=4)
resumed = meta_train(opt, family, config4, out_dir=shared, resume=True, progress=False)
put("resume/theta", resumed.theta)
put("straight/theta", meta_train(opt, family, config4, progress=False).theta)

np.savez(Path(out) / f"result_{num_processes}_{process_id}.npz", **results)
print("INFO " + json.dumps(info), flush=True)
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(num_processes: int, process_id: int, devices: int, port: int, out: Path):
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    args = [sys.executable, "-c", WORKER, str(num_processes), str(process_id), str(port), str(out)]
    return subprocess.Popen(
        args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _kill_all(procs):
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed")
    port = _free_port()
    procs = [
        _start(2, 0, 2, port, out),
        _start(2, 1, 2, port, out),
        _start(1, 0, 4, port, out),  # the reference: one process, four devices
    ]
    logs = []
    try:
        for proc in procs:
            try:
                stdout, _ = proc.communicate(timeout=HANG_S)
            except subprocess.TimeoutExpired:
                _kill_all(procs)
                pytest.fail(f"a distributed worker did not finish in {HANG_S} s")
            logs.append(stdout)
    finally:
        _kill_all(procs)
    unsupported = [x for log in logs for x in log.splitlines() if x.startswith("UNSUPPORTED ")]
    if unsupported:
        pytest.skip(f"jaxlib cannot run multi-process CPU collectives: {unsupported[0][12:]}")
    for proc, log in zip(procs, logs, strict=True):
        assert proc.returncode == 0, log[-4000:]
    infos = [
        json.loads(next(x for x in log.splitlines() if x.startswith("INFO "))[5:]) for log in logs
    ]
    data = [
        dict(np.load(out / name)) for name in ("result_2_0.npz", "result_2_1.npz", "result_1_0.npz")
    ]
    return out, infos, data


def test_two_processes_form_one_four_device_mesh(runs):
    _, infos, _ = runs
    for info in infos[:2]:
        assert info["process_count"] == 2 and info["device_count"] == 4
        assert info["local_device_count"] == 2
        # PES's persistent per-pair state is sharded over the devices of both processes.
        assert info["pes_state_processes"] == [0, 1] and info["pes_state_devices"] == 4
    assert infos[2]["process_count"] == 1 and infos[2]["device_count"] == 4


def test_only_process_zero_writes_the_run_directory(runs):
    out, infos, _ = runs
    for name in ("pes",):
        assert {"config.json", "metrics.jsonl", "state.npz", "theta.npz"} <= set(
            infos[0][f"{name}_files"]
        )
        assert infos[1][f"{name}_files"] == []
        assert not (out / f"run_{name}_2_1").exists()


def test_a_multi_process_run_resumes_exactly(runs):
    # Stopped after 2 meta-steps and resumed by both processes from the shared checkpoint, the
    # run ends with bitwise the theta of 4 uninterrupted steps, on every process.
    _, _, (p0, p1, ref) = runs
    names = sorted(k for k in ref if k.startswith("resume/"))
    assert names
    for name in names:
        straight = name.replace("resume/", "straight/")
        for data in (p0, p1, ref):
            np.testing.assert_array_equal(data[name], data[straight], err_msg=name)


@pytest.mark.parametrize("prefix", ["grad/", "pes/", "resume/"])
def test_two_processes_match_one_process(runs, prefix):
    _, _, (p0, p1, ref) = runs
    names = sorted(k for k in ref if k.startswith(prefix))
    assert names
    for name in names:
        # Both processes hold the same (replicated) result.
        np.testing.assert_array_equal(p0[name], p1[name], err_msg=name)
        scale = max(float(np.max(np.abs(ref[name]))), 1e-12)
        np.testing.assert_allclose(p0[name], ref[name], rtol=1e-5, atol=1e-6 * scale, err_msg=name)


def test_checkpoint_gathers_the_sharded_state(runs):
    # state.npz written by process 0 holds every pair's state, gathered from both processes,
    # and equals the one written by the single-process reference run.
    from lopt import rundir

    out, _, _ = runs
    two = rundir.read_npz(out / "run_pes_2_0" / "state.npz", "lopt.meta_train.state/1")
    one = rundir.read_npz(out / "run_pes_1_0" / "state.npz", "lopt.meta_train.state/1")
    assert two.keys() == one.keys()
    sharded = [k for k in one if k.startswith("estimator_state") and one[k].shape[:1] == (8,)]
    assert sharded  # the persistent per-pair state is in the checkpoint, all 8 pairs
    for name in one:
        assert two[name].shape == one[name].shape, name
        if np.issubdtype(one[name].dtype, np.floating):
            scale = max(float(np.max(np.abs(one[name]))), 1e-12)
            np.testing.assert_allclose(two[name], one[name], rtol=1e-5, atol=1e-6 * scale)
        else:
            np.testing.assert_array_equal(two[name], one[name], err_msg=name)
