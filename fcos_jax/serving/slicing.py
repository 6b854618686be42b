"""Sliced inference for large images (as sahi does): overlapping square tiles of one size run in
batches through the same compiled shape, their boxes move back to the image, and an object seen
by several tiles keeps one box.

Tiles step by size x (1 - overlap), so an object no longer than the overlap lies whole in some
tile. A box that touches a tile border inside the image is likely a cut piece: merging takes
the whole boxes first (best first), then the pieces, and drops a box whose intersection with a
kept box of its class from another tile (or the full-image pass) exceeds half the smaller box
(sahi's match, IoS 0.5). A piece with nothing whole over it stays (an object larger than the
overlap: --slice_full adds the whole-image pass, whose boxes are never pieces).

sahi instead grows the best box to the union of its matches; measured on the demo model's
tiles, growing through low-score matches merged neighbouring objects and lost recall
(docs/inference.md).
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


def merge(dets: List[Dict[str, Any]], sources: Sequence[int], cut: Sequence[bool],
          threshold: float = MERGE_THRESHOLD, cell: float = 512.0) -> List[Dict[str, Any]]:
  """Boxes kept from several tiles: whole boxes best first, then `cut` ones best first; a box is
  dropped when a kept box of its class from another source covers more than `threshold` of the
  smaller one (boxes of one source already went through the model's NMS). Boxes are compared
  only with those sharing a `cell` px square of a grid (a 4000x3000 image gives ~10^5 tile
  boxes: all pairs would be ~10^10)."""
  if not dets:
    return []
  order = sorted(range(len(dets)), key=lambda i: (bool(cut[i]), -dets[i]['score']))
  boxes = np.array([dets[i]['bbox'] for i in order], np.float64)
  labels = np.array([dets[i]['label'] for i in order])
  src = np.array([sources[i] for i in order])
  span = np.floor(np.maximum(boxes, 0) / cell).astype(int)  # grid cells x0, y0, x1, y1
  grid: Dict[Tuple[int, int], List[int]] = {}
  for k, (gx0, gy0, gx1, gy1) in enumerate(span):
    for gy in range(gy0, gy1 + 1):
      for gx in range(gx0, gx1 + 1):
        grid.setdefault((gx, gy), []).append(k)
  grid_arrays = {key: np.array(v) for key, v in grid.items()}
  alive = np.ones(len(order), bool)
  kept = []
  for k in range(len(order)):
    if not alive[k]:
      continue
    kept.append(order[k])
    alive[k] = False
    gx0, gy0, gx1, gy1 = span[k]
    cells = [grid_arrays[(gx, gy)] for gy in range(gy0, gy1 + 1) for gx in range(gx0, gx1 + 1)]
    near = cells[0] if len(cells) == 1 else np.unique(np.concatenate(cells))
    near = near[alive[near] & (labels[near] == labels[k]) & (src[near] != src[k])]
    if len(near):
      alive[near[_ios(boxes[k], boxes[near]) > threshold]] = False
  return sorted((dets[i] for i in kept), key=lambda d: -d['score'])


def is_cut(bbox, tile, hw: Tuple[int, int], margin: float) -> bool:
  """Whether a box (image pixels) touches, within `margin`, a border of its tile (y0, x0, y1, x1)
  that is not the image's border."""
  y0, x0, y1, x1 = tile
  return ((x0 > 0 and bbox[0] - x0 < margin) or (y0 > 0 and bbox[1] - y0 < margin) or
          (x1 < hw[1] and x1 - bbox[2] < margin) or (y1 < hw[0] and y1 - bbox[3] < margin))


def detect_sliced(detect_many: Callable[..., List[List[Dict[str, Any]]]], image: np.ndarray,
                  size: int, overlap: float, *, full: bool = False, batch_size: int = 8,
                  threshold: float = MERGE_THRESHOLD) -> List[Dict[str, Any]]:
  """Detections of one (large) image from its tiles (and, with `full`, the whole image at the
  detector's normal size), in the image's pixels, merged; `detect_many` is `Detector`'s."""
  check_settings(size, overlap)
  boxes_of = tiles(image.shape[:2], size, overlap)
  crops = [np.ascontiguousarray(image[y0:y1, x0:x1]) for y0, x0, y1, x1 in boxes_of]
  found = detect_many(crops, batch_size)
  margin = max(1.0, size / 128)  # a pixel of the tile at the demo's input size
  dets, sources, cut = [], [], []
  for t, (tile, tile_dets) in enumerate(zip(boxes_of, found)):
    y0, x0 = tile[:2]
    for d in tile_dets:
      x_0, y_0, x_1, y_1 = d['bbox']
      box = [x_0 + x0, y_0 + y0, x_1 + x0, y_1 + y0]
      dets.append(dict(d, bbox=box))
      sources.append(t)
      cut.append(is_cut(box, tile, image.shape[:2], margin))
  if full and len(boxes_of) > 1:
    for d in detect_many([image], 1)[0]:
      dets.append(d)
      sources.append(len(boxes_of))
      cut.append(False)
  return merge(dets, sources, cut, threshold, cell=float(size))
