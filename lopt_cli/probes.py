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
from typing import NoReturn

PROG = "probes"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # noqa: D102
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def _cmd_analyze(args: argparse.Namespace) -> int:
    from probes.runs import analyze_run
    from probes.words import describe

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
