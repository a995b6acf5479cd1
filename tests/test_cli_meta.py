import json
import os
import signal
import subprocess
import sys
import time
import types
from unittest import mock

import pytest
from hang import HANG_S

from lopt_cli.lopt import main

ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def _run(*args, timeout=HANG_S):
    return subprocess.run(
        [sys.executable, "-m", "lopt_cli.lopt", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
    )


def _record_config(opt, family, config, **kw):
    _record_config.last = config
    return types.SimpleNamespace(metrics=[], interrupted=False, step=config.num_steps)


def test_meta_train_and_resume_through_the_cli(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert (
        main(["meta-train", "--task", "linear_regression", "--out", out, "--steps", "2", "--quiet"])
        == 0
    )
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["meta_train"]["estimator"] == "tbptt" and cfg["meta_train"]["num_steps"] == 2
    assert cfg["meta_train"]["outlier_threshold"] is None
    assert main(["meta-train", "--out", out, "--resume", "--steps", "3", "--quiet"]) == 0
    with pytest.raises(SystemExit):  # the run keeps its own threshold
        main(["meta-train", "--out", out, "--resume", "--outlier-threshold", "10", "--quiet"])
    assert "cannot change on --resume" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # and its own choice of stored products
        main(["meta-train", "--out", out, "--resume", "--save-products", "off", "--quiet"])
    assert "--save-products cannot change on --resume" in capsys.readouterr().err
    for flag in (
        ["--preset", "paper"],
        ["--seed", "3"],
        ["--estimator", "pes"],
        ["--truncation", "4"],
    ):
        with pytest.raises(SystemExit):  # the run keeps its seed and estimator too
            main(["meta-train", "--out", out, "--resume", *flag, "--quiet"])
        assert f"{flag[0]} cannot change on --resume" in capsys.readouterr().err
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert rows[-1]["step"] == 3
    # The run's own preset may be named again; resuming the finished run rewrites nothing
    # (every result derived from theta.npz stays current) and prints no meta-loss of nan.
    files = {n: os.stat(os.path.join(out, n)).st_mtime_ns for n in os.listdir(out)}
    capsys.readouterr()
    assert main(["meta-train", "--out", out, "--resume", "--preset", "quick", "--quiet"]) == 0
    assert {n: os.stat(os.path.join(out, n)).st_mtime_ns for n in os.listdir(out)} == files
    said = capsys.readouterr().out
    assert "3 meta-steps" in said and "nan" not in said
    # A threshold given on the command line reaches config.json; 'none' turns the paper
    # preset's off, and ES drops it (it applies to gradient estimators only).
    for flag, preset_name, extra, want in (
        ("10", "quick", [], 10.0),
        ("none", "paper", [], None),
        (None, "paper", ["--estimator", "es", "--truncation", "67"], None),
    ):
        run = str(tmp_path / f"t{flag}{len(extra)}")
        argv = ["meta-train", "--task", "linear_regression", "--preset", preset_name]
        argv += ["--out", run, "--steps", "1", "--quiet", *extra]
        argv += [] if flag is None else ["--outlier-threshold", flag]
        with mock.patch("lopt.meta_train.meta_train", side_effect=_record_config):
            assert main(argv) == 0
        assert _record_config.last.outlier_threshold == want, (flag, preset_name)
    # --save-products reaches the config: on / off / auto (None, the default's decision).
    for flag, want in (("on", True), ("off", False), ("auto", None), (None, None)):
        run = str(tmp_path / f"s{flag}")
        argv = ["meta-train", "--task", "linear_regression", "--out", run, "--steps", "1"]
        argv += ["--quiet"] + ([] if flag is None else ["--save-products", flag])
        with mock.patch("lopt.meta_train.meta_train", side_effect=_record_config):
            assert main(argv) == 0
        assert _record_config.last.save_products is want, flag
    # A second fresh start into the same directory would overwrite the run: refused.
    with pytest.raises(SystemExit) as e:
        main(["meta-train", "--task", "linear_regression", "--out", out, "--steps", "2"])
    assert e.value.code == 2
    assert "already holds a run" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["meta-train", "--task", "nope", "--out", "X"], "unknown task 'nope'"),
        (["meta-train", "--out", "X"], "--task is required"),
        (["meta-train", "--out", "X", "--resume"], "nothing to resume"),
        (
            ["meta-train", "--task", "linear_regression", "--out", "X", "--steps", "0"],
            "positive integer",
        ),
        (
            ["meta-train", "--task", "linear_regression", "--out", "X", "--truncation", "5"],
            "must divide",
        ),
        (["evaluate", "does-not-exist"], "no such run directory"),
        (
            ["meta-train", "--task", "linear_regression", "--out", "X", "--outlier-threshold", "x"],
            "expected a number or 'none'",
        ),
        (
            ["meta-train", "--task", "linear_regression", "--out", "X", "--save-products", "yes"],
            "invalid choice: 'yes'",
        ),
    ],
)
def test_user_mistakes_are_one_line(tmp_path, capsys, args, message):
    args = [a if a != "X" else str(tmp_path / "x") for a in args]
    args = [a if a != "does-not-exist" else str(tmp_path / "missing") for a in args]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err and "Traceback" not in err


