"""The ``probes`` command line.

``probes analyze RUN`` analyses the learned optimizer of a meta-training run directory, writes
``RUN/analysis.json`` and prints what each detector found. ``probes report RUN [--out DIR]``
writes the interpretation report (``RUN/report/index.html``, ``report.json``, ``figures/``);
``probes compare RUN... [--out DIR]`` compares several runs (:func:`probes.compare.compare_runs`).
User mistakes print one line ``probes: error: ...`` and exit with status 2 (``LOPT_DEBUG=1``
shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

PROG = "probes"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # noqa: D102
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def describe(result: dict[str, Any]) -> list[str]:
    """One plain line per mechanism from an ``Analysis.to_json()`` dict."""

    def num(x: Any, spec: str = ".3g") -> str:
        return "?" if x is None else format(x, spec)

    m, c, s, a = (result[k] for k in ("momentum", "clipping", "schedule", "adaptation"))
    pair = (
        f", a complex pair whose response keeps its sign down to "
        f"{num(100 * (m.get('sign_change_level') or 0.0), '.2g')}% of its envelope"
        if m.get("is_real") is False
        else ""
    )
    lines = [
        f"momentum: {'detected' if m['detected'] else 'not detected'} (dominant mode β = "
        f"{num(m['beta'])}, α = {num(m['alpha'])}, timescale {num(m['timescale'])} steps, "
        f"{num(m['share'], '.0%')} of the fitted impulse response{pair})",
        f"clipping: {'detected' if c['detected'] else 'not detected'} (threshold |g| ≈ "
        f"{num(c['threshold'])}; update saturates at {num(c['asymptote_neg'])} for g → -∞ and "
        f"{num(c['asymptote_pos'])} for g → +∞)",
        f"schedule: {'detected' if s['detected'] else 'not detected'} (shape {s['shape']}, "
        f"peak at step {s['peak_step']})",
        f"adaptation: {'detected' if a['detected'] else 'not detected'} (log-log slope of the "
        f"effective learning rate against |g*|: {num(a['slope'])})",
    ]
    for arm, branch in sorted((a.get("branches") or {}).items(), reverse=True):
        folds = ", ".join(num(m) for m in branch.get("fold_magnitudes") or [])
        segs = "; ".join(
            f"|g*| {num(seg['magnitude_range'][0], '.2g')}–{num(seg['magnitude_range'][1], '.2g')}"
            f" ({num(seg['training_fraction'], '.0%')} of training gradients): slope "
            f"{num(seg['slope'], '.2f')}"
            for seg in branch.get("segments") or []
            if seg["stop"] - seg["start"] > 1
        )
        sign = "g* > 0" if arm == "pos" else "g* < 0"
        lines.append(
            f"  {sign}: " + (f"folds at |g*| ≈ {folds}; " if folds else "no fold; ") + segs
        )
    d = result.get("damping")
    if d:
        lo, hi = d.get("gradient_range") or (None, None)
        where = (
            f"gain for sign-flipping gradients, relative to persistent ones, halves at |g| ≈ "
            f"{num(d['kappa'])}, building up with memory ρ ≈ {num(d.get('memory'), '.3g')}"
            if d["detected"]
            else "the gain for sign-flipping gradients, relative to persistent ones, never falls "
            f"below {num(d.get('min_ratio'), '.0%')}"
        )
        lines.append(
            f"oscillation damping: {'detected' if d['detected'] else 'not detected'} ({where}; "
            f"|g| {num(lo, '.2g')}–{num(hi, '.2g')})"
        )
    return lines


def saved_analysis(run: str | os.PathLike, *, key_seed: int | None = 0) -> tuple[dict | None, str]:
    """``RUN/analysis.json`` if it still describes the run, else ``None``; and why.

    It is out of date when older than ``RUN/theta.npz`` (by modification time), written by a
    version of the probes without every result of this one (:func:`probes.analysis.is_current`),
    or drawn with another trajectory seed than ``key_seed`` (``None``: any seed; analyses that
    do not record one were drawn with 0).
    """
    from lopt.rundir import older_than, read_json
    from probes.analysis import is_current

    path = Path(run) / "analysis.json"
    if not path.exists():
        return None, "no analysis.json"
    if older_than(path, path.parent / "theta.npz"):
        return None, "analysis.json is older than theta.npz"
    analysis = read_json(path)
    if not isinstance(analysis, dict) or not is_current(analysis):
        return None, "analysis.json predates this version's probes (no oscillation damping)"
    seed = analysis.get("key_seed")
    seed = 0 if seed is None else seed
    if key_seed is not None and seed != key_seed:
        return None, f"analysis.json was drawn with seed {seed}, not {key_seed}"
    return analysis, "re-using analysis.json"


def analyze_run(run: str | os.PathLike, *, key_seed: int = 0) -> dict[str, Any]:
    """Analyses ``RUN/theta.npz`` on the run's task family; writes ``RUN/analysis.json``."""
    import jax

    import probes
    from lopt.checkpoint import load
    from lopt.compare import family_from_config
    from lopt.rundir import read_json, write_json

    run = Path(run)
    cfg = read_json(run / "config.json")
    opt, theta, _ = load(run / "theta.npz")
    family = family_from_config(cfg)
    analysis = probes.analyze(opt, theta, family=family, key=jax.random.key(key_seed))
    result = analysis.to_json()
    # What was analysed, so that results on the MNIST fallback digits cannot pass for MNIST and
    # a later command can tell which seed drew the trajectories.
    result["task"] = {"name": family.name, "data_source": getattr(family, "data_source", None)}
    result["key_seed"] = key_seed
    write_json(run / "analysis.json", result)
    return result


