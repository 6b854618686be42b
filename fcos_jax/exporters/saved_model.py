"""TensorFlow SavedModel through jax2tf: one SavedModel with a signature per bucket
(`detect_{H}x{W}`; `serving_default` is the first bucket), variables stored once; loads and
runs in TensorFlow (and TensorFlow Serving) without JAX.

Inside, each signature maps a single-image XlaCallModule (the StableHLO of the detection
function at batch 1) over the batch with `tf.map_fn`: TensorFlow's shape refinement cannot
resolve a symbolic batch dimension through top-k, so the batch dimension is dynamic at the
signature and static inside. The StableHLO is serialized for TensorFlow's older StableHLO
(see `_stablehlo_for_tensorflow`). metadata.json also travels as assets.extra/metadata.json.
"""

import contextlib
import json
import os
from typing import Any, Dict, List

import jax
import numpy as np

from fcos_jax import errors
from fcos_jax.exporters.contract import PLATFORMS

DIRECTORY = 'saved_model'


@contextlib.contextmanager
def _stablehlo_for_tensorflow():
  """jax.export serializes StableHLO for consumers at most 4 weeks older than JAX; the
  XlaCallModule of the pinned TensorFlow reads an older version. Within this context the
  serialization targets the 12-week window instead (jax.export has no option for it)."""
  from jax._src.export import _export
  hlo = _export.hlo
  original = _export._module_to_bytecode

  def to_bytecode(module):
    version = hlo.get_version_from_compatibility_requirement(
        hlo.StablehloCompatibilityRequirement.WEEK_12)
    return _export._jax.mlir.serialize_portable_artifact(
        module, version, _export.xb.get_backend().serialize_with_sdy)
  _export._module_to_bytecode = to_bytecode
  try:
    yield
  finally:
    _export._module_to_bytecode = original


def write(fn, variables, shapes, out_dir: str, metadata) -> List[Dict[str, Any]]:
  import tensorflow as tf
  from jax.experimental import jax2tf
  tf_vars = tf.nest.map_structure(lambda x: tf.Variable(np.asarray(x), trainable=False),
                                  variables)
  module = tf.Module()
  module.variables_tree = tf_vars
  signatures, files = {}, []
  converted = jax2tf.convert(fn, with_gradient=False, native_serialization_platforms=PLATFORMS)
  with _stablehlo_for_tensorflow():
    for h, w in shapes:
      one_image = jax.eval_shape(fn, variables, jax.ShapeDtypeStruct((1, h, w, 3), np.uint8),
                                 jax.ShapeDtypeStruct((1, 2), np.int32))
      out_spec = {k: tf.TensorSpec(v.shape[1:], v.dtype) for k, v in one_image.items()}

      def detect(images, image_sizes):
        def one(args):
          out = converted(tf_vars, args[0][None], args[1][None])
          return {k: v[0] for k, v in out.items()}
        return tf.map_fn(one, (images, image_sizes), fn_output_signature=out_spec)
      name = f'detect_{h}x{w}'
      function = tf.function(detect, autograph=False, input_signature=[
          tf.TensorSpec([None, h, w, 3], tf.uint8, name='images'),
          tf.TensorSpec([None, 2], tf.int32, name='image_sizes')])
      setattr(module, name, function)
      signatures[name] = function.get_concrete_function()
      files.append({'file': DIRECTORY, 'signature': name, 'height': h, 'width': w})
  signatures['serving_default'] = signatures[files[0]['signature']]
  path = os.path.join(out_dir, DIRECTORY)
  tf.saved_model.save(module, path, signatures=signatures)
  os.makedirs(os.path.join(path, 'assets.extra'), exist_ok=True)
  with open(os.path.join(path, 'assets.extra', 'metadata.json'), 'w') as f:
    json.dump(metadata, f, indent=1)
  return files


class _Program:
  def __init__(self, function):
    self.function = function

  def __call__(self, images, image_sizes):
    import tensorflow as tf
    out = self.function(images=tf.constant(np.asarray(images, np.uint8)),
                        image_sizes=tf.constant(np.asarray(image_sizes, np.int32)))
    return {k: v.numpy() for k, v in out.items()}


def load(export_dir: str, metadata):
  path = os.path.join(export_dir, DIRECTORY)
  try:
    import tensorflow as tf
    loaded = tf.saved_model.load(path)
    return {(m['height'], m['width']): _Program(loaded.signatures[m['signature']])
            for m in metadata['models']}
  except Exception as e:  # noqa: BLE001 - a damaged export: name the file
    raise errors.DataError(f'{path}: damaged or missing SavedModel ({type(e).__name__}: '
                           f'{str(e)[:120]})') from None
