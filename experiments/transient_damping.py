"""Oscillation damping read from the first steps, in front of the probed chain.

The damping probe (:class:`probes.detectors.Damping`) decides on steady gains after 200 steps
of a gradient alternating ``±a``; a learned optimizer makes most of its update in the first
steps of a problem, where its damping may differ. This experiment reads the damping from the
first ``K`` steps instead: the learned optimizer's updates for ``g_t = (−1)ᵗ a`` from a fresh
state (less its updates for ``g = 0``), at 10 amplitudes over the training range of ``|g|``
(``analysis.json``'s ``damping.gradient_range``), are compared with those of the probed chain
(the chain :func:`probes.to_chain.chain_from_analysis` builds without the first-steps damping,
which :mod:`probes.transient` now adds with ``K = 20``) with
:func:`lopt.chain.damp_oscillations` in front; ``κ`` (31
values, a decade either side of the range) and the memory ``ρ`` are chosen on a grid to minimise
the relative squared error, averaged over amplitudes. No loss and no trajectory is used. The
chain with the fitted damping is then scored on the 128 held-out problems of ``lopt evaluate``:
the fraction of the learned optimizer's gain over the best tuned baseline that it recovers, with
the bootstrap interval of ``lopt distill``.

``--optax`` does the same fit on optax optimizers in front of their own probed chains
(:func:`probes.analyze_optax`, amplitudes 10⁻³ … 3): where the fit lowers the error of an
optimizer without damping, a rule built on it would name damping where there is none.

Usage::

    python3 experiments/transient_damping.py runs/quickstart --steps 20 40
    python3 experiments/transient_damping.py --optax --steps 20

Prints one JSON object per line; writes nothing.
"""

from __future__ import annotations

import argparse
import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lopt
from lopt import rundir
from lopt.baselines import baseline
from lopt.chain import build_chain, damp_oscillations
from lopt.evaluation import family_from_config, heldout_key
from lopt.unroll import evaluate, per_problem_metric
from probes.distill.stats import fraction_report
from probes.to_chain import chain_from_analysis
from probes.transient import DECAYS, KAPPAS


def flip_updates(tx: optax.GradientTransformation, amps: jax.Array, steps: int) -> jax.Array:
    """``[steps, A]``: updates for ``(−1)ᵗ a`` from a fresh state, less those for ``g = 0``."""
    tx = optax.with_extra_args_support(tx)
    p = jnp.zeros(amps.shape)

    def run(seq):
        def body(s, g):
            u, s = tx.update(g, s, p, value=jnp.float32(1.0))
            return s, u

        return jax.lax.scan(body, tx.init(p), seq)[1]

    sign = ((-1.0) ** jnp.arange(steps))[:, None]
    return run(sign * amps) - run(jnp.zeros((steps, 1)) * amps)


def fit_damping(tx, chain, amps: jax.Array, steps: int) -> dict:
    """``κ`` and ``ρ`` of a damping in front of ``chain`` matching ``tx`` on ``±a`` alternating.

    Returns the relative squared error of the chain's updates over the first ``steps`` steps
    (averaged over amplitudes) without and with the fitted damping, and the fit.
    """
    target = np.asarray(flip_updates(tx, amps, steps))
    lo, hi = float(amps.min()), float(amps.max())

    @jax.jit
    def chain_flips(kappa, rho):
        damp = {"transform": "damp_oscillations", "scale": kappa, "decay": rho}
        return flip_updates(build_chain([damp, *chain]), amps, steps)

    def error(u):
        return float(np.mean(np.sum((u - target) ** 2, 0) / np.sum(target**2, 0)))

    none = error(np.asarray(flip_updates(build_chain(chain), amps, steps)))
    fits = [
        (error(np.asarray(chain_flips(k, r))), float(k), r)
        for k, r in itertools.product(np.geomspace(lo / 10, hi * 10, KAPPAS), DECAYS)
    ]
    err, kappa, rho = min(fits)
    return {"flip_error_without": none, "flip_error_with": err, "kappa": kappa, "decay": rho}


