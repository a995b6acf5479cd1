import json

import pytest

import lopt
import tasks
from lopt.meta_train import MetaTrainConfig, meta_train
from lopt_cli.probes import main


def test_probes_analyze_writes_analysis_json(tmp_path, capsys):
    family = tasks.get("linear_regression", dim=3, num_steps=8)
    meta_train(
        lopt.RNNOptimizer(hidden_size=4),
        family,
        MetaTrainConfig(num_problems=4, num_steps=2),
        out_dir=tmp_path,
        progress=False,
    )
    assert main(["analyze", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in out[:4]] == [
        "momentum",
        "clipping",
        "schedule",
        "adaptation",
    ]
    result = json.loads((tmp_path / "analysis.json").read_text())
    assert result["schema_version"] == 13 and result["source"] == "cell"
    assert set(result) >= {"momentum", "clipping", "schedule", "adaptation", "damping", "bias"}
    assert any(line.startswith("bias: ") for line in out)  # read and printed, white box
    assert result["task"] == {"name": "linear_regression", "data_source": "synthetic"}
    assert result["key_seed"] == 0


def test_probes_analyze_missing_run_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["analyze", str(tmp_path / "nope")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("probes: error:") and "\n" not in err and "no such run directory" in err


def test_a_saved_analysis_is_reused_only_while_it_describes_the_run(tmp_path):
    import os

    from lopt.rundir import write_json
    from probes.runs import saved_analysis

    assert saved_analysis(tmp_path) == (None, "no analysis.json")
    write_json(tmp_path / "analysis.json", {"schema_version": 13, "key_seed": 0})
    assert saved_analysis(tmp_path)[0] == {"schema_version": 13, "key_seed": 0}
    # another trajectory seed (compare takes any); an analysis without one was drawn with 0
    analysis, why = saved_analysis(tmp_path, key_seed=3)
    assert analysis is None and "seed 0, not 3" in why
    assert saved_analysis(tmp_path, key_seed=None)[0] is not None
    write_json(tmp_path / "analysis.json", {"schema_version": 13})
    assert saved_analysis(tmp_path)[0] is not None
    analysis, why = saved_analysis(tmp_path, key_seed=3)
    assert analysis is None and "seed 0, not 3" in why
    # written by probes without the damping result or the first-steps reading, or before the
    # schedule read a kink's growing branch (11) and the first-steps reading its gate (12)
    for old in (1, 3, 5, 10, 11):
        write_json(tmp_path / "analysis.json", {"schema_version": old})
        assert saved_analysis(tmp_path)[0] is None
    # older than the weights it describes
    write_json(tmp_path / "analysis.json", {"schema_version": 13})
    (tmp_path / "theta.npz").write_bytes(b"")
    t = os.stat(tmp_path / "analysis.json").st_mtime
    os.utime(tmp_path / "theta.npz", (t + 10, t + 10))
    analysis, why = saved_analysis(tmp_path)
    assert analysis is None and "older than theta.npz" in why
    os.utime(tmp_path / "theta.npz", (t - 10, t - 10))  # the weights older: reused
    assert saved_analysis(tmp_path)[0] == {"schema_version": 13}


def test_a_run_reads_its_files_once_and_knows_what_is_current(tmp_path):
    import os

    from lopt.run import Run

    with pytest.raises(FileNotFoundError, match="no such run directory"):
        Run(tmp_path / "missing")
    opt = lopt.RNNOptimizer(hidden_size=4)
    family = tasks.get("linear_regression", dim=3, num_steps=4)
    config = lopt.MetaTrainConfig(num_problems=2, num_steps=1, log_every=1)
    lopt.meta_train(opt, family, config, out_dir=tmp_path, progress=False)
    run = Run(tmp_path)
    assert run.family.settings() == family.settings() and run.evaluation() is None
    assert run.checkpoint()[0].config() == opt.config() and [r["step"] for r in run.metrics()] == [
        1
    ]
    (tmp_path / "derived.json").write_text("{}")
    assert run.is_current("derived.json") and not run.is_current("absent.json")
    later = (tmp_path / "derived.json").stat().st_mtime + 10
    os.utime(tmp_path / "theta.npz", (later, later))
    assert not run.is_current("derived.json")
