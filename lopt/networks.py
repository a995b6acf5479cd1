"""Network definitions for the learned optimizers; the only module that imports haiku.

Everything outside this module sees ``hk.Params`` pytrees (nested dicts of arrays) and pure
``apply`` functions, so haiku (in maintenance mode) could be replaced here alone.

Recurrent cores act on **one coordinate**: ``apply(params, state, x) -> state'`` with
``state: (S,)`` and ``x: (I,)``. Learned optimizers ``vmap`` them over the ``P`` coordinates
of a model, which turns every matrix-vector product below into one ``(P, H) @ (H, k·H)``
matrix product per step (checked in ``tests/test_rnn_optimizer.py``).

Conventions (Maheswaranathan et al. 2021, arXiv 2011.02159; docs/method.md, The learned optimizer):

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


#: Name given (``jax.ad_checkpoint.checkpoint_name``) to the recurrent cores' matrix products
#: with the state, the bulk of their FLOPs: a rematerialised unroll can keep them for the
#: backward pass instead of recomputing them (``lopt.unroll(..., save_products=True)``).
PRODUCT = "lopt_product"


def _product(x: jax.Array) -> jax.Array:
    return checkpoint_name(x, PRODUCT)


def _gru_prepare(params: Params) -> dict[str, jax.Array]:
    """The GRU's weights split by gate group, ``[u, r]`` and ``c``, as :func:`_gru_step` reads them.

    Splitting once per unroll, outside the scan, rather than in every step also keeps the
    backward pass from concatenating each step's weight gradients.
    """
    p = params["gru"]
    size = p["w_h"].shape[0]
    w_i_ur, w_i_c = jnp.split(p["w_i"], [2 * size], axis=1)
    w_ur, w_c = jnp.split(p["w_h"], [2 * size], axis=1)
    b_ur, b_c = jnp.split(p["b"], [2 * size])
    return {"w_i_ur": w_i_ur, "w_i_c": w_i_c, "w_ur": w_ur, "w_c": w_c, "b_ur": b_ur, "b_c": b_c}


def _gru_step(q: dict[str, jax.Array], h: jax.Array, x: jax.Array) -> jax.Array:
    # Timed on XLA:CPU with GRU-256 (experiments/benchmarks/meta_step.py and standalone
    # loops): the input product as a K = 1 matmul ran about 8% faster than as broadcast
    # products, and adding the bias to the input product before the split made the backward
    # pass 1.5x slower.
    u, r = jnp.split(
        jax.nn.sigmoid(x @ q["w_i_ur"] + _product(h @ q["w_ur"]) + q["b_ur"]), 2, axis=-1
    )
    c = jnp.tanh(x @ q["w_i_c"] + _product((r * h) @ q["w_c"]) + q["b_c"])
    return u * h + (1.0 - u) * c


class _GRU(hk.Module):
    def __init__(self, hidden_size: int):
        super().__init__(name="gru")
        self.hidden_size = hidden_size

    def __call__(self, h: jax.Array, x: jax.Array) -> jax.Array:
        size = self.hidden_size
        w_i = hk.get_parameter("w_i", [x.shape[-1], 3 * size], x.dtype, init=_w_init())
        w_h = hk.get_parameter("w_h", [size, 3 * size], h.dtype, init=_w_init())
        b = hk.get_parameter("b", [3 * size], h.dtype, init=jnp.zeros)
        return _gru_step(_gru_prepare({"gru": {"w_i": w_i, "w_h": w_h, "b": b}}), h, x)


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
        return jnp.tanh(x @ w_i + _product(h @ w_h) + b)


_MODULES = {"gru": _GRU, "lstm": _LSTM, "vanilla": _Vanilla}


class RecurrentCore(NamedTuple):
    """A per-coordinate recurrent network as a pair of pure functions plus its sizes.

    Attributes:
        init: ``init(key) -> params``.
        apply: ``apply(params, state (S,), x (I,)) -> state' (S,)``; the same as
            ``step(prepare(params), state, x)``.
        prepare: ``prepare(params) -> prepared``, the weights in the layout ``step`` reads
            (the GRU's split by gate group; the params themselves for the others). Prepare
            once outside a loop over steps and call ``step`` inside it.
        step: ``step(prepared, state (S,), x (I,)) -> state' (S,)``.
        features: ``features(state (S,)) -> (H,)``, the part of the state a readout sees
            (``h`` of the LSTM's ``concat[h, c]``; the whole state otherwise).
        state_size: ``S``.
        hidden_size: ``H``.
        input_size: ``I``.
    """

    init: Callable[[jax.Array], Params]
    apply: Callable[[Params, jax.Array, jax.Array], jax.Array]
    prepare: Callable[[Params], Any]
    step: Callable[[Any, jax.Array, jax.Array], jax.Array]
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

    if kind == "gru":
        prepare, step = _gru_prepare, _gru_step
    else:
        prepare, step = (lambda params: params), transformed.apply

    return RecurrentCore(
        init=init,
        apply=transformed.apply,
        prepare=prepare,
        step=step,
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


def mlp_columns(params: Params, x: jax.Array, shared: jax.Array | None = None) -> jax.Array:
    """The :func:`mlp` network applied to the columns of ``x``: ``apply(params, inputs).T``.

    The learned optimizer's MLP runs on one column per coordinate. On XLA:CPU the products
    ``(H, F) @ (F, P)`` of this layout ran about 1.4× faster than the ``(P, F) @ (F, H)`` ones
    of the row layout at P = 10⁵ (``experiments/benchmarks/mlp_step.py``), mostly in the last
    layer's two outputs.

    Args:
        params: the parameters :func:`mlp`'s ``init`` returns.
        x: ``(F, N)``: the first ``F`` inputs of ``N`` columns.
        shared: ``(input_size - F,)`` inputs that every column shares (the learned optimizer's
            step embedding); their product with the first layer's weights is added to its bias
            once instead of being broadcast to every column. None if ``F = input_size``.

    Returns:
        ``(output_sizes[-1], N)``.
    """
    layers = sorted(params, key=lambda name: int(name.rsplit("_", 1)[1]))
    for k, name in enumerate(layers):
        w, b = params[name]["w"], params[name]["b"]
        if k == 0 and shared is not None:
            b = b + shared @ w[x.shape[0] :]
            w = w[: x.shape[0]]
        x = w.T @ x + b[:, None]
        if k < len(layers) - 1:
            x = jax.nn.relu(x)
    return x
