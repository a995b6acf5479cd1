"""The ``probes`` command line.

``probes analyze RUN`` analyses the learned optimizer of a meta-training run directory, writes
``RUN/analysis.json`` and prints what each detector found. ``probes report RUN [--out DIR]``
writes the interpretation report (``RUN/report/index.html``, ``report.json``, ``figures/``);
``probes compare RUN... [--out DIR]`` compares several runs (:func:`probes.compare.compare_runs`).
User mistakes (missing, damaged or malformed run files among them) print one line
``probes: error: ...`` and exit with status 2 (``LOPT_DEBUG=1`` shows the traceback); Ctrl-C
prints ``probes: interrupted`` and exits with status 130. Progress goes to stderr (``--quiet``
turns it off).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from lopt_cli.args import seed
from lopt_cli.process import run_script

PROG = "probes"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # noqa: D102
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def _check_run(path: str) -> None:
    if not Path(path).is_dir():
        raise ValueError(f"{path}: no such run directory")


def _cmd_analyze(args: argparse.Namespace) -> int:
    _check_run(args.run)
    from lopt.run import Run
    from probes.runs import analyze_run, stage_printer
    from probes.words import describe

    stage = stage_printer(not args.quiet)
    run = Run(args.run)
    run.check()  # config.json and theta.npz, before anything is computed
    result = analyze_run(run, key_seed=args.seed, progress=stage)
    print("\n".join(describe(result)))
    print(f"wrote {os.path.join(args.run, 'analysis.json')}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    _check_run(args.run)
    from lopt.run import Run
    from probes.report import report_run
    from probes.runs import check_inputs

    run = Path(args.run)
    check_inputs(Run(run))  # every file the report reads, before anything is computed
    index = report_run(run, args.out, progress=not args.quiet, seed=args.seed)
    print(f"wrote {index}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    for run in args.runs:
        _check_run(run)
    from probes.compare import compare_runs

    out = Path(args.out)
    result = compare_runs([Path(r) for r in args.runs], out, progress=not args.quiet)
    index = result if isinstance(result, str | os.PathLike) else out / "index.html"
    print(f"wrote {index}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``probes`` argument parser."""
    parser = _Parser(prog=PROG, description="Dissect learned optimizers into known mechanisms.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("analyze", help="analyse a meta-training run (writes RUN/analysis.json)")
    p.add_argument("run", help="run directory written by 'lopt meta-train'")
    p.add_argument("--seed", type=seed, default=0, help="key for the recorded trajectories")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
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
    p.add_argument("--seed", type=seed, default=0, help="key for the recorded trajectories")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_cmd_report)
    p = sub.add_parser("compare", help="compare several runs side by side in one report")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    p.add_argument("--out", default="compare", help="report directory (default ./compare)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_compare)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``probes`` command line; returns the exit status.

    Ctrl-C at any point, while the parser's imports load too, exits with status 130 and one
    line (``SystemExit``).
    """
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except (ValueError, OSError, json.JSONDecodeError) as e:
        if os.environ.get("LOPT_DEBUG", "") not in ("", "0"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if isinstance(e, OSError) and e.filename is not None and str(e.filename) not in msg:
            msg = f"{msg}: {e.filename}"
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def script() -> None:
    """The ``probes`` console script: :func:`main`, ended by :func:`lopt_cli.process.run_script`."""
    run_script(main)


if __name__ == "__main__":
    script()
