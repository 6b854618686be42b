"""Writing an export: the detection function of a model and the metadata beside it, in one of
the formats of `fcos_jax.exporters`.

An export directory holds `metadata.json` (preprocessing settings, class names and COCO category
ids, the format and its files) and, per padded input shape (one per aspect bucket), the
detection function: uint8 images [B, H, W, 3] + unpadded sizes [B, 2] -> fixed-size detections
(normalization, model, decode, per-level top-k, class-wise NMS):
  stablehlo: `detector_{H}x{W}.jax_export` (`jax.export`) + `params.npz`; needs JAX to run;
  onnx: `detector_{H}x{W}.onnx` (jax2onnx), weights inside; runs with onnxruntime;
  savedmodel: `saved_model/`, a signature per shape (jax2tf); runs with TensorFlow.
`serving.detector.Detector` runs any of them.

The artifact always takes uint8 images padded to the bucket shapes (rounded sizes). It does not
follow the torchvision-exact evaluation (`data.torchvision_exact`: float pixels, floored sizes,
each image padded to its own multiple of 32, which would need one program per padded shape, ~84
at 800/1333); `metadata.json` says so when the config asks for it (docs/export.md gives the
measured difference).
"""

import json
import os
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import jax

from fcos_jax import exporters, inference, sharding
from fcos_jax.data import categories as categories_lib
from fcos_jax.data import sizes
from fcos_jax.exporters import contract

def detection_fn(config, model, tta=None, nms: bool = True) -> Callable[..., Dict[str, jax.Array]]:
  """The exported function: (variables, uint8 images [B,H,W,3], int32 sizes [B,2]) -> outputs;
  `tta`: a `fcos_jax.tta.Spec` whose views run and merge inside it; `nms` False: the NMS-free
  outputs of `contract.RAW_OUTPUTS` instead of detections."""
  if not nms:
    dense = inference.make_dense_fn(config, model)

    def raw(variables, images, image_sizes):
      return dict(zip(contract.RAW_OUTPUT_KEYS, dense(variables, images, image_sizes)))
    return raw
  predict = inference.make_predict_fn(config, model, tta)

  def fn(variables, images, image_sizes):
    det = predict(variables, images, image_sizes)
    return {k: getattr(det, k) for k in contract.OUTPUT_KEYS}
  return fn


def inference_variables(variables) -> Dict[str, Any]:
  """`params` and `batch_stats` as host numpy arrays (no optimizer state)."""
  return sharding.host_copy({'params': variables['params'],
                             'batch_stats': variables.get('batch_stats', {})})


def half_precision(model, variables):
  """(model, variables) computing in float16 with float16 weights: the converter then writes
  a float16 graph directly (half the size), no graph rewrite. The head's outputs, decode and
  NMS stay float32 (the model casts its outputs)."""
  import jax.numpy as jnp
  half = jax.tree_util.tree_map(
      lambda x: x.astype(jnp.float16) if jnp.issubdtype(x.dtype, jnp.floating) else x,
      variables)
  return model.clone(dtype=jnp.float16), half


def export_detector(config, model, variables, out_dir: str, categories,
                    fmt: str = 'stablehlo', tta=None, precision: str = 'float32',
                    calibration: Optional[Dict[Tuple[int, int], Iterable[Dict[str, Any]]]]
                    = None, nms: bool = True) -> Dict[str, Any]:
  """Writes the artifact in format `fmt` for every bucket shape of `config.data` (eval sizes)
  into out_dir; returns its metadata. `categories`: the dataset's `Categories`, to name the
  class of every model output; `tta`: test-time augmentation built into the artifact;
  `precision` (ONNX only) 'float16': the model computes and stores its weights in float16
  (`half_precision`); 'int8': convolutions quantized from `calibration[shape]`'s feeds
  (`calibration_feeds`); `nms` False: the NMS-free variant (ONNX only; `contract.RAW_OUTPUTS`)."""
  writer = exporters.module(fmt)
  if precision != 'float32' and fmt != 'onnx':
    raise ValueError(f'precision {precision!r} is an ONNX export')
  if precision == 'int8' and calibration is None:
    raise ValueError('precision int8 needs calibration feeds')
  if precision == 'float16':
    model, variables = half_precision(model, variables)
  if not nms and (fmt != 'onnx' or tta is not None):
    raise ValueError('the NMS-free variant is an ONNX export without test-time augmentation')
  os.makedirs(out_dir, exist_ok=True)
  shapes = sizes.eval_shapes(config.data)
  metadata = export_metadata(config, categories,
                             [{'height': h, 'width': w} for h, w in shapes], fmt, tta)
  metadata['precision'] = precision
  if not nms:
    metadata.update(nms=False, outputs=contract.RAW_OUTPUTS)
  metadata['models'] = writer.write(detection_fn(config, model, tta, nms),
                                    inference_variables(variables),
                                    shapes, out_dir, metadata)
  if precision == 'int8':
    from fcos_jax.exporters import onnx_quantize
    for m in metadata['models']:
      path = os.path.join(out_dir, m['file'])
      os.replace(path, path + '.float32')
      try:
        onnx_quantize.quantize_int8(path + '.float32', path,
                                    calibration[(m['height'], m['width'])])
      finally:
        os.remove(path + '.float32')
  with open(os.path.join(out_dir, 'metadata.json'), 'w') as f:
    json.dump(metadata, f, indent=1)
  return metadata


