"""The target assigner against a plain-loop numpy reference written from the FCOS definitions."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcos_jax import points, targets

STRIDES = (8, 16, 32, 64, 128)
RANGES = ((-1, 64), (64, 128), (128, 256), (256, 512), (512, 1e8))


def reference_targets(boxes, classes, valid, image_size, strides=STRIDES, ranges=RANGES,
                      radius=0.0, norm=False, inclusive=True):
  """One location at a time, one box at a time, straight from the definitions."""
  height, width = image_size
  out_cls, out_ltrb, out_ctr = [], [], []
  for s, (lo, hi) in zip(strides, ranges):
    fh, fw = math.ceil(height / s), math.ceil(width / s)
    for j in range(fh):
      for i in range(fw):
        x, y = i * s + s // 2, j * s + s // 2
        best, best_area = None, None
        for m in range(len(boxes)):
          if not valid[m]:
            continue
          x0, y0, x1, y1 = (float(v) for v in boxes[m])
          l, t, r, b = x - x0, y - y0, x1 - x, y1 - y
          if not (l > 0 and t > 0 and r > 0 and b > 0):
            continue
          if radius > 0:
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            if not (abs(x - cx) < radius * s and abs(y - cy) < radius * s):
              continue
          d = max(l, t, r, b)
          if inclusive and not (lo <= d <= hi):
            continue
          if not inclusive and not (lo < d < hi):
            continue
          area = (x1 - x0) * (y1 - y0)
          if best is None or area < best_area:
            best, best_area = m, area
        if best is None:
          out_cls.append(-1)
          out_ltrb.append((0.0, 0.0, 0.0, 0.0))
          out_ctr.append(0.0)
        else:
          x0, y0, x1, y1 = (float(v) for v in boxes[best])
          l, t, r, b = x - x0, y - y0, x1 - x, y1 - y
          out_cls.append(int(classes[best]))
          ctr = math.sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))
          div = s if norm else 1.0
          out_ltrb.append((l / div, t / div, r / div, b / div))
          out_ctr.append(ctr)
  return np.array(out_cls), np.array(out_ltrb), np.array(out_ctr)


def run_assigner(boxes, classes, valid, image_size, **kw):
  fn = jax.jit(lambda b, c, v: targets.assign_targets(
      b, c, v, image_size=image_size, strides=STRIDES, size_ranges=RANGES, **kw))
  return jax.tree_util.tree_map(np.asarray, fn(jnp.asarray(boxes, jnp.float32),
                                               jnp.asarray(classes, jnp.int32),
                                               jnp.asarray(valid, bool)))


def random_gt(rng, image_size, max_boxes, num_valid):
  """Boxes on a quarter-pixel grid (exact in float32), some reaching past the image border."""
  h, w = image_size
  sizes = rng.choice([6, 20, 50, 100, 200, 400, 700], size=max_boxes)
  wh = np.maximum(sizes[:, None] * rng.uniform(0.3, 1.5, (max_boxes, 2)), 1)
  c = rng.uniform(-20, [w + 20, h + 20], (max_boxes, 2))
  boxes = np.round(np.concatenate([c - wh / 2, c + wh / 2], axis=1) * 4) / 4
  classes = rng.integers(0, 10, max_boxes)
  valid = np.arange(max_boxes) < num_valid
  return boxes.astype(np.float32), classes, valid


def assert_matches(got, want):
  np.testing.assert_array_equal(got.classes, want[0])
  np.testing.assert_allclose(got.ltrb, want[1], rtol=1e-6, atol=1e-5)
  np.testing.assert_allclose(got.centerness, want[2], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('image_size', [(256, 384), (224, 160), (96, 352)])
@pytest.mark.parametrize('radius,norm', [(0.0, False), (1.5, True), (1.5, False)])
def test_random_boxes_match_reference(image_size, radius, norm):
  rng = np.random.default_rng(hash((image_size, radius, norm)) % 2**32)
  boxes, classes, valid = random_gt(rng, image_size, max_boxes=12, num_valid=9)
  got = run_assigner(boxes, classes, valid, image_size, center_sampling_radius=radius,
                     norm_reg_targets=norm)
  want = reference_targets(boxes, classes, valid, image_size, radius=radius, norm=norm)
  assert (want[0] >= 0).sum() > 20, 'test case should have many positives'
  assert_matches(got, want)


def test_shapes_for_sizes_multiple_of_32_only():
  # 224 = 7 * 32: P6 and P7 have ceil sizes 4 and 2.
  image_size = (224, 96)
  boxes = np.array([[10, 20, 90, 200]], np.float32)
  got = run_assigner(boxes, [3], [True], image_size)
  n = sum(math.ceil(224 / s) * math.ceil(96 / s) for s in STRIDES)
  assert got.classes.shape == (n,) and got.ltrb.shape == (n, 4) and got.centerness.shape == (n,)
  np.testing.assert_array_equal(got.classes, reference_targets(boxes, [3], [True], image_size)[0])


def test_no_boxes_and_all_padding_give_background():
  image_size = (128, 128)
  for valid in ([False] * 4, []):
    m = len(valid)
    boxes = np.tile(np.array([[0, 0, 100, 100]], np.float32), (m, 1)).reshape(m, 4)
    got = run_assigner(boxes, np.zeros(m, int), np.array(valid, bool), image_size)
    assert (got.classes == -1).all()
    assert (got.ltrb == 0).all() and (got.centerness == 0).all()


def test_nested_boxes_smallest_area_wins():
  image_size = (256, 256)
  # Small box inside a big one; both fit level P3/P4 around the small box's centre.
  boxes = np.array([[0, 0, 120, 120], [40, 40, 80, 80]], np.float32)
  got = run_assigner(boxes, [1, 2], [True, True], image_size)
  # Location (60, 60) on P3 (i = j = 7): inside both, max distance 60 and 20 (both in P3 range).
  idx = 7 * 32 + 7
  assert got.classes[idx] == 2
  np.testing.assert_allclose(got.ltrb[idx], [20, 20, 20, 20])
  assert got.centerness[idx] == pytest.approx(1.0)
  assert_matches(got, reference_targets(boxes, [1, 2], [True, True], image_size))


def test_equal_area_tie_goes_to_first_box():
  image_size = (128, 128)
  boxes = np.array([[0, 0, 60, 60], [10, 10, 70, 70]], np.float32)
  got = run_assigner(boxes, [4, 7], [True, True], image_size)
  idx = 5 * 16 + 5  # location (44, 44) on P3, inside both
  assert got.classes[idx] == 4
  assert_matches(got, reference_targets(boxes, [4, 7], [True, True], image_size))


def test_level_range_borders_are_inclusive():
  image_size = (256, 256)
  # P3 location (68, 68) (index (8, 8)) against a box with max distance exactly 64 = P3's upper end.
  boxes = np.array([[4, 4, 100, 100]], np.float32)
  p3 = 8 * 32 + 8
  got = run_assigner(boxes, [5], [True], image_size)
  assert got.classes[p3] == 5
  np.testing.assert_allclose(got.ltrb[p3], [64, 64, 32, 32])
  assert_matches(got, reference_targets(boxes, [5], [True], image_size))
  strict = run_assigner(boxes, [5], [True], image_size, inclusive_ranges=False)
  assert strict.classes[p3] == -1
  assert_matches(strict, reference_targets(boxes, [5], [True], image_size, inclusive=False))
  # P4 location (72, 72) (index (4, 4)) with max distance exactly 64 = P4's lower end.
  boxes = np.array([[8, 8, 120, 120]], np.float32)
  p4 = 32 * 32 + 4 * 16 + 4
  got = run_assigner(boxes, [6], [True], image_size)
  assert got.classes[p4] == 6
  np.testing.assert_allclose(got.ltrb[p4], [64, 64, 48, 48])
  strict = run_assigner(boxes, [6], [True], image_size, inclusive_ranges=False)
  assert strict.classes[p4] == -1
  assert_matches(got, reference_targets(boxes, [6], [True], image_size))


def test_degenerate_boxes_have_no_positives():
  image_size = (128, 128)
  boxes = np.array([[20, 20, 20, 80], [20, 50, 90, 50], [60, 60, 40, 40]], np.float32)
  got = run_assigner(boxes, [0, 1, 2], [True] * 3, image_size)
  assert (got.classes == -1).all()
  assert not np.isnan(got.centerness).any()


def test_boxes_partly_outside_image():
  image_size = (128, 128)
  boxes = np.array([[-40, -30, 30, 50], [100, 90, 200, 180]], np.float32)
  got = run_assigner(boxes, [1, 2], [True, True], image_size)
  want = reference_targets(boxes, [1, 2], [True, True], image_size)
  assert (want[0] == 1).any() and (want[0] == 2).any()
  assert_matches(got, want)


def test_all_max_boxes_used():
  rng = np.random.default_rng(7)
  image_size = (192, 256)
  boxes, classes, valid = random_gt(rng, image_size, max_boxes=16, num_valid=16)
  got = run_assigner(boxes, classes, valid, image_size, center_sampling_radius=1.5)
  assert_matches(got, reference_targets(boxes, classes, valid, image_size, radius=1.5))


def test_center_sampling_restricts_to_center_region():
  image_size = (256, 256)
  boxes = np.array([[8, 8, 248, 248]], np.float32)  # big box: P5/P6 level
  off = run_assigner(boxes, [0], [True], image_size)
  on = run_assigner(boxes, [0], [True], image_size, center_sampling_radius=1.5)
  assert (on.classes >= 0).sum() < (off.classes >= 0).sum()
  assert ((on.classes >= 0) <= (off.classes >= 0)).all()  # a subset
  assert_matches(on, reference_targets(boxes, [0], [True], image_size, radius=1.5))


def test_batched_vmap_matches_per_image():
  rng = np.random.default_rng(3)
  image_size = (128, 192)
  gts = [random_gt(rng, image_size, 6, n) for n in (0, 3, 6)]
  batch = [np.stack(x) for x in zip(*gts)]
  got = targets.assign_targets_batch(jnp.asarray(batch[0]), jnp.asarray(batch[1]),
                                     jnp.asarray(batch[2]), image_size=image_size)
  for k, gt in enumerate(gts):
    want = reference_targets(*gt, image_size)
    np.testing.assert_array_equal(np.asarray(got.classes[k]), want[0])
    np.testing.assert_allclose(np.asarray(got.ltrb[k]), want[1], atol=1e-5)


def test_torchvision_location_mode():
  image_size = (256, 320)
  xy = points.locations(image_size, STRIDES, mode='torchvision')
  # P7 is 2 x 3: torchvision's anchor stride is 256 // 2 = 128 in y and 320 // 3 = 106 in x.
  p7 = xy[-6:]
  np.testing.assert_array_equal(p7[:, 0], [0, 106, 212, 0, 106, 212])
  np.testing.assert_array_equal(p7[:, 1], [0, 0, 0, 128, 128, 128])
  half = points.locations(image_size, STRIDES)
  np.testing.assert_array_equal(half[:3], [[4, 4], [12, 4], [20, 4]])


def reference_match(boxes, valid, image_size, radius=0.0):
  """Per location: the box taken (smallest-area candidate), the candidate count (level ranges
  applied) and the count of boxes holding it at any level, straight from the definitions."""
  height, width = image_size
  out = []
  for s, (lo, hi) in zip(STRIDES, RANGES):
    for j in range(math.ceil(height / s)):
      for i in range(math.ceil(width / s)):
        x, y = i * s + s // 2, j * s + s // 2
        inside, cands = [], []
        for m in range(len(boxes)):
          x0, y0, x1, y1 = (float(v) for v in boxes[m])
          l, t, r, b = x - x0, y - y0, x1 - x, y1 - y
          if not valid[m] or min(l, t, r, b) <= 0:
            continue
          if radius > 0 and not (abs(x - (x0 + x1) / 2) < radius * s and
                                 abs(y - (y0 + y1) / 2) < radius * s):
            continue
          inside.append(m)
          if lo <= max(l, t, r, b) <= hi:
            cands.append(m)
        areas = [(boxes[m][2] - boxes[m][0]) * (boxes[m][3] - boxes[m][1]) for m in cands]
        out.append((cands[int(np.argmin(areas))] if cands else -1, len(cands), len(inside)))
  return np.array(out).T


@pytest.mark.parametrize('radius', [0.0, 1.5])
def test_match_locations_box_index_and_counts(radius):
  """The box index and the contest counts behind the targets (for the recall / ambiguity tools)."""
  image_size = (224, 160)
  rng = np.random.default_rng(5)
  boxes, classes, valid = random_gt(rng, image_size, max_boxes=10, num_valid=8)
  fn = jax.jit(lambda b, v: targets.match_locations(
      b, v, image_size=image_size, strides=STRIDES, size_ranges=RANGES,
      center_sampling_radius=radius))
  got = jax.tree_util.tree_map(np.asarray, fn(jnp.asarray(boxes), jnp.asarray(valid)))
  box, num_candidates, num_inside = reference_match(boxes, valid, image_size, radius)
  assert (num_candidates > 1).sum() >= 1 and (num_inside > num_candidates).sum() > 5
  np.testing.assert_array_equal(got.box, box)
  np.testing.assert_array_equal(got.num_candidates, num_candidates)
  np.testing.assert_array_equal(got.num_inside, num_inside)
  # The targets' classes come from the same box index.
  tg = run_assigner(boxes, classes, valid, image_size, center_sampling_radius=radius)
  np.testing.assert_array_equal(tg.classes, np.where(box >= 0, classes[np.maximum(box, 0)], -1))


def reference_atss(boxes, valid, image_size, strides=STRIDES, k=9, scale=8.0):
  """ATSS from Algorithm 1 of Zhang et al. 2020, one box and one location at a time: per level the
  k locations nearest the box centre (ties: lower location index first), IoU threshold mean + std
  of theirs (std with n - 1, as the official code's torch.std), centre more than 0.01 px inside;
  a location positive for several boxes takes the highest IoU (the first box on a tie).
  Returns per location (box index or -1, number of boxes it is positive for)."""
  height, width = image_size
  locs = []                                    # (x, y, stride, level)
  for li, s in enumerate(strides):
    for j in range(math.ceil(height / s)):
      for i in range(math.ceil(width / s)):
        locs.append((i * s + s // 2, j * s + s // 2, s, li))

  def iou(loc, box):
    x, y, s, _ = loc
    h = scale * s / 2
    ax0, ay0, ax1, ay1 = x - h, y - h, x + h, y + h
    x0, y0, x1, y1 = box
    iw = max(0.0, min(ax1, x1) - max(ax0, x0))
    ih = max(0.0, min(ay1, y1) - max(ay0, y0))
    inter = iw * ih
    return inter / ((ax1 - ax0) * (ay1 - ay0) + (x1 - x0) * (y1 - y0) - inter)

  positive_ious = [dict() for _ in locs]       # location -> {box: IoU}
  for m, box in enumerate(boxes):
    if not valid[m]:
      continue
    box = [float(v) for v in box]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    candidates = []
    for li in range(len(strides)):
      level = [n for n, loc in enumerate(locs) if loc[3] == li]
      level.sort(key=lambda n: ((locs[n][0] - cx) ** 2 + (locs[n][1] - cy) ** 2, n))
      candidates += level[:k]
    ious = [iou(locs[n], box) for n in candidates]
    mean = sum(ious) / len(ious)
    std = math.sqrt(sum((v - mean) ** 2 for v in ious) / (len(ious) - 1))
    for n, v in zip(candidates, ious):
      x, y = locs[n][0], locs[n][1]
      if v >= mean + std and min(x - box[0], y - box[1], box[2] - x, box[3] - y) > 0.01:
        positive_ious[n][m] = v
  out_box = [max(p, key=lambda m: (p[m], -m)) if p else -1 for p in positive_ious]
  return np.array(out_box), np.array([len(p) for p in positive_ious])


def run_atss(boxes, valid, image_size, **kw):
  fn = jax.jit(lambda b, v: targets.match_locations(
      b, v, image_size=image_size, strides=STRIDES, assigner='atss', **kw))
  return jax.tree_util.tree_map(np.asarray, fn(jnp.asarray(boxes), jnp.asarray(valid)))


@pytest.mark.parametrize('image_size,k,scale', [((256, 384), 9, 8.0), ((224, 160), 2, 8.0),
                                                ((96, 352), 1, 5.0)])
def test_atss_random_boxes_match_algorithm_1(image_size, k, scale):
  rng = np.random.default_rng(sum(image_size) + k)
  boxes, classes, valid = random_gt(rng, image_size, max_boxes=24, num_valid=20)
  got = run_atss(boxes, valid, image_size, atss_topk=k, atss_anchor_scale=scale)
  box, num_positive_for = reference_atss(boxes, valid, image_size, k=k, scale=scale)
  assert (box >= 0).sum() > 10 and (num_positive_for > 1).sum() >= 1
  np.testing.assert_array_equal(got.box, box)
  np.testing.assert_array_equal(got.num_candidates, num_positive_for)
  # The targets: the chosen box's class and distances, the same code path as training.
  tg = run_assigner(boxes, classes, valid, image_size, assigner='atss', atss_topk=k,
                    atss_anchor_scale=scale)
  np.testing.assert_array_equal(tg.classes, np.where(box >= 0, classes[np.maximum(box, 0)], -1))
  xy = points.locations(image_size, STRIDES)
  b = boxes[np.maximum(box, 0)]
  want_ltrb = np.stack([xy[:, 0] - b[:, 0], xy[:, 1] - b[:, 1],
                        b[:, 2] - xy[:, 0], b[:, 3] - xy[:, 1]], axis=1) * (box >= 0)[:, None]
  np.testing.assert_allclose(tg.ltrb, want_ltrb, atol=1e-5)
  assert np.all(tg.centerness[box >= 0] > 0) and np.all(tg.centerness[box < 0] == 0)


def test_atss_distance_ties_go_to_the_lower_location_index():
  """A box centred on a cell corner is equally far from four locations of each level; with
  k = 2 the two of lowest index are the candidates, as in the reference."""
  image_size = (128, 128)
  boxes = np.array([[40., 40., 88., 88.], [4., 70., 30., 120.]], np.float32)  # centre (64, 64)
  valid = np.array([True, True])
  got = run_atss(boxes, valid, image_size, atss_topk=2)
  box, num_positive_for = reference_atss(boxes, valid, image_size, k=2)
  xy = points.locations(image_size, STRIDES)
  p3 = np.arange(16 * 16)
  d = ((xy[p3] - 64) ** 2).sum(axis=1)
  assert (d == d.min()).sum() == 4, 'the case needs a four-way distance tie'
  np.testing.assert_array_equal(got.box, box)
  np.testing.assert_array_equal(got.num_candidates, num_positive_for)
  assert (box == 0).sum() >= 1


def test_atss_no_boxes_and_all_padding_give_background():
  for boxes, valid in [(np.zeros((0, 4), np.float32), np.zeros((0,), bool)),
                       (np.array([[10., 10., 60., 60.]] * 3, np.float32), np.zeros(3, bool))]:
    got = run_atss(boxes, valid, (96, 128))
    assert np.all(got.box == -1) and np.all(got.ltrb == 0) and np.all(got.num_candidates == 0)


def test_atss_from_a_model_config():
  """`model.assigner = 'atss'` reaches the assigner through `assigner_kwargs`."""
  from fcos_jax.configs import coco
  m = coco.get_model_config()
  m.assigner, m.atss_topk = 'atss', 3
  kw = targets.assigner_kwargs(m)
  assert (kw['assigner'], kw['atss_topk'], kw['atss_anchor_scale']) == ('atss', 3, 8.0)
  boxes, valid = np.array([[30., 20., 90., 70.]], np.float32), np.array([True])
  got = targets.match_locations(boxes, valid, image_size=(96, 128), **targets.match_kwargs(m))
  box, _ = reference_atss(boxes, valid, (96, 128), k=3)
  np.testing.assert_array_equal(np.asarray(got.box), box)
