"""FCOS inference postprocess with static shapes: decode, score, per-level top-k, class-wise NMS.

Everything is jit-able and vmapped over the batch; the output always has `max_detections` rows
per image, with a validity mask and a count.
"""

from typing import NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from fcos_jax import points as points_lib
from fcos_jax.models.layers import per_platform_tpu


class Detections(NamedTuple):
  boxes: jnp.ndarray       # [..., K, 4] (x0, y0, x1, y1) in input pixels; 0 on padding rows.
  scores: jnp.ndarray      # [..., K] descending; 0 on padding rows.
  classes: jnp.ndarray     # [..., K] int32; -1 on padding rows.
  valid: jnp.ndarray       # [..., K] bool.
  num_valid: jnp.ndarray   # [...] int32.
  class_probs: jnp.ndarray  # [..., K] class probability alone (no centerness); 0 on padding.


def decode_boxes(ltrb, xy, scale):
  """Boxes (x0, y0, x1, y1) from distances `ltrb` [..., 4] at locations `xy` [..., 2].

  `scale` [...] multiplies the distances (the stride when targets are normalized by it, else 1).
  """
  d = ltrb * scale[..., None]
  return jnp.concatenate([xy - d[..., :2], xy + d[..., 2:]], axis=-1)


def box_iou_one_to_many(box, boxes):
  """IoU of box [..., 4] against boxes [..., K, 4] (same leading dims): [..., K]."""
  box = box[..., None, :]
  ix0 = jnp.maximum(box[..., 0], boxes[..., 0])
  iy0 = jnp.maximum(box[..., 1], boxes[..., 1])
  ix1 = jnp.minimum(box[..., 2], boxes[..., 2])
  iy1 = jnp.minimum(box[..., 3], boxes[..., 3])
  inter = jnp.maximum(ix1 - ix0, 0) * jnp.maximum(iy1 - iy0, 0)
  area = (box[..., 2] - box[..., 0]) * (box[..., 3] - box[..., 1])
  areas = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
  union = area + areas - inter
  return inter / jnp.where(union > 0, union, 1.0)


def _take(x, idx):
  """x[..., idx[...], ...] along the candidate axis (-1 for [..., K], -2 for [..., K, 4])."""
  if x.ndim == idx.ndim:
    return jnp.take_along_axis(x, idx, axis=-1)
  return jnp.take_along_axis(x, idx[..., None], axis=-2)


def class_wise_nms(boxes, scores, classes, valid, *, iou_threshold: float, max_output: int):
  """Greedy class-wise NMS returning the first `max_output` kept boxes, best first.

  Exactly the kept set of sequential greedy NMS (a box is removed when its IoU with a kept box of
  the same class is > iou_threshold), truncated to `max_output`: each of the `max_output` steps
  picks the best remaining box and suppresses its overlaps, O(max_output * K) work and no K x K
  matrix. Ties in score go to the lower index.

  Args: boxes [..., K, 4], scores [..., K], classes [..., K], valid [..., K] (any leading batch
  dims, handled inside the loop rather than by `vmap`, so that the loop exports to ONNX as one
  Loop). Returns indices [..., max_output] into the inputs and a mask of which are real.
  """
  boxes, scores, classes = jnp.asarray(boxes), jnp.asarray(scores), jnp.asarray(classes)
  alive = jnp.asarray(valid, bool)
  positions = jnp.arange(scores.shape[-1])

  def step(alive, _):
    i = jnp.argmax(jnp.where(alive, scores, -jnp.inf), axis=-1)[..., None]  # [..., 1]
    found = _take(alive, i)
    suppress = ((box_iou_one_to_many(_take(boxes, i)[..., 0, :], boxes) > iou_threshold)
                & (classes == _take(classes, i)))
    # `!= i` rather than `.at[i].set(False)`: a mask needs no scatter.
    alive = alive & ~suppress & found & (positions != i)
    return alive, (i[..., 0], found[..., 0])

  _, (idx, found) = jax.lax.scan(step, alive, None, length=max_output)
  return jnp.moveaxis(idx, 0, -1), jnp.moveaxis(found, 0, -1)


NMS_METHODS = ('greedy', 'linear', 'gaussian')


