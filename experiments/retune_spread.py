"""How much does the re-tuned distilled chain depend on the problems it was tuned on?

``lopt distill`` re-tunes the chain's numbers (:func:`probes.distill.retune_chain`) on one draw of
training and validation problems, from the key ``fold_in(key(0), 0)``. This script repeats the
re-tuning from the same starting chain (the identified one in ``RUN/distill.json``, else the
detected one) with the keys ``fold_in(key(0), K)`` for each ``K`` given, with the default
settings, and scores every result on the held-out problems of ``RUN/distill.json`` (same key,
number and horizon), with the fraction of the learned optimizer's gain over the best tuned
baseline it recovers (paired bootstrap interval, as ``lopt distill``). ``K = 0`` reproduces
``lopt distill``'s own re-tuning.

Usage::

    python3 experiments/retune_spread.py runs/quickstart --keys 0 5 6 7

Prints one JSON object per key; writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run directory with distill.json (from lopt distill)")
    parser.add_argument("--keys", type=int, nargs="+", default=[0, 1, 2, 3])
    args = parser.parse_args(argv)

    import jax
    import numpy as np

    import lopt
    from lopt import rundir
    from lopt.baselines import baseline
    from lopt.chain import build_chain
    from lopt.evaluation import family_from_config, heldout_key
    from lopt.unroll import evaluate, per_problem_metric
    from probes.distill import recovered_fraction, retune_chain

    run = Path(args.run)
    try:
        d = rundir.read_json(run / "distill.json")
        cfg = rundir.read_json(run / "config.json")
    except OSError as e:
        print(f"retune_spread.py: error: {e}", file=sys.stderr)
        return 2
    family = family_from_config(cfg)
    ev = d["notes"]["evaluation"]
    start = d.get("chain_identified") or d["chain"]
    best = d["results"]["best_baseline"]
    key = heldout_key()

    def per_problem(tx):
        losses = evaluate(tx, family, key, ev["num_problems"], ev["horizon"])
        return per_problem_metric(np.asarray(losses))

    learned_opt, theta, _ = lopt.load(run / "theta.npz")
    learned = per_problem(learned_opt.optimizer(theta))
    base = per_problem(baseline(best["name"], **best["hyperparameters"]))
    for k in args.keys:
        chain, notes = retune_chain(
            start, family, jax.random.fold_in(jax.random.key(0), k), num_steps=ev["horizon"]
        )
        out = {"key": k, "note": notes.get("note")}
        if chain is not None:
            per = per_problem(build_chain(chain))
            frac = recovered_fraction(learned, base, per)
            out.update(
                selected_step=notes["selected_step"],
                validation=min(x for x in notes["validation_metric"] if x is not None),
                heldout=float(np.mean(per)),
                fraction=None if frac is None else frac["mean"],
                ci=None if frac is None else frac["ci"],
            )
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
