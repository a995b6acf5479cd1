"""How much of a learned optimizer's gain can an optax chain of known mechanisms recover at best?

``lopt distill`` builds its chain from the numbers the probes measured. This script asks a
different question, which separates "the probes measured the wrong numbers" from "no chain of
this form can do it": it searches the chain's numbers directly, on training problems, and
reports the best chain's held-out score and the fraction of the learned optimizer's gain over
the best tuned baseline it recovers (the same problems, pairing and bootstrap as
``lopt distill``).

Chain families searched (each of the first three a sub-family of the next):

* ``momentum``: ``trace(β) → lr α`` (sanity check: should land on tuned momentum);
* ``clip+momentum+warm-up``: ``soft_clip(c) → trace(β) → lr α·w(t)`` with a warm-up
  ``w(t) = 1 − (1 − w₀)e^{−t/τ}``;
* ``damping+clip+momentum+warm-up``: ``damp_oscillations(κ, ρ)`` in front of the previous;
* ``clip+momentum+warm-up+damping``: the same with ``damp_oscillations`` last, acting on the
  update instead of the gradient;
* ``damping+clip+rms+momentum+warm-up``: learning-rate adaptation added to the third family,
  ``optax.scale_by_rms(ρ₂, ε)`` between the clip and the momentum, the learning rate times
  ``√ε`` so that ``α`` stays the small-gradient rate.

Search: ``--candidates`` log-uniform draws over wide ranges (not centred on the probed numbers),
each scored on 32 training problems; the best 32 are re-scored on 128 other training problems;
then ``--rounds`` rounds of local refinement, each scoring 1024 perturbations of the best so far
(log-normal steps shrinking from 30% to 5%) on those 128 problems. The best is evaluated once
on the held-out problems. Training keys are
``fold_in(key(0), 0)`` (the baselines' tuning problems) and ``fold_in(key(0), 1)``; the
held-out key is :func:`lopt.heldout_key`.

Usage::

    python3 experiments/distill_ceiling.py runs/quickstart [--candidates 20000]

Writes ``RUN/distill_ceiling.json``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lopt import rundir
from lopt.baselines import baseline
from lopt.chain import build_chain
from lopt.checkpoint import load
from lopt.evaluation import family_from_config, heldout_key
from lopt.unroll import evaluate, init_inner, normalized_loss, unroll
from probes.distill import fraction_report

#: name → (low, high, log?) of each searched number.
RANGES = {
    "alpha": (0.3, 60.0, True),
    "beta": (0.0, 0.97, False),
    "clip": (0.03, 30.0, True),
    "warmup_start": (0.05, 1.0, False),
    "warmup_steps": (0.5, 60.0, True),
    "kappa": (0.003, 30.0, True),
    "decay": (0.0, 0.999, False),
    "rms_decay": (0.0, 0.999, False),
    "eps": (1e-6, 10.0, True),
}
_DAMPED = ("alpha", "beta", "clip", "warmup_start", "warmup_steps", "kappa", "decay")
FAMILIES = {
    "momentum": ("alpha", "beta"),
    "clip+momentum+warm-up": ("alpha", "beta", "clip", "warmup_start", "warmup_steps"),
    "damping+clip+momentum+warm-up": _DAMPED,
    "clip+momentum+warm-up+damping": _DAMPED,
    "damping+clip+rms+momentum+warm-up": (*_DAMPED, "rms_decay", "eps"),
}
KNOTS = (0, 1, 2, 3, 5, 8, 12, 18, 27, 40, 60, 90, 135, 200)


def chain(p: dict, family: str) -> list[dict]:
    """The chain (``lopt.build_chain`` format) for numbers ``p`` (may be traced)."""
    out = []
    names = FAMILIES[family]
    damp = {"transform": "damp_oscillations", "scale": p.get("kappa"), "decay": p.get("decay")}
    last = family.endswith("+damping")
    if "kappa" in names and not last:
        out.append(damp)
    if "clip" in names:
        out.append({"transform": "soft_clip", "scale": p["clip"]})
    lr = p["alpha"]
    if "eps" in names:
        # RMS normalisation; the learning rate times √ε keeps the small-gradient rate at α
        out.append({"transform": "scale_by_rms", "decay": p["rms_decay"], "eps": p["eps"]})
        lr = lr * jnp.sqrt(p["eps"])
    out.append({"transform": "trace", "decay": p["beta"]})
    entry = {"transform": "scale_by_learning_rate", "learning_rate": lr}
    if "warmup_start" in names:
        t = jnp.asarray(KNOTS, jnp.float32)
        w = 1.0 - (1.0 - p["warmup_start"]) * jnp.exp(-t / p["warmup_steps"])
        entry["schedule"] = {"steps": list(KNOTS), "values": list(w), "tail_ratio": 0.0}
    out.append(entry)
    if last:
        out.append(damp)
    return out


def sample(rng: np.random.Generator, n: int, family: str) -> dict[str, np.ndarray]:
    """``n`` random draws of the family's numbers."""
    p = {}
    for name in FAMILIES[family]:
        lo, hi, log = RANGES[name]
        u = rng.uniform(math.log(lo), math.log(hi), n) if log else rng.uniform(lo, hi, n)
        p[name] = np.exp(u) if log else u
    return {k: v.astype(np.float32) for k, v in p.items()}