def class_wise_soft_nms(boxes, scores, classes, valid, *, method: str, iou_threshold: float,
                        sigma: float, min_score: float, max_output: int):
  """Class-wise Soft-NMS (Bodla et al. 2017, Algorithm 1): the first `max_output` boxes it
  selects, each with its decayed score; the selected scores never increase.

  Each step selects the remaining box of highest current score and decays the current scores of
  the other boxes of its class by f(IoU): 'linear' 1 - IoU where IoU > iou_threshold (else 1),
  'gaussian' exp(-IoU^2 / sigma); a box whose score falls below `min_score` is discarded. Ties go
  to the lower index. Same static shapes and loop as `class_wise_nms`, so it exports alike.
  Returns indices [..., max_output], a mask of which are real, and their scores.
  """
  if method not in ('linear', 'gaussian'):
    raise ValueError(f'soft-NMS method {method!r}: one of linear, gaussian')
  boxes, classes = jnp.asarray(boxes), jnp.asarray(classes)
  current = jnp.asarray(scores, jnp.float32)
  alive = jnp.asarray(valid, bool) & (current >= min_score)
  positions = jnp.arange(current.shape[-1])

  def step(carry, _):
    alive, current = carry
    i = jnp.argmax(jnp.where(alive, current, -jnp.inf), axis=-1)[..., None]  # [..., 1]
    found = _take(alive, i)
    score = _take(current, i)
    iou = box_iou_one_to_many(_take(boxes, i)[..., 0, :], boxes)
    if method == 'linear':
      decay = jnp.where(iou > iou_threshold, 1.0 - iou, 1.0)
    else:
      decay = jnp.exp(-(iou * iou) / sigma)
    current = jnp.where(classes == _take(classes, i), current * decay, current)
    alive = alive & found & (positions != i) & (current >= min_score)
    return (alive, current), (i[..., 0], found[..., 0], score[..., 0])

  _, (idx, found, kept) = jax.lax.scan(step, (alive, current), None, length=max_output)
  return tuple(jnp.moveaxis(x, 0, -1) for x in (idx, found, kept))


def level_top_k(scores, k: int, recall: float = 1.0):
  """The `k` best of `scores` [M] (values, indices). With `recall` < 1, TPU programs take
  `lax.approx_max_k` at that recall target (TPUs sort slowly; the approximate form is their
  native one), every other platform the exact `lax.top_k`."""
  def exact(s):
    return jax.lax.top_k(s, k)
  if recall >= 1.0:
    return exact(scores)
  return per_platform_tpu(lambda s: jax.lax.approx_max_k(s, k, recall_target=recall), exact,
                          scores)


def _clip(boxes, clip_hw):
  """Boxes [..., K, 4] clipped to [0, w] x [0, h] of `clip_hw` [..., 2] (h, w)."""
  clip_hw = jnp.asarray(clip_hw, jnp.float32)
  # [..., 1, 4] rather than [..., 4]: explicit ranks keep the ONNX converter's broadcasting right.
  upper = jnp.stack([clip_hw[..., 1], clip_hw[..., 0], clip_hw[..., 1], clip_hw[..., 0]],
                    axis=-1)[..., None, :]
  return jnp.minimum(jnp.maximum(boxes, 0.0), upper)


def _scores(cls_logits, centerness, *, sqrt_score: bool, centerness_from_logits: bool):
  """Class probabilities [N, C] and final scores [N, C] (cls x centerness, or its root)."""
  prob = jax.nn.sigmoid(cls_logits.astype(jnp.float32))
  ctr = centerness.astype(jnp.float32)
  if centerness_from_logits:
    ctr = jax.nn.sigmoid(ctr)
  combined = prob * ctr[:, None]
  return prob, jnp.sqrt(combined) if sqrt_score else combined


def _every_location(bbox_reg, clip_size, pts, scale):
  """Every location's clipped box [N, 4], and which locations are usable [N]: the centre inside
  the unpadded image (h, w) = `clip_size` and the clipped box not empty."""
  xy = jnp.asarray(pts.xy)
  clip_size = jnp.asarray(clip_size, jnp.float32)
  boxes = _clip(decode_boxes(bbox_reg.astype(jnp.float32), xy, scale), clip_size)
  inside = (xy[:, 0] < clip_size[1]) & (xy[:, 1] < clip_size[0])
  nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
  return boxes, inside & nonempty


def _reg_scale(pts, norm_reg_targets: bool):
  """What the regressed distances are multiplied by: the stride, or 1."""
  return jnp.asarray(pts.stride if norm_reg_targets else np.ones_like(pts.stride))


class _Candidates(NamedTuple):
  boxes: jnp.ndarray        # [P, 4] decoded, clipped
  scores: jnp.ndarray       # [P] final scores; 0 where not ok
  classes: jnp.ndarray      # [P] int32
  ok: jnp.ndarray           # [P] bool
  class_probs: jnp.ndarray  # [P]


