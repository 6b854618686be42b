"""NMS and the full postprocess against sequential numpy references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcos_jax import postprocess

STRIDES = (8, 16, 32, 64, 128)


def np_iou(a, b):
  iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0)
  ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0)
  inter = iw * ih
  union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
  return inter / union if union > 0 else 0.0


def greedy_nms(boxes, scores, classes, thr):
  """Plain sequential greedy class-wise NMS: indices kept, best first."""
  order = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable: ties keep index order
  kept = []
  for i in order:
    if all(classes[i] != classes[k] or np_iou(boxes[i], boxes[k]) <= thr for k in kept):
      kept.append(i)
  return kept


def random_boxes(rng, k, size=100.0):
  xy = rng.uniform(0, size, (k, 2))
  wh = rng.uniform(2, size / 3, (k, 2))
  return np.concatenate([xy, xy + wh], 1).astype(np.float32)


@pytest.mark.parametrize('seed,num_classes,thr', [(0, 1, 0.5), (1, 3, 0.6), (2, 5, 0.3)])
def test_nms_matches_sequential_greedy(seed, num_classes, thr):
  rng = np.random.default_rng(seed)
  k = 300
  boxes = random_boxes(rng, k)
  scores = rng.random(k).astype(np.float32)
  classes = rng.integers(0, num_classes, k)
  valid = rng.random(k) < 0.9
  nms = jax.jit(lambda *a: postprocess.class_wise_nms(*a, iou_threshold=thr, max_output=k))
  idx, found = (np.asarray(x) for x in nms(boxes, scores, classes, valid))
  sel = [i for i in range(k) if valid[i]]
  want = [sel[i] for i in greedy_nms(boxes[sel], scores[sel], classes[sel], thr)]
  assert len(want) > 10
  assert list(idx[found]) == want
  assert not found[len(want):].any()


def test_nms_over_a_batch_matches_sequential_greedy_per_image():
  """Leading batch dims run inside the loop: each row is its own greedy NMS."""
  rng = np.random.default_rng(9)
  b, k = 3, 120
  boxes = np.stack([random_boxes(rng, k) for _ in range(b)])
  scores = rng.random((b, k)).astype(np.float32)
  classes = rng.integers(0, 3, (b, k))
  valid = rng.random((b, k)) < 0.9
  idx, found = (np.asarray(x) for x in postprocess.class_wise_nms(
      boxes, scores, classes, valid, iou_threshold=0.5, max_output=40))
  assert idx.shape == found.shape == (b, 40)
  for row in range(b):
    sel = [i for i in range(k) if valid[row, i]]
    want = [sel[i] for i in greedy_nms(boxes[row][sel], scores[row][sel], classes[row][sel],
                                       0.5)][:40]
    assert len(want) > 10
    assert list(idx[row][found[row]]) == want


def test_nms_truncates_to_max_output_keeping_the_best():
  rng = np.random.default_rng(5)
  boxes = random_boxes(rng, 200)
  scores = rng.random(200).astype(np.float32)
  classes = np.zeros(200, int)
  idx, found = postprocess.class_wise_nms(boxes, scores, classes, np.ones(200, bool),
                                          iou_threshold=0.5, max_output=7)
  want = greedy_nms(boxes, scores, classes, 0.5)[:7]
  assert list(np.asarray(idx)) == want and np.asarray(found).all()


def test_nms_with_ties_and_identical_boxes():
  boxes = np.array([[0, 0, 10, 10]] * 4 + [[50, 50, 60, 60]], np.float32)
  scores = np.array([0.5, 0.5, 0.9, 0.5, 0.5], np.float32)
  classes = np.array([0, 1, 0, 1, 0])
  idx, found = postprocess.class_wise_nms(boxes, scores, classes, np.ones(5, bool),
                                          iou_threshold=0.6, max_output=5)
  assert list(np.asarray(idx)[np.asarray(found)]) == greedy_nms(boxes, scores, classes, 0.6)
  assert list(np.asarray(idx)[np.asarray(found)]) == [2, 1, 4]


def soft_nms(boxes, scores, classes, method, nt, sigma, min_score):
  """Soft-NMS from the paper's pseudocode (Bodla et al. 2017, Algorithm 1), per class: while B is
  not empty, move the box M of highest score from B to D, rescore every b_i left in B of M's class
  by f(iou(M, b_i)), drop those under min_score. Returns (index, score at selection), in order."""
  left = {i: float(scores[i]) for i in range(len(scores)) if scores[i] >= min_score}
  out = []
  while left:
    m = max(left, key=lambda i: (left[i], -i))  # ties: the lower index
    out.append((m, left.pop(m)))
    for i in list(left):
      if classes[i] != classes[m]:
        continue
      ov = np_iou(boxes[m], boxes[i])
      if method == 'linear':
        left[i] *= (1 - ov) if ov > nt else 1.0
      else:
        left[i] *= math.exp(-ov * ov / sigma)
      if left[i] < min_score:
        del left[i]
  return out


@pytest.mark.parametrize('method,seed,num_classes', [('linear', 0, 1), ('gaussian', 1, 3),
                                                     ('linear', 2, 4), ('gaussian', 3, 1)])
def test_soft_nms_matches_the_papers_algorithm(method, seed, num_classes):
  rng = np.random.default_rng(seed)
  b, k = 2, 150
  boxes = np.stack([random_boxes(rng, k, 60.0) for _ in range(b)])  # crowded: many decays
  scores = rng.random((b, k)).astype(np.float32)
  classes = rng.integers(0, num_classes, (b, k))
  valid = rng.random((b, k)) < 0.9
  nt, sigma, min_score, max_out = 0.3, 0.5, 0.05, 120
  nms = jax.jit(lambda *a: postprocess.class_wise_soft_nms(
      *a, method=method, iou_threshold=nt, sigma=sigma, min_score=min_score, max_output=max_out))
  idx, found, kept = (np.asarray(x) for x in nms(boxes, scores, classes, valid))
  assert idx.shape == found.shape == kept.shape == (b, max_out)
  for row in range(b):
    sel = [i for i in range(k) if valid[row, i]]
    want = soft_nms(boxes[row][sel], scores[row][sel], classes[row][sel], method, nt, sigma,
                    min_score)[:max_out]
    greedy = greedy_nms(boxes[row][sel], scores[row][sel], classes[row][sel], nt)
    assert len(want) > len(greedy)  # it keeps decayed overlaps that greedy NMS removes
    assert list(idx[row][found[row]]) == [sel[i] for i, _ in want]
    np.testing.assert_allclose(kept[row][found[row]], [v for _, v in want], rtol=1e-5)
    assert (np.diff(kept[row][found[row]]) <= 0).all()
    assert not found[row][len(want):].any()


def test_soft_nms_keeps_disjoint_boxes_and_decays_overlaps():
  """Hand-checkable: two boxes of IoU 0.5 and one far away; linear at Nt 0.3 gives the second
  0.8 * (1 - 0.5), gaussian 0.8 * exp(-0.25 / 0.5); another class is never decayed."""
  boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [50, 50, 60, 60], [0, 0, 10, 10]],
                   np.float32)
  scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
  classes = np.array([0, 0, 0, 1])
  for method, second in (('linear', 0.4), ('gaussian', 0.8 * math.exp(-0.5))):
    idx, found, kept = postprocess.class_wise_soft_nms(
        boxes, scores, classes, np.ones(4, bool), method=method, iou_threshold=0.3, sigma=0.5,
        min_score=0.001, max_output=4)
    assert np.asarray(found).all()
    got = dict(zip(np.asarray(idx).tolist(), np.asarray(kept).tolist()))
    np.testing.assert_allclose([got[0], got[1], got[2], got[3]], [0.9, second, 0.7, 0.6],
                               rtol=1e-6)


def clipped_box(x, y, d, clip_size):
  box = [x - d[0], y - d[1], x + d[2], y + d[3]]
  return [min(max(box[0], 0), clip_size[1]), min(max(box[1], 0), clip_size[0]),
          min(max(box[2], 0), clip_size[1]), min(max(box[3], 0), clip_size[0])]


def reference_postprocess(cls_logits, reg, ctr, image_size, clip_size, *, norm, thr,
                          on_combined, top_n, nms_thr, max_det, sqrt_score, drop_outside=False,
                          nms_method='greedy'):
  """Straight from the definitions, one level and one candidate at a time. `drop_outside`:
  skip locations outside the clip size and boxes that clip to zero area, before the top-k."""
  h, w = image_size
  prob = 1 / (1 + np.exp(-cls_logits.astype(np.float64)))
  cprob = 1 / (1 + np.exp(-ctr.astype(np.float64)))
  cand_boxes, cand_scores, cand_classes = [], [], []
  start = 0
  for s in STRIDES:
    fh, fw = math.ceil(h / s), math.ceil(w / s)
    level = []
    for j in range(fh):
      for i in range(fw):
        n = start + j * fw + i
        for c in range(cls_logits.shape[1]):
          score = prob[n, c] * cprob[n]
          final = math.sqrt(score) if sqrt_score else score
          x, y = i * s + s // 2, j * s + s // 2
          box = clipped_box(x, y, reg[n] * (s if norm else 1.0), clip_size)
          if drop_outside and (x >= clip_size[1] or y >= clip_size[0] or
                               box[2] <= box[0] or box[3] <= box[1]):
            continue
          if (final if on_combined else prob[n, c]) > thr:
            level.append((score, c, box))
    level.sort(key=lambda e: -e[0])
    for score, c, box in level[:top_n]:
      cand_boxes.append(box)
      cand_scores.append(math.sqrt(score) if sqrt_score else score)
      cand_classes.append(c)
    start += fh * fw
  if nms_method != 'greedy':
    kept = soft_nms(np.array(cand_boxes), cand_scores, cand_classes, nms_method, nms_thr, 0.5,
                    0.001)[:max_det]
    return ([cand_boxes[k] for k, _ in kept], [v for _, v in kept],
            [cand_classes[k] for k, _ in kept])
  keep = greedy_nms(np.array(cand_boxes), cand_scores, cand_classes, nms_thr)[:max_det]
  return ([cand_boxes[k] for k in keep], [cand_scores[k] for k in keep],
          [cand_classes[k] for k in keep])


@pytest.mark.parametrize('norm,on_combined,sqrt_score,nms_method', [
    (False, False, True, 'greedy'), (True, True, True, 'greedy'), (True, False, False, 'greedy'),
    (False, False, True, 'linear'), (True, False, True, 'gaussian')])
def test_postprocess_matches_reference(norm, on_combined, sqrt_score, nms_method):
  rng = np.random.default_rng(11)
  image_size, clip, num_classes = (96, 128), (90, 100), 3
  n = sum(math.ceil(96 / s) * math.ceil(128 / s) for s in STRIDES)
  cls_logits = rng.normal(-2.5, 1.5, (n, num_classes)).astype(np.float32)
  reg = rng.uniform(0.5, 3 if norm else 30, (n, 4)).astype(np.float32)
  ctr = rng.normal(0, 1, n).astype(np.float32)
  kw = dict(score_threshold=0.3, threshold_on_combined=on_combined, pre_nms_top_n=20,
            nms_threshold=0.5, max_detections=15, sqrt_score=sqrt_score, nms_method=nms_method)
  fn = jax.jit(lambda c, r, t, cs: postprocess.postprocess_image(
      c, r, t, image_size=image_size, clip_size=cs, strides=STRIDES, norm_reg_targets=norm, **kw))
  det = jax.tree_util.tree_map(np.asarray, fn(cls_logits, reg, ctr, np.array(clip, np.float32)))
  want_boxes, want_scores, want_classes = reference_postprocess(
      cls_logits, reg, ctr, image_size, clip, norm=norm, thr=0.3, on_combined=on_combined,
      top_n=20, nms_thr=0.5, max_det=15, sqrt_score=sqrt_score, nms_method=nms_method)
  k = len(want_scores)
  assert 5 <= k <= 15
  assert det.num_valid == k and det.valid[:k].all() and not det.valid[k:].any()
  np.testing.assert_allclose(det.boxes[:k], want_boxes, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(det.scores[:k], want_scores, rtol=1e-5)
  np.testing.assert_array_equal(det.classes[:k], want_classes)
  assert (det.boxes[:, 2] <= clip[1]).all() and (det.boxes[:, 3] <= clip[0]).all()


@pytest.mark.parametrize('drop_outside', [False, True])
def test_no_detection_from_the_padding(drop_outside):
  """Padding locations score high here: kept, they end as zero-area boxes on the clip border
  (what torchvision does); with `drop_outside` none enters the candidates, and the result is
  the reference's that skips them before the top-k."""
  rng = np.random.default_rng(3)
  image_size, clip, num_classes = (96, 128), (70, 90), 2
  n = sum(math.ceil(96 / s) * math.ceil(128 / s) for s in STRIDES)
  cls_logits = rng.normal(-1.0, 1.5, (n, num_classes)).astype(np.float32)
  reg = rng.uniform(0.1, 12, (n, 4)).astype(np.float32)
  ctr = rng.normal(0, 1, n).astype(np.float32)
  kw = dict(score_threshold=0.3, threshold_on_combined=True, pre_nms_top_n=30,
            nms_threshold=0.5, max_detections=40, sqrt_score=True)
  det = jax.tree_util.tree_map(np.asarray, jax.jit(
      lambda c, r, t: postprocess.postprocess_image(
          c, r, t, image_size=image_size, clip_size=np.array(clip, np.float32),
          strides=STRIDES, drop_outside=drop_outside, **kw))(cls_logits, reg, ctr))
  boxes = det.boxes[det.valid]
  empty = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
  if not drop_outside:
    assert empty.sum() >= 5  # the defect: clipped padding boxes take places in the output
    return
  assert not empty.any() and det.num_valid == 40
  want_boxes, want_scores, want_classes = reference_postprocess(
      cls_logits, reg, ctr, image_size, clip, norm=False, thr=0.3, on_combined=True, top_n=30,
      nms_thr=0.5, max_det=40, sqrt_score=True, drop_outside=True)
  np.testing.assert_allclose(det.boxes[det.valid], want_boxes, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(det.scores[det.valid], want_scores, rtol=1e-5)
  np.testing.assert_array_equal(det.classes[det.valid], want_classes)


def test_batched_output_shapes_and_padding_rows():
  image_size = (64, 96)
  n = sum(math.ceil(64 / s) * math.ceil(96 / s) for s in STRIDES)
  cls_logits = jnp.full((2, n, 4), -10.0).at[1, 5, 2].set(5.0)  # one confident detection
  reg = jnp.ones((2, n, 4)) * 10
  ctr = jnp.zeros((2, n))
  det = postprocess.postprocess(cls_logits, reg, ctr, image_size=image_size, strides=STRIDES,
                                max_detections=100)
  assert det.boxes.shape == (2, 100, 4) and det.scores.shape == (2, 100)
  assert det.classes.shape == (2, 100) and det.valid.shape == (2, 100)
  np.testing.assert_array_equal(np.asarray(det.num_valid), [0, 1])
  assert int(det.classes[1, 0]) == 2
  # Location 5 of P3 sits at (44, 4): box (34, -6, 54, 14) clipped at y = 0.
  np.testing.assert_allclose(np.asarray(det.boxes[1, 0]), [34, 0, 54, 14])
  assert (np.asarray(det.classes[0]) == -1).all() and (np.asarray(det.scores[0]) == 0).all()
  assert (np.asarray(det.boxes[1, 1:]) == 0).all() and (np.asarray(det.classes[1, 1:]) == -1).all()


def _postprocess_text(platform, recall):
  """The StableHLO of the batched postprocess lowered for `platform` at this top-k recall."""
  image_size = (64, 96)
  n = sum(math.ceil(64 / s) * math.ceil(96 / s) for s in STRIDES)
  fn = jax.jit(lambda c, r, t: postprocess.postprocess(
      c, r, t, image_size=image_size, strides=STRIDES, pre_nms_top_n=50,
      tpu_top_k_recall=recall))
  args = (jax.ShapeDtypeStruct((2, n, 3), jnp.float32), jax.ShapeDtypeStruct((2, n, 4), jnp.float32),
          jax.ShapeDtypeStruct((2, n), jnp.float32))
  return jax.export.export(fn, platforms=[platform])(*args).mlir_module()


@pytest.mark.parametrize('platform,recall,approximate', [
    ('tpu', 0.99, True), ('tpu', 1.0, False), ('cuda', 0.99, False), ('cpu', 0.99, False)])
def test_tpu_programs_take_the_approximate_top_k(platform, recall, approximate):
  """Lowered here for each platform: only a TPU program below recall 1 holds XLA's ApproxTopK;
  the others sort exactly (chlo.top_k), and no platform choice is left in any of them."""
  text = _postprocess_text(platform, recall)
  assert ('ApproxTopK' in text) == approximate
  assert ('chlo.top_k' in text) != approximate
  assert 'platform_index' not in text


@pytest.mark.parametrize('seed', [0, 1])
def test_the_tpu_top_k_form_finds_the_exact_candidates(seed):
  """The TPU branch's `approx_max_k`, at recall 1.0 (here sizes allow it), against the exact
  top-k on a level of 40x60 locations x 80 classes with ties and -inf entries: the same
  candidates and values. At the config's recall on CPU (where XLA computes it exactly) too."""
  rng = np.random.default_rng(seed)
  scores = rng.uniform(0, 1, 40 * 60 * 80).astype(np.float32)
  scores[rng.integers(0, scores.size, 5000)] = -np.inf
  scores[:300] = 0.5  # ties
  want_v, want_i = jax.lax.top_k(scores, 1000)
  for recall in (1.0, 0.99):
    v, i = jax.jit(lambda s: jax.lax.approx_max_k(s, 1000, recall_target=recall))(scores)
    np.testing.assert_array_equal(np.asarray(v), np.asarray(want_v))
    assert set(np.asarray(i).tolist()) == set(np.asarray(want_i).tolist())
  v, i = jax.jit(lambda s: postprocess.level_top_k(s, 1000, 0.99))(scores)
  np.testing.assert_array_equal(np.asarray(v), np.asarray(want_v))
  np.testing.assert_array_equal(np.asarray(i), np.asarray(want_i))