def _stop_once_stepping(args, out, stop):
    """Starts ``lopt ARGS``, sends ``stop`` once it wrote a new metrics line; its stderr."""
    metrics = os.path.join(out, "metrics.jsonl")
    before = os.path.getsize(metrics) if os.path.exists(metrics) else 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "lopt_cli.lopt", *args],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Ready once a metrics line is written (compiled and stepping), however long
        # compilation takes on a loaded machine.
        while not (os.path.exists(metrics) and os.path.getsize(metrics) > before):
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.2)
        proc.send_signal(stop)
        _, err = proc.communicate(timeout=HANG_S)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "checkpoint written" in err and "Traceback" not in err
    return err


def _steps(out):
    return [json.loads(line)["step"] for line in open(os.path.join(out, "metrics.jsonl"))]


def test_ctrl_c_or_sigterm_writes_a_checkpoint_and_resume_continues(tmp_path):
    # One run stopped twice: Ctrl-C while meta-training, then SIGTERM while the resumed run
    # steps; each writes a checkpoint the next process resumes from.
    out = str(tmp_path / "run")
    args = ["meta-train", "--task", "linear_regression", "--out", out, "--steps", "100000"]
    _stop_once_stepping([*args, "--quiet"], out, signal.SIGINT)
    stopped = json.load(open(os.path.join(out, "config.json")))
    assert stopped["meta_train"]["num_steps"] == 100000
    first = _steps(out)[-1]
    resume = ["meta-train", "--out", out, "--resume", "--steps", "100000", "--quiet"]
    _stop_once_stepping(resume, out, signal.SIGTERM)
    # The resumed run went on from the Ctrl-C checkpoint: its steps follow the first run's.
    steps = _steps(out)
    assert steps == sorted(steps) and len(set(steps)) == len(steps) and steps[-1] > first
    second = steps[-1]
    done = _run("meta-train", "--out", out, "--resume", "--steps", str(second + 1), "--quiet")
    assert done.returncode == 0, done.stderr
    assert f"{second + 1} meta-steps" in done.stdout


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("optimizer", {"type": "rnn", "hidden_size": 10**9}, "config.json: optimizer: hidden_size"),
        ("optimizer", {"type": "nope"}, "config.json: optimizer: unknown optimizer type"),
        ("optimizer", [], "config.json: optimizer:"),
        ("meta_train", {"num_problems": 2**40}, "config.json: meta_train: num_problems"),
        ("meta_train", {"bogus": 1}, "config.json: meta_train: unknown meta-training setting"),
        ("task", {"name": "../etc"}, "config.json: task.name: unknown task"),
    ],
)
def test_an_absurd_or_malformed_config_is_one_line_naming_the_file_and_field(
    tmp_path, capsys, field, value, message
):
    out = tmp_path / "run"
    assert (
        main(["meta-train", "--task", "linear_regression", "--out", str(out), "--steps", "1"]) == 0
    )
    cfg = json.loads((out / "config.json").read_text())
    cfg[field] = value if field != "meta_train" else {**cfg["meta_train"], **value}
    (out / "config.json").write_text(json.dumps(cfg))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["meta-train", "--out", str(out), "--resume", "--steps", "2", "--quiet"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err, err


def test_a_meta_step_larger_than_the_machine_is_refused_before_anything_runs(tmp_path):
    import lopt
    import tasks
    from lopt.meta_train import MetaTrainConfig, meta_step_bytes, meta_train

    opt = lopt.RNNOptimizer(hidden_size=64)
    family = tasks.get("linear_regression", dim=3, num_steps=10)
    config = MetaTrainConfig(num_problems=2**24, num_steps=1)
    # At least 2^24 problems x 10 steps x 3 parameters x (1 + 64 hidden) floats x 4 bytes:
    # 122 GiB, more than this machine (and CI's) has. Too large to store the products.
    need = meta_step_bytes(opt, family, config)
    assert 4 * 2**24 * 10 * 3 * 65 <= need < 4 * 2**24 * 10 * 3 * (65 + 192)
    with pytest.raises(lopt.ConfigError, match="GiB"):
        meta_train(opt, family, config, out_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
