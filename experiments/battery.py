"""Runs the battery of hand-designed optimizers (``probes.battery``) through the detectors.

Every case goes through the black box (``probes.analyze_optax``) and, where it has a Cell, the
white box (``probes.analyze_cell``), both with default settings. One JSON line per case and
source (the verdict for each mechanism, measured vs expected, and the seconds it took), then a
summary: outcomes per mechanism and source, and cases passed / total.

Usage::

    python3 experiments/battery.py                   # everything (about 10-20 minutes on 2 cores)
    python3 experiments/battery.py --black-box-only  # analyze_optax only (a few minutes)
    python3 experiments/battery.py --cases sgd,adam,nesterov
    python3 experiments/battery.py --black-box-only --faithfulness  # + each chain's update error

``--faithfulness`` also composes each black-box analysis into its chain
(``probes.to_chain.chain_from_analysis``, probed numbers only) and scores it against the
optimizer on the default ``linear_regression`` family (``probes.faithfulness``: the chain's
updates on the optimizer's own gradients, relative RMS error, median over 8 problems).
"""

from __future__ import annotations

import argparse
import collections
import json
import time

import numpy as np

import probes
import tasks
from probes import battery
from probes.faithfulness import faithfulness
from probes.steady_update import TOLERANCE as STEADY_TOLERANCE


def _plain(x):
    """JSON-safe: NumPy scalars to Python, non-finite floats to None."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    if isinstance(x, bool | np.bool_):
        return bool(x)
    if isinstance(x, int | np.integer):
        return int(x)
    if isinstance(x, float | np.floating):
        return float(x) if np.isfinite(x) else None
    return x


def run_case(case: battery.Case, source: str, family=None) -> dict:
    t0 = time.perf_counter()
    if source == "optax":
        analysis = probes.analyze_optax(case.optax())
    else:
        analysis = probes.analyze_cell(case.cell())
    seconds = time.perf_counter() - t0
    verdicts = battery.check(case, analysis)
    row = {
        "case": case.name,
        "family": case.family,
        "source": source,
        "passed": all(v.ok for v in verdicts),
        "seconds": round(seconds, 2),
        "verdicts": [_plain(v._asdict()) for v in verdicts],
    }
    if family is not None and source == "optax":
        f = faithfulness(
            analysis.to_json(), case.optax(), family, num_problems=8, coords=64, heldout_problems=16
        )
        row["update_error"] = _plain(f.update_error)
        row["chain"] = [e["transform"] for e in f.chain]
        ma = f.memory_along or {}
        row["memory_along"] = _plain(
            {
                k: ma.get(k)
                for k in (
                    "memory",
                    "convergence_memory",
                    "state_dependent",
                    "not_compared",
                    "gain_ratio",
                )
            }
        )
        su = f.steady_update or {}
        row["steady_update"] = _plain(
            {
                k: su.get(k)
                for k in ("ratio_range", "worst_gradient", "worst_ratio", "within", "not_finite")
            }
        )
    return row


def summary(rows: list[dict]) -> dict:
    out = {}
    errors = {r["case"]: r["update_error"] for r in rows if "update_error" in r}
    if errors:
        finite = [e for e in errors.values() if e is not None]
        out["faithfulness"] = {
            "below_0.01": sum(e < 0.01 for e in finite),
            "below_0.2": sum(e < 0.2 for e in finite),
            "total": len(errors),
            "above_0.2": {k: e for k, e in errors.items() if e is None or e >= 0.2},
        }
    along = {r["case"]: r["memory_along"] for r in rows if "memory_along" in r}
    if along:
        out["memory_along"] = {
            "state_dependent": sorted(k for k, v in along.items() if v["state_dependent"]),
            "compared": sum(v["state_dependent"] is not None for v in along.values()),
            "not_compared": dict(
                collections.Counter(
                    v["not_compared"] for v in along.values() if v.get("not_compared")
                )
            ),
            "total": len(along),
        }
        # the chain's steady gain along training over the optimizer's: 1 for a faithful chain
        ratios = {k: v["gain_ratio"] for k, v in along.items() if v.get("gain_ratio") is not None}
        if ratios:
            off = {k: r for k, r in ratios.items() if not 0.8 <= r <= 1.25}
            out["gain_along"] = {
                "read": len(ratios),
                "range": [min(ratios.values()), max(ratios.values())],
                "outside_0.8_1.25": off,
            }
    # the chain's steady update under constant gradients over the optimizer's: 1 when faithful
    steady = {r["case"]: r["steady_update"] for r in rows if r.get("steady_update")}
    compared = {k: v for k, v in steady.items() if v.get("within") is not None}
    if compared:
        band = 1 + STEADY_TOLERANCE

        def near(v, tol):  # every compared point finite and within ``tol`` of 1
            r = v.get("ratio_range")
            return not v.get("not_finite") and r is not None and r[0] >= 1 / tol and r[1] <= tol

        out["steady_update"] = {
            "compared": len(compared),
            "total": len(steady),
            "within_0.5%": sum(near(v, 1.005) for v in compared.values()),
            f"within_{band:g}": sum(near(v, band) for v in compared.values()),
            f"outside_{band:g}": {
                k: {"ratio_range": v.get("ratio_range"), "not_finite": v.get("not_finite")}
                for k, v in compared.items()
                if not near(v, band)
            },
        }
    for source in ("optax", "cell"):
        mine = [r for r in rows if r["source"] == source]
        if not mine:
            continue
        per = collections.defaultdict(collections.Counter)
        for r in mine:
            for v in r["verdicts"]:
                per[v["mechanism"]][v["outcome"]] += 1
        out[source] = {
            "passed": sum(r["passed"] for r in mine),
            "total": len(mine),
            "seconds": round(sum(r["seconds"] for r in mine), 1),
            "by_mechanism": {m: dict(per[m]) for m in battery.MECHANISMS if m in per},
            "failed": {
                r["case"]: [
                    v["mechanism"] for v in r["verdicts"] if v["outcome"] in battery.OUTCOMES[2:]
                ]
                for r in mine
                if not r["passed"]
            },
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="", help="comma-separated case names (default all)")
    parser.add_argument("--black-box-only", action="store_true")
    parser.add_argument("--white-box-only", action="store_true")
    parser.add_argument(
        "--faithfulness", action="store_true", help="score each black-box chain's updates"
    )
    args = parser.parse_args()
    family = tasks.get("linear_regression") if args.faithfulness else None
    chosen = battery.cases()
    if args.cases:
        names = set(args.cases.split(","))
        chosen = [c for c in chosen if c.name in names]
    sources = [
        s for s, off in (("optax", args.white_box_only), ("cell", args.black_box_only)) if not off
    ]
    rows = []
    t0 = time.perf_counter()
    for case in chosen:
        for source in sources:
            if source == "cell" and case.cell is None:
                continue
            row = run_case(case, source, family)
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = summary(rows)
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps({"summary": result}, indent=1))


if __name__ == "__main__":
    main()
