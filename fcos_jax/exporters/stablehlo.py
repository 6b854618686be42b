"""StableHLO through `jax.export`: one program per bucket with a symbolic batch dimension, the
variables beside it in `params.npz`; runs wherever JAX runs (CPU, GPU, TPU)."""

import os
from typing import Any, Dict, List

import jax
import jax.numpy as jnp
import numpy as np

from fcos_jax import errors
from fcos_jax.exporters.contract import PLATFORMS


def flatten(tree, prefix=()) -> Dict[str, np.ndarray]:
  """Nested dict -> {'a/b/c': array}."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(flatten(v, prefix + (k,)))
    else:
      out['/'.join(prefix + (k,))] = np.asarray(v)
  return out


def unflatten(flat: Dict[str, np.ndarray]) -> Dict[str, Any]:
  tree: Dict[str, Any] = {}
  for key, v in flat.items():
    node = tree
    *path, leaf = key.split('/')
    for p in path:
      node = node.setdefault(p, {})
    node[leaf] = v
  return tree


def write(fn, variables, shapes, out_dir: str, metadata) -> List[Dict[str, Any]]:
  del metadata  # metadata.json beside the programs is all this format carries
  flat = flatten(variables)
  np.savez(os.path.join(out_dir, 'params.npz'), **flat)
  var_specs = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                                     unflatten(flat))
  (batch,) = jax.export.symbolic_shape('b')
  files = []
  for h, w in shapes:
    exported = jax.export.export(jax.jit(fn), platforms=PLATFORMS)(
        var_specs, jax.ShapeDtypeStruct((batch, h, w, 3), jnp.uint8),
        jax.ShapeDtypeStruct((batch, 2), jnp.int32))
    name = f'detector_{h}x{w}.jax_export'
    with open(os.path.join(out_dir, name), 'wb') as f:
      f.write(exported.serialize())
    files.append({'file': name, 'height': h, 'width': w})
  return files


class _Program:
  def __init__(self, exported, variables):
    self.exported, self.variables = exported, variables

  def __call__(self, images, image_sizes):
    out = self.exported.call(self.variables, jnp.asarray(images, jnp.uint8),
                             jnp.asarray(image_sizes, jnp.int32))
    return {k: np.asarray(v) for k, v in out.items()}


def load(export_dir: str, metadata):
  path = os.path.join(export_dir, 'params.npz')
  try:
    with np.load(path) as z:
      variables = jax.device_put(unflatten({k: z[k] for k in z.files}))
    programs = {}
    for m in metadata['models']:
      path = os.path.join(export_dir, m['file'])
      with open(path, 'rb') as f:
        exported = jax.export.deserialize(bytearray(f.read()))
      programs[(m['height'], m['width'])] = _Program(exported, variables)
  except Exception as e:  # noqa: BLE001 - a damaged export: name the file
    raise errors.DataError(f'{path}: damaged or missing export file ({type(e).__name__}: '
                           f'{str(e)[:120]})') from None
  return programs
