"""Image sizes: the resize rule and the padded shapes, in plain Python / numpy.

One home for the arithmetic that the TF input pipeline, the exported model and the serving code
must agree on. Resize: the shorter side to `min_size` unless the longer would exceed `max_size`;
the project's rule uses float32 arithmetic and rounds the sizes, torchvision's
(`GeneralizedRCNNTransform` with `recompute_scale_factor=True`) Python floats and floors them.
Padding: to a landscape and a portrait bucket (or one square), multiples of `size_divisibility`,
or per image to its own next multiple ('per_image', torchvision's `batch_images` for one image).
"""

import math
from typing import Sequence, Tuple

import numpy as np

Shape = Tuple[int, int]


def round_up(x: int, multiple: int) -> int:
  return -(-x // multiple) * multiple


def bucket_shapes(min_sizes: Sequence[int], max_size: int, divisibility: int,
                  aspect_buckets: bool = True) -> Tuple[Shape, ...]:
  """Padded (H, W) of each bucket: (landscape, portrait), or one square bucket (also when the
  two would be the same shape)."""
  short, long = round_up(max(min_sizes), divisibility), round_up(max_size, divisibility)
  if aspect_buckets and short != long:
    return ((short, long), (long, short))
  return ((long, long),)


def train_shapes(data_config) -> Tuple[Shape, ...]:
  """The padded shapes of training batches (the largest of `min_sizes`)."""
  d = data_config
  return bucket_shapes(d.min_sizes, d.max_size, d.size_divisibility, d.aspect_buckets)


def eval_shapes(data_config) -> Tuple[Shape, ...]:
  """The padded shapes of evaluation / inference batches (`eval_min_size`)."""
  d = data_config
  return bucket_shapes((d.eval_min_size,), d.max_size, d.size_divisibility, d.aspect_buckets)


def bucket_of(hw: Shape, shapes: Sequence[Shape]) -> int:
  """Index of the bucket an image of (h, w) goes to: portrait (h > w) to the second, if any."""
  return int(len(shapes) > 1 and hw[0] > hw[1])


def resize_scale(hw: Shape, min_size: float, max_size: float) -> np.float32:
  """Scale that brings the shorter side to `min_size` unless the longer would exceed max_size."""
  h, w = (np.float32(v) for v in hw)
  return np.minimum(np.float32(min_size) / min(h, w), np.float32(max_size) / max(h, w))


def resized_size(hw: Shape, min_size: float, max_size: float) -> Shape:
  """(h, w) after the resize: float32 arithmetic, rounded, at least 1 (as the TF pipeline)."""
  scale = resize_scale(hw, min_size, max_size)
  return tuple(max(int(np.round(np.float32(v) * scale)), 1) for v in hw)


def resized_size_torchvision(hw: Shape, min_size: float, max_size: float) -> Shape:
  """(h, w) after torchvision's resize: scale min(min_size / short, max_size / long) in Python
  floats (float64), sizes floor(side * scale) (`F.interpolate(recompute_scale_factor=True)`)."""
  scale = min(float(min_size) / min(hw), float(max_size) / max(hw))
  return tuple(math.floor(float(v) * scale) for v in hw)


def eval_resized_size(hw: Shape, data_config) -> Shape:
  """The resized (h, w) of an evaluation image under `data_config` (its `torchvision_exact`)."""
  d = data_config
  if d.torchvision_exact:
    return resized_size_torchvision(hw, d.eval_min_size, d.max_size)
  return resized_size(hw, d.eval_min_size, d.max_size)


def padded_shape(hw: Shape, divisibility: int) -> Shape:
  """Per-image padding: each side up to its next multiple of `divisibility`."""
  return (round_up(hw[0], divisibility), round_up(hw[1], divisibility))