def scorer(task_family, num_steps: int, family: str):
    """A jitted ``(numbers, keys) -> normalised losses [C, B]`` over candidates and problems."""

    @jax.jit
    def score(p, keys):
        def one(q):
            tx = optax.with_extra_args_support(build_chain(chain(q, family)))
            losses = jax.vmap(
                lambda k: unroll(tx, task_family, init_inner(tx, task_family, k), num_steps)[1]
            )(keys)
            return normalized_loss(losses)

        return jax.lax.map(one, p, batch_size=64)

    return score


def search(
    task_family, num_steps: int, family: str, candidates: int, seed: int, rounds: int
) -> dict:
    """Random search on training problems; returns the best numbers and their training score."""
    score = scorer(task_family, num_steps, family)
    rng = np.random.default_rng(seed)
    p = sample(rng, candidates, family)
    k1 = jax.random.split(jax.random.fold_in(jax.random.key(0), 0), 32)
    k2 = jax.random.split(jax.random.fold_in(jax.random.key(0), 1), 128)
    s1 = np.asarray(score({k: jnp.asarray(v) for k, v in p.items()}, k1))
    m1 = np.where(np.isfinite(s1).all(1), s1.mean(1), np.inf)
    top = np.argsort(m1)[:32]
    s2 = np.asarray(score({k: jnp.asarray(v[top]) for k, v in p.items()}, k2))
    m2 = np.where(np.isfinite(s2).all(1), s2.mean(1), np.inf)
    i = int(top[int(np.argmin(m2))])
    best = {k: float(v[i]) for k, v in p.items()}
    best_metric = float(m2.min())
    for r in range(rounds):
        step = 0.3 * (0.05 / 0.3) ** (r / max(rounds - 1, 1))
        q = {}
        for name, v in best.items():
            lo, hi, log = RANGES[name]
            z = rng.normal(0.0, step, 1024)
            # multiplicative steps for log-ranged numbers, additive (scaled) for the others
            x = v * np.exp(z) if log else v + z * (hi - lo) * 0.5
            q[name] = np.clip(x, lo, hi).astype(np.float32)
            q[name][0] = v  # keep the incumbent, re-scored on the same problems
        s3 = np.asarray(score({k: jnp.asarray(v) for k, v in q.items()}, k2))
        m3 = np.where(np.isfinite(s3).all(1), s3.mean(1), np.inf)
        j = int(np.argmin(m3))
        best, best_metric = {k: float(v[j]) for k, v in q.items()}, float(m3[j])
    return {"numbers": best, "train_metric": best_metric}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--candidates", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument(
        "--families",
        nargs="+",
        choices=tuple(FAMILIES),
        default=tuple(FAMILIES),
        help="chain families to search (default: all)",
    )
    args = ap.parse_args()

    cfg = rundir.read_json(args.run / "config.json")
    ev = rundir.read_json(args.run / "eval.json")
    task_family = family_from_config(cfg)
    horizon = int(ev.get("horizon") or task_family.num_steps)
    block = ev["horizons"][str(horizon)]
    best = block["best_baseline"]
    best_hp = block["optimizers"][best].get("hyperparams") or {}
    num_problems = int(ev.get("num_problems") or 128)
    opt, theta, _ = load(args.run / "theta.npz")

    def heldout(tx):
        losses = np.asarray(evaluate(tx, task_family, heldout_key(), num_problems, horizon))
        return np.mean(losses / losses[:, :1], axis=1)

    learned, base = heldout(opt.optimizer(theta)), heldout(baseline(best, **best_hp))
    print(f"learned {learned.mean():.4f}   best baseline ({best}) {base.mean():.4f}")
    out = {
        "run": str(args.run),
        "candidates": args.candidates,
        "rounds": args.rounds,
        "seed": args.seed,
        "families": {},
    }
    out["learned"] = float(learned.mean())
    out["best_baseline"] = {"name": best, "metric": float(base.mean())}
    for family in args.families:
        t0 = time.time()
        found = search(task_family, horizon, family, args.candidates, args.seed, args.rounds)
        per = heldout(build_chain(chain(found["numbers"], family)))
        rep = fraction_report(learned, base, per)
        frac = rep["fraction"] or {}
        ci = frac.get("ci") or [float("nan")] * 2
        print(
            f"{family:32s} held-out {per.mean():.4f} ± {per.std(ddof=1) / np.sqrt(per.size):.4f}"
            f"  recovered {frac.get('mean', float('nan')):.0%} (95% CI {ci[0]:.0%} … {ci[1]:.0%})"
            f"  [{time.time() - t0:.0f} s]  "
            + ", ".join(f"{k}={v:.3g}" for k, v in found["numbers"].items())
        )
        out["families"][family] = {
            **found,
            "heldout_metric": float(np.mean(per)),
            "heldout_sem": float(np.std(per, ddof=1) / np.sqrt(per.size)),
            "fraction": rep["fraction"],
        }
    rundir.write_json(args.run / "distill_ceiling.json", out)
    print(f"wrote {args.run / 'distill_ceiling.json'}")


if __name__ == "__main__":
    main()
