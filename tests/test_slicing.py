"""Sliced inference: tiles cover the image, merging joins an object's pieces across tiles, and on
a generated 4000x3000 image of small objects slicing finds what the whole-image pass misses.

The detector here is a stand-in with a model's blind spot, not a model: it sees each input at a
fixed 512 px longer side (as a detector's preprocessing does) and finds the connected blobs of
that picture, missing those under 4 px there. `benchmarks/sliced_inference.py` measures the
same with the trained demo model.
"""

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from fcos_jax import errors
from fcos_jax.serving import slicing


@pytest.mark.parametrize('length,size,overlap', [(4000, 640, 0.2), (3000, 640, 0.2),
                                                 (640, 640, 0.2), (500, 640, 0.5),
                                                 (1000, 300, 0.0), (2001, 512, 0.75)])
def test_tiles_cover_every_pixel_with_the_overlap(length, size, overlap):
  starts = slicing.tile_origins(length, size, overlap)
  covered = np.zeros(length, int)
  for s in starts:
    covered[s:s + size] += 1
    assert s >= 0 and (min(s + size, length) - s == min(size, length))  # full-size tiles
  assert covered.min() >= 1
  for a, b in zip(starts, starts[1:]):
    assert 0 < b - a and a + size - b >= int(size * overlap)  # neighbours share the overlap
  assert starts[-1] + min(size, length) == length


def test_impossible_settings_are_user_errors():
  for size, overlap, needle in ((16, 0.2, 'at least 32'), (640, 1.0, '[0, 1)'),
                                (640, -0.1, '[0, 1)')):
    with pytest.raises(errors.UserError, match=needle.replace('[', r'\[').replace(')', r'\)')):
      slicing.check_settings(size, overlap)


def det(box, score, label=0):
  return {'bbox': list(map(float, box)), 'score': score, 'label': label}


def test_merge_keeps_the_whole_box_over_a_better_scoring_cut_piece():
  dets = [det([100, 10, 140, 40], 0.9),   # tile 1: whole
          det([100, 10, 120, 40], 0.95),  # tile 0: cut at its border x = 120
          det([105, 12, 118, 30], 0.8),   # tile 1: a box inside, same tile: kept
          det([100, 10, 140, 40], 0.7, label=1),  # another class: kept
          det([200, 10, 220, 40], 0.6)]   # tile 0: a cut piece that nothing covers: kept
  out = slicing.merge(dets, [1, 0, 1, 1, 0], [False, True, False, False, True])
  assert [d['bbox'] for d in out] == [[100, 10, 140, 40], [105, 12, 118, 30], [100, 10, 140, 40],
                                      [200, 10, 220, 40]]
  assert [d['score'] for d in out] == [0.9, 0.8, 0.7, 0.6]
  assert [d['label'] for d in out] == [0, 0, 1, 0]


def test_merge_keeps_disjoint_boxes_and_the_empty_case():
  assert slicing.merge([], [], []) == []
  dets = [det([0, 0, 10, 10], 0.5), det([20, 0, 30, 10], 0.6)]
  assert len(slicing.merge(dets, [0, 1], [False, False])) == 2


def test_a_box_is_cut_only_at_borders_inside_the_image():
  tile, hw = (0, 100, 200, 300), (200, 300)  # touches the image's top, bottom and right
  assert slicing.is_cut([100.5, 50, 150, 60], tile, hw, 1.0)       # at x0 = 100, inside
  assert not slicing.is_cut([102, 0, 300, 200], tile, hw, 1.0)     # only image borders
  assert not slicing.is_cut([110, 50, 150, 60], tile, hw, 1.0)


