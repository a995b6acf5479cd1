"""Several processes (hosts) forming one device mesh, through ``jax.distributed``.

Meta-training shards its problem batch over ``jax.devices()``, which after
:func:`initialize` lists the devices of *every* process: the 1-d mesh of
:func:`lopt.meta_train.batch_sharding` then spans all hosts, each process runs the same program
on its share of the problems, and the mean over problems becomes a cross-host all-reduce. On
CPU the collectives run over gloo (``jax_cpu_collectives_implementation``); on GPU over NCCL.

Launch one process per host with the same coordinator address (process 0's host and a free
port), the same ``num_processes`` and a distinct ``process_id``::

    # host 0                                  # host 1
    lopt.distributed.initialize(              lopt.distributed.initialize(
        "10.0.0.1:1234", 2, 0)                    "10.0.0.1:1234", 2, 1)
    lopt.meta_train(opt, family, cfg, out_dir=run)   # same call on every process

Every process must make the same calls in the same order (SPMD). Only process 0 writes the run
directory; arrays are gathered to it with :func:`to_host`.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils


def initialize(
    coordinator_address: str,
    num_processes: int,
    process_id: int,
    *,
    local_device_ids: list[int] | None = None,
    initialization_timeout: int = 300,
) -> None:
    """Joins this process to a multi-process JAX runtime (call before any other JAX work).

    Selects gloo for CPU collectives (the CPU client otherwise has none across processes;
    the setting does not affect GPU or TPU collectives), then calls
    ``jax.distributed.initialize``.

    Args:
        coordinator_address: ``host:port`` of process 0, reachable from every process.
        num_processes: how many processes form the mesh.
        process_id: this process's index, ``0 <= process_id < num_processes``.
        local_device_ids: restricts this process to some of its local devices (GPUs).
        initialization_timeout: seconds to wait for all processes to connect.

    Raises:
        ValueError: ``process_id`` out of range.

    Example:
        >>> lopt.distributed.initialize("127.0.0.1:12345", 2, 0)  # doctest: +SKIP
    """
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process_id must be in [0, {num_processes}), got {process_id}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
        initialization_timeout=initialization_timeout,
    )


def is_main_process() -> bool:
    """Whether this is process 0, the one that writes files and prints."""
    return jax.process_index() == 0


def _gather(x: Any) -> Any:
    if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
        return jax.device_get(x)
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        data = multihost_utils.process_allgather(jax.random.key_data(x), tiled=True)
        return jax.random.wrap_key_data(np.asarray(data), impl=jax.random.key_impl(x))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def to_host(tree: Any) -> Any:
    """``jax.device_get`` that also works on arrays sharded over several processes.

    A leaf that this process can read whole (fully addressable, or replicated) is fetched with
    ``jax.device_get``, so on one process the result is exactly ``jax.device_get(tree)``. A leaf
    sharded across processes is assembled with ``process_allgather``, which is a collective:
    every process must call :func:`to_host` on the same tree.

    Args:
        tree: a pytree of arrays (PRNG key arrays included).

    Returns:
        The same pytree with host (NumPy) arrays; key arrays stay key arrays.
    """
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return jax.tree.map(_gather, tree)
