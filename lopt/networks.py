"""Network definitions for the learned optimizers; the only module that imports haiku.

Everything outside this module sees ``hk.Params`` pytrees (nested dicts of arrays) and pure
``apply`` functions, so haiku (in maintenance mode) could be replaced here alone.

Recurrent cores act on **one coordinate**: ``apply(params, state, x) -> state'`` with
``state: (S,)`` and ``x: (I,)``. Learned optimizers ``vmap`` them over the ``P`` coordinates
of a model, which turns every matrix-vector product below into one ``(P, H) @ (H, k·H)``
matrix product per step (checked in ``tests/test_rnn_optimizer.py``).

Conventions (Maheswaranathan et al. 2021, arXiv 2011.02159, §2 of ``METHOD.md``):

* ``gru``: the paper's equations, with ``u`` the gate that *keeps* the old state::

      u  = σ(A_u x + W_u h + b_u)
      r  = σ(A_r x + W_r h + b_r)
      c  = tanh(A_c x + W_c (r⊙h) + b_c)
      h' = u⊙h + (1-u)⊙c

  Parameters ``w_i (I, 3H)``, ``w_h (H, 3H)``, ``b (3H,)`` with gates in the order
  ``[u, r, c]``. (``hk.GRU`` computes the same function with ``z = 1 - u``:
  ``h' = (1-z)⊙h + z⊙c``; we spell out the paper's form so analysis code reads like the paper.)
* ``lstm``: the state is ``concat[h, c]`` (``S = 2H``); the readout sees ``h`` only. Gates
  ``[i, f, g, o]`` from one ``(I+H, 4H)`` matrix, forget-gate bias offset ``+1``.
* ``vanilla``: ``h' = tanh(A x + W h + b)``.

Input and recurrent weights use fan-in variance scaling (truncated normal, scale 1), biases
start at zero.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

Params = Any  # hk.Params: a nested mapping of arrays

CORES = ("gru", "lstm", "vanilla")


def _w_init() -> hk.initializers.Initializer:
    return hk.initializers.VarianceScaling(1.0, "fan_in", "truncated_normal")


def _input_product(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x @ w``; for ``I ≤ 4`` input features, a sum of broadcast products.

    A matrix product with an inner dimension of 1 or 2 is a poor fit for a matmul kernel; as
    broadcast products XLA fuses it with the gate nonlinearities that follow.
    """
    if x.shape[-1] > 4:
        return x @ w
    out = x[..., 0, None] * w[0]
    for i in range(1, x.shape[-1]):
        out = out + x[..., i, None] * w[i]
    return out


#: Name given (``jax.ad_checkpoint.checkpoint_name``) to the recurrent cores' matrix products
#: with the state, the bulk of their FLOPs: a rematerialised unroll can keep them for the
#: backward pass instead of recomputing them (``lopt.unroll(..., save_products=True)``).
PRODUCT = "lopt_product"


def _product(x: jax.Array) -> jax.Array:
    return checkpoint_name(x, PRODUCT)


class _GRU(hk.Module):
    def __init__(self, hidden_size: int):
        super().__init__(name="gru")
        self.hidden_size = hidden_size

    def __call__(self, h: jax.Array, x: jax.Array) -> jax.Array:
        size = self.hidden_size
        w_i = hk.get_parameter("w_i", [x.shape[-1], 3 * size], x.dtype, init=_w_init())
        w_h = hk.get_parameter("w_h", [size, 3 * size], h.dtype, init=_w_init())
        b = hk.get_parameter("b", [3 * size], h.dtype, init=jnp.zeros)
        gx = _input_product(x, w_i)
        # u and r read h directly; c reads r⊙h, so the recurrent product is split 2H + H.
        # Each bias is added after the split: adding b to gx first makes XLA:CPU's backward
        # pass 1.5x slower (experiments/benchmarks/meta_step.py).
        ur = jax.nn.sigmoid(gx[..., : 2 * size] + _product(h @ w_h[:, : 2 * size]) + b[: 2 * size])
        u, r = ur[..., :size], ur[..., size:]
        c = jnp.tanh(gx[..., 2 * size :] + _product((r * h) @ w_h[:, 2 * size :]) + b[2 * size :])
        return u * h + (1.0 - u) * c


