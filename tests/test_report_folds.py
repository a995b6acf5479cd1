"""The report's folds are the analysis's: positions, segments and slopes agree by construction.

A two-unit cell whose first unit has the fixed points ``x - x³ = g*`` (a saddle-node fold on the
``g* > 0`` arm at ``g* = 2/(3√3) ≈ 0.385``, none on the ``g* < 0`` arm) and whose second unit
makes the update ``-g·exp(-x)``: ``α_eff`` jumps where the branch does.
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest

import lopt
import probes
from probes.report import white_box_evidence
from probes.words import summary_sentences

G_FOLD = 2 / (3 * math.sqrt(3))


def _fold_cell():
    def step(h, g):
        x = h[0] + 0.1 * (h[0] - h[0] ** 3) - 0.1 * g
        return jnp.stack([x, g * jnp.exp(-x)])

    return lopt.Cell(lambda: jnp.array([1.0, 0.0]), step, lambda h: -h[1])


@pytest.fixture(scope="module")
def folded():
    cell = _fold_cell()
    a = probes.analyze_cell(cell, gradient_scale=0.1)
    return a.to_json(), white_box_evidence(cell, a)


def test_the_analysis_finds_the_known_fold(folded):
    a, _ = folded
    mags = np.asarray(a["adaptation"]["magnitudes"])
    pos, neg = a["adaptation"]["branches"]["pos"], a["adaptation"]["branches"]["neg"]
    (j,) = pos["fold_indices"]
    assert mags[j - 1] < G_FOLD <= mags[j] and neg["fold_indices"] == []


def test_report_folds_and_slopes_are_the_analysis_numbers(folded, tmp_path):
    a, ev = folded
    pos = a["adaptation"]["branches"]["pos"]
    # The S-curve is traced on the analysis's grid and marks the analysis's folds.
    arms = ev["s_curve"]["arms"]
    grid = [0.0, *a["adaptation"]["magnitudes"]]
    assert np.asarray(arms["pos_up"]["inputs"]) == pytest.approx(grid)
    assert np.asarray(arms["neg_up"]["inputs"]) == pytest.approx([-x for x in grid])
    assert list(np.nonzero(arms["pos_up"]["fold"])[0]) == [j + 1 for j in pos["fold_indices"]]
    assert not np.any(arms["neg_up"]["fold"])
    # Sweeps traced back carry jumps of their own (hysteresis), never labelled folds.
    assert "fold" not in arms["pos_down"] and "jump_back" in arms["pos_down"]

    report = probes.write_report(a, tmp_path, evidence=ev)
    nums = report["mechanisms"]["adaptation"]["numbers"]
    assert nums["folds_pos"]["value"] == pytest.approx(pos["fold_magnitudes"])
    slopes = [s["slope"] for s in pos["segments"]]
    assert len(slopes) == 2 and nums["segment_slopes_pos"]["value"] == pytest.approx(slopes)
    assert "folds_neg" not in nums and "segment_slopes_neg" not in nums


def test_summary_reads_folds_from_the_analysis():
    seg = {"start": 0, "stop": 3, "magnitude_range": [0.01, 0.05], "slope": 0.04}
    after = {"start": 3, "stop": 6, "magnitude_range": [0.089, 2.3], "slope": -0.38}
    a = {
        "adaptation": {
            "detected": False,
            "slope": 0.17,
            "branches": {
                "pos": {"segments": [{**seg, "stop": 6}], "fold_magnitudes": []},
                "neg": {"segments": [seg, after], "fold_magnitudes": [0.089]},
            },
        }
    }
    line = next(x for x in summary_sentences(a) if "adaptation" in x)
    assert "0.089" in line and "−0.38" in line
    a["adaptation"]["branches"]["neg"]["segments"][1]["slope"] = 0.1  # no falling branch
    line = next(x for x in summary_sentences(a) if "adaptation" in x)
    assert "fold" not in line