def _candidates(cls_logits, bbox_reg, centerness, clip_size, *,
                image_size: Tuple[int, int],
                strides: Sequence[int],
                location_mode: str = 'half',
                norm_reg_targets: bool = False,
                score_threshold: float = 0.05,
                threshold_on_combined: bool = False,
                pre_nms_top_n: int = 1000,
                tpu_top_k_recall: float = 1.0,
                sqrt_score: bool = True,
                drop_outside: bool = False,
                centerness_from_logits: bool = True) -> _Candidates:
  """The per-level top-k candidates of one image (see `postprocess_image`)."""
  pts = points_lib.make_points(image_size, strides, location_mode)
  num_classes = cls_logits.shape[-1]
  prob, combined = _scores(cls_logits, centerness, sqrt_score=sqrt_score,
                           centerness_from_logits=centerness_from_logits)
  passed = (combined if threshold_on_combined else prob) > score_threshold

  scale = _reg_scale(pts, norm_reg_targets)
  if drop_outside:  # every location's clipped box: [N, 4] is cheap next to [N, C] scores
    passed = passed & _every_location(bbox_reg, clip_size, pts, scale)[1][:, None]

  cand_loc, cand_cls, cand_score, cand_ok = [], [], [], []
  start = 0
  for h, w in pts.level_sizes:
    n = h * w
    sl = slice(start, start + n)
    flat_score = jnp.where(passed[sl], combined[sl], -jnp.inf).reshape(-1)
    k = min(pre_nms_top_n, n * num_classes)
    top_score, top_idx = level_top_k(flat_score, k, tpu_top_k_recall)
    # lax.div truncates (= floor for these non-negative indices) without the sign fix-ups of
    # `//` and `%`, which the ONNX converter mishandles under a symbolic batch dimension.
    top_loc = jax.lax.div(top_idx, num_classes)
    cand_loc.append(start + top_loc)
    cand_cls.append(top_idx - top_loc * num_classes)
    cand_score.append(top_score)
    cand_ok.append(top_score > -jnp.inf)
    start += n
  loc = jnp.concatenate(cand_loc)
  cls = jnp.concatenate(cand_cls).astype(jnp.int32)
  ok = jnp.concatenate(cand_ok)
  score = jnp.where(ok, jnp.concatenate(cand_score), 0.0)
  boxes = _clip(decode_boxes(bbox_reg.astype(jnp.float32)[loc], jnp.asarray(pts.xy)[loc],
                            scale[loc]), clip_size)
  return _Candidates(boxes, score, cls, ok, prob[loc, cls])


def _detections(cand: _Candidates, *, nms_threshold: float, max_detections: int,
                nms_method: str = 'greedy', soft_nms_sigma: float = 0.5,
                soft_nms_min_score: float = 0.001) -> Detections:
  """Class-wise NMS (greedy or soft) over the candidates [..., P] and the fixed-size rows."""
  if nms_method == 'greedy':
    keep, found = class_wise_nms(cand.boxes, cand.scores, cand.classes, cand.ok,
                                 iou_threshold=nms_threshold, max_output=max_detections)
    kept_scores = _take(cand.scores, keep)
  else:
    keep, found, kept_scores = class_wise_soft_nms(
        cand.boxes, cand.scores, cand.classes, cand.ok, method=nms_method,
        iou_threshold=nms_threshold, sigma=soft_nms_sigma, min_score=soft_nms_min_score,
        max_output=max_detections)
  return Detections(
      boxes=jnp.where(found[..., None], _take(cand.boxes, keep), 0.0),
      scores=jnp.where(found, kept_scores, 0.0),
      classes=jnp.where(found, _take(cand.classes, keep), -1),
      valid=found,
      num_valid=jnp.sum(found, axis=-1).astype(jnp.int32),
      class_probs=jnp.where(found, _take(cand.class_probs, keep), 0.0))


def postprocess_image(cls_logits, bbox_reg, centerness, *, image_size: Tuple[int, int],
                      clip_size: Optional[jnp.ndarray] = None, **kwargs) -> Detections:
  """Detections for one image from its flat outputs [N, C], [N, 4], [N].

  Per level: keep (location, class) pairs whose class probability (or, with
  `threshold_on_combined`, the final score, as torchvision does) exceeds `score_threshold`, take the
  `pre_nms_top_n` best by class probability x centerness, decode, clip to `clip_size` (h, w) (the
  unpadded image; default the padded input), then class-wise NMS over all levels and keep the best
  `max_detections`. Final score = cls x centerness, or its square root with `sqrt_score`.
  `centerness` holds logits, or probabilities used as they are when `centerness_from_logits` is
  False (e.g. the ground-truth centerness of the oracle evaluation). `drop_outside`: locations
  whose centre is outside the unpadded image (x >= w or y >= h) and boxes that clip to zero area
  never enter the candidates (torchvision keeps them: False reproduces it).
  """
  det = postprocess(cls_logits[None], bbox_reg[None], centerness[None], image_size=image_size,
                    clip_sizes=None if clip_size is None else jnp.asarray(clip_size)[None],
                    **kwargs)
  return jax.tree_util.tree_map(lambda x: x[0], det)


