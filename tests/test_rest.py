"""experiments/rest.py: how an optimizer comes to rest, per stretch of the horizon."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "experiments" / "rest.py"
_SPEC = importlib.util.spec_from_file_location("rest", _PATH)
rest = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(rest)


def test_a_ringing_and_a_settling_sequence_are_told_apart():
    # Two problems, ten steps, one coordinate. Ringing: ±1 alternating (9 sign changes in 9
    # pairs, RMS 1); settling: 2^-t, never changing sign (RMS of 1, 1/2 over the first two).
    t = np.arange(10)
    ringing = (-1.0) ** t
    settling = 0.5**t
    u = np.stack([ringing, settling])[..., None]
    f = np.stack([np.ones(10), 2.0 * np.ones(10)])
    rows = rest.rest_stretches(u, f, stretches=((0.0, 0.2), (0.0, 1.0)))
    assert rows[0]["steps"] == [0, 2]
    assert rows[0]["rms_update"] == pytest.approx(np.sqrt((1 + 1 + 1 + 0.25) / 4))
    assert rows[0]["sign_changes"] == pytest.approx(0.5)  # one of the two sequences flips
    assert rows[1]["sign_changes"] == pytest.approx(0.5)  # 9 of 18 successive pairs
    assert rows[1]["mean_loss"] == pytest.approx(1.5)


def test_a_run_without_distill_json_is_one_line(tmp_path, capsys):
    assert rest.main([str(tmp_path)]) == 2
    assert "lopt distill" in capsys.readouterr().err


def test_a_corrupted_distill_json_is_one_line(tmp_path, capsys):
    (tmp_path / "distill.json").write_text("{not json")
    assert rest.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "distill.json" in err
