"""The exported inference artifact: writing it in a format and running it.

An export directory holds `metadata.json` (preprocessing settings, class names and COCO category
ids, the format and its files) and, per padded input shape (one per aspect bucket), the
detection function: uint8 images [B, H, W, 3] + unpadded sizes [B, 2] -> fixed-size detections
(normalization, model, decode, per-level top-k, class-wise NMS), in one of the formats of
`fcos_jax.exporters`:
  stablehlo: `detector_{H}x{W}.jax_export` (`jax.export`) + `params.npz`; needs JAX to run;
  onnx: `detector_{H}x{W}.onnx` (jax2onnx), weights inside; runs with onnxruntime;
  savedmodel: `saved_model/`, a signature per shape (jax2tf); runs with TensorFlow.
`Detector` loads any of them and maps original images to detections in original pixels.

The artifact always takes uint8 images padded to the bucket shapes (rounded sizes). It does not
follow the torchvision-exact evaluation (`data.torchvision_exact`: float pixels, floored sizes,
each image padded to its own multiple of 32, which would need one program per padded shape, ~84
at 800/1333); `metadata.json` says so when the config asks for it, and the README gives the
measured difference.
"""

import json
import os
from typing import Any, Callable, Dict, List, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from fcos_jax import errors, exporters, inference
from fcos_jax.data import categories as categories_lib
from fcos_jax.data import sizes

OUTPUT_KEYS = ('boxes', 'scores', 'classes', 'valid', 'num_valid')
OUTPUTS = {
    'boxes': 'float32 [B, K, 4]: x0, y0, x1, y1 in the pixels of the resized (unpadded) image; '
             '0 on padding rows',
    'scores': 'float32 [B, K]: descending; 0 on padding rows',
    'classes': 'int32 [B, K]: index into class_names / category_ids; -1 on padding rows',
    'valid': 'bool [B, K]: which rows are detections',
    'num_valid': 'int32 [B]: number of detections (the first rows)',
}


def detection_fn(config, model) -> Callable[..., Dict[str, jax.Array]]:
  """The exported function: (variables, uint8 images [B,H,W,3], int32 sizes [B,2]) -> outputs."""
  predict = inference.make_predict_fn(config, model)

  def fn(variables, images, image_sizes):
    det = predict(variables, images, image_sizes)
    return {k: getattr(det, k) for k in OUTPUT_KEYS}
  return fn


def inference_variables(variables) -> Dict[str, Any]:
  """`params` and `batch_stats` as host numpy arrays (no optimizer state)."""
  return jax.tree_util.tree_map(
      lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else np.asarray(x),
      {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})})


def export_detector(config, model, variables, out_dir: str, categories,
                    fmt: str = 'stablehlo') -> Dict[str, Any]:
  """Writes the artifact in format `fmt` for every bucket shape of `config.data` (eval sizes)
  into out_dir; returns its metadata. `categories`: the dataset's `Categories`, to name the
  class of every model output."""
  writer = exporters.module(fmt)
  os.makedirs(out_dir, exist_ok=True)
  shapes = sizes.eval_shapes(config.data)
  metadata = export_metadata(config, categories,
                             [{'height': h, 'width': w} for h, w in shapes], fmt)
  metadata['models'] = writer.write(detection_fn(config, model), inference_variables(variables),
                                    shapes, out_dir, metadata)
  with open(os.path.join(out_dir, 'metadata.json'), 'w') as f:
    json.dump(metadata, f, indent=1)
  return metadata


def export_metadata(config, categories, files: List[Dict[str, Any]],
                    fmt: str = 'stablehlo') -> Dict[str, Any]:
  """What a consumer needs beside the programs: shapes, preprocessing, class names and ids."""
  d = config.data
  class_ids = [int(i) for i in categories_lib.model_class_ids(config.model, categories)]
  names = dict(zip(categories.ids, categories.names))
  metadata = {
      'format': 'fcos_jax export v1',
      'runtime': fmt,
      'models': files,
      'inputs': {'images': 'uint8 [B, H, W, 3] RGB, (H, W) one of the models\' shapes',
                 'image_sizes': 'int32 [B, 2]: (h, w) of each resized image before padding'},
      'outputs': OUTPUTS,
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
      'class_names': [names.get(i, 'N/A') for i in class_ids],
      'category_ids': list(class_ids),
  }
  if d.get('torchvision_exact', False):
    metadata['preprocessing']['differs_from_evaluation'] = (
        'evaluate.py runs torchvision-exact input (PIL decoding, floored sizes, float resize, '
        'each image padded to a multiple of 32); this export takes rounded sizes, uint8 pixels '
        'and the bucket shapes, so its detections are close to but not torchvision\'s')
  return metadata


