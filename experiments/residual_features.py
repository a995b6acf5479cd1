"""What the identified chain leaves out, per stretch of training: its residual against features.

On a run with ``RUN/distill.json`` (``lopt distill``), the learned optimizer is recorded on 32
training problems (256 coordinates each, :func:`probes.replay.record`), the identified chain
(``chain_identified``; the probed ``chain`` with ``--probed``) is replayed on the same
gradients, and the residual ``r = u_learned − u_chain`` is regressed, over each stretch of steps,
on simple per-coordinate features of the gradient history and of the chain's own update:

* ``u_chain`` (a gain error), ``g``, ``g[t−1]``, ``g[t−2]`` (a direct term or short memory),
  ``|g|·g`` (a gain that grows or falls with ``|g|``), ``|g|·u_chain`` (the chain's step scaled
  by the current gradient's size), ``[sign flip]·g`` (damping of sign changes), and a
  ``0.95``-trace of ``g`` (a slower memory).

For each feature alone and for all together it prints the share of the residual's sum of
squares that a least-squares coefficient removes, and the coefficient. A feature that removes a
large share names a mechanism the chain lacks, in the stretch where it acts. Usage::

    python3 experiments/residual_features.py runs/quickstart [--probed]

Prints one JSON object per stretch; writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

#: Stretches of the horizon (step ranges) regressed separately.
STRETCHES = ((0, 10), (10, 40), (40, 100), (100, None))


def features(g, u_chain):
    """``{name: (P, T, C) array}`` of the regressors (see the module docstring)."""
    import numpy as np

    def lag(x, k):
        out = np.zeros_like(x)
        out[:, k:] = x[:, :-k]
        return out

    trace = np.zeros_like(g)
    acc = np.zeros((g.shape[0], g.shape[2]))
    for t in range(g.shape[1]):
        acc = 0.95 * acc + g[:, t]
        trace[:, t] = acc
    return {
        "u_chain": u_chain,
        "g": g,
        "g[t-1]": lag(g, 1),
        "g[t-2]": lag(g, 2),
        "|g|*g": np.abs(g) * g,
        "|g|*u_chain": np.abs(g) * u_chain,
        "flip*g": (np.sign(g) != np.sign(lag(g, 1))) * g,
        "trace0.95(g)": trace,
    }


def explained(x, y) -> tuple[float, float]:
    """``(share of Σy² a least-squares multiple of x removes, the multiple)``."""
    import numpy as np

    xx = float(np.dot(x, x))
    if xx == 0 or not np.dot(y, y) > 0:
        return 0.0, 0.0
    c = float(np.dot(x, y)) / xx
    return 1.0 - float(np.sum((y - c * x) ** 2) / np.sum(y**2)), c


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run directory with distill.json")
    parser.add_argument("--probed", action="store_true", help="the probed chain instead")
    args = parser.parse_args(argv)

    import jax
    import numpy as np

    import lopt
    from lopt import rundir
    from lopt.chain import build_chain
    from lopt.evaluation import family_from_config
    from probes.replay import TRAJECTORY_SEED, coordinates, record, replay

    run = Path(args.run)
    try:
        d = rundir.read_json(run / "distill.json")
        family = family_from_config(rundir.read_json(run / "config.json"))
    except OSError as e:
        print(f"residual_features.py: error: {e}", file=sys.stderr)
        return 2
    chain = d["chain"] if args.probed else d.get("chain_identified")
    if not chain:
        print("residual_features.py: error: distill.json has no identified chain", file=sys.stderr)
        return 2
    opt, theta, _ = lopt.load(run / "theta.npz")
    learned = opt.optimizer(theta)
    horizon = d["notes"]["evaluation"]["horizon"]
    idx = coordinates(family.num_params(), 256)
    keys = jax.random.split(jax.random.key(TRAJECTORY_SEED), 32)
    seqs = jax.jit(lambda k: record(learned, family, k, idx, horizon))(keys)
    u, g = (np.asarray(seqs[k], np.float64) for k in ("u", "g"))
    tx = build_chain(chain)
    uc = np.asarray(jax.jit(jax.vmap(lambda s: replay(tx, s)))(seqs), np.float64)
    feats = features(g, uc)
    for a, b in STRETCHES:
        sl = slice(a, b)
        y = (u - uc)[:, sl].reshape(-1)
        cols = {k: f[:, sl].reshape(-1) for k, f in feats.items()}
        X = np.stack(list(cols.values()), 1)
        coef, *_ = np.linalg.lstsq(X, y, rcond=None)
        together = 1.0 - float(np.sum((y - X @ coef) ** 2) / np.sum(y**2))
        alone = {k: explained(x, y) for k, x in cols.items()}
        print(
            json.dumps(
                {
                    "chain": "probed" if args.probed else "identified",
                    "steps": [a, b if b is not None else horizon],
                    "residual_share_of_update": float(
                        np.sqrt(np.sum(y**2) / np.sum(u[:, sl] ** 2))
                    ),
                    "explained_alone": {k: round(v[0], 4) for k, v in alone.items()},
                    "coefficient": {k: v[1] for k, v in alone.items()},
                    "explained_together": round(together, 4),
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
