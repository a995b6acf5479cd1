"""Identification: a chain's numbers fitted to the learned optimizer's updates (no loss).

:func:`identify_chain` keeps the structure the probes detected and refits its numbers so that
the chain, replayed on the gradients it meets, outputs what the learned optimizer outputs for
them (Levenberg-Marquardt on the imitation error, with DAgger rounds). It answers whether
numbers fitted to the optimizer's behaviour describe it, where the probed numbers
(:mod:`probes.to_chain`) may not.

When the detected chain has no oscillation damping, the identification also fits it with a
damping transform in front (:func:`lopt.chain.damp_oscillations`, started nearly inactive), and
when it has no sign-agreement gain, with one of those in front of its linear stage
(:func:`lopt.chain.scale_by_agreement`, behind the clip); it keeps the structure that describes
the updates clearly best. The damping probe reads steady gains after 200 steps of a fixed-amplitude
periodic gradient from a fresh state, and the agreement probe the step after 100 random signs;
the gradients a learned optimizer meets in training change sign and size without ever settling
like that, so the probes' readings (or silence) do not settle how the mechanisms act on the
trajectories that matter. The probed chain has no agreement entry: no probe reads the rate at
which the gain follows the signs in a way that holds in closed loop (``CHANGELOG.md``,
2026-12-07).

A fitted candidate that keeps stepping where the learned optimizer comes to rest (it rings
around the minimum) ranks after every candidate that settles (:func:`rings`, :func:`choose`),
the probed numbers included: when no fit settles and the probed numbers do, the identified
chain is the probed one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from lopt.chain import build_chain
from probes.distill.free_numbers import decode, encode, free_numbers, relabel
from probes.replay import coordinates, record, replay
from probes.to_chain import DAMP_DECAY


@dataclasses.dataclass(frozen=True)
class IdentifyConfig:
    """How hard :func:`identify_chain` works, and on which problems.

    Attributes:
        rounds: fits (the first on the learned optimizer's trajectories, then DAgger rounds).
        num_problems: training problems recorded per round.
        fit_steps: Levenberg-Marquardt iterations per fit.
        coords: coordinates kept per problem (evenly spaced in the flattened parameters);
            ``None`` keeps all.
        validation: problems on which the candidates are compared.
        key: problems are drawn from ``fold_in(key(0), key)``: round ``r``'s as
            ``split(fold_in(base, r))``, the validation problems' as
            ``split(fold_in(base, 10_000))`` (also Adam's tuning key in
            :func:`lopt.evaluation.tune_baselines`, whose problems are ``split(base)``; never the
            held-out key).
        try_damping: also fit the chain with oscillation damping in front when it has none;
            kept if it ranks clearly better than the detected structure (:func:`choose`: it
            settles where that one rings, or lowers the best validation error by more than
            :data:`EXTENSION_GAIN`, relative) and better than the agreement structure.
        try_agreement: the same with a sign-agreement gain in front of the linear stage when
            it has none (:func:`lopt.chain.scale_by_agreement`, started at
            :data:`AGREEMENT_START`).
    """

    rounds: int = 6
    num_problems: int = 64
    fit_steps: int = 40
    coords: int | None = 256
    validation: int = 64
    key: int = 2
    try_damping: bool = True
    try_agreement: bool = True


#: A structure with one more mechanism is kept only if its best validation imitation error is
#: below ``(1 − EXTENSION_GAIN)`` times the detected structure's, less ``EXTENSION_FLOOR`` (the
#: float32 floor of the error, where two exact fits differ by rounding): a tie keeps the
#: simpler one.
EXTENSION_GAIN = 0.02
EXTENSION_FLOOR = 1e-6
#: The added damping starts at ``κ = DAMPING_START ×`` the 90th percentile of the recorded
#: ``|g|``, where it scales gradients that change by up to that percentile by less than 10%:
#: nearly inactive.
DAMPING_START = 10.0
#: The label of the added damping entry (its numbers' tag is appended by the fit).
ADDED_DAMPING = "oscillation damping, added by identification: not in the detected chain"
#: The added sign-agreement gain starts at ``κ`` = the 90th percentile of the recorded ``|g|``
#: (agreement counts for the larger gradients), gains ×1.5 for agreeing and ×0.5 for flipping
#: signs, reached at a tenth of the way per step: a mild version of the mechanism, from which
#: the fit can move either way (at ×1 and ×1 its rates would have no effect to fit).
AGREEMENT_START = {"agreeing": 1.5, "disagreeing": 0.5, "rise": 0.1, "fall": 0.1}
#: The label of the added sign-agreement entry.
ADDED_AGREEMENT = "sign agreement, added by identification: not in the detected chain"
#: A candidate *rings* when the RMS of its updates over the last :data:`REST_SHARE` of its own
#: validation trajectories (on the median problem, :func:`late_rms`) is more than
#: ``RING_RATIO`` times the learned optimizer's over the same stretch of its own trajectories
#: on those problems: it keeps stepping where the optimizer comes to rest. Ringing candidates
#: rank after every settling one.
RING_RATIO = 10.0
#: The stretch at the end of the horizon where candidates must come to rest (a share of it).
REST_SHARE = 0.25


#: The transforms of a chain's linear stage (momentum, normaliser, sign, learning rate): an
#: added sign-agreement gain goes in front of the first of them.
LINEAR_STAGE = (
    "trace",
    "momentum_modes",
    "scale_by_rms",
    "scale_by_sign",
    "scale_by_learning_rate",
)


def _insert(chain: Sequence[Mapping[str, Any]], entry: dict[str, Any]) -> list[dict[str, Any]]:
    """``chain`` with an added entry where identification puts it.

    Damping goes in front of the other mechanisms, behind a bias's offset (which stays first);
    a sign-agreement gain goes behind the input stage (offset, damping, clip), in front of the
    linear stage (:data:`LINEAR_STAGE`), where it scales the step's sensitivity to the gradient
    as the agreement probe measures it (relative to a fresh step, so a clip's saturation is
    divided out).
    """
    chain = [dict(e) for e in chain]
    if entry["transform"] == "scale_by_agreement":
        at = next(
            (i for i, e in enumerate(chain) if e.get("transform") in LINEAR_STAGE), len(chain)
        )
    else:
        at = 1 if chain and chain[0].get("transform") == "offset_gradient" else 0
    return [*chain[:at], entry, *chain[at:]]


def late_rms(updates: jax.Array, share: float = REST_SHARE) -> jax.Array:
    """How far the typical problem still steps at the end of ``updates`` ``[P, T, C]``.

    The median over problems of the RMS over the last ``share`` of the steps (at least one; a
    problem whose RMS is not finite counts as infinite); the median, so that a chain ringing or
    diverging on a few problems out of many does not count as ringing (those problems weigh in
    the imitation error).
    """
    steps = updates.shape[1]
    late = updates[:, steps - max(1, int(round(share * steps))) :]
    per_problem = jnp.sqrt(jnp.mean(late**2, axis=(1, 2)))
    return jnp.median(jnp.where(jnp.isfinite(per_problem), per_problem, jnp.inf))


def rings(late: float, rest: float) -> bool:
    """Whether a candidate stepping ``late`` at the end keeps stepping where the optimizer rests.

    ``late`` and ``rest`` are :func:`late_rms` of the candidate's and the learned optimizer's
    updates on their own trajectories; a non-finite ``late`` rings, and without a positive,
    finite ``rest`` nothing does.
    """
    return bool(math.isfinite(rest) and rest > 0 and not late <= RING_RATIO * rest)


def choose(scores: Sequence[Sequence[tuple[float, float]]], rest: float) -> tuple[int, int]:
    """The structure and the candidate identification keeps.

    Args:
        scores: per structure (the detected one first, then those with a mechanism added), per
            candidate, ``(validation imitation error, late RMS update)``.
        rest: the learned optimizer's late RMS update on the same problems (:func:`late_rms`).

    Returns:
        ``(structure, candidate)`` indices. Candidates rank by whether their error is finite
        (a chain that diverged on a validation problem scores ``inf``), then by whether they
        ring (:func:`rings`; settling ones first), then by error. A structure with a mechanism
        added is kept only if its best candidate settles where the detected structure's best
        rings, or if both settle (or both ring) and its error is below ``1 −``
        :data:`EXTENSION_GAIN` times the detected structure's, less :data:`EXTENSION_FLOOR`;
        of several, the best.
    """
    ranks = [[(not math.isfinite(err), rings(late, rest), err) for err, late in s] for s in scores]
    best = [min(r) for r in ranks]
    bar = (1.0 - EXTENSION_GAIN) * best[0][2] - EXTENSION_FLOOR
    kept = 0
    for i in range(1, len(best)):
        clearly = best[i][:2] < best[0][:2] or (best[i][:2] == best[0][:2] and best[i][2] < bar)
        if clearly and (kept == 0 or best[i] < best[kept]):
            kept = i
    return kept, min(range(len(ranks[kept])), key=lambda j: ranks[kept][j])


def _imitation_error(chain_tx, teacher_u: jax.Array, seqs: Mapping[str, jax.Array]) -> jax.Array:
    """Per problem: ``Σ(u_chain − u_learned)² / Σ u_learned²`` over steps and coordinates."""
    u = jax.vmap(lambda s: replay(chain_tx, s))(seqs)
    num = jnp.sum((u - teacher_u) ** 2, axis=(1, 2))
    return num / jnp.maximum(jnp.sum(teacher_u**2, axis=(1, 2)), 1e-30)


def identify_chain(
    chain: Sequence[Mapping[str, Any]],
    learned: optax.GradientTransformation,
    family: Any,
    config: IdentifyConfig = IdentifyConfig(),
    *,
    num_steps: int | None = None,
    say: Callable[[str], None] | None = None,
) -> tuple[list[dict[str, Any]] | None, dict[str, Any]]:
    """Fits the chain's numbers to the learned optimizer's *updates* (system identification).

    The structure is the one the probes detected (or it with damping or a sign-agreement gain
    added, step 4); its numbers are refitted: clip and damping scales (positive), decays
    (inside (0, 1)), the sign-agreement gains (positive) and rates (inside (0, 1)), the
    learning rate (non-zero; its sign may flip), and an exponent ``γ`` on the detected
    schedule's multipliers when they are all positive (``m(t)^γ``: ``γ = 1`` is the probed
    schedule, ``γ = 0`` none). No loss enters: the target
    is what the learned optimizer outputs for the gradients the chain sees. The learned
    optimizer must act coordinate by coordinate (a :class:`~lopt.cell.Cell`), so that replaying
    it on a recorded subset of coordinates reproduces what it did.

    1. Record the gradients the learned optimizer meets on ``config.num_problems`` training
       problems (``config.coords`` coordinates per problem; both optimizers act
       coordinate-wise, so replaying a subset is exact), and its updates.
    2. Fit the numbers (Levenberg-Marquardt in log / logit coordinates, the learning rate
       linearly in units of its detected magnitude) to minimise the imitation error: per problem
       ``Σ_t,i (u_chain − u_learned)² / Σ_t,i u_learned²`` with the chain replayed open loop on
       the recorded gradients, averaged over problems.
    3. Run the fitted chain on fresh problems, record the gradients *it* meets and the learned
       optimizer's updates for them, add them to the data and refit (DAgger: the chain is then
       fitted where it actually goes, not only along the learned optimizer's path). Repeat.

    4. If the chain has no oscillation damping and ``config.try_damping`` is set, do 2-3 again
       for the chain with :func:`lopt.chain.damp_oscillations` in front (``κ`` starting at
       :data:`DAMPING_START` times the 90th percentile of the recorded ``|g|``, memory
       :data:`probes.to_chain.DAMP_DECAY`); if it has no sign-agreement gain and
       ``config.try_agreement`` is set, the same with :func:`lopt.chain.scale_by_agreement`
       behind the clip, in front of the linear stage (:data:`LINEAR_STAGE`; started at
       :data:`AGREEMENT_START`, ``κ`` the 90th percentile of ``|g|``).

    Each candidate (the detected numbers, each round's fit of each structure) is scored by its
    imitation error on its own trajectories on ``config.validation`` other problems, and by
    whether it comes to rest there: a candidate whose RMS update over the last quarter of the
    horizon (on the median problem) is more than :data:`RING_RATIO` times the learned
    optimizer's on its own trajectories *rings* (the fit weighs each problem's updates by their
    total size, which the first steps dominate, so a fit can replay them closely and still keep
    stepping where the optimizer has settled). Settling candidates rank first, then by error;
    a structure with a mechanism added is kept only if it ranks clearly better
    (:func:`choose`), and the returned chain is the best-ranked candidate of the kept
    structure.

    Args:
        chain: the detected chain (:func:`probes.distill.chain_from_analysis`).
        learned: the learned optimizer. Replaying it on a subset of coordinates is exact only
            if it is coordinate-wise (one with a :class:`~lopt.cell.Cell`).
        family: the task family.
        config: rounds, problems, iterations, coordinates and key (:class:`IdentifyConfig`).
        num_steps: updates per problem (default: the family's).
        say: optional progress callback (one line per round and structure).

    Returns:
        ``(chain, notes)``: the identified chain (plain floats; the detected structure, or it
        with damping or a sign-agreement gain added, labelled as added by identification;
        the detected chain itself if no fit ranks better) and a record (every candidate's
        structure, round and errors, the selected one, what was added (``added``: ``None``,
        ``"damping"`` or ``"sign agreement"``), the schedule exponent, settings);
        ``(None, {"note": why})`` when there is nothing to identify (no number in the chain to
        fit, or a learned optimizer that makes no finite, non-zero update).
    """
    num_steps = family.num_steps if num_steps is None else num_steps
    rounds, num_problems, fit_steps = config.rounds, config.num_problems, config.fit_steps
    key = jax.random.fold_in(jax.random.key(0), config.key)
    if not free_numbers(chain):
        return None, {"note": "the chain has no number to fit: nothing to identify"}
    learned = optax.with_extra_args_support(learned)
    idx = coordinates(family.num_params(), config.coords)

    def record_replayed(tx, keys):
        rec = record(tx, family, keys, idx, num_steps)
        seqs = {k: rec[k] for k in ("g", "p", "f")}  # the learned optimizer's own updates below
        teacher = jax.vmap(lambda s: replay(learned, s))(seqs)
        finite = jnp.all(jnp.isfinite(seqs["g"]), (1, 2)) & jnp.all(jnp.isfinite(teacher), (1, 2))
        finite &= jnp.all(jnp.isfinite(seqs["p"]), (1, 2)) & jnp.isfinite(seqs["f"]).all(1)
        # a problem on which the learned optimizer makes no update has nothing to imitate;
        # late_rms: how far tx still steps at the end of its own trajectories
        return seqs, teacher, finite & (jnp.sum(teacher**2, (1, 2)) > 0), late_rms(rec["u"])

    def keys(i, count=num_problems):
        return jax.random.split(jax.random.fold_in(key, i), count)

    val_keys = keys(10_000, config.validation)
    # where the learned optimizer comes to rest on the validation problems (its own trajectories)
    rest = float(
        jax.jit(lambda k: late_rms(record(learned, family, k, idx, num_steps)["u"]))(val_keys)
    )

    def score(finite, err):
        # mean imitation error on the validation problems; inf if the chain diverged on any
        finite, err = np.asarray(finite), np.asarray(err)
        return float(np.mean(err)) if finite.all() and np.isfinite(err).all() else math.inf

    def usable(recorded):
        # problems whose gradients and learned updates are finite and not all zero; the others
        # (a chain diverging in a DAgger round, an optimizer that never moves) are dropped, so
        # no inf or NaN reaches the fit (a zero weight would not mask it in the Jacobian)
        seqs, teacher, ok, _ = recorded
        ok = np.asarray(ok)
        return jax.tree.map(lambda x: x[ok], seqs), teacher[ok]

    own = usable(jax.jit(lambda k: record_replayed(learned, k))(keys(0)))
    if own[1].shape[0] == 0:
        return None, {
            "note": "the learned optimizer makes no finite, non-zero update on the recorded "
            "problems: nothing to identify"
        }

    def fit_structure(chain, name, with_start):
        """Candidates ``(z, fit error, validation error, late RMS)`` of a structure; its coding."""
        free = free_numbers(chain)
        z, unravel = ravel_pytree(encode(chain, free))

        @jax.jit
        def record_chain(z, keys):
            return record_replayed(build_chain(decode(chain, free, unravel(z))), keys)

        @jax.jit
        def chain_error(z, teacher, seqs):
            return _imitation_error(build_chain(decode(chain, free, unravel(z))), teacher, seqs)

        def validate(z):
            seqs, teacher, finite, late = record_chain(z, val_keys)
            return score(finite, chain_error(z, teacher, seqs)), float(late)

        fit = _fitter(chain, free, unravel, fit_steps)
        candidates = [(z, math.nan, *validate(z))] if with_start else []
        data = [own]
        for r in range(rounds):
            seqs = jax.tree.map(lambda *x: jnp.concatenate(x), *[d[0] for d in data])
            teacher = jnp.concatenate([d[1] for d in data])
            z, train_err = fit(z, seqs, teacher)  # finite: the fit only accepts finite steps
            candidates.append((z, float(train_err), *validate(z)))
            if say:
                say(
                    f"identification ({name}) round {r + 1}/{rounds}: imitation error "
                    f"{float(train_err):.4f} (fit), {candidates[-1][2]:.4f} (own trajectories, "
                    "validation)"
                )
            if r + 1 < rounds:
                new = usable(record_chain(z, keys(r + 1)))
                if new[1].shape[0]:
                    data.append(new)
        return candidates, free, unravel

    structures = [("detected", chain, True)]
    starts: dict[str, float | None] = {"damping": None, "sign agreement": None}
    g90 = float(np.percentile(np.abs(np.asarray(own[0]["g"], np.float64)), 90))
    present = {e.get("transform") for e in chain}
    entries = {
        "damping": (
            config.try_damping,
            DAMPING_START * g90,
            {"transform": "damp_oscillations", "decay": DAMP_DECAY, "mechanism": ADDED_DAMPING},
        ),
        "sign agreement": (
            config.try_agreement,
            g90,
            {"transform": "scale_by_agreement", **AGREEMENT_START, "mechanism": ADDED_AGREEMENT},
        ),
    }
    for name, (wanted, kappa, entry) in entries.items():
        if wanted and rounds >= 1 and entry["transform"] not in present:
            if math.isfinite(kappa) and kappa > 0:  # recorded only when the structure is fitted
                starts[name] = kappa
                added = _insert(chain, {**entry, "scale": kappa})
                structures.append((f"detected + {name}", added, False))
    fitted_structures = [fit_structure(c, name, start) for name, c, start in structures]
    kept, pick = choose([[(c[2], c[3]) for c in f[0]] for f in fitted_structures], rest)
    added_name = structures[kept][0].removeprefix("detected + ") if kept else None
    candidates, free, unravel = fitted_structures[kept]
    first_round = 0 if structures[kept][2] else 1
    selected_round = pick + first_round
    if selected_round == 0:
        fitted, gamma = [dict(e) for e in chain], {}
    else:
        fitted, gamma = relabel(
            structures[kept][1], free, unravel(candidates[pick][0]), "numbers identified"
        )
    notes = {
        "method": "numbers fitted to the learned optimizer's updates on the gradients the chain "
        "meets (DAgger rounds); no loss is used",
        "schedule_exponent": gamma,
        "candidates": [
            {
                "structure": name,
                "round": i + (0 if start else 1),
                "fit_error": c[1],
                "validation_error": c[2],
                "late_rms": c[3],
                "rings": rings(c[3], rest),
            }
            for (name, _, start), f in zip(structures, fitted_structures, strict=True)
            for i, c in enumerate(f[0])
        ],
        "structure": structures[kept][0],
        "added": added_name,
        "damping_added": added_name == "damping",
        "damping_start": starts["damping"],
        "agreement_start": starts["sign agreement"],
        "selected_round": selected_round,
        "selected": sum(len(f[0]) for f in fitted_structures[:kept]) + pick,
        "rest_rms": rest,
        "ring_ratio": RING_RATIO,
        "rounds": rounds,
        "num_problems": num_problems,
        "validation_problems": config.validation,
        "coords": int(idx.size),
        "fit_steps": fit_steps,
        "key": f"fold_in(key(0), {config.key})",
    }
    return fitted, notes


def _fitter(chain, free, unravel, fit_steps):
    """The jitted Levenberg-Marquardt fit ``(x, seqs, teacher) -> (x, error)`` of one structure."""

    @jax.jit
    def fit(x, seqs, teacher):
        # Levenberg-Marquardt on the residuals (u_chain − u_learned)·√(w_p), w_p = 1/(P·Σu²): a
        # handful of numbers and many residuals, often ill-conditioned (β and α trade off), where
        # first-order steps crawl. Normal equations are accumulated problem by problem.
        w = 1.0 / (jnp.sum(teacher**2, (1, 2)) * teacher.shape[0])

        def resid(x, seq, target, wp):
            u = replay(build_chain(decode(chain, free, unravel(x))), seq)
            return ((u - target) * jnp.sqrt(wp)).reshape(-1)

        def normal(x):
            def one(a):
                r = resid(x, *a)
                jac = jax.jacfwd(resid)(x, *a)
                return jac.T @ jac, jac.T @ r, r @ r

            jj, jr, rr = jax.lax.map(one, (seqs, teacher, w), batch_size=16)
            return jj.sum(0), jr.sum(0), rr.sum()

        def value(x):
            return jax.lax.map(lambda a: jnp.sum(resid(x, *a) ** 2), (seqs, teacher, w)).sum()

        def step(carry, _):
            x, lam = carry
            jj, jr, f = normal(x)
            d = jnp.diag(jj)
            damp = lam * jnp.diag(d + 1e-6 * jnp.mean(d) + 1e-30)
            # at most one unit per number and iteration (a factor e, or a logit unit): a
            # trust region that keeps a decay from jumping into its logistic's flat tail
            cand = x - jnp.clip(jnp.linalg.solve(jj + damp, jr), -1.0, 1.0)
            f_new = value(cand)
            ok = jnp.isfinite(f_new) & (f_new < f)
            return (jnp.where(ok, cand, x), jnp.where(ok, lam / 3.0, lam * 3.0)), f

        (x, _), _ = jax.lax.scan(step, (x, jnp.float32(1.0)), length=fit_steps)
        return x, value(x)

    return fit