class Detector:
  """Runs an export directory of any format: `Detector(dir)(images, image_sizes)` on
  preprocessed batches, or `Detector(dir).detect(image)` on one original uint8 RGB image."""

  @classmethod
  def from_model(cls, config, model, variables, categories) -> 'Detector':
    """The same interface over an in-process model (a training workdir or params checkpoint),
    with the export's preprocessing and outputs."""
    detect = jax.jit(detection_fn(config, model))

    def program(images, image_sizes):
      out = detect(variables, jnp.asarray(images, jnp.uint8), jnp.asarray(image_sizes, jnp.int32))
      return {k: np.asarray(v) for k, v in out.items()}

    self = cls.__new__(cls)
    shapes = sizes.eval_shapes(config.data)
    self.metadata = export_metadata(config, categories,
                                    [{'height': h, 'width': w} for h, w in shapes], 'in-process')
    self.models = {shape: program for shape in shapes}
    self.class_names = self.metadata['class_names']
    self.category_ids = self.metadata['category_ids']
    return self

  def __init__(self, export_dir: str):
    if not os.path.isdir(export_dir):
      raise errors.DataError(f'{export_dir}: no such export directory (write one with export.py)')
    path = os.path.join(export_dir, 'metadata.json')
    try:
      with open(path) as f:
        self.metadata = json.load(f)
      fmt = self.metadata.get('runtime', 'stablehlo')
      runner = exporters.module(fmt)
    except Exception as e:  # noqa: BLE001 - a damaged export: name the file
      raise errors.DataError(f'{path}: damaged or missing export file ({type(e).__name__}: '
                             f'{str(e)[:120]})') from None
    self.models = runner.load(export_dir, self.metadata)
    self.class_names: List[str] = self.metadata['class_names']
    self.category_ids: List[int] = self.metadata['category_ids']

  @property
  def shapes(self) -> Sequence[Tuple[int, int]]:
    return list(self.models)

  def __call__(self, images, image_sizes) -> Dict[str, np.ndarray]:
    """Preprocessed uint8 images [B, H, W, 3] (H, W one of `shapes`) and their unpadded (h, w)."""
    shape = tuple(images.shape[1:3])
    if shape not in self.models:
      raise ValueError(f'input shape {shape} is not one of the exported shapes {self.shapes}')
    return self.models[shape](images, image_sizes)

  def preprocess(self, image: np.ndarray) -> Tuple[np.ndarray, Tuple[int, int]]:
    """One original uint8 RGB image -> padded input [H, W, 3] and its resized (h, w)."""
    p = self.metadata['preprocessing']
    hw = image.shape[:2]
    nh, nw = sizes.resized_size(hw, p['min_size'], p['max_size'])
    shape = self.shapes[sizes.bucket_of(hw, self.shapes)]
    resized = jax.image.resize(jnp.asarray(image, jnp.float32), (nh, nw, 3), 'bilinear',
                               antialias=False)
    resized = np.asarray(jnp.clip(jnp.round(resized), 0, 255)).astype(np.uint8)
    padded = np.zeros(shape + (3,), np.uint8)
    padded[:nh, :nw] = resized
    return padded, (nh, nw)

  def detect(self, image: np.ndarray) -> List[Dict[str, Any]]:
    """Detections of one original image, in its pixels: [{'bbox': [x0, y0, x1, y1], 'score',
    'label', 'class_name', 'category_id'}], best first."""
    return self.detect_many([image])[0]

  def detect_many(self, images: Sequence[np.ndarray], batch_size: int = 8
                  ) -> List[List[Dict[str, Any]]]:
    """`detect` of each image, run in batches of up to `batch_size` images of one shape."""
    for image in images:
      if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f'expected uint8 RGB images [H, W, 3], got {image.dtype} '
                         f'{image.shape}')
    prepared = [self.preprocess(image) for image in images]
    by_shape: Dict[Tuple[int, int], List[int]] = {}
    for i, (padded, _) in enumerate(prepared):
      by_shape.setdefault(padded.shape[:2], []).append(i)
    results: List[List[Dict[str, Any]]] = [[] for _ in images]
    for indices in by_shape.values():
      for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        out = self(np.stack([prepared[i][0] for i in chunk]),
                   np.array([prepared[i][1] for i in chunk], np.int32))
        for row, i in enumerate(chunk):
          results[i] = self._to_original(out, row, images[i].shape[:2], prepared[i][1])
    return results

  def _to_original(self, out, row: int, hw, resized_hw) -> List[Dict[str, Any]]:
    sx, sy = hw[1] / resized_hw[1], hw[0] / resized_hw[0]
    dets = []
    for k in range(int(out['num_valid'][row])):
      x0, y0, x1, y1 = (float(v) for v in out['boxes'][row, k])
      label = int(out['classes'][row, k])
      dets.append({'bbox': [x0 * sx, y0 * sy, x1 * sx, y1 * sy],
                   'score': float(out['scores'][row, k]), 'label': label,
                   'class_name': self.class_names[label],
                   'category_id': self.category_ids[label]})
    return dets
