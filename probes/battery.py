"""A battery of hand-designed optimizers whose mechanisms are known in closed form.

Each :class:`Case` holds an optax factory, a :class:`lopt.Cell` factory (white box), its
hyperparameters, and the answer the probes should give, derived from the maths next to the
case. :func:`check` scores an :class:`probes.analysis.Analysis` against it; :func:`sample_case`
draws a case of a family with random hyperparameters. No expected answer comes from what the
detectors output.

The expectations refer to the probes' protocols at default settings (:mod:`probes.analysis`):
gradient scale 1; black-box impulse response after ``W = 2000`` steps of a background gradient
``b = 0`` (``b = 1`` where that is not finite); clipping from the first update on ``[1e-4, 1e4]``;
adaptation from ``α_eff(h*(g*)) = -∂U/∂g`` at ``g = 0`` from the steady state of a constant
``g*`` in ``[1e-2, 1e1]`` (docs/method.md, Adaptation); damping from 200-step gain ratios.

Decisions on the ambiguous definitions:

* **Momentum** is the slowest linear mode ``β`` with a *positive*, non-negligible ``α``
  (``r_k = -Σ α_i β_i^k``); a mode with ``α < 0`` (Adam's ``ν`` mode at ``b2``, the second pole
  of two cascaded EMAs) is a correction. Nesterov (and NAdam) is momentum with ``β`` its
  coefficient and ``α`` that mode's weight, plus an instantaneous term (``λ = 0``) that may
  outweigh it. With two modes the expected one dominates both ``|α|`` and ``α/(1-β)``. Under a
  schedule ``α`` varies and is unchecked; ``β`` is the coefficient (a decay must not bias it).
* **Sign-like updates** (sign-SGD, signum, Lion; the first step of Adam, NAdam, AdaBelief,
  ``-α g/(|g| + ε)``) are clipping at threshold 0 (``sign g = lim_{c→0} clip(g, ±c)/c``); a
  threshold below the grid's smallest magnitude passes when the measured one is at most that.
  The memory *inside* the sign is momentum (signum, Lion: ``β`` the EMA coefficient; a
  large-signal probe sees it as how long an opposite impulse flips the sign); ``α`` is
  scale-free, unchecked. The small-signal gain is 0 at any ``g* ≠ 0``: no adaptation.
* **Adam** is momentum ``β = b1`` (black box ``α = lr(1-b1)/|b|``) AND adaptation (slope
  ``-1``). White box: the convergence point has ``ν = 0``, where ``α`` is singular: unchecked.
* **Schedule** is the step-size multiplier applied whatever the gradients, over the task's
  ``HORIZON``, with the Schedule detector's names (``constant``, ``warm-up``, ``decay``,
  ``warm-up-then-decay``); a dip-and-recover has no name (``None``: any non-constant). The gain
  ``α_eff(t)`` is checked where finite and closed-form (SGD, momentum, clip chains, RMSProp,
  Adagrad); a sign-like update's gain is 0, so its step size ``|u_t| = lr_t`` is checked.
  Adam's ``1/ε`` gain at ``ν = 0`` is checked for shape only: its gain after ``t`` zero
  gradients follows the bias corrections, not a schedule unless the step along a constant
  gradient changes too (NAdam's decay, :func:`adam`). Such a correction, moving the step along
  a constant gradient by at least ``SCHEDULE_TOL`` and the gain after zero gradients with it,
  *is* called a schedule, and its shape is the rule's on the two closed-form curves (Yogi,
  whose step dips while its ``ν̂`` overshoots ``g²``:
  :func:`probes.battery_normalised.yogi_schedule_shape`); a
  correction that moves only one of them is not.
* **Clipping** is saturation of the first update; adaptive methods saturate too (RMSProp at
  ``√((2^{2/3}-1)ε/(1-ρ))``, Adagrad at ``√((2^{2/3}-1)a0)``): expected, as the maths says.
* **Damping**: AdaBelief and centred RMSProp (both divide by a spread that a constant gradient
  drives to 0) and :func:`lopt.hand_designed.damped_momentum` damp, the rest do not; unchecked
  (``None``) where 200 steps do not settle or the parameter feeds back (AGC).

White boxes: ``lopt.hand_designed`` where one exists, otherwise :func:`optax_cell`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import numpy as np
import optax

from lopt import hand_designed as cells
from lopt.cell import cell_optimizer
from probes.battery_common import (
    BACKGROUND,
    C23,
    EPS8,
    NORMED,
    SIGN,
    SQRT2M1,
    flat_schedule,
    make_case,
    scheduled_lr,
)
from probes.battery_common import HORIZON as HORIZON
from probes.battery_common import W as W
from probes.battery_normalised import adabelief, adamax, adan, amsgrad, novograd, yogi
from probes.battery_optimizers import delta_bar_delta, ringing_cell, two_momentum_cell
from probes.battery_optimizers import optax_cell as optax_cell
from probes.detectors import SIGN_CHANGE_LEVEL
from probes.expected import Case as Case
from probes.expected import ExpectAdaptation as ExpectAdaptation
from probes.expected import ExpectAgreement as ExpectAgreement
from probes.expected import ExpectClipping as ExpectClipping
from probes.expected import Expected as Expected
from probes.expected import ExpectMomentum as ExpectMomentum
from probes.expected import ExpectSchedule as ExpectSchedule
from probes.scoring import OUTCOMES as OUTCOMES
from probes.scoring import Verdict as Verdict
from probes.scoring import check as check

#: The mechanisms :func:`check` scores, in order.
MECHANISMS = ("momentum", "clipping", "schedule", "adaptation", "damping", "bias", "agreement")


def sgd(name: str = "sgd", *, lr: float = 0.1) -> Case:
    """Plain SGD: ``r_k = -α δ_k``: one ``λ = 0`` mode ``α = lr``; nothing else."""
    e = Expected(ExpectMomentum(False, alpha=lr), schedule=flat_schedule(lr))
    return make_case(name, "sgd", lambda: optax.sgd(lr), {"lr": lr}, e, lambda: cells.sgd(lr))


def momentum(name: str = "momentum", *, lr: float = 0.1, beta: float = 0.9) -> Case:
    """Heavy ball ``m' = βm + g``, ``Δx = -lr m'``: ``r_k = -lr β^k``, one mode ``(β, lr)``."""
    e = Expected(ExpectMomentum(True, beta, lr), schedule=flat_schedule(lr))
    tx, hp = lambda: optax.sgd(lr, momentum=beta), {"lr": lr, "beta": beta}
    return make_case(name, "momentum", tx, hp, e, lambda: cells.momentum(lr, beta))


def nesterov(name: str = "nesterov", *, lr: float = 0.1, beta: float = 0.9) -> Case:
    """Nesterov ``Δx = -lr(g + βm')``: ``r_k = -lr(δ_k + β·β^k)``: mode ``(β, lr·β)`` + direct.

    At rest (``m = 0``) ``u = -lr(1+β)g``: ``α_eff = lr(1+β)``.
    """
    e = Expected(ExpectMomentum(True, beta, lr * beta), schedule=flat_schedule(lr * (1 + beta)))
    tx = lambda: optax.sgd(lr, momentum=beta, nesterov=True)  # noqa: E731
    return make_case(name, "nesterov", tx, {"lr": lr, "beta": beta}, e)


def two_modes(name="two_modes", *, a1=0.05, b1=0.9, a2=0.01, b2=0.5) -> Case:
    """Two modes ``r_k = -(a1 b1^k + a2 b2^k)``; ``(b1, a1)`` dominates ``|α|`` and ``α/(1-β)``."""
    e = Expected(ExpectMomentum(True, b1, a1), schedule=flat_schedule(a1 + a2))
    cell = lambda: two_momentum_cell(a1, b1, a2, b2)  # noqa: E731
    hp = dict(a1=a1, b1=b1, a2=a2, b2=b2)
    return make_case(name, "two_modes", lambda: cell_optimizer(cell()), hp, e, cell)


def ringing(
    name: str = "ringing", *, a: float = 0.1, rho: float = 0.85, phase: float = 0.5
) -> Case:
    """A complex pair ``ρe^{±iθ}``: ``r_k = -aρ^k cos kθ = -2 Re((a/2) λ^k)``.

    ``θ = phase · θ_max(ρ)``, where ``θ_max`` puts the first sign change (``kθ = π/2``) where
    the envelope ``ρ^k`` reaches ``SIGN_CHANGE_LEVEL``: for ``phase < 1`` the pair keeps its sign
    until the envelope is below it, so it is momentum with ``β = |λ| = ρ``, ``α = 2 Re(a/2) = a``
    (the rule's numbers for a pair), and ``α_eff = a`` at rest (lag 0).
    """
    theta = phase * np.pi * np.log(rho) / (2.0 * np.log(SIGN_CHANGE_LEVEL))
    e = Expected(ExpectMomentum(True, rho, a), schedule=flat_schedule(a))
    cell = lambda: ringing_cell(a, rho, theta)  # noqa: E731
    hp = dict(a=a, rho=rho, phase=phase)
    return make_case(name, "ringing", lambda: cell_optimizer(cell()), hp, e, cell)


def cascade(name: str = "cascade", *, lr: float = 0.1, b1: float = 0.9, b2: float = 0.5) -> Case:
    """trace(b1)∘trace(b2): ``r_k = -lr(b1^{k+1} - b2^{k+1})/(b1-b2)``: ``α1 = lr b1/(b1-b2)``."""
    # The b2 mode has α = -lr b2/(b1-b2) < 0: a correction, not momentum.
    e = Expected(ExpectMomentum(True, b1, lr * b1 / (b1 - b2)), schedule=flat_schedule(lr))
    tx = lambda: optax.chain(optax.trace(b1), optax.trace(b2), optax.scale(-lr))  # noqa: E731
    return make_case(name, "cascade", tx, dict(lr=lr, b1=b1, b2=b2), e)


def ema_momentum(name: str = "ema_momentum", *, lr: float = 0.5, beta: float = 0.8) -> Case:
    """ema(β, no debias) then ×lr: ``m' = βm + (1-β)g``: mode ``(β, lr(1-β))``."""
    e = Expected(
        ExpectMomentum(True, beta, lr * (1 - beta)), schedule=flat_schedule(lr * (1 - beta))
    )
    tx = lambda: optax.chain(optax.ema(beta, debias=False), optax.scale(-lr))  # noqa: E731
    return make_case(name, "ema_momentum", tx, {"lr": lr, "beta": beta}, e)


#: On one scalar each of these is ``clip(g, ±c)``: ``‖g‖ = block rms = |g|``.
_CLIPS = {
    "clip": optax.clip,
    "clip_by_global_norm": optax.clip_by_global_norm,
    "clip_by_block_rms": optax.clip_by_block_rms,
}


def clipped(name="clip", *, kind="clip", c=0.5, lr=0.1, beta=0.0) -> Case:
    """``kind(c)`` then sgd(lr, β): ``u_0 = -lr clip(g, ±c)``: threshold ``c``; momentum if β."""
    mom = ExpectMomentum(beta > 0, beta if beta > 0 else None, lr)
    e = Expected(mom, ExpectClipping(True, c), flat_schedule(lr))
    tx = lambda: optax.chain(_CLIPS[kind](c), optax.sgd(lr, momentum=beta or None))  # noqa: E731
    cell = (lambda: cells.clipped_sgd(lr, c)) if kind == "clip" and beta == 0 else None
    return make_case(name, "clipped", tx, dict(kind=kind, c=c, lr=lr, beta=beta), e, cell)


def drifting(
    name="drift_momentum", *, lr=0.1, beta=0.9, stall=0.01, clip=0.0, shift="update"
) -> Case:
    """``sgd(lr, β)`` (after ``clip(c)`` if ``clip``) with a constant offset: a bias.

    No optax optimizer has one (:mod:`probes.bias`); two hand-made forms whose update vanishes
    at ``g₀ = stall``:

    * ``shift="update"``: a constant ``d`` added to every update. The steady update after ``W``
      steps of a constant ``g`` is ``-lr·g·(1 − β^W)/(1 − β) + d``, zero at ``g₀`` for
      ``d = g₀·lr(1 − β^W)/(1 − β)`` (a clip at ``c > |g₀|`` leaves the zero where it is).
    * ``shift="gradient"``: every gradient entry shifted first, ``g ↦ g − g₀``: the update is
      zero exactly at ``g₀`` (the form :func:`lopt.chain.offset_gradient` writes).

    A constant adds nothing to a linear response: momentum and schedule are those of the chain
    without it, and so is clipping where the clip comes after the shift's window (``c > |g₀|``).
    """
    d = stall * lr * (1.0 - beta**W) / (1.0 - beta)
    mom = ExpectMomentum(beta > 0, beta if beta > 0 else None, lr)
    e = Expected(mom, ExpectClipping(clip > 0, clip or None), flat_schedule(lr), bias=stall)

    def tx():
        def add(x):
            return lambda u, p: jax.tree.map(lambda v: v + x, u)

        clipper = [optax.clip(clip)] if clip else []
        base = [*clipper, optax.sgd(lr, momentum=beta or None)]
        if shift == "gradient":
            return optax.chain(optax.stateless(add(-stall)), *base)
        return optax.chain(*base, optax.stateless(add(d)))

    hp = dict(lr=lr, beta=beta, stall=stall, clip=clip, shift=shift)
    return make_case(name, "drifting", tx, hp, e)


def agc(name: str = "adaptive_grad_clip", *, c: float = 1.0, eps: float = 1e-2, lr=0.1) -> Case:
    """AGC on a scalar at ``p = 0``: clip at ``c·max(|p|, eps) = c·eps``; damping unchecked."""
    # Damping unchecked: p grows under a constant gradient and loosens the clip (feedback).
    e = Expected(
        ExpectMomentum(False, alpha=lr),
        ExpectClipping(True, c * eps),
        flat_schedule(lr),
        damping=None,
    )
    tx = lambda: optax.chain(optax.adaptive_grad_clip(c, eps), optax.sgd(lr))  # noqa: E731
    return make_case(name, "agc", tx, dict(c=c, eps=eps, lr=lr), e)


_o = optax.schedules
#: Schedules (all peak at 0.1): name -> (factory, shape over HORIZON); derivation on the right.
SCHEDULES: dict[str, tuple[Callable[[], Callable], str | None]] = {
    "constant": (lambda: _o.constant_schedule(0.1), "constant"),  # 0.1 throughout
    "linear_decay": (lambda: _o.linear_schedule(0.1, 0.01, 150), "decay"),  # 0.1→0.01 by 150
    "linear_warmup": (lambda: _o.linear_schedule(0.01, 0.1, 30), "warm-up"),  # 0.01→0.1 by 30
    # 0.1→0.01 along a half cosine over 200 steps
    "cosine_decay": (lambda: _o.cosine_decay_schedule(0.1, 200, 0.1), "decay"),
    # 0→0.1 by 20, cosine to 1e-3 by 200
    "warmup_cosine": (
        lambda: _o.warmup_cosine_decay_schedule(0.0, 0.1, 20, 200, 1e-3),
        "warm-up-then-decay",
    ),
    # peak at 120 of the 200-step horizon, then the cosine decay
    "warmup_cosine_late": (
        lambda: _o.warmup_cosine_decay_schedule(0.01, 0.1, 120, 200, 0.01),
        "warm-up-then-decay",
    ),
    "exponential": (lambda: _o.exponential_decay(0.1, 10, 0.9), "decay"),  # 0.1·0.9^(t/10)
    "exponential_fast": (lambda: _o.exponential_decay(0.1, 1, 0.98), "decay"),  # 0.1·0.98^t
    # halves every 25 steps, in stairs
    "exponential_staircase": (lambda: _o.exponential_decay(0.1, 25, 0.5, staircase=True), "decay"),
    # constant to 150, then ×0.8 per 10 steps: decays within the horizon
    "exponential_late": (lambda: _o.exponential_decay(0.1, 10, 0.8, 150), "decay"),
    # 0.1, then 0.05 from 50, 0.01 from 80
    "piecewise_constant": (
        lambda: _o.piecewise_constant_schedule(0.1, {50: 0.5, 80: 0.2}),
        "decay",
    ),
    # 0.1 to 20, down to 0.01 at 40, back up to 0.1 at 70: dip and recover (no shape name)
    "piecewise_dip": (
        lambda: _o.piecewise_interpolate_schedule("linear", 0.1, {20: 1.0, 40: 0.1, 70: 10.0}),
        None,
    ),
    # 0.1→0.02 by 30 (cosine interpolation)
    "piecewise_cosine": (
        lambda: _o.piecewise_interpolate_schedule("cosine", 0.1, {30: 0.2}),
        "decay",
    ),
    # (0.1-1e-3)(1-t/100)² + 1e-3
    "polynomial": (lambda: _o.polynomial_schedule(0.1, 1e-3, 2, 100), "decay"),
    # 1e-3→0.1 as 0.1-(0.1-1e-3)(1-t/60)²; power 2, not ½: optax's 0**0.5 is nan under jit
    "polynomial_warmup": (lambda: _o.polynomial_schedule(1e-3, 0.1, 2, 60), "warm-up"),
    # linear 0.01→0.1 by 20, then cosine to 0.005 by 100
    "join": (
        lambda: _o.join_schedules(
            [_o.linear_schedule(0.01, 0.1, 20), _o.cosine_decay_schedule(0.1, 80, 0.05)], [20]
        ),
        "warm-up-then-decay",
    ),
    # four warm restarts of 50 steps: warms up and decays (repeatedly)
    "sgdr": (
        lambda: _o.sgdr_schedule(
            [dict(init_value=0.01, peak_value=0.1, warmup_steps=10, decay_steps=50)] * 4
        ),
        "warm-up-then-decay",
    ),
    # 0.004→0.1 by 60, then down to 4e-7 by 200
    "onecycle": (lambda: _o.cosine_onecycle_schedule(200, 0.1), "warm-up-then-decay"),
}


def scheduled(name=None, *, schedule="cosine_decay", beta=0.0, clip=0.0) -> Case:
    """[clip(c) →] sgd(schedule, momentum=β): ``α_eff(t) = -∂u_t/∂g_t = schedule(t)`` (``m = 0``).

    ``u_0 = -schedule(0)·clip(g, ±c)``: the slope halves at ``c`` (when ``schedule(0) = 0`` the
    clip is still there, from the second update on). Momentum ``β``, ``α`` is scheduled
    (unchecked); the black box reads ``βγ`` under an ongoing decay ``γ`` per step.
    """
    make, shape = SCHEDULES[schedule]
    e = Expected(
        ExpectMomentum(beta > 0, beta or None),
        ExpectClipping(clip > 0, clip or None),
        ExpectSchedule(shape, scheduled_lr(make())),
    )

    def tx():
        sgd = optax.sgd(make(), momentum=beta or None)
        return optax.chain(optax.clip(clip), sgd) if clip else sgd

    hp = dict(schedule=schedule, beta=beta, clip=clip)
    return make_case(name or f"sgd_{schedule}", "scheduled", tx, hp, e)


def _rate(lr: float, schedule: str | None) -> Any:
    """``lr``, or the schedule (peak 0.1) rescaled to peak ``lr``."""
    if schedule is None:
        return lr
    make = SCHEDULES[schedule][0]
    return lambda t: make()(t) * (lr / 0.1)


def rmsprop(name="rmsprop", *, lr=0.01, rho=0.9, centered=False, beta=0.0, schedule=None) -> Case:
    """optax.rmsprop: ``u = -lr g/√(ν' + ε)`` (ε in the root), optionally centred / momentum.

    Background 0 is finite (``ν = 0``): a ``λ = 0`` mode ``α = lr/√ε`` (or the momentum mode
    ``(β, lr/√ε)`` with ``trace(β)`` after the scaling); ``α_eff(t) = lr_t/√ε``. First update:
    ``ν' = (1-ρ)g²`` (centred: ``ν' - μ'² = ρ(1-ρ)g²``), clipping where the slope of
    ``g/√(v g² + ε)`` halves, ``v g² = (2^{2/3}-1)ε``. After a constant ``g*`` and
    ``g_W = 0``: ``α_eff = lr/√(ρg*² + ε)`` (centred ``ρ(1-ρ)g*²``): slope ``-1``. Centred
    divides by a spread that a constant gradient drives to 0: damping, and sign agreement
    (:mod:`probes.agreement`): after a constant ``±A`` the gain grows towards ``lr/√ε``, after
    an alternating one it is ``lr/A`` against the fresh ``lr/(A√(ρ(1-ρ)))``, so
    ``R(1) = √(ρ(1-ρ)) ≤ ½``; its switch rate (near 0) is unchecked. The spread settles within
    the probe's 100 steps only for ``ρ ≤ 0.9`` (as AdaBelief's ``b2``): unchecked above.
    """
    a0 = lr / np.sqrt(EPS8)
    var = rho * (1 - rho) if centered else 1 - rho
    sch = flat_schedule(a0)
    if schedule is not None:
        sch = ExpectSchedule(
            SCHEDULES[schedule][1], scheduled_lr(SCHEDULES[schedule][0](), a0 / 0.1)
        )
    e = Expected(
        ExpectMomentum(beta > 0, beta or None, None if schedule else a0),
        ExpectClipping(True, float(np.sqrt(C23 * EPS8 / var))),
        sch,
        ExpectAdaptation(True, -1.0),
        damping=centered,
        agreement=ExpectAgreement((True if rho <= 0.9 else None) if centered else False),
    )
    tx = lambda: optax.rmsprop(_rate(lr, schedule), rho, centered=centered, momentum=beta or None)  # noqa: E731
    plain = not centered and not beta and schedule is None
    hp = dict(lr=lr, rho=rho, centered=centered, beta=beta, schedule=schedule)
    return make_case(
        name, "rmsprop", tx, hp, e, (lambda: cells.rmsprop(lr, rho)) if plain else None
    )


def adagrad(name: str = "adagrad", *, lr: float = 0.1, a0: float = 0.1) -> Case:
    """optax.adagrad: ``u = -lr g/√(a0 + Σg² + ε)``.

    Background 0: ``α = lr/√a0``; the first update saturates at ``√((2^{2/3}-1)a0)``; after
    ``W`` constant ``g*``: ``α_eff = lr/√(a0 + W g*²)``, slope → ``-1`` (the slope of that curve
    over the black-box grid); the white box has no fixed point for ``g* ≠ 0``.
    """
    alpha = lr / np.sqrt(a0 + 1e-7)
    m = np.logspace(-2, 1, 9)
    slope = float(np.polyfit(np.log(m), -0.5 * np.log(a0 + W * m**2), 1)[0])
    e = Expected(
        ExpectMomentum(False, alpha=alpha),
        ExpectClipping(True, float(np.sqrt(C23 * a0))),
        flat_schedule(alpha),
        ExpectAdaptation(True, slope),
    )
    return make_case(name, "adagrad", lambda: optax.adagrad(lr, a0), {"lr": lr, "a0": a0}, e)


def adam(name="adam", *, lr=1e-3, b1=0.9, b2=0.999, kind="adam", schedule=None) -> Case:
    """Adam / AdamW / NAdam on background ``b``: ``r_k = -(lr/|b|)[(1-b1)b1^k - (1-b2)b2^k]``.

    Momentum ``(b1, lr(1-b1)/|b|)``; the ``b2`` mode has ``α < 0`` (a correction). NAdam adds
    the direct term: ``mu_hat = b1 m̂ + (1-b1)ĝ``, so the ``b1`` mode is ``lr b1(1-b1)/|b|``.
    First update ``-lr g/(|g| + ε)``: sign-like. After a constant ``g*``:
    ``α_eff ≈ lr(1-b1)/(√b2 |g*|)``: slope ``-1``. No damping (both gains ∝ 1/a).

    Adam's bias correction cancels ``m``'s warm-up under a constant ``g``: no schedule. NAdam's
    (``m`` by ``1/(1-b1^{t+2})``, the direct term by ``1/(1-b1^{t+1})``) makes the step along a
    constant ``g`` fall from ``lr(1+2b1)/(1+b1)`` to ``lr`` over ``~1/(1-b1)`` steps: a decay.
    """
    alpha = lr * (1 - b1) / BACKGROUND * (b1 if kind == "nadam" else 1.0)
    sch = NORMED if schedule is None else ExpectSchedule(SCHEDULES[schedule][1])
    sch = ExpectSchedule("decay") if kind == "nadam" and schedule is None else sch
    mom = ExpectMomentum(True, b1, None if schedule else alpha)
    e = Expected(mom, ExpectClipping(True, SQRT2M1 * EPS8), sch, ExpectAdaptation(True, -1.0))
    white = dataclasses.replace(e, momentum=ExpectMomentum(True, b1))  # ν = 0: α singular
    txs = dict(adam=optax.adam, nadam=optax.nadam, adamw=partial(optax.adamw, weight_decay=1e-2))
    tx = lambda: txs[kind](_rate(lr, schedule), b1, b2)  # noqa: E731
    cell = (lambda: cells.adam(lr, b1, b2)) if kind == "adam" and schedule is None else None
    hp = dict(lr=lr, b1=b1, b2=b2, kind=kind, schedule=schedule)
    return make_case(name, "adam", tx, hp, e, cell, white)


def sign_based(name="sign_sgd", *, kind="sign_sgd", lr=0.01, beta=0.9, schedule=None) -> Case:
    """Sign updates ``-lr_t sign(·)``: clipping at 0; momentum = the EMA inside the sign.

    sign_sgd / ``chain(scale_by_sign(), sgd)``: memoryless, no momentum. signum:
    ``sign(EMA_β g)``: β. lion: ``sign((1-b1)g + b1 m)``, ``m`` an EMA with ``b2 = β``: most of
    the weight (``b1``) is on the memory: β. The step ``|u_t|`` is ``lr_t`` for any ``g ≠ 0``.
    """
    memory, r = kind in ("signum", "lion"), _rate(lr, schedule)
    sch = (
        flat_schedule(lr)
        if schedule is None
        else ExpectSchedule(SCHEDULES[schedule][1], scheduled_lr(r))
    )
    e = Expected(ExpectMomentum(memory, beta if memory else None), SIGN, sch)
    txs = {
        "sign_sgd": lambda: optax.sign_sgd(r),
        "chain_sign": lambda: optax.chain(optax.scale_by_sign(), optax.sgd(r)),
        "signum": lambda: optax.signum(r, beta),
        "lion": lambda: optax.lion(r, b1=0.9, b2=beta, weight_decay=0.0),
    }
    return make_case(
        name, "sign", txs[kind], dict(kind=kind, lr=lr, beta=beta, schedule=schedule), e
    )


def rprop(name="rprop", *, lr=1e-3, eta_minus=0.5, eta_plus=1.2) -> Case:
    """optax.rprop: each step size ``×η₊`` after a sign agreement, ``×η₋`` after a flip.

    Its update is the previous step's ``η·sign g`` (zero after a flip): one step late, so the
    first update is 0 and the probes read the next (``Clipping.lag = 1``): sign-like, clipping at
    0, step size ``lr`` after zero gradients (no schedule); no linear memory, no adaptation.
    Under signs that flip with probability ``p`` a flip is followed by a step without a
    comparison, so ``(1-p)/(1+p)`` of the steps agree and ``p/(1+p)`` flip: the log step drifts
    by ``((1-p) ln η₊ + p ln η₋)/(1+p)``, zero at ``p* = ln η₊/(ln η₊ - ln η₋)``. Its cut of
    alternating gradients does not depend on their size, which the damping probe's rule (a
    half-point ``κ``) does not describe: damping unchecked.
    """
    p_star = float(np.log(eta_plus) / (np.log(eta_plus) - np.log(eta_minus)))
    e = Expected(
        ExpectMomentum(False),
        SIGN,
        flat_schedule(lr),
        damping=None,
        agreement=ExpectAgreement(True, p_star),
    )
    tx = lambda: optax.rprop(lr, eta_minus=eta_minus, eta_plus=eta_plus)  # noqa: E731
    return make_case(name, "rprop", tx, dict(lr=lr, eta_minus=eta_minus, eta_plus=eta_plus), e)


def sign_agreement(name="delta_bar_delta", *, lr=0.05, up=0.05, down=0.1) -> Case:
    """:func:`delta_bar_delta` (step in ``[0.01, 100]·lr``): agreement at ``p* = up/(up + down)``.

    The log step drifts by ``(1-p)·up - p·down`` per step. The first update is ``-lr·g``
    (linear: no clipping), and so is the update after zero gradients (no schedule, no linear
    memory: SGD's single mode ``α = lr``); after ``W`` steps of any constant ``g* ≠ 0`` the step
    is ``100·lr`` whatever ``|g*|`` (no adaptation). Damping unchecked, as :func:`rprop`.
    """
    e = Expected(
        ExpectMomentum(False, alpha=lr),
        schedule=flat_schedule(lr),
        damping=None,
        agreement=ExpectAgreement(True, up / (up + down)),
    )
    tx = lambda: delta_bar_delta(lr, up, down, 1e-2, 1e2)  # noqa: E731
    return make_case(name, "sign_agreement", tx, dict(lr=lr, up=up, down=down), e)


def damped(name="damped_momentum", *, lr=0.05, beta=0.9, kappa=0.3) -> Case:
    """lopt.hand_designed.damped_momentum: heavy ball ``(β, lr)`` behind damping with half-point κ.

    Adaptation by the method's ``α_eff(h*(g*))`` (docs/method.md, Adaptation), the gain at
    ``g = 0`` from the steady state of ``g*``: the step from ``g*`` to 0 is a change of
    gradient, ``e' = (1-ρ)(g*/2)²``, so
    ``α_eff = lr/(1 + √(1-ρ)|g*|/(2κ))`` (ρ = 0.8): it falls, with the slope of that curve.
    """
    m = np.logspace(-2, 1, 48)
    slope = float(np.polyfit(np.log(m), -np.log1p(np.sqrt(0.2) * m / (2 * kappa)), 1)[0])
    adapt = ExpectAdaptation(True, slope)
    e = Expected(
        ExpectMomentum(True, beta, lr), ExpectClipping(False), flat_schedule(lr), adapt, True
    )
    cell = lambda: cells.damped_momentum(lr, beta, kappa)  # noqa: E731
    hp = dict(lr=lr, beta=beta, kappa=kappa)
    return make_case(name, "damped", lambda: cell_optimizer(cell()), hp, e, cell)


# ----------------------------------------------------------------------------- the battery

#: name -> (builder, {hyperparameter: (low, high, "log" | "lin" | choices)}) for sample_case.
LOG, LIN = "log", "lin"
#: Schedules of the random ``scheduled`` family: their shapes show within 100 steps and their
#: learning rate settles above 0 (no decay, no zero, at step W): fixed cases cover the others.
_SETTLED = ("linear_decay", "linear_warmup", "cosine_decay", "piecewise_constant", "join")
FAMILIES: dict[str, tuple[Callable[..., Case], dict[str, Any]]] = {
    "sgd": (sgd, {"lr": (1e-3, 1.0, LOG)}),
    "momentum": (momentum, {"lr": (1e-3, 1.0, LOG), "beta": (0.3, 0.98, LIN)}),
    "nesterov": (nesterov, {"lr": (1e-3, 1.0, LOG), "beta": (0.3, 0.98, LIN)}),
    "two_modes": (
        two_modes,
        {"a1": (0.03, 0.1, LOG), "b1": (0.85, 0.97, LIN), "a2": (1e-3, 0.02, LOG)},
    ),
    "cascade": (cascade, {"lr": (1e-2, 0.3, LOG), "b1": (0.8, 0.97, LIN), "b2": (0.1, 0.5, LIN)}),
    "ringing": (
        ringing,
        {"a": (1e-2, 0.3, LOG), "rho": (0.6, 0.95, LIN), "phase": (0.2, 0.8, LIN)},
    ),
    "clipped": (clipped, {"kind": tuple(_CLIPS), "c": (1e-2, 1e2, LOG), "lr": (1e-3, 1.0, LOG)}),
    "scheduled": (
        scheduled,
        {"schedule": _SETTLED, "beta": (0.5, 0.95, LIN), "clip": (0.1, 10, LOG)},
    ),
    "rmsprop": (rmsprop, {"lr": (1e-4, 0.1, LOG), "rho": (0.5, 0.99, LIN)}),
    # b2 > b1 here: the ν mode's |α| (1-b2) stays below the momentum's (1-b1)
    "adam": (adam, {"lr": (1e-4, 0.1, LOG), "b1": (0.5, 0.9, LIN), "b2": (0.95, 0.9999, LIN)}),
    "adagrad": (adagrad, {"lr": (1e-3, 1.0, LOG), "a0": (1e-2, 1.0, LOG)}),
    "drifting": (
        drifting,
        {
            "lr": (1e-3, 1.0, LOG),
            "beta": (0.3, 0.98, LIN),
            "stall": (1e-3, 1.0, LOG),
            "shift": ("update", "gradient"),
        },
    ),
    "adamax": (adamax, {"lr": (1e-4, 0.1, LOG), "b1": (0.5, 0.95, LIN), "b2": (0.9, 0.9999, LIN)}),
    "novograd": (novograd, {"lr": (1e-4, 0.1, LOG), "b1": (0.8, 0.95, LIN), "b2": (0.1, 0.6, LIN)}),
    # b2 ≤ 0.999: ν climbs to g*² within W steps; b2 ≥ 0.99: v0/(1-b2) ≤ 1e-4, the first
    # update's saturation scale, puts its half slope where g² > v0 (its formula's branch)
    "yogi": (
        yogi,
        {
            "lr": (1e-4, 0.1, LOG),
            "b1": (0.5, 0.95, LIN),
            "b2": (0.99, 0.999, LIN),
            "eps": (1e-4, 1e-2, LOG),
        },
    ),
    # the b1 mode carries the steady response: its α/(1-b1) = lr/D against the direct term's
    # (1-b2)² and the b2 correction's (1-b2)³/(b2(1-b2))
    "adan": (
        adan,
        {
            "lr": (1e-4, 0.1, LOG),
            "b1": (0.9, 0.99, LIN),
            "b2": (0.8, 0.95, LIN),
            "b3": (0.9, 0.999, LIN),
        },
    ),
    "rprop": (
        rprop,
        {"lr": (1e-4, 0.1, LOG), "eta_minus": (0.2, 0.8, LIN), "eta_plus": (1.05, 1.5, LIN)},
    ),
    "sign_agreement": (
        sign_agreement,
        {"lr": (1e-3, 0.1, LOG), "up": (0.02, 0.2, LOG), "down": (0.02, 0.2, LOG)},
    ),
    "sign": (
        sign_based,
        {
            "kind": ("sign_sgd", "signum", "lion"),
            "beta": (0.5, 0.99, LIN),
            "schedule": (None, *_SETTLED),
        },
    ),
}


def sample_case(family_name: str, key: jax.Array) -> Case:
    """A case of ``family_name`` with hyperparameters drawn from :data:`FAMILIES`' ranges.

    ``log`` ranges are drawn log-uniformly, ``lin`` uniformly, a tuple of names uniformly.
    The expected answer is the family's closed form at those hyperparameters.
    """
    builder, ranges = FAMILIES[family_name]
    hp = {}
    for i, (k, spec) in enumerate(sorted(ranges.items())):
        u = float(jax.random.uniform(jax.random.fold_in(key, i)))
        if spec[-1] in (LOG, LIN):
            lo, hi = (np.log(spec[0]), np.log(spec[1])) if spec[-1] == LOG else spec[:2]
            x = lo + u * (hi - lo)
            hp[k] = float(np.exp(x) if spec[-1] == LOG else x)
        else:
            hp[k] = spec[min(int(u * len(spec)), len(spec) - 1)]
    return builder(f"{family_name}_random", **hp)


def cases() -> list[Case]:
    """Every case of the battery (builds nothing expensive: factories are lazy)."""
    out = [
        sgd(),
        momentum(),
        momentum("momentum_slow", lr=0.01, beta=0.99),
        nesterov(),
        two_modes(),
        cascade(),
        ringing(),
        ema_momentum(),
        clipped(),
        clipped("clip_by_global_norm", kind="clip_by_global_norm"),
        clipped("clip_by_block_rms", kind="clip_by_block_rms", c=0.3),
        agc(),
        clipped("clip_momentum", c=1.0, beta=0.9),
        clipped("clip_by_global_norm_momentum", kind="clip_by_global_norm", c=2, lr=0.05, beta=0.8),
        scheduled("clip_momentum_join", schedule="join", beta=0.9, clip=1.0),
        scheduled("clip_warmup_from_zero", schedule="warmup_cosine", clip=0.5),
    ]
    out += [scheduled(schedule=s) for s in SCHEDULES]
    out += [
        scheduled("momentum_cosine", schedule="cosine_decay", beta=0.9),
        scheduled("momentum_exp_decay", schedule="exponential_fast", beta=0.9),
        scheduled("momentum_sgdr", schedule="sgdr", beta=0.9),  # lr = 0 after its 200 steps
        rmsprop(),
        rmsprop("rmsprop_momentum", beta=0.9),
        rmsprop("rmsprop_centered", centered=True),
        rmsprop("rmsprop_centered_momentum", centered=True, beta=0.8),
        rmsprop("rmsprop_cosine", schedule="cosine_decay"),
        adagrad(),
        adam(),
        adam("adam_b2_half", b2=0.5),
        adam("adamw", kind="adamw"),
        adam("nadam", kind="nadam"),
        adam("adam_warmup_cosine", schedule="warmup_cosine"),
        adamax(),
        amsgrad(),
        novograd(),
        adabelief(),
        adabelief("adabelief_fast", b2=0.9, eps=1e-8),
        yogi(),
        adan(),
        sign_based(),
        sign_based("chain_sign_sgd", kind="chain_sign"),
        sign_based("signum", kind="signum"),
        sign_based("lion", kind="lion", lr=1e-4, beta=0.99),
        sign_based("sign_sgd_cosine", schedule="cosine_decay"),
        sign_based("lion_warmup_cosine", kind="lion", lr=1e-4, beta=0.95, schedule="warmup_cosine"),
        damped(),
        rprop(),
        rprop("rprop_sharp", lr=1e-2, eta_minus=0.3, eta_plus=1.5),
        sign_agreement(),
        sign_agreement("delta_bar_delta_patient", lr=0.01, up=0.1, down=0.05),
        drifting(),
        drifting("drift_sgd", lr=0.5, beta=0.0, stall=-0.003),
        drifting("drift_clip_momentum", lr=0.05, beta=0.8, stall=-0.2, clip=1.0),
        drifting("offset_momentum", lr=0.02, beta=0.95, stall=0.05, shift="gradient"),
    ]
    return out