def postprocess(cls_logits, bbox_reg, centerness, *, image_size, clip_sizes=None,
                nms_threshold: float = 0.6, max_detections: int = 100,
                nms_method: str = 'greedy', soft_nms_sigma: float = 0.5,
                soft_nms_min_score: float = 0.001, **kwargs) -> Detections:
  """`postprocess_image` over a batch; `clip_sizes` [B, 2] optional unpadded (h, w); keyword
  arguments as `_candidates` (strides, thresholds, ...) plus the NMS settings: `nms_method`
  'greedy' (`class_wise_nms`) or Soft-NMS 'linear' / 'gaussian' (`class_wise_soft_nms`).

  The candidates are found per image (`vmap`), the NMS loop runs over the whole batch at once.
  """
  if clip_sizes is None:
    clip_sizes = jnp.broadcast_to(jnp.asarray(image_size, jnp.float32),
                                  (cls_logits.shape[0], 2))
  cand = jax.vmap(lambda c, r, t, cs: _candidates(c, r, t, cs, image_size=tuple(image_size),
                                                  **kwargs))(
      cls_logits, bbox_reg, centerness, clip_sizes)
  return _detections(cand, nms_threshold=nms_threshold, max_detections=max_detections,
                     nms_method=nms_method, soft_nms_sigma=soft_nms_sigma,
                     soft_nms_min_score=soft_nms_min_score)


def dense_detections(cls_logits, bbox_reg, centerness, *, image_size, clip_sizes,
                     strides: Sequence[int], location_mode: str = 'half',
                     norm_reg_targets: bool = False, sqrt_score: bool = True,
                     centerness_from_logits: bool = True, **unused):
  """Boxes [B, N, 4] and final scores [B, N, C] of every location, before any threshold, top-k
  or NMS (for a runtime's own NMS); scores 0 outside the unpadded image and on empty boxes."""
  del unused  # the threshold, top-k and NMS settings of `postprocess_kwargs`
  pts = points_lib.make_points(image_size, strides, location_mode)
  scale = _reg_scale(pts, norm_reg_targets)

  def one(cls, reg, ctr, clip_size):
    _, scores = _scores(cls, ctr, sqrt_score=sqrt_score,
                        centerness_from_logits=centerness_from_logits)
    boxes, usable = _every_location(reg, clip_size, pts, scale)
    return boxes, jnp.where(usable[:, None], scores, 0.0)
  return jax.vmap(one)(cls_logits, bbox_reg, centerness, jnp.asarray(clip_sizes, jnp.float32))


def merge_detections(parts: Sequence[Detections], *, clip_sizes, nms_threshold: float = 0.6,
                     max_detections: int = 100, nms_method: str = 'greedy',
                     soft_nms_sigma: float = 0.5, soft_nms_min_score: float = 0.001,
                     **unused) -> Detections:
  """One set of detections from several of the same images (test-time views mapped back to the
  same pixels): their rows side by side, boxes clipped to `clip_sizes` [B, 2] (h, w), then the
  class-wise NMS of the settings once more (as detectron2's and mmdetection's TTA merge)."""
  del unused  # the candidate settings of `postprocess_kwargs`
  cat = lambda name: jnp.concatenate([getattr(d, name) for d in parts], axis=-1)
  boxes = _clip(jnp.concatenate([d.boxes for d in parts], axis=-2), clip_sizes)
  valid = cat('valid') & (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
  cand = _Candidates(boxes, jnp.where(valid, cat('scores'), 0.0), cat('classes'), valid,
                     cat('class_probs'))
  return _detections(cand, nms_threshold=nms_threshold, max_detections=max_detections,
                     nms_method=nms_method, soft_nms_sigma=soft_nms_sigma,
                     soft_nms_min_score=soft_nms_min_score)


def postprocess_kwargs(config) -> dict:
  """Static postprocess settings of a config (`config.model` and `config.postprocess`)."""
  m, p = config.model, config.postprocess
  return dict(strides=tuple(m.strides), location_mode=m.location_mode,
              norm_reg_targets=bool(m.norm_reg_targets),
              score_threshold=float(p.score_threshold),
              threshold_on_combined=bool(p.threshold_on_combined),
              pre_nms_top_n=int(p.pre_nms_top_n),
              tpu_top_k_recall=float(p.tpu_top_k_recall), nms_threshold=float(p.nms_threshold),
              max_detections=int(p.max_detections), sqrt_score=bool(p.sqrt_score),
              drop_outside=bool(p.drop_outside), nms_method=str(p.nms_method),
              soft_nms_sigma=float(p.soft_nms_sigma),
              soft_nms_min_score=float(p.soft_nms_min_score))
