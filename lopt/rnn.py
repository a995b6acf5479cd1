"""The paper's component-wise RNN learned optimizer.

Maheswaranathan, Sussillo, Metz, Sun, Sohl-Dickstein, *Reverse engineering learned optimizers
reveals known and novel mechanisms* (NeurIPS 2021, arXiv 2011.02159): one small recurrent
network is applied to every scalar parameter independently (parameters lie along the batch
axis), each with its own state ``h``::

    x  = input(g)                          # g·s_in, or [log1p|g·s_in|, sign g]
    h' = F(h, x)                           # GRU (paper), LSTM or tanh RNN
    Δx = s_out · (wᵀ features(h') + b)     # from the NEW state; no built-in minus sign

``theta = {"rnn": <network params>, "readout": {"w": (H,), "b": ()}, "h0": (S,)}`` where ``S``
is the state size (``H``; ``2H`` for the LSTM's ``concat[h, c]``). The readout starts at zero
so an untrained optimizer makes no update; ``h0`` is learned and shared by all coordinates.
At GRU-256 with raw input there are 198,657 meta-parameters (paper: "roughly 199k").
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from lopt import networks
from lopt.base import MAX_HIDDEN_SIZE, LearnedOptimizer
from lopt.cell import Cell, cell_optimizer, make_cell

INPUT_MODES = ("raw", "log1p_sign")


def _check_scale(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return float(value)


@functools.cache
def _cell_functions(cell: str, hidden_size: int, input_mode: str):
    """The Cell's three functions for one configuration.

    Cached, so equal configurations give the *same* function objects: a ``Partial``'s
    function is part of its pytree structure, and re-using it lets ``jit`` re-use compiled
    code when only ``theta`` (or a scale) changes.
    """
    core = networks.recurrent_core(cell, hidden_size, 1 if input_mode == "raw" else 2)

    def init_state(p):
        return p["h0"]

    def step(p, h, g):
        g = g * p["input_scale"]
        if input_mode == "raw":
            x = jnp.reshape(g, (1,))
        else:
            x = jnp.stack([jnp.log1p(jnp.abs(g)), jnp.sign(g)])
        return core.step(p["rnn"], h, x.astype(h.dtype))

    def readout(p, h):
        w, b = p["readout"]["w"], p["readout"]["b"]
        return p["output_scale"] * (core.features(h) @ w + b)

    return init_state, step, readout


class RNNOptimizer(LearnedOptimizer):
    """The component-wise RNN optimizer of Maheswaranathan et al. (2021).

    Args:
        cell: recurrent core, ``"gru"`` (the paper's), ``"lstm"`` or ``"vanilla"`` (tanh).
        hidden_size: ``H``, units per coordinate (paper: 256).
        input_mode: ``"raw"``: the input is ``g·input_scale`` (``I = 1``);
            ``"log1p_sign"``: ``[log1p(|g·input_scale|), sign g]`` (``I = 2``).
        input_scale: multiplies the gradient before it enters the network (1.0 for linear
            regression in the paper).
        output_scale: multiplies the readout; overridable (and injectable) per
            :meth:`optimizer` call.

    Raises:
        ValueError: an argument is out of range.

    Example:
        >>> import jax, jax.numpy as jnp, lopt
        >>> opt = lopt.RNNOptimizer(hidden_size=8)
        >>> theta = opt.init(jax.random.key(0))
        >>> tx = opt.optimizer(theta)  # an optax.GradientTransformationExtraArgs
        >>> state = tx.init({"w": jnp.zeros(3)})
        >>> updates, state = tx.update({"w": jnp.ones(3)}, state)  # zero: readout starts at 0
    """

    type_name = "rnn"

    def __init__(
        self,
        cell: str = "gru",
        hidden_size: int = 256,
        input_mode: str = "raw",
        input_scale: float = 1.0,
        output_scale: float = 1.0,
    ):
        if cell not in networks.CORES:
            raise ValueError(f"cell must be one of {networks.CORES}, got {cell!r}")
        if (
            isinstance(hidden_size, bool)
            or not isinstance(hidden_size, int)
            or not 1 <= hidden_size <= MAX_HIDDEN_SIZE
        ):
            raise ValueError(
                f"hidden_size must be an int in [1, {MAX_HIDDEN_SIZE}], got {hidden_size!r}"
            )
        if input_mode not in INPUT_MODES:
            raise ValueError(f"input_mode must be one of {INPUT_MODES}, got {input_mode!r}")
        self.cell_type = cell
        self.hidden_size = hidden_size
        self.input_mode = input_mode
        self.input_scale = _check_scale("input_scale", input_scale)
        self.output_scale = _check_scale("output_scale", output_scale)
        self._core = networks.recurrent_core(cell, hidden_size, 1 if input_mode == "raw" else 2)

    def config(self) -> dict[str, Any]:
        """JSON-able constructor arguments plus ``"type": "rnn"``."""
        return {
            "type": self.type_name,
            "cell": self.cell_type,
            "hidden_size": self.hidden_size,
            "input_mode": self.input_mode,
            "input_scale": self.input_scale,
            "output_scale": self.output_scale,
        }

    def init(self, key: jax.Array) -> dict[str, Any]:
        """Draws ``theta``: network weights, zero readout, and ``h0`` (zeros).

        ``h0`` starts at zero: with the zero readout the untrained optimizer is inert, and
        meta-training moves ``h0`` as it needs.
        """
        return {
            "rnn": self._core.init(key),
            "readout": {
                "w": jnp.zeros((self._core.hidden_size,), jnp.float32),
                "b": jnp.zeros((), jnp.float32),
            },
            "h0": jnp.zeros((self._core.state_size,), jnp.float32),
        }

    def cell(self, theta: Any, *, output_scale: float | jax.Array | None = None) -> Cell:
        """The per-coordinate dynamics ``(init_state, step, readout)`` for ``theta``.

        ``theta`` (its network weights in the layout the step reads) and both scales are the
        Cell's pytree leaves, so a Cell can cross ``jit`` boundaries as an argument and new
        values re-use compiled code.

        Args:
            theta: meta-parameters from :meth:`init` (or meta-training).
            output_scale: overrides the configured output scale.
        """
        scale = self.output_scale if output_scale is None else output_scale
        leaves = {
            # The network's weights in the layout its step reads, prepared once per Cell, so
            # outside any loop over steps (see ``lopt.networks.RecurrentCore``).
            "rnn": self._core.prepare(theta["rnn"]),
            "readout": theta["readout"],
            "h0": theta["h0"],
            "input_scale": jnp.asarray(self.input_scale, jnp.float32),
            "output_scale": jnp.asarray(scale, jnp.float32),
        }
        init_state, step, readout = _cell_functions(
            self.cell_type, self.hidden_size, self.input_mode
        )
        return make_cell(leaves, init_state, step, readout)

    def optimizer(
        self, theta: Any, *, output_scale: float | jax.Array | None = None
    ) -> optax.GradientTransformationExtraArgs:
        """``lopt.cell_optimizer(self.cell(theta))``: the optax form of the same dynamics.

        The state is a :class:`lopt.CellOptimizerState` (``count``, ``hidden (P, S)``,
        ``skipped``); a step whose gradient has a NaN or infinity is skipped whole.

        Args:
            theta: meta-parameters.
            output_scale: overrides the configured output scale; injectable with
                ``optax.inject_hyperparams(opt.optimizer)(theta, output_scale=0.5)``.
        """
        return cell_optimizer(self.cell(theta, output_scale=output_scale))
