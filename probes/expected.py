"""What a battery case's probes should find: the expected answer per mechanism, and the case.

The records :mod:`probes.battery` builds its cases from and :mod:`probes.scoring` reads. Each
``Expect*`` holds whether a mechanism is there and the numbers its detector should read, with
their tolerances; :class:`Expected` gathers them for one optimizer, :class:`Case` pairs that
answer with the optimizer (black box and white box).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import optax

from lopt.cell import Cell


@dataclasses.dataclass(frozen=True)
class ExpectMomentum:
    """Expected momentum: ``detected``, ``β ± beta_tol`` and ``α`` within ``alpha_rtol``."""

    detected: bool
    beta: float | None = None
    alpha: float | None = None
    beta_tol: float = 0.01
    alpha_rtol: float = 0.05


@dataclasses.dataclass(frozen=True)
class ExpectClipping:
    """Expected clipping: ``detected`` and the threshold within ``rtol`` (below grid: any ≤)."""

    detected: bool
    threshold: float | None = None
    rtol: float = 0.05


@dataclasses.dataclass(frozen=True)
class ExpectSchedule:
    """Expected schedule over ``HORIZON``: shape (``None``: any non-constant) and ``α_eff(t)``."""

    shape: str | None = "constant"
    lr: Callable[[np.ndarray], np.ndarray] | None = None
    rtol: float = 1e-3


@dataclasses.dataclass(frozen=True)
class ExpectAdaptation:
    """Expected adaptation: ``detected`` and the log-log slope of ``α_eff`` vs ``|g*|``."""

    detected: bool
    slope: float | None = None
    slope_tol: float = 0.1


@dataclasses.dataclass(frozen=True)
class ExpectAgreement:
    """Expected sign agreement: ``detected`` and the switch rate ``p*`` within ``switch_tol``.

    ``detected=None`` leaves it unchecked; ``switch=None`` checks detection only.
    """

    detected: bool | None = False
    switch: float | None = None
    switch_tol: float = 0.05


@dataclasses.dataclass(frozen=True)
class Expected:
    """The answer for one optimizer; ``damping=None`` leaves damping unchecked.

    ``agreement`` is the sign-agreement step size (:mod:`probes.agreement`; by default absent).
    ``bias`` is the gradient ``g₀`` where the steady update vanishes (``0``: no bias), checked
    within :data:`probes.scoring.BIAS_RTOL`.
    """

    momentum: ExpectMomentum = ExpectMomentum(False)
    clipping: ExpectClipping = ExpectClipping(False)
    schedule: ExpectSchedule = ExpectSchedule()
    adaptation: ExpectAdaptation = ExpectAdaptation(False, 0.0)
    damping: bool | None = False
    bias: float = 0.0
    agreement: ExpectAgreement = ExpectAgreement()


@dataclasses.dataclass(frozen=True)
class Case:
    """One optimizer of the battery.

    Attributes:
        name: unique name.
        family: the builder in :data:`FAMILIES` that made it.
        optax: ``() -> GradientTransformation``.
        cell: ``() -> Cell`` (white box) or ``None``.
        hparams: the hyperparameters (JSON-able).
        expected: the black-box answer.
        white: the white-box answer where it differs (``None``: the same).
    """

    name: str
    family: str
    optax: Callable[[], optax.GradientTransformation]
    cell: Callable[[], Cell] | None
    hparams: dict[str, Any]
    expected: Expected
    white: Expected | None = None

    def expected_for(self, source: str) -> Expected:
        """The expected answer for ``"optax"`` (black box) or ``"cell"`` (white box)."""
        return self.white if source == "cell" and self.white is not None else self.expected
