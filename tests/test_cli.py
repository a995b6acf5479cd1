import json
import os
import subprocess
import sys

import pytest
from hang import HANG_S

import tasks
from lopt_cli.lopt import main

TINY = ["--num-steps", "15", "--num-problems", "3", "--eval-problems", "6", "--no-refine"]


def run_main(capsys, *argv):
    """Runs ``lopt *argv`` in-process; returns (exit code, stdout, stderr)."""
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_tune_writes_json_and_prints_the_table(tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, out, err = run_main(
        capsys,
        "tune",
        "--task",
        "linear_regression",
        "--optimizer",
        "sgd",
        "--out",
        str(out_dir),
        "--seed",
        "3",
        *TINY,
    )
    assert code == 0, err
    assert "held-out metric ± s.e.m." in out and "final loss" in out and "diverged" in out
    row = next(line for line in out.splitlines() if line.startswith("sgd"))
    assert "learning_rate=" in row and "/6" in row
    assert os.listdir(out_dir) == ["tune.json"]  # no temporary file left behind
    result = json.loads((out_dir / "tune.json").read_text())
    assert result["task"] == "linear_regression"
    assert result["data_source"] == tasks.get("linear_regression").data_source
    assert result["settings"]["seed"] == 3 and result["settings"]["num_steps"] == 15
    sgd = result["results"]["sgd"]
    assert sgd["hyperparams"]["learning_rate"] > 0
    assert len(sgd["heldout"]["curve_mean"]) == 15 and sgd["heldout"]["diverged"] == 0
    assert sgd["heldout"]["metric"] > 0  # finite (JSON null otherwise)
    assert len(sgd["grid"]["metric"]) == len(sgd["grid"]["learning_rate"]) > 5


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["tune", "--task", "no_such_task"], "unknown task 'no_such_task'"),
        (["tune", "--task", "linear_regression", "--optimizer", "lion"], "invalid choice"),
        (["tune", "--task", "linear_regression", "--num-problems", "0"], "positive integer"),
        (["tune", "--task", "linear_regression", "--seed", "x"], "integer"),
        (["tune"], "--task"),
        (["no-such-command"], "invalid choice"),
        (
            ["meta-train", "--task", "linear_regression", "--out", "x", "--outlier-threshold", "0"],
            "outlier_threshold must be a number >= 1",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, fragment, capsys):
    code, out, err = run_main(capsys, *argv)
    assert code == 2
    assert err.startswith("lopt: error:") and fragment in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_unwritable_out_is_a_user_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run_main(
        capsys, "tune", "--task", "linear_regression", "--out", str(blocker / "x"), *TINY
    )
    assert code == 2 and err.startswith("lopt: error:") and len(err.strip().splitlines()) == 1


def test_lopt_debug_reraises(monkeypatch):
    monkeypatch.setenv("LOPT_DEBUG", "1")
    with pytest.raises(tasks.TaskError):
        main(["tune", "--task", "no_such_task"])


def test_command_line_entry_point_has_no_traceback():
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("LOPT_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "lopt_cli.lopt", "tune", "--task", "nope"],
        capture_output=True,
        text=True,
        env=env,
        timeout=HANG_S,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"lopt: error: unknown task 'nope'; choose one of: {', '.join(tasks.names())}"
    ]
