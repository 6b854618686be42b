"""Sliced inference for large images (as sahi does): overlapping square tiles of one size run in
batches through the same compiled shape, their boxes move back to the image, and the pieces of
one object found by several tiles merge into one box.

Merging follows sahi's default (greedy non-maximum merging, intersection over the smaller box,
0.5): the best box takes every box of its class from another tile (or the full-image pass) that
overlaps it by more than the threshold of the smaller one's area, grows to their union and keeps
its score; the grown box matches again until nothing more joins (sahi matches once, which leaves
the pieces of an object larger than a tile apart). An object cut by a tile border is whole in the
next tile when it fits in the overlap, and its cut piece then lies inside the whole box (IoS 1),
so one box remains.
"""

from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np

from fcos_jax import errors

MERGE_THRESHOLD = 0.5


def check_settings(size: int, overlap: float) -> None:
  """A slice setting that cannot work, as one UserError before any model is loaded."""
  if size < 32:
    raise errors.UserError(f'--slice {size}: tiles of at least 32 px')
  if not 0 <= overlap < 1:
    raise errors.UserError(f'--overlap {overlap:g}: a fraction of the tile in [0, 1)')
  if int(size * (1 - overlap)) < 1:
    raise errors.UserError(f'--overlap {overlap:g} leaves no step between tiles of {size} px')


def tile_origins(length: int, size: int, overlap: float) -> List[int]:
  """Tile starts along one side: every `size * (1 - overlap)` px, the last tile moved back to end
  at the border (all tiles are full size; one tile, at 0, when the side is shorter)."""
  if length <= size:
    return [0]
  step = max(int(size * (1 - overlap)), 1)
  starts = list(range(0, length - size, step))
  return starts + [length - size]


def tiles(hw: Tuple[int, int], size: int, overlap: float) -> List[Tuple[int, int, int, int]]:
  """(y0, x0, y1, x1) of every tile of an image of (h, w), row by row."""
  h, w = hw
  return [(y, x, min(y + size, h), min(x + size, w)) for y in tile_origins(h, size, overlap)
          for x in tile_origins(w, size, overlap)]


def _ios(box, boxes):
  """Intersection over the smaller area of box [4] against boxes [K, 4]."""
  iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
  ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
  area = (box[2] - box[0]) * (box[3] - box[1])
  areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  return iw * ih / np.maximum(np.minimum(area, areas), 1e-9)


def merge(dets: List[Dict[str, Any]], sources: Sequence[int],
          threshold: float = MERGE_THRESHOLD) -> List[Dict[str, Any]]:
  """Greedy non-maximum merging across sources (tiles): best first, each box absorbs the boxes
  of its class from other sources whose intersection over the smaller box exceeds `threshold`
  (boxes of one source already went through the model's NMS), growing to their union and
  matching again while boxes join. Returns new dicts in that order."""
  if not dets:
    return []
  order = sorted(range(len(dets)), key=lambda i: -dets[i]['score'])
  boxes = np.array([dets[i]['bbox'] for i in order], np.float64)
  labels = np.array([dets[i]['label'] for i in order])
  src = np.array([sources[i] for i in order])
  taken = np.zeros(len(order), bool)
  out = []
  for k in range(len(order)):
    if taken[k]:
      continue
    taken[k] = True
    box = boxes[k].copy()
    while True:  # the grown box may take pieces that the first one did not reach
      match = (~taken & (labels == labels[k]) & (src != src[k]) &
               (_ios(box, boxes) > threshold))
      if not match.any():
        break
      taken |= match
      group = boxes[match]
      box[:2] = np.minimum(box[:2], group[:, :2].min(0))
      box[2:] = np.maximum(box[2:], group[:, 2:].max(0))
    out.append(dict(dets[order[k]], bbox=[float(v) for v in box]))
  return out


def detect_sliced(detect_many: Callable[..., List[List[Dict[str, Any]]]], image: np.ndarray,
                  size: int, overlap: float, *, full: bool = False, batch_size: int = 8,
                  threshold: float = MERGE_THRESHOLD) -> List[Dict[str, Any]]:
  """Detections of one (large) image from its tiles (and, with `full`, the whole image at the
  detector's normal size), in the image's pixels, merged; `detect_many` is `Detector`'s."""
  check_settings(size, overlap)
  boxes_of = tiles(image.shape[:2], size, overlap)
  crops = [np.ascontiguousarray(image[y0:y1, x0:x1]) for y0, x0, y1, x1 in boxes_of]
  found = detect_many(crops, batch_size)
  dets, sources = [], []
  for t, ((y0, x0, _, _), tile_dets) in enumerate(zip(boxes_of, found)):
    for d in tile_dets:
      x_0, y_0, x_1, y_1 = d['bbox']
      dets.append(dict(d, bbox=[x_0 + x0, y_0 + y0, x_1 + x0, y_1 + y0]))
      sources.append(t)
  if full and len(boxes_of) > 1:
    for d in detect_many([image], 1)[0]:
      dets.append(d)
      sources.append(len(boxes_of))
  return merge(dets, sources, threshold)