def calibration_feeds(config, num_images: int, split: Optional[str] = None,
                      batch_size: int = 8) -> Dict[Tuple[int, int], List[Dict[str, Any]]]:
  """{bucket shape: preprocessed batches} of up to `num_images` images per shape of the split
  (default: the training split, so that the evaluation split stays unseen); read before any
  file is written, so a shape without images is one error, not a half-written export."""
  import tensorflow_datasets as tfds
  from fcos_jax import errors
  from fcos_jax.data import input_pipeline
  split = split or config.data.train_split
  shapes = sizes.eval_shapes(config.data)
  feeds: Dict[Tuple[int, int], List[Dict[str, Any]]] = {tuple(s): [] for s in shapes}
  counts = dict.fromkeys(feeds, 0)
  for batch in tfds.as_numpy(input_pipeline.create_eval_dataset(config.data, batch_size,
                                                                split=split)):
    shape = tuple(batch['image'].shape[1:3])
    if shape in feeds and counts[shape] < num_images:
      feeds[shape].append({'images': batch['image'], 'image_sizes': batch['image_size']})
      counts[shape] += int(batch['mask'].sum())
    if all(c >= num_images for c in counts.values()):
      break
  empty = [f'{h}x{w}' for (h, w), c in counts.items() if not c]
  if empty:
    raise errors.DataError(f'split {split!r} of {config.data.dataset!r} has no image of the '
                           f'{", ".join(empty)} input shape to calibrate an int8 export')
  return feeds


# The metadata.json format this code writes and reads; a change that old readers would misread
# gets a new version.
FORMAT = 'fcos_jax export v1'
# What `Detector` needs from metadata.json.
REQUIRED_METADATA = ('models', 'preprocessing', 'class_names', 'category_ids')


def export_metadata(config, categories, files: List[Dict[str, Any]],
                    fmt: str = 'stablehlo', tta=None) -> Dict[str, Any]:
  """What a consumer needs beside the programs: shapes, preprocessing, class names and ids."""
  d = config.data
  class_ids = [int(i) for i in categories_lib.model_class_ids(config.model, categories)]
  names = dict(zip(categories.ids, categories.names))
  metadata = {
      'format': FORMAT,
      'runtime': fmt,
      'models': files,
      'inputs': contract.INPUTS,
      'outputs': contract.OUTPUTS,
      'preprocessing': {'min_size': d.eval_min_size, 'max_size': d.max_size,
                        'pixel_mean': list(d.pixel_mean), 'pixel_std': list(d.pixel_std),
                        'size_divisibility': d.size_divisibility,
                        'resize': 'scale = min(min_size / shorter side, max_size / longer side) '
                                  'in float32, each side round(side * scale) (at least 1); '
                                  'bilinear, no antialiasing, rounded to uint8',
                        'bucket': 'images with h > w run on the second model (portrait) when '
                                  'there are two, all others on the first',
                        'note': 'images are uint8 RGB, padded bottom/right with zeros; '
                                'normalization happens inside the exported function'},
      'torchvision_exact': False,
      'postprocess': dict(config.postprocess),
      # Test-time augmentation inside the programs ('none', 'flip', 'flip,scales=0.8:1.2').
      'tta': str(tta) if tta is not None else 'none',
      'class_names': [names.get(i, 'N/A') for i in class_ids],
      'category_ids': list(class_ids),
  }
  if d.torchvision_exact:
    metadata['preprocessing']['differs_from_evaluation'] = (
        'evaluate.py runs torchvision-exact input (PIL decoding, floored sizes, float resize, '
        'each image padded to a multiple of 32); this export takes rounded sizes, uint8 pixels '
        'and the bucket shapes, so its detections are close to but not torchvision\'s')
  return metadata
