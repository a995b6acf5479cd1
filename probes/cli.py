"""The ``probes`` command line.

``probes analyze RUN`` analyses the learned optimizer of a meta-training run directory, writes
``RUN/analysis.json`` and prints what each detector found. User mistakes print one line
``probes: error: ...`` and exit with status 2 (``LOPT_DEBUG=1`` shows the traceback).
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
    lines = [
        f"momentum: {'detected' if m['detected'] else 'not detected'} (dominant mode β = "
        f"{num(m['beta'])}, α = {num(m['alpha'])}, timescale {num(m['timescale'])} steps, "
        f"{num(m['share'], '.0%')} of the fitted impulse response)",
        f"clipping: {'detected' if c['detected'] else 'not detected'} (threshold |g| ≈ "
        f"{num(c['threshold'])}; update saturates at {num(c['asymptote_neg'])} for g → -∞ and "
        f"{num(c['asymptote_pos'])} for g → +∞)",
        f"schedule: {'detected' if s['detected'] else 'not detected'} (shape {s['shape']}, "
        f"peak at step {s['peak_step']})",
        f"adaptation: {'detected' if a['detected'] else 'not detected'} (log-log slope of the "
        f"effective learning rate against |g*|: {num(a['slope'])})",
    ]
    return lines


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
    write_json(run / "analysis.json", result)
    return result


def _cmd_analyze(args: argparse.Namespace) -> int:
    result = analyze_run(args.run, key_seed=args.seed)
    print("\n".join(describe(result)))
    print(f"wrote {os.path.join(args.run, 'analysis.json')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``probes`` argument parser."""
    parser = _Parser(prog=PROG, description="Dissect learned optimizers into known mechanisms.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("analyze", help="analyse a meta-training run (writes RUN/analysis.json)")
    p.add_argument("run", help="run directory written by 'lopt meta-train'")
    p.add_argument("--seed", type=int, default=0, help="key for the recorded trajectories")
    p.set_defaults(func=_cmd_analyze)
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