def _cmd_analyze(args: argparse.Namespace) -> int:
    result = analyze_run(args.run, key_seed=args.seed)
    print("\n".join(describe(result)))
    print(f"wrote {os.path.join(args.run, 'analysis.json')}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from probes.report import report_run

    run = Path(args.run)
    if not run.is_dir():
        raise ValueError(f"{run}: no such run directory")
    index = report_run(run, args.out, progress=not args.quiet, seed=args.seed)
    print(f"wrote {index}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    for run in args.runs:
        if not Path(run).is_dir():
            raise ValueError(f"{run}: no such run directory")
    from probes.compare import compare_runs

    out = Path(args.out)
    result = compare_runs([Path(r) for r in args.runs], out, progress=True)
    index = result if isinstance(result, str | os.PathLike) else out / "index.html"
    print(f"wrote {index}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``probes`` argument parser."""
    parser = _Parser(prog=PROG, description="Dissect learned optimizers into known mechanisms.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("analyze", help="analyse a meta-training run (writes RUN/analysis.json)")
    p.add_argument("run", help="run directory written by 'lopt meta-train'")
    p.add_argument("--seed", type=int, default=0, help="key for the recorded trajectories")
    p.set_defaults(func=_cmd_analyze)
    p = sub.add_parser(
        "report",
        help="write the interpretation report of a run (RUN/report/index.html)",
        description="Writes index.html (self-contained, figures embedded), report.json and "
        "figures/*.png for a meta-training run. Re-uses RUN/analysis.json while it describes the "
        "run (newer than theta.npz, current probes, same --seed); adds RUN/eval.json and "
        "RUN/distill.json when present.",
    )
    p.add_argument("run", help="run directory written by 'lopt meta-train'")
    p.add_argument("--out", default=None, help="report directory (default RUN/report)")
    p.add_argument("--seed", type=int, default=0, help="key for the recorded trajectories")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_cmd_report)
    p = sub.add_parser("compare", help="compare several runs side by side in one report")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    p.add_argument("--out", default="compare", help="report directory (default ./compare)")
    p.set_defaults(func=_cmd_compare)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``probes`` command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, json.JSONDecodeError) as e:
        if os.environ.get("LOPT_DEBUG", "") not in ("", "0"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    sys.exit(main())
