"""The device mesh and the placement of arrays on it: one 1-D 'data' axis (data parallelism),
batches split along it, parameters replicated; and host copies of placed arrays."""

import math
from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def make_mesh(devices: Optional[Sequence[Any]] = None) -> jax.sharding.Mesh:
  """A 1-D mesh over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else devices
  return jax.make_mesh((len(devices),), (DATA_AXIS,), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


def local_mesh(batch_size: int) -> jax.sharding.Mesh:
  """A mesh over as many of this process's devices as split `batch_size` evenly: inference
  needs no cross-process communication, so processes with different numbers of batches run
  independently."""
  devices = jax.local_devices()
  return make_mesh(devices[:math.gcd(batch_size, len(devices))])


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Arrays split along their first (batch) dimension over the 'data' axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Arrays copied whole to every device of the mesh."""
  return NamedSharding(mesh, P())


def host_copy(tree: Any) -> Any:
  """numpy copies of a pytree of (possibly multi-process, replicated) arrays: each array's
  first local shard, which for a replicated array is all of it; other leaves as numpy."""
  return jax.tree_util.tree_map(
      lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else np.asarray(x),
      tree)
