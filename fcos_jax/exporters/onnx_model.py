"""ONNX through jax2onnx: one model per bucket, weights inside, symbolic batch dimension; runs
with onnxruntime (and TensorRT's ONNX parser) without JAX or this package.

The whole detection function converts: normalization, model, decode, per-level top-k and the
greedy class-wise NMS (an ONNX Loop over `max_detections` steps, batched inside the loop).
metadata.json travels inside each model too, as the `fcos_jax` entry of `metadata_props`.
"""

import json
import logging
import os
import warnings
from typing import Any, Dict, List

import jax
import jax.numpy as jnp
import numpy as np

from fcos_jax import errors
from fcos_jax.exporters.contract import INPUT_NAMES, OUTPUT_KEYS

OPSET = 21


def _uses_platform_choice(jaxpr) -> bool:
  from jax.extend import core
  return any(e.primitive.name == 'platform_index' for e in jaxpr.eqns) or any(
      _uses_platform_choice(sub) for sub in core.subjaxprs(jaxpr))


def _eval_native(jaxpr, consts, *args):
  """Evaluates `jaxpr` with every `lax.platform_dependent` choice (`models/layers.py`) replaced
  by its branch for platforms other than the CPU, and the jitted calls that hold one inlined."""
  from jax.extend import core
  env = {}

  def read(v):
    return v.val if isinstance(v, core.Literal) else env[v]
  for v, x in zip(jaxpr.constvars, consts):
    env[v] = x
  for v, x in zip(jaxpr.invars, args):
    env[v] = x
  for eqn in jaxpr.eqns:
    values = [read(v) for v in eqn.invars]
    name, params = eqn.primitive.name, eqn.params
    if name == 'platform_index':
      outs = [np.int32(0)]  # unused: its cond is resolved below
    elif name == 'cond' and params.get('branches_platforms'):
      branches = params['branches_platforms']
      index = next((i for i, p in enumerate(branches) if p is None), len(branches) - 1)
      branch = params['branches'][index]
      outs = _eval_native(branch.jaxpr, branch.consts, *values[1:])
    elif name in ('jit', 'pjit') and _uses_platform_choice(params['jaxpr'].jaxpr):
      outs = _eval_native(params['jaxpr'].jaxpr, params['jaxpr'].consts, *values)
    else:
      with eqn.ctx.manager:
        outs = eqn.primitive.bind(*values, **eqn.primitive.get_bind_params(params))
      if not eqn.primitive.multiple_results:
        outs = [outs]
    for v, x in zip(eqn.outvars, outs):
      env[v] = x
  return [read(v) for v in jaxpr.outvars]


def native_forms(fn):
  """`fn` with XLA's native layer forms whatever the platform: jax2onnx does not know
  `platform_index` (and its `If` of the two forms does not convert), and the native forms (Conv,
  MaxPool, GroupNorm's reductions) are the natural ONNX operators."""
  def wrapped(*args):
    closed, shapes = jax.make_jaxpr(fn, return_shape=True)(*args)
    outs = _eval_native(closed.jaxpr, closed.consts, *jax.tree_util.tree_leaves(args))
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shapes), outs)
  return wrapped


def _keep_float16_weights(model) -> None:
  """The converter widens a float16 kernel it transposes ahead of time to float32, and the
  checker then refuses its float16 Conv: such weights (exactly float16 values) are stored in
  float16 again. A float32 graph has none."""
  import onnx_ir
  for node in model.graph.all_nodes():
    if node.op_type != 'Conv' or node.inputs[0].dtype != onnx_ir.DataType.FLOAT16:
      continue
    for v in node.inputs[1:]:
      if v is None or v.const_value is None or v.dtype != onnx_ir.DataType.FLOAT:
        continue
      wide = v.const_value.numpy()
      narrow = wide.astype(np.float16)
      if not np.array_equal(narrow.astype(wide.dtype), wide):
        raise ValueError(f'{v.name}: float32 weights of a float16 Conv')
      v.const_value = onnx_ir.tensor(narrow, name=v.name)
      v.dtype = onnx_ir.DataType.FLOAT16


def to_onnx(fn, input_specs, output_names, name: str, opset: int = OPSET):
  """A pure JAX function of arrays -> a checked `onnx.ModelProto` (shapes may be symbolic).

  Identical weights are stored once: the converter writes one copy per use, and the FPN head
  runs on five levels (an R50-FPN model would take 199 MB instead of 124 MB).
  """
  import onnx
  import onnx_ir
  from jax2onnx import to_onnx as convert
  from onnx_ir.passes.common import DeduplicateInitializersPass
  with warnings.catch_warnings():  # the converter asks JAX for float64 constants: harmless
    warnings.filterwarnings('ignore', message='Explicitly requested dtype float64')
    model = convert(native_forms(fn), list(input_specs), model_name=name, opset=opset,
                    input_names=list(INPUT_NAMES[:len(input_specs)]),
                    output_names=list(output_names), return_mode='ir')
  _keep_float16_weights(model)
  DeduplicateInitializersPass(size_limit=2**31)(model)
  # onnx_ir warns once per intermediate value without a recorded type (it skips writing its
  # value_info, which onnxruntime infers anyway): hundreds of lines for a ResNet.
  serde_log = logging.getLogger('onnx_ir.serde')
  level = serde_log.level
  serde_log.setLevel(logging.ERROR)
  try:
    proto = onnx_ir.serde.serialize_model(model)
  finally:
    serde_log.setLevel(level)
  onnx.checker.check_model(proto, full_check=True)
  return proto


def write(fn, variables, shapes, out_dir: str, metadata) -> List[Dict[str, Any]]:
  import onnx
  keys = tuple(metadata.get('outputs', OUTPUT_KEYS))  # the NMS-free variant names its own
  (batch,) = jax.export.symbolic_shape('batch')
  files = []
  for h, w in shapes:
    def detect(images, image_sizes):
      out = fn(variables, images, image_sizes)
      return tuple(out[k] for k in keys)
    model = to_onnx(detect, [jax.ShapeDtypeStruct((batch, h, w, 3), jnp.uint8),
                             jax.ShapeDtypeStruct((batch, 2), jnp.int32)],
                    keys, f'fcos_{h}x{w}')
    onnx.helper.set_model_props(model, {'fcos_jax': json.dumps(metadata)})
    name = f'detector_{h}x{w}.onnx'
    onnx.save(model, os.path.join(out_dir, name))
    files.append({'file': name, 'height': h, 'width': w})
  return files


class _Program:
  """An onnxruntime CPU session of one model (onnxruntime's default thread count)."""

  def __init__(self, path: str):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3
    self.session = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    self.names = [o.name for o in self.session.get_outputs()]

  def __call__(self, images, image_sizes):
    out = self.session.run(None, {'images': np.asarray(images, np.uint8),
                                  'image_sizes': np.asarray(image_sizes, np.int32)})
    return dict(zip(self.names, out))


def load(export_dir: str, metadata):
  programs = {}
  for m in metadata['models']:
    path = os.path.join(export_dir, m['file'])
    try:
      programs[(m['height'], m['width'])] = _Program(path)
    except ImportError:
      raise errors.UserError(f'{export_dir} is an ONNX export: install onnxruntime '
                             '(pip install "fcos_jax[onnx]")') from None
    except Exception as e:  # noqa: BLE001 - a damaged export: name the file
      raise errors.DataError(f'{path}: damaged or missing export file ({type(e).__name__}: '
                             f'{str(e)[:120]})') from None
  return programs
