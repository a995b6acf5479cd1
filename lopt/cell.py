"""Per-coordinate dynamical systems (``Cell``) and the adapter that makes any of them optax.

A component-wise optimizer keeps a hidden state ``h ∈ R^H`` for every scalar parameter and
applies the same map to each one::

    h' = step(h, g)        # one scalar gradient in
    Δx = readout(h')       # one scalar update out (added to the parameter; no built-in minus)

``Cell(init_state, step, readout)`` holds those pure functions. Its fields are
:class:`jax.tree_util.Partial` objects that carry the cell's parameters as pytree leaves, so a
``Cell`` can be passed to a jitted function as an argument: a new ``theta`` (or a new momentum
coefficient) re-uses the compiled program instead of baking constants into a new one.

:func:`cell_optimizer` turns any Cell into an ``optax.GradientTransformationExtraArgs``; a learned
optimizer's ``optimizer(theta)`` is exactly that adapter applied to ``cell(theta)``, so probes
and training see the very same dynamics.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.tree_util import Partial


class Cell(NamedTuple):
    """The per-coordinate dynamical system every probe works on.

    Attributes:
        init_state: ``init_state() -> h0``, the initial state, shape ``(H,)``.
        step: ``step(h, g) -> h'`` for one scalar gradient ``g``.
        readout: ``readout(h') -> Δx``, a scalar update read from the *new* state.
    """

    init_state: Callable[[], jax.Array]
    step: Callable[[jax.Array, jax.Array], jax.Array]
    readout: Callable[[jax.Array], jax.Array]


def make_cell(
    params: Any,
    init_state: Callable[[Any], jax.Array],
    step: Callable[[Any, jax.Array, jax.Array], jax.Array],
    readout: Callable[[Any, jax.Array], jax.Array],
) -> Cell:
    """Binds ``params`` as the first argument of three functions, giving a jittable Cell.

    Args:
        params: a pytree of arrays (weights or hyperparameters); it becomes the Cell's leaves.
        init_state: ``init_state(params) -> (H,)``.
        step: ``step(params, h, g) -> h'``.
        readout: ``readout(params, h') -> Δx``.

    Returns:
        A :class:`Cell` whose functions are ``Partial``s over ``params``.
    """
    return Cell(Partial(init_state, params), Partial(step, params), Partial(readout, params))


# Coordinates per block in :func:`apply_cell`: about 2^18 state entries (1 MiB of float32), so
# one block's state and gate activations stay in a core's cache while its matmul runs.
_BLOCK_ELEMENTS = 2**18
_MIN_BLOCK_ROWS = 256


def apply_cell(
    cell: Cell, hidden: jax.Array, grads: jax.Array, *, block_rows: int | None = None
) -> tuple[jax.Array, jax.Array]:
    """One step of ``cell`` on a batch of coordinates.

    Args:
        cell: the cell.
        hidden: states, shape ``(P, H)``.
        grads: scalar gradients, shape ``(P,)``.
        block_rows: process the coordinates in blocks of this many rows (a ``fori_loop``);
            ``None`` picks about ``2**18 / H`` rows (1024 at ``H = 256``), ``0`` turns blocking
            off. On XLA:CPU a ``(P, 256) @ (256, 768)`` product with ``P`` in the hundreds of
            thousands runs at under half the speed of one with ``P = 1024``, and the gate
            activations of a block stay in cache, so blocking makes the GRU-256 step at
            ``P = 10^5`` about twice as fast (``experiments/benchmarks/optax_step.py``). The
            last block is aligned to the end (it overlaps its neighbour), so any ``P`` works
            without padding; results match the unblocked step up to float rounding (a matmul's
            summation order may depend on its row count).

    Returns:
        ``(new_hidden (P, H), updates (P,))``. ``vmap`` over the coordinates turns the cell's
        matrix-vector products into one matrix-matrix product per block.
    """

    def direct(hidden, grads):
        new_hidden = jax.vmap(cell.step)(hidden, grads)
        return new_hidden, jax.vmap(cell.readout)(new_hidden)

    size = hidden.shape[0]
    if block_rows is None:
        width = math.prod(hidden.shape[1:])
        block_rows = max(_MIN_BLOCK_ROWS, _BLOCK_ELEMENTS // max(width, 1))
    if block_rows < 0:
        raise ValueError(f"block_rows must be >= 0, got {block_rows}")
    if block_rows == 0 or size <= block_rows:
        return direct(hidden, grads)

    def body(i, out):
        new_hidden, updates = out
        start = jnp.minimum(i * block_rows, size - block_rows)
        h, d = direct(
            jax.lax.dynamic_slice_in_dim(hidden, start, block_rows),
            jax.lax.dynamic_slice_in_dim(grads, start, block_rows),
        )
        return (
            jax.lax.dynamic_update_slice_in_dim(new_hidden, h, start, 0),
            jax.lax.dynamic_update_slice_in_dim(updates, d, start, 0),
        )

    # Output buffers with the shapes and dtypes the unblocked step would give.
    h_aval, d_aval = jax.eval_shape(direct, hidden[:1], grads[:1])
    out = (
        jnp.zeros((size, *h_aval.shape[1:]), h_aval.dtype),
        jnp.zeros((size, *d_aval.shape[1:]), d_aval.dtype),
    )
    return jax.lax.fori_loop(0, -(-size // block_rows), body, out)


class CellOptimizerState(NamedTuple):
    """State of :func:`cell_optimizer`.

    Attributes:
        count: number of updates applied (skipped steps excluded), ``int32``.
        hidden: the per-coordinate states of all parameter leaves, flattened in
            ``jax.tree.leaves`` order into one ``(P, H)`` array (float32, or float64 for a
            float64 cell).
        skipped: number of steps skipped because a gradient was not finite, ``int32``.
    """

    count: jax.Array
    hidden: jax.Array
    skipped: jax.Array


def flatten_tree(tree: Any, dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """Every leaf of ``tree``, raveled and cast to ``dtype``, in one vector (leaf order)."""
    leaves = jax.tree.leaves(tree)
    return jnp.concatenate([jnp.ravel(x).astype(dtype) for x in leaves])


def unflatten_like(flat: jax.Array, like: Any) -> Any:
    """The inverse of :func:`flatten_tree`: ``flat`` cut into ``like``'s shapes and dtypes."""
    leaves, treedef = jax.tree.flatten(like)
    sizes = [math.prod(x.shape) for x in leaves]
    offsets = [sum(sizes[:i]) for i in range(len(sizes))]
    out = [
        flat[o : o + s].reshape(x.shape).astype(x.dtype)
        for o, s, x in zip(offsets, sizes, leaves, strict=True)
    ]
    return jax.tree.unflatten(treedef, out)


def _check_tree(grads: Any, params: Any, size: int) -> None:
    """Raises one clear ``ValueError`` when ``grads`` cannot be the gradient of the parameters."""
    if params is not None:
        g_def, p_def = jax.tree.structure(grads), jax.tree.structure(params)
        if g_def != p_def:
            raise ValueError(
                f"the gradient tree does not match the parameters: gradients {g_def}, "
                f"parameters {p_def}"
            )
        for (path, g), p in zip(
            jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(params), strict=True
        ):
            if jnp.shape(g) != jnp.shape(p):
                raise ValueError(
                    f"the gradient of parameter {jax.tree_util.keystr(path) or '(root)'} has "
                    f"shape {jnp.shape(g)}, the parameter {jnp.shape(p)}"
                )
    count = sum(math.prod(jnp.shape(x)) for x in jax.tree.leaves(grads))
    if count != size:
        raise ValueError(
            f"the gradient tree has {count} scalars but the optimizer state was initialised "
            f"for {size} parameters (init and update must see the same parameter tree)"
        )


def cell_optimizer(
    cell: Cell, *, skip_nonfinite: bool = True
) -> optax.GradientTransformationExtraArgs:
    """Applies ``cell`` independently to every scalar parameter of a pytree.

    All leaves are flattened into one batch of ``P`` coordinates, so the hot path is one large
    matrix product per step rather than one small one per leaf. Computation is in float32
    (float64 for a float64 cell); updates come back in each parameter's dtype (the gradient's
    when ``update`` is given no ``params``).

    ``update`` checks its inputs when it is traced: a gradient tree with another number of
    scalars than the parameters ``init`` saw, or with another structure or shapes than the
    ``params`` given to it, raises one ``ValueError`` saying what differs.

    Args:
        cell: the per-coordinate dynamics.
        skip_nonfinite: if a gradient has any NaN or infinity, skip the whole step: the update
            is zero, the hidden state is left unchanged, and ``state.skipped`` counts it. One
            bad batch then cannot poison the recurrent state for the rest of training. With
            ``False`` the non-finite values flow through (useful to study divergence).

    Returns:
        An ``optax.GradientTransformationExtraArgs`` whose state is a
        :class:`CellOptimizerState` (hidden state under the field ``hidden``).

    Example:
        >>> import jax.numpy as jnp, lopt
        >>> tx = lopt.cell_optimizer(lopt.hand_designed.momentum(learning_rate=0.1, beta=0.9))
        >>> state = tx.init({"w": jnp.zeros(3)})
        >>> updates, state = tx.update({"w": jnp.ones(3)}, state)
    """

    def init_fn(params):
        size = sum(math.prod(x.shape) for x in jax.tree.leaves(params))
        h0 = jnp.asarray(cell.init_state())
        # At least float32 whatever the parameters' dtype (bf16 params keep an f32 state);
        # float64 when the cell itself is float64 (x64 finite-difference checks).
        h0 = h0.astype(jnp.promote_types(h0.dtype, jnp.float32))
        # Distinct arrays for the two counters, so the state can be donated to a jitted step.
        return CellOptimizerState(
            count=jnp.zeros([], jnp.int32),
            hidden=jnp.broadcast_to(h0, (size, *h0.shape)),
            skipped=jnp.zeros([], jnp.int32),
        )

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del value, extra_args
        _check_tree(updates, params, state.hidden.shape[0])
        if not jax.tree.leaves(updates):
            return updates, state
        grads = flatten_tree(updates, state.hidden.dtype)
        if skip_nonfinite:
            finite = jnp.all(jnp.isfinite(grads))
            # Zero the gradients before the step so that no NaN enters the computation at all
            # (a `where` after the fact would still give NaN gradients in meta-training).
            grads = jnp.where(finite, grads, 0.0)
            hidden, delta = apply_cell(cell, state.hidden, grads)
            hidden = jnp.where(finite, hidden, state.hidden)
            delta = jnp.where(finite, delta, 0.0)
            count = jnp.where(finite, optax.safe_increment(state.count), state.count)
            skipped = jnp.where(finite, state.skipped, optax.safe_increment(state.skipped))
        else:
            hidden, delta = apply_cell(cell, state.hidden, grads)
            count, skipped = optax.safe_increment(state.count), state.skipped
        new_state = CellOptimizerState(count=count, hidden=hidden, skipped=skipped)
        return unflatten_like(delta, updates if params is None else params), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
