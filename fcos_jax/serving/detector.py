"""Running an export: `Detector` loads an export directory of any format (or wraps an in-process
model the same way) and maps original images to detections in their own pixels."""

import json
import os
from typing import Any, Dict, List, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from fcos_jax import errors, exporters
from fcos_jax.data import sizes
from fcos_jax.serving import export

def check_metadata(metadata: Dict[str, Any], path: str) -> None:
  """An export `Detector` can run (`DataError` naming `path` else): its format version, the
  keys `Detector` reads, and detections (not an NMS-free export's raw outputs)."""
  if not isinstance(metadata, dict):
    raise errors.DataError(f'{path}: not an export\'s metadata (a JSON object)')
  if metadata.get('format') != export.FORMAT:
    raise errors.DataError(f'{path}: export format {metadata.get("format")!r}, this fcos_jax '
                           f'reads {export.FORMAT!r}: export the model again with this version')
  missing = [k for k in export.REQUIRED_METADATA if k not in metadata]
  if missing:
    raise errors.DataError(f'{path}: missing {", ".join(missing)} (a damaged or hand-edited '
                           'export: export the model again)')
  if len(metadata['class_names']) != len(metadata['category_ids']):
    raise errors.DataError(f'{path}: {len(metadata["class_names"])} class_names but '
                           f'{len(metadata["category_ids"])} category_ids')
  if metadata.get('nms') is False:
    raise errors.DataError(f'{os.path.dirname(path) or "."} is an NMS-free export (boxes and '
                           "scores of every location, for a runtime's own NMS): export without "
                           '--nonms to detect with it here')


class Detector:
  """Runs an export directory of any format: `Detector(dir)(images, image_sizes)` on
  preprocessed batches, or `Detector(dir).detect(image)` on one original uint8 RGB image."""

  @classmethod
  def from_model(cls, config, model, variables, categories, tta=None) -> 'Detector':
    """The same interface over an in-process model (a training workdir or params checkpoint),
    with the export's preprocessing and outputs (`tta`: a `fcos_jax.tta.Spec`)."""
    from fcos_jax.exporters import stablehlo
    # Run as a StableHLO export is: jitted, a partial batch padded to a compiled batch size.
    program = stablehlo.BatchPadded(export.detection_fn(config, model, tta), variables)
    self = cls.__new__(cls)
    shapes = sizes.eval_shapes(config.data)
    self.metadata = export.export_metadata(
        config, categories, [{'height': h, 'width': w} for h, w in shapes], 'in-process', tta)
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
    check_metadata(self.metadata, path)
    self.models = runner.load(export_dir, self.metadata)
    self.class_names: List[str] = self.metadata['class_names']
    self.category_ids: List[int] = self.metadata['category_ids']

  @property
  def shapes(self) -> Sequence[Tuple[int, int]]:
    return list(self.models)

  def __call__(self, images, image_sizes, batch_size=None) -> Dict[str, np.ndarray]:
    """Preprocessed uint8 images [B, H, W, 3] (H, W one of `shapes`) and their unpadded (h, w).
    `batch_size`: the caller's batch, up to which a program that compiles each batch size (a
    StableHLO export, an in-process model) may pad a smaller one to reuse its compilation."""
    shape = tuple(images.shape[1:3])
    if shape not in self.models:
      raise ValueError(f'input shape {shape} is not one of the exported shapes {self.shapes}')
    program = self.models[shape]
    if batch_size and getattr(program, 'compiles_per_batch_size', False):
      return program(images, image_sizes, batch_size)
    return program(images, image_sizes)

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
    return self.detect_many([image], batch_size=1)[0]

  def detect_many(self, images: Sequence[np.ndarray], batch_size: int = 8
                  ) -> List[List[Dict[str, Any]]]:
    """`detect` of each image, run in batches of up to `batch_size` images of one shape."""
    for image in images:
      if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise errors.DataError(f'expected uint8 RGB images [H, W, 3], got {image.dtype} '
                               f'{image.shape}')
      if not (image.shape[0] and image.shape[1]):
        raise errors.DataError(f'an empty image ({image.shape[1]}x{image.shape[0]} pixels) has '
                               'nothing to detect')
    prepared = [self.preprocess(image) for image in images]
    by_shape: Dict[Tuple[int, int], List[int]] = {}
    for i, (padded, _) in enumerate(prepared):
      by_shape.setdefault(padded.shape[:2], []).append(i)
    results: List[List[Dict[str, Any]]] = [[] for _ in images]
    for indices in by_shape.values():
      for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        out = self(np.stack([prepared[i][0] for i in chunk]),
                   np.array([prepared[i][1] for i in chunk], np.int32), batch_size)
        for row, i in enumerate(chunk):
          results[i] = self._to_original(out, row, images[i].shape[:2], prepared[i][1])
    return results

  def detect_sliced(self, image: np.ndarray, size: int, overlap: float = 0.2, *,
                    full: bool = False, batch_size: int = 8) -> List[Dict[str, Any]]:
    """`detect` of a large image from overlapping `size` px tiles (and, with `full`, the whole
    image too), merged across tiles (`fcos_jax.serving.slicing`)."""
    from fcos_jax.serving import slicing
    return slicing.detect_sliced(self.detect_many, image, size, overlap, full=full,
                                 batch_size=batch_size)

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
