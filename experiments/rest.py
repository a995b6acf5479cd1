"""How a run's learned optimizer and its distilled chains come to rest.

For the learned optimizer and each chain of ``RUN/distill.json`` (``lopt distill``: probed,
identified, re-tuned), trains the same training problems with it (every coordinate recorded,
:func:`probes.replay.record`) and reports, per stretch of the horizon, the RMS of its updates
and the share of steps at which an update changes sign from the step before. An optimizer
that settles makes shrinking updates that rarely change sign; a chain that rings around the
minimum (a steady gain too large for the stiffest directions, held in bounds by a clip or a
damping) keeps large updates that change sign at about every other step. That is a way to lose
the learned optimizer's gain late in training with a chain that replays its early updates
closely.

Usage::

    python3 experiments/rest.py runs/quickstart [--problems 16] [--seed 5]

Prints one JSON object per optimizer, ``{"optimizer", "stretches": [{"steps", "rms_update",
"sign_changes", "mean_loss"}]}``; writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

#: The stretches of the horizon reported, as fractions of it (0.3 of 201 steps: from step 60).
STRETCHES = ((0.0, 0.1), (0.1, 0.3), (0.3, 0.5), (0.5, 0.75), (0.75, 1.0))


def rest_stretches(updates, losses, stretches=STRETCHES):
    """Per stretch: RMS update, share of sign changes between successive updates, mean loss.

    Args:
        updates: ``[P, T, C]`` updates (problems, steps, coordinates).
        losses: ``[P, T]`` losses before each update.
        stretches: ``(start, stop)`` fractions of ``T``.

    Returns:
        A list of dicts ``{"steps": [a, b], "rms_update", "sign_changes", "mean_loss"}``.
    """
    import numpy as np

    u, f = np.asarray(updates, np.float64), np.asarray(losses, np.float64)
    steps = u.shape[1]
    out = []
    for lo, hi in stretches:
        a, b = int(round(lo * steps)), int(round(hi * steps))
        seg = u[:, a:b]
        flips = np.sign(seg[:, 1:]) != np.sign(seg[:, :-1])
        out.append(
            {
                "steps": [a, b],
                "rms_update": float(np.sqrt(np.mean(seg**2))),
                "sign_changes": float(np.mean(flips)) if flips.size else float("nan"),
                "mean_loss": float(np.mean(f[:, a:b])),
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run directory with distill.json")
    parser.add_argument("--problems", type=int, default=16, help="training problems")
    parser.add_argument("--seed", type=int, default=5, help="the problems' key")
    args = parser.parse_args(argv)

    import jax

    from lopt import rundir
    from lopt.chain import build_chain
    from lopt.run import Run
    from probes.replay import coordinates, record

    path = Path(args.run) / "distill.json"
    if not path.exists():
        print(f"{path}: not found (run lopt distill {args.run} first)", file=sys.stderr)
        return 2
    try:
        run = Run(args.run)
        distill = rundir.read_json(path)
        opt, theta, _ = run.checkpoint()
        family = run.family
        ev = Path(args.run) / "eval.json"
        horizon = int(rundir.read_json(ev).get("horizon") or 0) if ev.exists() else 0
        optimizers = {"learned": opt.optimizer(theta)}
        for name in ("chain", "chain_identified", "chain_retuned"):
            if distill.get(name):
                optimizers[name] = build_chain(distill[name])
    except (OSError, ValueError) as e:  # a missing or corrupted run file, a malformed chain
        print(f"{args.run}: {e}", file=sys.stderr)
        return 2
    horizon = horizon or family.num_steps
    idx = coordinates(family.num_params(), None)
    keys = jax.random.split(jax.random.key(args.seed), args.problems)
    for name, tx in optimizers.items():
        rec = record(tx, family, keys, idx, horizon)
        row = {"optimizer": name, "stretches": rest_stretches(rec["u"], rec["f"])}
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
