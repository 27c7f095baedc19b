"""The train step as current JAX writes data parallelism: `jit` over a device mesh.

`train.train_step` is per-device code with collectives over `train.AXIS`. Training
runs it under `jax.pmap`, as the design card asks; since JAX 0.8 `pmap` is itself
built on `jit` and `shard_map`, with a stacked copy of the state per device. This
module runs the same function under `jit(shard_map(...))` with one replicated
state and a global batch sharded over the mesh axis: the reference that the
pmapped step is measured against (`python -m esnet_jax.benchmark --train
--devices N --compare-jit`) and checked equal to (tests/training/test_mesh_step.py).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def mesh(axis_name: str, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A one-axis mesh named `axis_name` (the step's, `train.AXIS`) over `devices`
  (default: the local ones)."""
  return Mesh(np.array(list(devices or jax.local_devices())), (axis_name,))


def replicated(tree: Any, device_mesh: Mesh) -> Any:
  """`tree` with every leaf replicated on the mesh (no device axis added)."""
  return jax.device_put(tree, NamedSharding(device_mesh, PartitionSpec()))


def sharded(tree: Any, device_mesh: Mesh) -> Any:
  """`tree` with every leaf split along its first axis over the mesh."""
  return jax.device_put(tree, NamedSharding(device_mesh, PartitionSpec(device_mesh.axis_names[0])))


def jit_over_mesh(
    step: Callable[[Any, Any], tuple[Any, Any]], device_mesh: Mesh
) -> Callable[[Any, Any], tuple[Any, Any]]:
  """`step(state, batch) -> (state, metrics)` compiled once for the whole mesh.

  The state is replicated and donated; the batch's leading axis is the global
  batch, split over the mesh's axis. Every output is the same on all devices (gradients
  and BatchNorm statistics are averaged over it, metrics reduced), so it is
  returned replicated.
  """
  spmd = jax.shard_map(
      step,
      mesh=device_mesh,
      in_specs=(PartitionSpec(), PartitionSpec(device_mesh.axis_names[0])),
      out_specs=(PartitionSpec(), PartitionSpec()),
      check_vma=False,
  )
  return jax.jit(spmd, donate_argnums=(0,))
