"""experiments/residual_features.py: the regressors and the share of a residual they explain."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "experiments" / "residual_features.py"
_SPEC = importlib.util.spec_from_file_location("residual_features", _PATH)
rf = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(rf)


def test_explained_share_and_coefficient_of_a_known_mixture():
    x = np.array([1.0, 0.0, 1.0, 0.0])
    noise = np.array([0.0, 3.0, 0.0, -3.0])  # orthogonal to x
    share, c = rf.explained(x, 2.0 * x + noise)
    assert c == pytest.approx(2.0)
    assert share == pytest.approx(8.0 / (8.0 + 18.0))  # |2x|² over |2x + noise|²
    assert rf.explained(np.zeros(4), noise) == (0.0, 0.0)


def test_features_lag_gate_and_trace_the_gradient_history():
    g = np.array([1.0, -2.0, 3.0, 3.0]).reshape(1, 4, 1)  # one problem, one coordinate
    u = np.full_like(g, 0.5)
    f = {k: v.reshape(-1) for k, v in rf.features(g, u).items()}
    np.testing.assert_allclose(f["g[t-1]"], [0.0, 1.0, -2.0, 3.0])
    np.testing.assert_allclose(f["g[t-2]"], [0.0, 0.0, 1.0, -2.0])
    np.testing.assert_allclose(f["|g|*u_chain"], [0.5, 1.0, 1.5, 1.5])
    np.testing.assert_allclose(f["flip*g"], [1.0, -2.0, 3.0, 0.0])  # sign vs the previous (0)
    np.testing.assert_allclose(f["trace0.95(g)"], [1.0, -1.05, 2.0025, 4.902375])
