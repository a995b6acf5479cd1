"""The one-mechanism exchanges between a probed and an identified chain (probes.distill)."""

import jax
import numpy as np
import optax

import tasks
from lopt.chain import chain_code, damp_oscillations, soft_clip
from lopt.unroll import evaluate, per_problem_metric
from probes.distill import format_report, recovered_fraction
from probes.distill.attribution import attribute, exchanges
from probes.report.distillation import distill_section
from probes.words import attribution_sentence

CLIP_P = {"transform": "soft_clip", "scale": 1.0, "mechanism": "clipping (slope halves at 1)"}
CLIP_I = {"transform": "soft_clip", "scale": 0.25, "mechanism": "clipping (numbers identified)"}
LR_P = {"transform": "scale_by_learning_rate", "learning_rate": 0.05, "mechanism": "learning rate"}
LR_I = {"transform": "scale_by_learning_rate", "learning_rate": 0.3}
DAMP_I = {"transform": "damp_oscillations", "scale": 0.5, "decay": 0.9}


def _names(chain):
    return [(e["transform"], e.get("scale", e.get("learning_rate"))) for e in chain]


def test_exchanges_swap_one_mechanism_each_way_in_the_identified_order():
    ex = exchanges([CLIP_P, LR_P], [CLIP_I, LR_I])
    assert [(e["transform"], e["direction"]) for e in ex] == [
        ("soft_clip", "identified_here_only"),
        ("soft_clip", "probed_here_only"),
        ("scale_by_learning_rate", "identified_here_only"),
        ("scale_by_learning_rate", "probed_here_only"),
    ]
    assert [_names(e["chain"]) for e in ex] == [
        [("soft_clip", 0.25), ("scale_by_learning_rate", 0.05)],
        [("soft_clip", 1.0), ("scale_by_learning_rate", 0.3)],
        [("soft_clip", 1.0), ("scale_by_learning_rate", 0.3)],
        [("soft_clip", 0.25), ("scale_by_learning_rate", 0.05)],
    ]
    # the exchanged chains are copies: editing one leaves the inputs alone
    ex[0]["chain"][0]["scale"] = 9.0
    assert CLIP_I["scale"] == 0.25


def test_a_mechanism_only_identification_added_is_inserted_one_way_only():
    ex = exchanges([CLIP_P, LR_P], [DAMP_I, CLIP_I, LR_I])
    damp = [e for e in ex if e["transform"] == "damp_oscillations"]
    assert [e["direction"] for e in damp] == ["identified_here_only"]
    assert _names(damp[0]["chain"]) == [
        ("damp_oscillations", 0.5),
        ("soft_clip", 1.0),
        ("scale_by_learning_rate", 0.05),
    ]
    # the other exchanges leave the added damping out of the probed side, in on the identified
    clip = {e["direction"]: _names(e["chain"]) for e in ex if e["transform"] == "soft_clip"}
    assert clip["identified_here_only"] == [("soft_clip", 0.25), ("scale_by_learning_rate", 0.05)]
    assert clip["probed_here_only"] == [
        ("damp_oscillations", 0.5),
        ("soft_clip", 1.0),
        ("scale_by_learning_rate", 0.3),
    ]


def test_chains_that_cannot_be_matched_one_to_one_have_no_exchanges():
    assert exchanges([CLIP_P, LR_P], [LR_I]) == []  # a probed mechanism not identified
    assert exchanges([CLIP_P, CLIP_P, LR_P], [CLIP_I, CLIP_I, LR_I]) == []  # a transform twice


