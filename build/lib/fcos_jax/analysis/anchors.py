"""A RetinaNet-style anchor assigner, only to compare best possible recall with FCOS's (the
paper's Table 1): 9 anchors per location (3 scales x 3 aspect ratios, base size 4 x stride),
IoU >= 0.5 positives, optionally RetinaNet's low-quality matches.

Matching follows maskrcnn-benchmark's `Matcher`: each anchor is matched to the box it overlaps
most (the first on a tie); it is positive when that IoU >= `positive_iou`, or, with low-quality
matches, when it is one of the best anchors of some box and that best IoU >= `low_quality_iou`.
A box is recalled when at least one positive anchor is matched to it.
"""

from typing import NamedTuple, Sequence, Tuple

import jax.numpy as jnp
import numpy as np

from fcos_jax import points as points_lib

SCALES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
ASPECT_RATIOS = (0.5, 1.0, 2.0)  # height / width
BASE_SIZE = 4                    # anchor side = BASE_SIZE x stride x scale (32 px on P3)


class AnchorRecall(NamedTuple):
  recalled: jnp.ndarray              # [..., M] bool, IoU >= positive_iou only.
  recalled_low_quality: jnp.ndarray  # [..., M] bool, with the low-quality matches.


def make_anchors(image_size: Tuple[int, int], strides: Sequence[int], location_mode: str = 'half',
                 scales: Sequence[float] = SCALES,
                 aspect_ratios: Sequence[float] = ASPECT_RATIOS,
                 base_size: float = BASE_SIZE) -> np.ndarray:
  """[N * A, 4] anchors (x0, y0, x1, y1) centred on the FCOS locations, location-major."""
  pts = points_lib.make_points(image_size, strides, location_mode)
  shapes = [(base_size * s / np.sqrt(r), base_size * s * np.sqrt(r))  # (w, h) per stride unit
            for r in aspect_ratios for s in scales]
  wh = np.asarray(shapes, np.float32)[None] * pts.stride[:, None, None]  # [N, A, 2]
  xy = pts.xy[:, None, :]
  return np.concatenate([xy - wh / 2, xy + wh / 2], axis=-1).reshape(-1, 4).astype(np.float32)


def box_iou(a: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
  """IoU matrix [A, M] of boxes a [A, 4] and b [M, 4] (x0, y0, x1, y1)."""
  lt = jnp.maximum(a[:, None, :2], b[None, :, :2])
  rb = jnp.minimum(a[:, None, 2:], b[None, :, 2:])
  inter = jnp.prod(jnp.maximum(rb - lt, 0), axis=-1)
  area_a = jnp.prod(a[:, 2:] - a[:, :2], axis=-1)
  area_b = jnp.prod(b[:, 2:] - b[:, :2], axis=-1)
  union = area_a[:, None] + area_b[None, :] - inter
  return inter / jnp.where(union > 0, union, 1.0)


def anchor_recall(anchors: jnp.ndarray, boxes: jnp.ndarray, valid: jnp.ndarray, *,
                  positive_iou: float = 0.5, low_quality_iou: float = 0.4) -> AnchorRecall:
  """Which of one image's boxes [M, 4] (mask `valid` [M]) get at least one positive anchor."""
  valid = jnp.asarray(valid, bool)
  iou = jnp.where(valid[None, :], box_iou(jnp.asarray(anchors), jnp.asarray(boxes, jnp.float32)),
                  -1.0)                                              # [A, M]
  matched = jnp.argmax(iou, axis=1)                                  # [A]
  best_iou = jnp.max(iou, axis=1)
  mine = matched[:, None] == jnp.arange(iou.shape[1])[None, :]       # [A, M]
  positive = best_iou >= positive_iou
  box_best = jnp.max(iou, axis=0)                                    # [M]
  low_quality = jnp.any((iou == box_best[None, :]) & (box_best >= low_quality_iou)[None, :] &
                        valid[None, :], axis=1)                      # [A]
  return AnchorRecall(
      recalled=jnp.any(mine & positive[:, None], axis=0) & valid,
      recalled_low_quality=jnp.any(mine & (positive | low_quality)[:, None], axis=0) & valid)