class BlobDetector:
  """Connected blobs of the input seen at a 512 px longer side; blobs under 4 px there are lost."""
  SIDE, MIN_PX = 512, 4

  def detect_many(self, images, batch_size=8):
    out = []
    for image in images:
      h, w = image.shape[:2]
      s = self.SIDE / max(h, w)
      small = np.asarray(Image.fromarray(image).resize((max(round(w * s), 1),
                                                        max(round(h * s), 1)), Image.BILINEAR))
      mask = small.max(-1) > 60
      labels, _ = ndimage.label(mask)
      dets = []
      for sl in ndimage.find_objects(labels):
        y, x = sl
        if min(y.stop - y.start, x.stop - x.start) < self.MIN_PX:
          continue
        box = [x.start / s, y.start / s, x.stop / s, y.stop / s]
        dets.append(det(box, float((x.stop - x.start) * (y.stop - y.start)) / 1e4))
      out.append(dets)
    return out


def iou(a, b):
  iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0)
  ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0)
  inter = iw * ih
  return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def small_objects_image(rng, h=3000, w=4000, n=400):
  """Bright squares of 12-32 px, at least 10 px apart, on a dark background."""
  image = np.full((h, w, 3), 20, np.uint8)
  boxes, taken = [], np.zeros((h, w), bool)
  while len(boxes) < n:
    side = int(rng.integers(12, 33))
    x, y = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
    if taken[max(y - 10, 0):y + side + 10, max(x - 10, 0):x + side + 10].any():
      continue
    taken[y:y + side, x:x + side] = True
    image[y:y + side, x:x + side] = rng.integers(120, 256, 3)
    boxes.append([x, y, x + side, y + side])
  return image, boxes


def recall(found, truth, thr=0.5):
  return np.mean([any(iou(d['bbox'], t) >= thr for d in found) for t in truth])


def test_slicing_finds_the_small_objects_without_duplicates_at_tile_borders():
  rng = np.random.default_rng(0)
  image, truth = small_objects_image(rng)
  detector = BlobDetector()
  whole = detector.detect_many([image])[0]
  sliced = slicing.detect_sliced(detector.detect_many, image, 640, 0.2)
  tiles = slicing.tiles(image.shape[:2], 640, 0.2)
  edges_x = {x for _, x, _, x1 in tiles for x in (x, x1)} - {0, image.shape[1]}
  edges_y = {y for y, _, y1, _ in tiles for y in (y, y1)} - {0, image.shape[0]}
  cut = [t for t in truth if any(t[0] < e < t[2] for e in edges_x) or
         any(t[1] < e < t[3] for e in edges_y)]
  assert len(cut) >= 30  # many objects straddle a tile border
  r_whole, r_sliced = recall(whole, truth), recall(sliced, truth)
  assert r_whole < 0.5 and r_sliced > 0.98, (r_whole, r_sliced)
  assert recall(sliced, cut) > 0.98
  # One box per object: no two detections of an object, none a border piece.
  assert len(sliced) == len(truth)
  for t in truth:
    matches = [d for d in sliced if iou(d['bbox'], t) > 0.1]
    # within the stand-in's own blur (bilinear at 0.8x: about a pixel each side)
    assert len(matches) == 1 and np.abs(np.subtract(matches[0]['bbox'], t)).max() <= 2.5, (
        t, matches)


def test_the_full_image_pass_adds_what_no_tile_holds_whole():
  """An object larger than any tile is only cut pieces in the tiles (kept: nothing better covers
  them); --slice_full brings the whole-image box, which replaces the pieces."""
  image = np.full((1200, 1600, 3), 20, np.uint8)
  image[200:1000, 300:1300] = 200
  detector = BlobDetector()
  pieces = slicing.detect_sliced(detector.detect_many, image, 400, 0.2)
  full = slicing.detect_sliced(detector.detect_many, image, 400, 0.2, full=True)
  assert len(pieces) > 1 and max(iou(d['bbox'], [300, 200, 1300, 1000]) for d in pieces) < 0.5
  assert len(full) == 1 and iou(full[0]['bbox'], [300, 200, 1300, 1000]) > 0.95