#: Optax optimizers without oscillation damping (and one with), for ``--optax``.
OPTAX = {
    "sgd": lambda: optax.sgd(0.1),
    "sgd momentum 0.9": lambda: optax.sgd(0.1, momentum=0.9),
    "nesterov 0.8": lambda: optax.sgd(0.05, momentum=0.8, nesterov=True),
    "adam": lambda: optax.adam(1e-2),
    "rmsprop": lambda: optax.rmsprop(1e-2),
    "adagrad": lambda: optax.adagrad(0.1),
    "clip 0.5, momentum 0.9": lambda: optax.chain(optax.clip(0.5), optax.sgd(0.1, momentum=0.9)),
    "sgd, cosine decay": lambda: optax.sgd(optax.cosine_decay_schedule(0.1, 200)),
    "damp_oscillations(0.3), momentum 0.9": lambda: optax.chain(
        damp_oscillations(0.3, 0.8), optax.sgd(0.1, momentum=0.9)
    ),
}


def optax_check(steps: int) -> None:
    """The same fit on optax optimizers, each in front of its own probed chain."""
    import probes  # noqa: PLC0415 (only this check analyses optimizers)

    amps = jnp.asarray(np.geomspace(1e-3, 3.0, 10), jnp.float32)
    for name, make in OPTAX.items():
        tx = make()
        analysis = probes.analyze_optax(tx)
        plain = {k: v for k, v in analysis.to_json().items() if k != "damping_transient"}
        chain, _ = chain_from_analysis(plain)
        fit = fit_damping(tx, chain, amps, steps)
        print(
            json.dumps(
                {"optax": name, "steps": steps, "detected": analysis.damping.detected, **fit}
            )
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", help="run directory (analysis, distill, eval .json)")
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 40], help="K")
    parser.add_argument(
        "--optax", action="store_true", help="also fit optax optimizers (first --steps only)"
    )
    args = parser.parse_args(argv)
    if args.optax:
        optax_check(args.steps[0])
    if args.run is None:
        return 0
    run = args.run
    analysis = rundir.read_json(f"{run}/analysis.json")
    dist = rundir.read_json(f"{run}/distill.json")
    ev = rundir.read_json(f"{run}/eval.json")
    family = family_from_config(rundir.read_json(f"{run}/config.json"))
    opt, theta, _ = lopt.load(f"{run}/theta.npz")
    learned = opt.optimizer(theta)
    # The chain of the other mechanisms: without the first-steps damping the probes now add.
    plain = {k: v for k, v in analysis.items() if k != "damping_transient"}
    probed = chain_from_analysis(plain)[0]
    lo, hi = (float(x) for x in analysis["damping"]["gradient_range"])
    amps = jnp.asarray(np.geomspace(lo, hi, 10), jnp.float32)
    horizon, n = family.num_steps, int(ev.get("num_problems") or 128)
    best = dist["results"]["best_baseline"]

    def held_out(tx):
        return per_problem_metric(np.asarray(evaluate(tx, family, heldout_key(), n, horizon)))

    per_learned = held_out(learned)
    per_best = held_out(baseline(best["name"], **best["hyperparameters"]))
    plain_frac = fraction_report(per_learned, per_best, held_out(build_chain(probed)))["fraction"]
    for steps in args.steps:
        fit = fit_damping(learned, probed, amps, steps)
        damp = {"transform": "damp_oscillations", "scale": fit["kappa"], "decay": fit["decay"]}
        rep = fraction_report(per_learned, per_best, held_out(build_chain([damp, *probed])))
        frac = rep["fraction"]
        print(
            json.dumps(
                {
                    "steps": steps,
                    "amplitudes": [lo, hi],
                    **fit,
                    "fraction": None if frac is None else frac["mean"],
                    "interval": None if frac is None else frac["ci"],
                    "fraction_without": None if plain_frac is None else plain_frac["mean"],
                }
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
