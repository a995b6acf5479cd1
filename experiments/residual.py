"""What the distilled chain leaves out: a learned optimizer's drift and where it saturates.

Two measurements on a run whose ``RUN/distill.json`` holds the detected chain (``lopt
distill``):

* **drift**: the learned optimizer's update when every gradient is zero, from its fresh state,
  over the horizon; its norm against the update's on the optimizer's own trajectories (256
  coordinates of 32 training problems, :func:`probes.replay.record`), and the chain's
  update error and held-out score with and without the drift added as a fixed term;
* **saturation**: the update after 0, 5 and 59 steps of a constant large gradient
  (``--persistent``) for the learned optimizer and the chain, and the chain with its clip
  moved after the momentum and learning rate (at 1, 1.5 and 2 times the probed asymptote of the
  first update) scored the same way, and the chain with a bound on its update added after it
  (at the largest steady update under a persistent gradient that the damping probe measured,
  and at 0.75 times it);
* **where the gain is lost**: per held-out problem, the chain's mean normalised loss minus the
  learned optimizer's: median, mean, the share of the summed shortfall carried by the worst 5%
  of problems, and the mean loss difference over four stretches of the horizon, against the
  learned optimizer and against the best baseline;
* **damping from a fresh state**: the damping probe's gains (``probes.black_box``: the DC gain
  under a constant ``±a``, the Nyquist gain under ``±a`` alternating) step by step from a fresh
  state instead of in the steady state. Per step ``t``, ``R_t(a)`` is the Nyquist-to-DC ratio
  relative to its value at small amplitudes, for the learned optimizer and the probed chain at
  the amplitude nearest 1 and at the top of the training range; and the probe's decision value,
  the smallest ``max(R, N)`` over the training range, with the gains averaged over the first
  10, 20, 50 and 100 steps and over the last 20 of 200 (the probe's own window);
* **oscillations of other periods**: the steady gain of the learned optimizer for a gradient
  of period ``P`` (2 to 24 steps: a square wave, a sinusoid for ``P = 3``; 1 is a constant
  gradient) and amplitude
  ``a``, over the last 48 of 240 steps from a fresh state, relative to its median over the three
  smallest amplitudes, at amplitudes over the training range. The damping probe looks at
  ``P = 2`` only; a gain that falls with ``a`` at some period but not at ``P = 1`` would be
  damping of that frequency.

The held-out score is the mean normalised loss on the 128 held-out problems of ``lopt evaluate``
(:func:`lopt.heldout_key`) and the fraction of the gain is against the run's best tuned
baseline. Usage::

    python3 experiments/residual.py runs/quickstart

Prints one JSON object per line; writes nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run directory with analysis.json and distill.json")
    parser.add_argument("--persistent", type=float, default=10.0, help="the large gradient")
    args = parser.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import lopt
    from lopt import rundir
    from lopt.baselines import baseline
    from lopt.chain import build_chain
    from lopt.evaluation import family_from_config, heldout_key
    from lopt.unroll import evaluate, summarize
    from probes.black_box import nyquist_response
    from probes.detectors import damping_reference, detect_damping
    from probes.replay import TRAJECTORY_SEED, coordinates, record, replay

    run = Path(args.run)
    try:
        d = rundir.read_json(run / "distill.json")
        a = rundir.read_json(run / "analysis.json")
        family = family_from_config(rundir.read_json(run / "config.json"))
    except OSError as e:
        print(f"residual.py: error: {e}", file=sys.stderr)
        return 2
    opt, theta, _ = lopt.load(run / "theta.npz")
    learned = opt.optimizer(theta)
    chain = d["chain"]
    horizon = d["notes"]["evaluation"]["horizon"]
    best = d["results"]["best_baseline"]

    def heldout(tx) -> float:
        losses = evaluate(tx, family, heldout_key(), 128, horizon)
        return float(summarize(np.asarray(losses)).metric)

    ours, theirs = heldout(learned), heldout(baseline(best["name"], **best["hyperparameters"]))
    idx = coordinates(family.num_params(), 256)
    keys = jax.random.split(jax.random.key(TRAJECTORY_SEED), 32)
    seqs = jax.jit(lambda k: record(learned, family, k, idx, horizon))(keys)
    u = np.asarray(seqs["u"], np.float64)

    def scored(name: str, tx) -> dict:
        uc = np.asarray(jax.jit(jax.vmap(lambda s: replay(tx, s)))(seqs), np.float64)
        per_problem = np.sqrt(((uc - u) ** 2).sum((1, 2)) / (u**2).sum((1, 2)))
        per_step = np.sqrt(((uc - u) ** 2).sum((0, 2)) / (u**2).sum((0, 2)))
        metric = heldout(tx)
        return {
            "variant": name,
            "update_error_median": float(np.median(per_problem)),
            "update_error_at_step_100": float(per_step[min(100, per_step.size - 1)]),
            "heldout": metric,
            "fraction_of_gain": (theirs - metric) / (theirs - ours),
        }

    def steps(tx, g: float, n: int) -> np.ndarray:
        p = jnp.zeros([1], jnp.float32)
        s, out = tx.init(p), []
        for _ in range(n):
            du, s = tx.update(jnp.full([1], g, jnp.float32), s, p)
            out.append(float(du[0]))
        return np.asarray(out)

    drift = steps(learned, 0.0, horizon).astype(np.float32)
    norm = np.sqrt((np.broadcast_to(drift[None, : u.shape[1], None], u.shape) ** 2).sum())
    print(
        json.dumps(
            {
                "learned": ours,
                "best_baseline": theirs,
                "drift_first_steps": drift[:3].round(3).tolist(),
                "drift_from_step_20": [float(drift[20:].min()), float(drift[20:].max())],
                "drift_sum": float(drift.sum()),
                "drift_norm_over_update_norm": float(norm / np.sqrt((u**2).sum())),
            }
        ),
        flush=True,
    )

    def normalised(tx) -> np.ndarray:
        losses = np.asarray(evaluate(tx, family, heldout_key(), 128, horizon), np.float64)
        return losses / losses[:, :1]

    def where_lost(learned, tx, best) -> dict:
        ln, cn = normalised(learned), normalised(tx)
        bn = normalised(baseline(best["name"], **best["hyperparameters"]))
        short = cn.mean(1) - ln.mean(1)
        worst = np.sort(short)[::-1][: max(1, short.size // 20)]
        cuts = [0, 20, horizon // 3, 2 * horizon // 3, horizon]
        return {
            "shortfall_median": float(np.median(short)),
            "shortfall_mean": float(short.mean()),
            "worst_5pct_share_of_shortfall": float(worst.sum() / short.sum()),
            "worst_problems": [round(float(x), 4) for x in worst],
            "stretches": [
                {
                    "steps": [lo, hi],
                    "minus_learned": float((cn[:, lo:hi] - ln[:, lo:hi]).mean()),
                    "minus_best_baseline": float((cn[:, lo:hi] - bn[:, lo:hi]).mean()),
                }
                for lo, hi in zip(cuts[:-1], cuts[1:], strict=True)
            ],
        }

    def periods(tx, gradient_range) -> dict:
        lo, hi = gradient_range
        amps = np.logspace(np.log10(lo) - 2, np.log10(hi), 17).astype(np.float32)
        t = np.arange(240)

        def run(gs):
            def body(carry, g):
                p, s = carry
                du, s = tx.update(g, s, p)
                return (optax.apply_updates(p, du), s), du

            p = jnp.zeros((), jnp.float32)
            return jax.lax.scan(body, (p, tx.init(p)), gs)[1]

        run_all = jax.jit(jax.vmap(run))
        out = {"amplitudes": amps.tolist(), "in_range_from": int(np.argmax(amps >= lo))}
        for period in (1, 2, 3, 4, 6, 8, 12, 24):
            if period == 1:
                wave = np.ones(t.size)
            elif period % 2:  # an odd period has no square wave of equal halves: a sinusoid
                wave = np.cos(2 * np.pi * t / period)
            else:
                wave = np.where(t % period < period // 2, 1.0, -1.0)
            g = (np.concatenate([amps, -amps])[:, None] * wave[None]).astype(np.float32)
            u = np.asarray(run_all(jnp.asarray(g)), np.float64)
            du = (u[: amps.size] - u[amps.size :])[:, -48:] / 2  # the part odd in the gradient
            e = np.exp(-2j * np.pi * t[-48:] / period)
            gain = np.abs((du * e).sum(1) / (amps[:, None] * wave[None, -48:] * e).sum(1))
            rel = gain / np.median(gain[:3])
            inside = rel[amps >= lo]
            out[f"period_{period}"] = {
                "min_in_range": float(inside.min()),
                "relative": rel.round(3).tolist(),
            }
        return out

    def fresh_damping(tx, gradient_range, steps=200) -> dict:
        lo, hi = gradient_range
        amps = np.logspace(np.log10(lo) - 2, np.log10(hi), 21)

        def run(gs):
            def body(s, g):
                du, s = tx.update(g, s, jnp.zeros((), jnp.float32))
                return s, du

            return jax.lax.scan(body, tx.init(jnp.zeros((), jnp.float32)), gs)[1]

        a32 = jnp.asarray(amps, jnp.float32)
        const = jnp.stack([jnp.ones(steps), -jnp.ones(steps)]).astype(jnp.float32)
        u = np.asarray(jax.jit(jax.vmap(jax.vmap(run)))(a32[:, None, None] * const), np.float64)
        dc = -(u[:, 0] - u[:, 1]) / (2 * amps[:, None])  # (A, T): per-step DC gain
        ny = nyquist_response(run, amps, steps=steps)  # (A, T): per-step Nyquist gain
        ok = np.isfinite(dc).all(1) & np.isfinite(ny).all(1)
        ref = damping_reference(amps, ok, lo)

        def decision(window):  # the detector itself, on gains averaged over the window
            g0, gp = dc[:, window].mean(1), ny[:, window].mean(1)
            return detect_damping(amps, g0, gp, gradient_range=(lo, hi)).min_ratio

        per_step = (ny / dc) / np.median((ny / dc)[ref], axis=0)
        out = {}
        near_1 = int(np.argmin(np.abs(np.log(amps))))
        for name, j in (("near_1", near_1), ("top", amps.size - 1)):
            out[f"R_t_at_{name}"] = {
                "amplitude": float(amps[j]),
                "steps": [1, 3, 5, 9, 19, 39],
                "R": per_step[j, [1, 3, 5, 9, 19, 39]].round(3).tolist(),
            }
        for w in (10, 20, 50, 100):
            out[f"decision_first_{w}"] = decision(slice(0, w))
        out["decision_last_20"] = decision(slice(steps - 20, steps))
        return out

    def plus_drift() -> optax.GradientTransformation:
        b = jnp.asarray(drift)

        def update(g, count, params=None):
            del params
            shift = b[jnp.minimum(count, b.size - 1)]
            return jax.tree.map(lambda x: x + shift.astype(x.dtype), g), count + 1

        return optax.GradientTransformation(lambda p: jnp.zeros([], jnp.int32), update)

    print(json.dumps(scored("probed chain", build_chain(chain))), flush=True)
    print(json.dumps(scored("probed chain + drift", optax.chain(build_chain(chain), plus_drift()))))
    g = args.persistent
    print(
        json.dumps(
            {
                "persistent_gradient": g,
                "learned_update_at_steps_0_5_59": steps(learned, g, 60)[[0, 5, 59]].tolist(),
                "chain_update_at_steps_0_5_59": steps(build_chain(chain), g, 60)[
                    [0, 5, 59]
                ].tolist(),
            }
        ),
        flush=True,
    )
    steady = np.asarray(a["damping"]["dc_gain"], np.float64) * a["damping"]["amplitudes"]
    top_update = float(np.nanmax(steady))
    for k in (1.0, 0.75):
        bounded = optax.chain(build_chain(chain), optax.clip(k * top_update))
        print(json.dumps(scored(f"update bounded at {k}x {top_update:.3g}", bounded)))
    print(json.dumps(where_lost(learned, build_chain(chain), best)), flush=True)
    print(json.dumps(periods(learned, a["damping"]["gradient_range"])), flush=True)
    for name, tx in (("learned", learned), ("probed chain", build_chain(chain))):
        fresh = fresh_damping(tx, a["damping"]["gradient_range"])
        print(json.dumps({"damping_from_a_fresh_state": name, **fresh}), flush=True)
    clip = [e for e in chain if e["transform"] in ("soft_clip", "clip")]
    rest = [e for e in chain if e["transform"] not in ("soft_clip", "clip")]
    if clip:
        cl = a["clipping"]
        top = 0.5 * (abs(cl["asymptote_pos"]) + abs(cl["asymptote_neg"]))
        for k in (1.0, 1.5, 2.0):
            moved = [*rest, {"transform": "soft_clip", "scale": k * top}]
            print(json.dumps(scored(f"clip after, at {k}x the asymptote", build_chain(moved))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
