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


class BatchPadded:
  """`fn(variables, images, image_sizes)` jitted, compiled once per input shape. Called with
  `batch_size` (the caller's batch, as `Detector.detect_many` does), a smaller batch is padded
  (the last image repeated) to the smallest batch size already compiled for its shape that
  `batch_size` allows: a video's or folder's last, partial batch reuses the full batches'
  program instead of compiling its own (seconds). Without one compiled, it runs as it is, so
  a lone image never pays for a full batch. The padding rows are dropped; each image's outputs
  do not depend on the others'."""

  compiles_per_batch_size = True

  def __init__(self, fn, variables):
    self.variables = variables
    self._fn = jax.jit(fn)
    self._batches = {}  # (H, W) -> the batch sizes compiled

  def __call__(self, images, image_sizes, batch_size=None) -> Dict[str, np.ndarray]:
    images, image_sizes = np.asarray(images, np.uint8), np.asarray(image_sizes, np.int32)
    n = images.shape[0]
    compiled = self._batches.setdefault(images.shape[1:3], set())
    batch = min((b for b in compiled if n <= b <= (batch_size or n)), default=n)
    compiled.add(batch)
    if batch > n:
      images = np.concatenate([images, np.repeat(images[-1:], batch - n, axis=0)])
      image_sizes = np.concatenate([image_sizes, np.repeat(image_sizes[-1:], batch - n, axis=0)])
    out = self._fn(self.variables, images, image_sizes)
    return {k: np.asarray(v)[:n] for k, v in out.items()}


class _Program(BatchPadded):
  """An exported program: `Exported.call` under `jax.jit` (one compiled program per input
  shape, in the persistent compilation cache too), partial batches padded."""

  def __init__(self, exported, variables):
    super().__init__(exported.call, variables)
    self.exported = exported


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