class _LSTM(hk.Module):
    def __init__(self, hidden_size: int):
        super().__init__(name="lstm")
        self.hidden_size = hidden_size

    def __call__(self, state: jax.Array, x: jax.Array) -> jax.Array:
        size = self.hidden_size
        h, c = state[..., :size], state[..., size:]
        xh = jnp.concatenate([x, h], axis=-1)
        w = hk.get_parameter("w", [xh.shape[-1], 4 * size], x.dtype, init=_w_init())
        b = hk.get_parameter("b", [4 * size], x.dtype, init=jnp.zeros)
        gates = _product(xh @ w) + b
        i, f, g, o = (gates[..., k * size : (k + 1) * size] for k in range(4))
        c = jax.nn.sigmoid(f + 1.0) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return jnp.concatenate([h, c], axis=-1)


class _Vanilla(hk.Module):
    def __init__(self, hidden_size: int):
        super().__init__(name="vanilla")
        self.hidden_size = hidden_size

    def __call__(self, h: jax.Array, x: jax.Array) -> jax.Array:
        size = self.hidden_size
        w_i = hk.get_parameter("w_i", [x.shape[-1], size], x.dtype, init=_w_init())
        w_h = hk.get_parameter("w_h", [size, size], h.dtype, init=_w_init())
        b = hk.get_parameter("b", [size], h.dtype, init=jnp.zeros)
        return jnp.tanh(_input_product(x, w_i) + _product(h @ w_h) + b)


_MODULES = {"gru": _GRU, "lstm": _LSTM, "vanilla": _Vanilla}


class RecurrentCore(NamedTuple):
    """A per-coordinate recurrent network as a pair of pure functions plus its sizes.

    Attributes:
        init: ``init(key) -> params``.
        apply: ``apply(params, state (S,), x (I,)) -> state' (S,)``.
        features: ``features(state (S,)) -> (H,)``, the part of the state a readout sees
            (``h`` of the LSTM's ``concat[h, c]``; the whole state otherwise).
        state_size: ``S``.
        hidden_size: ``H``.
        input_size: ``I``.
    """

    init: Callable[[jax.Array], Params]
    apply: Callable[[Params, jax.Array, jax.Array], jax.Array]
    features: Callable[[jax.Array], jax.Array]
    state_size: int
    hidden_size: int
    input_size: int


def recurrent_core(kind: str, hidden_size: int, input_size: int) -> RecurrentCore:
    """Builds a per-coordinate recurrent core.

    Args:
        kind: ``"gru"``, ``"lstm"`` or ``"vanilla"``.
        hidden_size: ``H``.
        input_size: ``I``, the number of input features per coordinate.

    Returns:
        A :class:`RecurrentCore`.

    Example:
        >>> core = recurrent_core("gru", 8, 1)
        >>> params = core.init(jax.random.key(0))
        >>> core.apply(params, jnp.zeros(8), jnp.ones(1)).shape
        (8,)
    """
    if kind not in _MODULES:
        raise ValueError(f"unknown recurrent core {kind!r}; expected one of {CORES}")
    module = _MODULES[kind]
    state_size = 2 * hidden_size if kind == "lstm" else hidden_size

    def forward(state, x):
        return module(hidden_size)(state, x)

    transformed = hk.without_apply_rng(hk.transform(forward))

    def init(key):
        dummy_state = jnp.zeros((state_size,), jnp.float32)
        return transformed.init(key, dummy_state, jnp.zeros((input_size,), jnp.float32))

    def features(state):
        return state[..., :hidden_size]

    return RecurrentCore(
        init=init,
        apply=transformed.apply,
        features=features,
        state_size=state_size,
        hidden_size=hidden_size,
        input_size=input_size,
    )


def mlp(
    output_sizes: Sequence[int], input_size: int
) -> tuple[Callable[[jax.Array], Params], Callable[[Params, jax.Array], jax.Array]]:
    """The per-parameter MLP of :class:`lopt.MLPOptimizer` (ReLU hidden layers, linear output).

    Args:
        output_sizes: widths of every layer, the last one being the number of outputs.
        input_size: number of input features.

    Returns:
        ``(init(key) -> params, apply(params, x (..., input_size)) -> (..., output_sizes[-1]))``.
    """
    sizes = tuple(output_sizes)

    def forward(x):
        return hk.nets.MLP(sizes, activation=jax.nn.relu, name="mlp")(x)

    transformed = hk.without_apply_rng(hk.transform(forward))

    def init(key):
        return transformed.init(key, jnp.zeros((1, input_size), jnp.float32))

    return init, transformed.apply
