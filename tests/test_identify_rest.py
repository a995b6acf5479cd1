"""Identification's rest rule: a fitted candidate that keeps stepping where the optimizer rests."""

import math

import jax.numpy as jnp
import pytest

from probes.distill.identify import RING_RATIO, choose, late_rms, rings


def test_late_rms_is_the_median_problem_s_rms_over_the_last_quarter():
    # 8 steps: the last quarter is steps 6 and 7 (values 3 and 4 on both coordinates)
    u = jnp.asarray([[[0.0, 0.0]] * 6 + [[3.0, 3.0], [4.0, 4.0]]])
    assert float(late_rms(u)) == pytest.approx(math.sqrt((9 + 16) / 2))
    assert float(late_rms(u, share=0.01)) == pytest.approx(4.0)  # at least one step
    # per problem, then the median: one problem ringing at 100 among two at 1 and 2 reads 2
    many = jnp.asarray([[[1.0]] * 4, [[2.0]] * 4, [[100.0], [-100.0]] * 2])
    assert float(late_rms(many)) == pytest.approx(2.0)
    # a problem whose updates are not finite counts as infinite, not as NaN for the median
    nan = many.at[2, 3, 0].set(jnp.nan)
    assert float(late_rms(nan)) == pytest.approx(2.0)
    assert math.isinf(float(late_rms(nan[2:])))


def test_a_candidate_rings_above_the_ratio_and_non_finite_ones_always():
    assert RING_RATIO == 10.0
    assert not rings(0.1, 0.01) and not rings(0.0999, 0.01)  # up to ten times: settles
    assert rings(0.1001, 0.01)
    assert rings(math.nan, 0.01) and rings(math.inf, 0.01)
    assert not rings(5.0, 0.0) and not rings(5.0, math.nan)  # no reference, no verdict


def test_choose_ranks_settling_candidates_first_then_by_error():
    rest = 0.01
    ring, calm = 1.0, 0.02  # late RMS updates: 100 and 2 times the optimizer's
    # without ringing: the lowest error
    assert choose([[(0.15, calm), (0.11, calm), (0.12, calm)]], rest) == (0, 1)
    # the main job of 2026-12-08: every fitted round rings, the probed numbers (first) settle
    assert choose([[(0.154, calm), (0.125, ring), (0.110, ring)]], rest) == (0, 0)
    # everything rings: back to the lowest error
    assert choose([[(0.15, ring), (0.11, ring)]], rest) == (0, 1)
    # a diverged candidate (error inf) ranks last, even if its median problem settles
    assert choose([[(0.5, ring), (math.inf, calm)]], rest) == (0, 0)
    assert choose([[(0.5, ring)], [(math.inf, calm)]], rest) == (0, 0)


def test_an_added_mechanism_is_kept_when_it_settles_or_is_clearly_better():
    rest, ring, calm = 0.01, 1.0, 0.02
    # both settle: the extension must beat the detected error by more than 2%
    assert choose([[(0.100, calm)], [(0.099, calm)]], rest) == (0, 0)
    assert choose([[(0.100, calm)], [(0.090, calm)]], rest) == (1, 0)
    # the detected structure's best rings, the extension settles: kept at a higher error
    assert choose([[(0.100, ring)], [(0.120, calm)]], rest) == (1, 0)
    # the extension rings where the detected structure settles: never kept
    assert choose([[(0.100, calm)], [(0.050, ring)]], rest) == (0, 0)
    # of two clearly better extensions, the better ranked
    assert choose([[(0.100, ring)], [(0.090, calm)], [(0.080, calm)]], rest) == (2, 0)


def _distill(rings_by_round, selected, selected_round):
    cands = [
        {"round": r, "rings": ring, "late_rms": 0.4 if ring else 0.03}
        for r, ring in enumerate(rings_by_round)
    ]
    ident = {"rest_rms": 0.01, "candidates": cands, "selected": selected}
    return {"notes": {"identify": {**ident, "selected_round": selected_round}}}


def test_the_sentence_says_what_the_rest_rule_did():
    from probes.faithfulness_words import identified_rest_sentence

    assert identified_rest_sentence(_distill([False, False, False], 2, 2)) is None
    kept = identified_rest_sentence(_distill([False, True, True], 0, 0))
    assert "2 of 3 candidates keep stepping" in kept and "0.4, against its 0.01" in kept
    assert "keeps the probed numbers" in kept
    some = identified_rest_sentence(_distill([False, True, False], 2, 2))
    assert "1 of 3" in some and "best of those that settle" in some
    every = identified_rest_sentence(_distill([True, True, True], 1, 1))
    assert "all 3 candidates" in every and "replays the updates best" in every
