"""experiments/benchmarks/pool_runs.py: ranges over runs and the pooled spread, on known rows."""

import importlib.util
import json
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "experiments" / "benchmarks" / "pool_runs.py"
_spec = importlib.util.spec_from_file_location("pool_runs", _PATH)
pool_runs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pool_runs)


def _write(path, rows):
    path.write_text("\n".join(["not json"] + [json.dumps(r) for r in rows]) + "\n")
    return str(path)


def _row(impl, times, paired, riqr):
    return {
        "preset": "paper",
        "impl": impl,
        "s_per_step": sorted(times)[len(times) // 2],
        "times": times,
        "paired_vs_plain": paired,
        "relative_iqr": riqr,
        "roofline_fraction": 0.6,
    }


def test_ranges_over_runs_and_the_pooled_spread(tmp_path):
    # run 1: lopt steady, plain with one slow round; run 2: lopt with two slow rounds
    a = _write(
        tmp_path / "a.jsonl",
        [
            _row("lopt", [1.0, 1.0, 1.0, 1.0], 0.9, 0.0),
            _row("plain", [2.0, 2.0, 2.0, 3.0], 1.0, 0.1),
        ],
    )
    b = _write(
        tmp_path / "b.jsonl",
        [
            _row("lopt", [1.0, 1.0, 1.5, 1.5], 0.95, 0.4),
            _row("plain", [2.0, 2.0, 2.0, 2.0], 1.0, 0.0),
            {"preset": "paper", "impl": "roofline", "matmul_gflops": 200.0},  # not a variant
        ],
    )
    rows = {r["variant"]: r for r in pool_runs.pool([a, b])}
    assert set(rows) == {"lopt", "plain"}
    lopt = rows["lopt"]
    assert lopt["runs"] == 2 and lopt["paired"] == [0.9, 0.95]
    assert lopt["relative_iqr"] == [0.0, 0.4] and lopt["narrower_runs"] == 1
    # rounds over their run's median: run 1 all 1.0; run 2 median 1.25 -> 0.8, 0.8, 1.2, 1.2
    assert lopt["slow_rounds"] == 2 and lopt["rounds"] == 8
    assert lopt["pooled_relative_iqr"] == pytest.approx(1.05 - 0.95)
    assert rows["plain"]["narrower_runs"] == 2 and rows["plain"]["slow_rounds"] == 1