def test_attribute_scores_each_exchange_as_the_hand_written_chain():
    family = tasks.get("linear_regression", dim=3, num_steps=12)
    key, n, T = jax.random.key(3), 8, 12

    def per(tx):
        return per_problem_metric(np.asarray(evaluate(tx, family, key, n, T)))

    learned = per(optax.sgd(0.2, momentum=0.5))
    base = per(optax.sgd(0.02))
    chain = [{**DAMP_I, "mechanism": "oscillation damping"}, CLIP_P, LR_P]
    ident = [DAMP_I, CLIP_I, LR_I]
    rows = attribute(chain, ident, family, key, n, T, learned, base)
    assert [r["transform"] for r in rows] == [e["transform"] for e in ident]
    assert rows[1]["mechanism"] == CLIP_P["mechanism"]
    # the probed chain with the identified clip, written by hand
    hand = optax.chain(
        damp_oscillations(0.5, decay=0.9), soft_clip(0.25), optax.scale_by_learning_rate(0.05)
    )
    want = per(hand)
    got = rows[1]["identified_here_only"]
    np.testing.assert_allclose(got["metric"], want.mean(), rtol=1e-5)
    frac = recovered_fraction(learned, base, want)
    np.testing.assert_allclose(got["fraction"]["mean"], frac["mean"], rtol=1e-5)
    # the probed chain with the identified learning rate
    hand = optax.chain(
        damp_oscillations(0.5, decay=0.9), soft_clip(1.0), optax.scale_by_learning_rate(0.3)
    )
    assert abs(per(hand).mean() - want.mean()) > 0.01  # the two exchanges differ
    np.testing.assert_allclose(
        rows[2]["identified_here_only"]["metric"], per(hand).mean(), rtol=1e-5
    )
    # without fractions (a gain that is not significant) only the metrics are given
    rows = attribute(chain, ident, family, key, n, T, learned, base, fractions=False)
    assert all(
        r[d]["fraction"] is None and r[d]["metric"] > 0
        for r in rows
        for d in ("identified_here_only", "probed_here_only")
        if r[d] is not None
    )
    # every mechanism here has probed numbers, so both directions are scored
    assert all(r["probed_here_only"] is not None for r in rows)
    # an exchange that gives back a chain already scored re-uses its metrics (here every one:
    # the two chains have the same numbers, only their labels differ)
    same = [{**e, "mechanism": "identified"} for e in chain]
    known = [(chain, np.full(n, 0.123))]
    rows = attribute(chain, same, family, key, n, T, learned, base, known=known)
    cells = [c for r in rows for c in (r["identified_here_only"], r["probed_here_only"])]
    np.testing.assert_allclose([c["metric"] for c in cells], 0.123)


def _distill(rows, ident=0.77, probed=-0.37):
    row = {"metric": 0.05, "sem": 0.001}
    chain = [CLIP_P, LR_P]
    return {
        "chain": chain,
        "optax_code": chain_code(chain),
        "results": {"learned": row, "best_baseline": {**row, "name": "momentum"}, "distilled": row},
        "gain": None,
        "fraction": {"mean": probed, "ci": [probed - 0.1, probed + 0.1]},
        "fraction_identified": {"mean": ident, "ci": [ident - 0.1, ident + 0.1]},
        "attribution": rows,
    }


def _cell(f):
    return {"metric": 0.04, "sem": 0.001, "fraction": None if f is None else {"mean": f}}


def test_the_exchanges_are_said_in_the_report_and_the_command_line():
    rows = [
        {
            "transform": "soft_clip",
            "mechanism": CLIP_P["mechanism"],
            "identified_here_only": _cell(-0.51),
            "probed_here_only": _cell(0.68),
        },
        {
            "transform": "momentum_modes",
            "mechanism": "momentum (the measured impulse response)",
            "identified_here_only": _cell(0.33),
            "probed_here_only": _cell(0.17),
        },
    ]
    d = _distill(rows)
    text = attribution_sentence(d)
    assert "clipping -51% / 68%; momentum 33% / 17%" in text
    # the costliest probed numbers: those that lower the identified chain's share the most
    assert text.endswith(
        "The momentum's probed numbers cost the identified chain the most (77% → 17%)."
    )
    assert text in distill_section(d)["notes"]
    lines = format_report(d).splitlines()
    assert any(line.split() == ["momentum_modes", "33.0%", "17.0%"] for line in lines)
    assert lines[-1] == attribution_sentence(d, listing=False)
    # probed numbers that cost nothing are not called costly; no exchanges, no sentence
    better = [{**r, "probed_here_only": _cell(0.8)} for r in rows]
    assert "cost" not in attribution_sentence(_distill(better))
    assert attribution_sentence(_distill(None)) is None
    assert not any("exchanged" in line for line in format_report(_distill(None)).splitlines())
    # without fractions the command line shows the metrics
    plain = [
        {**r, "identified_here_only": _cell(None), "probed_here_only": _cell(None)} for r in rows
    ]
    assert attribution_sentence(_distill(plain)) is None
    assert "(metric):" in format_report(_distill(plain))
