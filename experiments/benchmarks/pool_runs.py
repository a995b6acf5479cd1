"""Summarises several runs of a benchmark: ranges over runs and the pooled round-to-round spread.

Runs of ``meta_step.py``, each saved to a file of JSON lines (``meta_step.py ... >
run1.jsonl``); ``mlp_step.py``'s rows carry no round times, so for them only the ranges over
runs mean anything. Per preset and variant it prints one JSON object:

* ``runs``: how many runs had that variant;
* ``s_per_step``, ``paired``, ``roofline_fraction``, ``relative_iqr``: ``[min, max]`` over the
  runs of the per-run figure (``paired`` is ``paired_vs_plain`` or ``paired_vs_peer``);
* ``pooled_relative_iqr``: the interquartile range of every round time divided by its own run's
  median, all runs pooled: the variant's round-to-round spread on a scale that one disturbed
  run of nine rounds cannot dominate;
* ``slow_rounds``: rounds more than 10% above their run's median;
* ``narrower_runs``: in how many runs the variant's ``relative_iqr`` was at most the
  reference's (``plain`` or ``peer``) in the same run.

Usage::

    python experiments/benchmarks/pool_runs.py run1.jsonl run2.jsonl ...
"""

from __future__ import annotations

import argparse
import json

import numpy as np

REFERENCES = ("plain", "peer")


def _rows(path: str) -> list[dict]:
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                row = json.loads(line)
                if "s_per_step" in row:
                    rows.append(row)
    return rows


def _span(values: list[float]) -> list[float] | None:
    values = [float(v) for v in values if v is not None]
    return [min(values), max(values)] if values else None


def _name(row: dict) -> str:
    return row.get("impl") or row.get("variant")


def pool(paths: list[str]) -> list[dict]:
    """One summary per (preset, variant) over the runs in ``paths`` (see the module docstring)."""
    # per run: (preset, variant) -> row
    runs = [{(row.get("preset"), _name(row)): row for row in _rows(p)} for p in paths]
    keys = list(dict.fromkeys(k for run in runs for k in run))
    out = []
    for preset, name in keys:
        rows = [run[(preset, name)] for run in runs if (preset, name) in run]
        rounds = []
        for row in rows:
            t = np.asarray(row.get("times") or [], np.float64)
            if t.size:
                rounds.extend(t / np.median(t))
        r = np.asarray(rounds)
        narrower = 0
        for run in runs:
            mine = run.get((preset, name))
            ref = next((run[(preset, n)] for n in REFERENCES if (preset, n) in run), None)
            if mine and ref and "relative_iqr" in mine and "relative_iqr" in ref:
                narrower += mine["relative_iqr"] <= ref["relative_iqr"]
        paired = [row.get("paired_vs_plain", row.get("paired_vs_peer")) for row in rows]
        q1, q3 = np.percentile(r, [25, 75]) if r.size else (np.nan, np.nan)
        out.append(
            {
                "preset": preset,
                "variant": name,
                "runs": len(rows),
                "s_per_step": _span([row["s_per_step"] for row in rows]),
                "paired": _span(paired),
                "roofline_fraction": _span([row.get("roofline_fraction") for row in rows]),
                "relative_iqr": _span([row.get("relative_iqr") for row in rows]),
                "pooled_relative_iqr": float(q3 - q1) if r.size else None,
                "slow_rounds": int(np.sum(r > 1.1)),
                "rounds": int(r.size),
                "narrower_runs": narrower,
            }
        )
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="files of JSON lines, one per run")
    args = parser.parse_args(argv)
    for row in pool(args.runs):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
