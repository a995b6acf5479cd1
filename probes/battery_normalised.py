"""The battery's normalised updates beyond Adam: Adamax, AMSGrad, NovoGrad, AdaBelief, Yogi, Adan.

Each function returns a :class:`probes.expected.Case` whose answer is derived from the maths in
its docstring, under the probes' default protocol (:mod:`probes.battery`'s docstring, and the
constants in :mod:`probes.battery_common`). :mod:`probes.battery` gathers them.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import optax

from probes.battery_common import (
    BACKGROUND,
    EPS8,
    HORIZON,
    NORMED,
    SIGN,
    SQRT2M1,
    W,
    half_slope,
    make_case,
)
from probes.detectors import SCHEDULE_TOL
from probes.expected import (
    Case,
    ExpectAdaptation,
    ExpectAgreement,
    ExpectClipping,
    Expected,
    ExpectMomentum,
    ExpectSchedule,
)


def adamax(name="adamax", *, lr=1e-3, b1=0.9, b2=0.999) -> Case:
    """Adamax ``u = -lr m̂/ν``, ``ν ← max(b2·ν, |g| + ε)`` (optax's form).

    Background 0 is finite (``|g|``'s derivative at 0 is 0; ``ν`` settles at ``ε``):
    ``r_k = -lr(1-b1)b1^k/ε``, one mode ``(b1, lr(1-b1)/ε)``, white box too (``ν = ε`` at the
    convergence point). First update ``-lr g/(|g| + ε)``: sign-like. After a constant ``g*``:
    ``ν = |g*| + ε``, then ``b2(|g*| + ε)`` at ``g = 0``: ``α_eff = lr(1-b1)/(b2(|g*| + ε))``,
    slope ``-1``. Alternating and constant gains both ``∝ 1/a``: no damping; the history's size
    sets ``ν``, not its signs: no sign agreement.
    """
    mom = ExpectMomentum(True, b1, lr * (1 - b1) / EPS8)
    e = Expected(mom, ExpectClipping(True, SQRT2M1 * EPS8), NORMED, ExpectAdaptation(True, -1.0))
    tx = lambda: optax.adamax(lr, b1, b2)  # noqa: E731
    return make_case(name, "adamax", tx, dict(lr=lr, b1=b1, b2=b2), e)


def amsgrad(name="amsgrad", *, lr=1e-3, b1=0.9, b2=0.999) -> Case:
    """AMSGrad: Adam with ``ν_max ← max(ν_max, ν̂)`` in the denominator.

    On background ``b`` a perturbation that lowers ``ν̂`` leaves ``ν_max`` where it is, so the
    probes' derivative takes the frozen branch: one mode ``(b1, lr(1-b1)/|b|)`` (``b = 1``).
    First update ``-lr g/(|g| + ε)``: sign-like. After a constant ``g*``, ``ν_max = g*²``
    holds at ``g = 0``: ``α_eff = lr(1-b1)/|g*|``, slope ``-1``. Along a constant gradient its
    step is ``lr`` at every step, and after zero gradients its gain has Adam's shape: no
    schedule. No damping, no sign agreement (as Adam). White box: ``α`` singular at ``ν = 0``.
    """
    e = Expected(
        ExpectMomentum(True, b1, lr * (1 - b1) / BACKGROUND),
        ExpectClipping(True, SQRT2M1 * EPS8),
        NORMED,
        ExpectAdaptation(True, -1.0),
    )
    white = dataclasses.replace(e, momentum=ExpectMomentum(True, b1))
    tx = lambda: optax.amsgrad(lr, b1, b2)  # noqa: E731
    return make_case(name, "amsgrad", tx, dict(lr=lr, b1=b1, b2=b2), e, white=white)


def novograd(name="novograd", *, lr=1e-3, b1=0.9, b2=0.25) -> Case:
    """NovoGrad on a scalar: ``m ← b1 m + g/(√ν + ε)``, ``ν`` the EMA (``b2``) of ``g²``.

    The normaliser is inside the momentum, so on background ``b`` a perturbation ``δ`` gives
    ``δm_k = A b1^k + B b2^k`` with ``B = (1-b2)b2/(b1-b2)·δ/|b|`` and ``A = b2δ/|b| - B``:
    for ``b1 > b2`` the ``b1`` mode has ``α < 0`` (a correction: the normaliser cancels it) and
    the momentum read is ``(b2, lr(1-b2)b2/((b1-b2)|b|))``. Background 0 has a norm at 0 (no
    derivative): ``b = 1``. First update ``-lr g/(|g| + ε)``: sign-like. After a constant
    ``g*``: ``ν = g*²``, then ``b2 g*²`` at ``g = 0``: ``α_eff = lr/(√b2 |g*|)``, slope ``-1``
    (read at ``±hair`` where the norm's slope at 0 is not finite). No damping, no sign agreement
    (as :func:`adamax`).
    """
    alpha = lr * (1 - b2) * b2 / ((b1 - b2) * BACKGROUND)
    mom = ExpectMomentum(True, b2, alpha)
    e = Expected(mom, ExpectClipping(True, SQRT2M1 * 1e-6), NORMED, ExpectAdaptation(True, -1.0))
    tx = lambda: optax.novograd(lr, b1, b2)  # noqa: E731
    return make_case(name, "novograd", tx, dict(lr=lr, b1=b1, b2=b2), e, cell=None)


def adabelief(name="adabelief", *, lr=1e-3, b1=0.9, b2=0.999, eps=1e-16) -> Case:
    """AdaBelief ``u = -lr m̂/(√ŝ + ε)``, ``s`` the EMA of ``(g - m)²``.

    Background 0: ``s`` is quadratic in an impulse, so ``r_k ∝ -(1-b1)b1^k``: momentum ``b1``
    (α depends on ``eps_root`` at rest: unchecked). First update ``-lr g/(√(b1²g² + ·) + ε)``:
    sign-like. After ``g*`` then ``g_W = 0``: ``s' ∝ b1²g*²``, ``α_eff ∝ 1/|g*|``: slope ``-1``.
    Damping (``κ = (1+b1)ε/(2b1)``) settles within the probe only for ``b2 ≤ 0.9``, and so
    does sign agreement: under a constant gradient ``g - m → 0`` and the gain grows towards
    ``lr/ε``, under an alternating one ``s`` stays of order ``g²`` (as centred RMSProp).
    """
    damp = True if b2 <= 0.9 else None
    e = Expected(
        ExpectMomentum(True, b1),
        SIGN,
        NORMED,
        ExpectAdaptation(True, -1.0),
        damp,
        agreement=ExpectAgreement(damp),
    )
    tx = lambda: optax.adabelief(lr, b1, b2, eps)  # noqa: E731
    return make_case(name, "adabelief", tx, dict(lr=lr, b1=b1, b2=b2, eps=eps), e)


def yogi_schedule_shape(lr: float, b1: float, b2: float, eps: float, v0: float = 1e-6) -> str:
    """The schedule rule on Yogi's two curves over ``HORIZON`` steps, in closed form (``b = 1``).

    The gain after ``t`` zero gradients, and the step ``|u_t|`` after ``t`` steps of ``g = 1``
    (``m`` and ``ν`` from ``v0``, bias-corrected). A warm-up (decay) is a rise (fall) of at
    least :data:`probes.detectors.SCHEDULE_TOL` of the peak on both curves, before (after)
    each curve's peak.
    """
    t = np.arange(1, HORIZON + 1, dtype=np.float64)  # the step count of the update read
    gain = lr * (1 - b1) / (1 - b1**t) / (np.sqrt(v0 / (1 - b2**t)) + eps)
    m, nu, step = v0, v0, np.zeros(HORIZON)
    for i in range(HORIZON):
        m = b1 * m + (1 - b1)
        nu = nu - (1 - b2) * np.sign(nu - 1.0)
        step[i] = lr * (m / (1 - b1 ** (i + 1))) / (np.sqrt(nu / (1 - b2 ** (i + 1))) + eps)

    def rise_fall(c):
        k = int(np.argmax(c))
        return (c[k] - c[: k + 1].min()) / c[k], (c[k] - c[k:].min()) / c[k]

    (ra, fa), (rs, fs) = rise_fall(gain), rise_fall(step)
    up, down = min(ra, rs) >= SCHEDULE_TOL, min(fa, fs) >= SCHEDULE_TOL
    return {(False, False): "constant", (True, False): "warm-up", (False, True): "decay"}.get(
        (up, down), "warm-up-then-decay"
    )


def yogi(name="yogi", *, lr=1e-2, b1=0.9, b2=0.999, eps=1e-3) -> Case:
    """optax.yogi: ``ν ← ν − (1-b2)·sign(ν − g²)·g²``, ``u = -lr m̂/(√ν̂ + ε)``.

    Both moments start at ``v0 = 1e-6`` and are bias-corrected (``/(1 - b^t)``). On background
    0 ``ν`` stays at ``v0`` (its step is ``∝ g²``): ``r_k = -lr(1-b1)b1^k/(√(v0/(1-b2^W)) + ε)``,
    one mode ``b1``. First update: ``m̂ = g + b1·v0/(1-b1)`` and ``ν̂ = v0/(1-b2) + g²`` (for
    ``g² > v0``): ``-lr g/(√(a + g²) + ε)`` with ``a = v0/(1-b2)``, saturating at ``lr`` with the
    slope halved at :func:`~probes.battery_common.half_slope` ``(a, ε)``. After ``W`` steps of
    a constant ``g*``, ``ν`` has climbed additively (by ``(1-b2)g*²`` a step) to ``g*²`` (for
    ``b2 ≤ 1 - 1/W``) and rests there (``sign(0) = 0``): ``α_eff = lr(1-b1)/(√(g*²/(1-b2^W)) +
    ε)``, a slope near ``-1``. The update normalises, so the schedule's second curve is the
    step along a constant gradient (``b = 1``): ``ν`` climbs by ``(1-b2)b²`` a step to ``b²``,
    and over that climb ``ν̂ = ν/(1-b2^t)`` overshoots ``b²`` (by up to ``1/(1 - 1/e)`` at
    ``t = 1/(1-b2)``) before the correction fades: the step dips, lowest at ``t ≈ 1/(1-b2)``
    (inside the horizon for ``b2 ≲ 0.995``; at ``b2 = 0.999`` it falls by 4.7% over 200
    steps). The gain after ``t`` zero gradients is
    ``lr(1-b1)/(1-b1^{t+1})/(√(v0/(1-b2^{t+1})) + ε)``: it falls with ``m̂``'s correction and
    rises with ``ν̂``'s. The shape is the rule's on these two curves
    (:func:`yogi_schedule_shape`): a bias correction that moves the step is a schedule (the
    battery's decision, as NAdam's). ``ν`` follows ``g²``, not its signs or its changes: no
    damping, no sign agreement.
    White box: no fixed point (the step counter), so the convergence point is the end of the
    autonomous trajectory, ``HORIZON`` steps, and ``α`` has ``1 - b2^HORIZON`` for ``1 - b2^W``.
    """
    v0 = 1e-6

    def alpha(steps):
        return lr * (1 - b1) / (np.sqrt(v0 / (1 - b2**steps)) + eps)

    m = np.logspace(-2, 1, 9)
    slope = float(np.polyfit(np.log(m), -np.log(m / np.sqrt(1 - b2**W) + eps), 1)[0])
    e = Expected(
        ExpectMomentum(True, b1, alpha(W)),
        ExpectClipping(True, half_slope(v0 / (1 - b2), eps)),
        ExpectSchedule(yogi_schedule_shape(lr, b1, b2, eps)),
        ExpectAdaptation(True, slope),
    )
    white = dataclasses.replace(e, momentum=ExpectMomentum(True, b1, alpha(HORIZON)))
    tx = lambda: optax.yogi(lr, b1, b2, eps)  # noqa: E731
    return make_case(name, "yogi", tx, dict(lr=lr, b1=b1, b2=b2, eps=eps), e, white=white)


def adan(name="adan", *, lr=1e-3, b1=0.98, b2=0.92, b3=0.99) -> Case:
    """optax.adan: ``u = -lr(m̂ + (1-b2)v̂)/(√(n̂ + ε_r) + ε)``, ``ε_r = ε = 1e-8``.

    ``m`` is the EMA (``b1``) of ``g``, ``v`` that (``b2``) of ``g_t − g_{t-1}`` (0 at the first
    step), ``n`` that (``b3``) of ``(g + (1-b2)(g_t − g_{t-1}))²``. On background 0, ``n`` is
    quadratic in a pulse, so the denominator is ``D = √ε_r + ε`` and
    ``r_k = -(lr/D)[(1-b1)b1^k + (1-b2)²δ_k − (1-b2)³b2^{k-1}[k ≥ 1]]``: momentum
    ``(b1, lr(1-b1)/D)``, a ``b2`` mode with ``α < 0`` (a correction) and a direct term. First
    update ``-lr g/(√(g² + ε_r) + ε)``: sign-like (half slope at
    :func:`~probes.battery_common.half_slope` ``(ε_r, ε)``, below the grid). Along a constant
    ``g`` the differences vanish and ``u = -lr·sign g`` at every step; the gain after zero
    gradients falls with ``m̂``'s correction: no schedule (Adam's decision). After a constant
    ``g*``: ``n̂ = g*²``, ``α_eff ∝ 1/|g*|``: slope ``-1``. An alternating gradient raises ``n``
    by at most ``(1 + 2(1-b2))²``, far from halving the gain: no damping; ``n`` follows the
    size, not the signs: no sign agreement.
    """
    denominator = np.sqrt(EPS8) + EPS8
    e = Expected(
        ExpectMomentum(True, b1, lr * (1 - b1) / denominator),
        ExpectClipping(True, half_slope(EPS8, EPS8)),
        NORMED,
        ExpectAdaptation(True, -1.0),
    )
    tx = lambda: optax.adan(lr, b1, b2, b3)  # noqa: E731
    return make_case(name, "adan", tx, dict(lr=lr, b1=b1, b2=b2, b3=b3), e)
