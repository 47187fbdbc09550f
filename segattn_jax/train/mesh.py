"""Device mesh and the host-numpy -> global `jax.Array` boundary.

Parallelism is data-parallel over a named 'data' mesh axis (`jax.make_mesh` + `NamedSharding`);
parameters are replicated. Batches are assembled per process and turned into global arrays, so the
global batch a step sees is the same whatever the number of devices.
"""
from __future__ import annotations

import os
import jax
import numpy as np
from absl import logging
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def maybe_initialize_distributed() -> None:
    """Calls `jax.distributed.initialize()` when the launch environment asks for it.

    A TPU pod launch (launch/bootstrap.sh) sets SEGATTN_DISTRIBUTED=1 and JAX auto-detects the rest;
    a manual multi-process launch sets JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID.
    """
    coordinator = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if coordinator:
        for name in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
            if name not in os.environ:
                raise ValueError(
                    f"JAX_COORDINATOR_ADDRESS is set but {name} is not: set JAX_NUM_PROCESSES and "
                    "JAX_PROCESS_ID for every process of a multi-process launch.")
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]))
    elif os.environ.get("SEGATTN_DISTRIBUTED") == "1":
        jax.distributed.initialize()
    else:
        return
    logging.info("jax.distributed initialized: process %d of %d, %d local / %d global devices",
                 jax.process_index(), jax.process_count(), jax.local_device_count(),
                 jax.device_count())


def make_mesh(num_data_devices: int = -1) -> Mesh:
    """A 1-D mesh over the 'data' axis; -1 uses every device.

    With several processes each contributes the same number of its own devices, so every process
    holds a shard of each batch.
    """
    total, processes = jax.device_count(), jax.process_count()
    n = total if num_data_devices == -1 else num_data_devices
    if not 1 <= n <= total or n % processes:
        raise ValueError(f"mesh.data={num_data_devices} but {total} devices exist in {processes} "
                         "process(es): use -1 (all devices) or a multiple of the process count up "
                         "to the device count.")
    per_process = n // processes
    devices = [d for p in range(processes)
               for d in [d for d in jax.devices() if d.process_index == p][:per_process]]
    return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the data axis, the rest replicated."""
    return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_divisible(global_batch_size: int, mesh: Mesh, what: str) -> None:
    """Each device gets an equal slice of the global batch, so it must divide evenly."""
    size = mesh.shape[DATA_AXIS]
    if global_batch_size % size or global_batch_size % jax.process_count():
        raise ValueError(
            f"{what}={global_batch_size} must be divisible by the {size} data-parallel devices and "
            f"{jax.process_count()} processes: set --config.{what} to a multiple of {size}.")


def to_global(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Per-process numpy batch -> global arrays sharded along the data axis."""
    sharding = data_sharded(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)
