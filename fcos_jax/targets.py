"""Target assignment, static-shape, vectorized, jit-able, run on device inside the step: FCOS's
rule (fixed size ranges per level) or ATSS's (Zhang et al. 2020, adaptive IoU thresholds).

Ground truth arrives padded to a fixed `max_boxes` M with a validity mask. Every location is
compared with every box at once ([N, M] arrays, memory O(N*M)); there are no loops over boxes,
locations or images and no data-dependent shapes, so one compiled program serves every batch of a
given padded image size.
"""

import functools
from typing import NamedTuple, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from fcos_jax import points as points_lib

INF = 1e8
DEFAULT_STRIDES = (8, 16, 32, 64, 128)
DEFAULT_SIZE_RANGES = ((-1, 64), (64, 128), (128, 256), (256, 512), (512, INF))
ASSIGNERS = ('fcos', 'atss')
# ATSS's centre test: the location must be this far (pixels) inside the box, as in the official
# ATSS code (sfzhang15/ATSS) and mmdetection's ATSSAssigner.
ATSS_INSIDE_EPS = 0.01


class Targets(NamedTuple):
  classes: jnp.ndarray     # [..., N] int32, class index, -1 for background.
  ltrb: jnp.ndarray        # [..., N, 4] float32 distances to the box edges (0 for background).
  centerness: jnp.ndarray  # [..., N] float32, 0 for background.


def centerness_target(ltrb: jnp.ndarray) -> jnp.ndarray:
  """sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b)); 0 where a distance is not positive."""
  l, t, r, b = jnp.moveaxis(ltrb, -1, 0)
  ok = jnp.min(ltrb, axis=-1) > 0
  lr = jnp.minimum(l, r) / jnp.where(ok, jnp.maximum(l, r), 1.0)
  tb = jnp.minimum(t, b) / jnp.where(ok, jnp.maximum(t, b), 1.0)
  return jnp.where(ok, jnp.sqrt(jnp.where(ok, lr * tb, 0.0)), 0.0)


class Assignment(NamedTuple):
  """Which box each location takes, and how contested it was (for the losses and the analyses)."""
  box: jnp.ndarray             # [..., N] int32 index of the box taken, -1 for background.
  ltrb: jnp.ndarray            # [..., N, 4] float32 distances to that box in pixels (0 if none).
  num_candidates: jnp.ndarray  # [..., N] int32 candidate boxes (level ranges applied).
  num_inside: jnp.ndarray      # [..., N] int32 boxes it lies in, any level (no size ranges).


def match_locations(boxes: jnp.ndarray,
                    valid: jnp.ndarray,
                    *,
                    image_size: Tuple[int, int],
                    strides: Sequence[int] = DEFAULT_STRIDES,
                    size_ranges: Sequence[Tuple[float, float]] = DEFAULT_SIZE_RANGES,
                    center_sampling_radius: float = 0.0,
                    location_mode: str = 'half',
                    inclusive_ranges: bool = True,
                    assigner: str = 'fcos',
                    atss_topk: int = 9,
                    atss_anchor_scale: float = 8.0) -> Assignment:
  """The matching rule for one image: the box each location takes (see `assign_targets` for the
  arguments and the rules). `num_inside` counts the boxes whose interior (and centre region, with
  FCOS's center sampling) holds the location, ignoring the level size ranges."""
  if assigner not in ASSIGNERS:
    raise ValueError(f'assigner must be one of {ASSIGNERS}, got {assigner!r}')
  if len(size_ranges) != len(strides):
    raise ValueError(f'{len(strides)} strides but {len(size_ranges)} size ranges')
  pts = points_lib.make_points(image_size, strides, location_mode)
  boxes = jnp.asarray(boxes, jnp.float32).reshape(-1, 4)
  valid = jnp.asarray(valid, bool)
  if boxes.shape[0] == 0:  # M = 0: one padding row keeps the reductions well-defined.
    boxes, valid = jnp.zeros((1, 4)), jnp.zeros((1,), bool)
  if assigner == 'atss':
    return _match_atss(boxes, valid, pts, topk=atss_topk, anchor_scale=atss_anchor_scale)
  ranges = np.asarray(size_ranges, np.float32)[pts.level]           # [N, 2]
  xy = jnp.asarray(pts.xy)                                           # [N, 2]
  stride = jnp.asarray(pts.stride)                                   # [N]
  x, y = xy[:, 0:1], xy[:, 1:2]                                      # [N, 1]
  x0, y0, x1, y1 = (boxes[None, :, i] for i in range(4))             # [1, M]
  ltrb = jnp.stack([x - x0, y - y0, x1 - x, y1 - y], axis=-1)       # [N, M, 4]

  inside = (jnp.min(ltrb, axis=-1) > 0) & valid[None, :]            # strictly inside
  if center_sampling_radius > 0:
    radius = (center_sampling_radius * stride)[:, None]              # [N, 1]
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    inside &= (jnp.abs(x - cx) < radius) & (jnp.abs(y - cy) < radius)
  max_dist = jnp.max(ltrb, axis=-1)                                  # [N, M]
  lo, hi = ranges[:, 0:1], ranges[:, 1:2]
  if inclusive_ranges:
    candidate = inside & (max_dist >= lo) & (max_dist <= hi)
  else:
    candidate = inside & (max_dist > lo) & (max_dist < hi)

  area = (x1 - x0) * (y1 - y0)                                       # [1, M]
  cost = jnp.where(candidate, area, jnp.inf)
  best = jnp.argmin(cost, axis=1)                                    # [N]
  return _assignment(ltrb, candidate, best, inside)


def _assignment(ltrb, candidate, best, inside) -> Assignment:
  """The `Assignment` of each location's chosen box `best` among its `candidate` boxes [N, M]
  (background where it has none)."""
  positive = jnp.any(candidate, axis=1)
  target_ltrb = jnp.take_along_axis(ltrb, best[:, None, None], axis=1)[:, 0]
  return Assignment(box=jnp.where(positive, best, -1).astype(jnp.int32),
                    ltrb=jnp.where(positive[:, None], target_ltrb, 0.0),
                    num_candidates=jnp.sum(candidate, axis=1, dtype=jnp.int32),
                    num_inside=jnp.sum(inside, axis=1, dtype=jnp.int32))


def _match_atss(boxes: jnp.ndarray, valid: jnp.ndarray, pts: points_lib.Points, *,
                topk: int, anchor_scale: float) -> Assignment:
  """ATSS (Algorithm 1 of Zhang et al. 2020) with each location's square "anchor" of side
  anchor_scale * stride: per box, the `topk` locations of each level closest to its centre are
  candidates; those whose anchor IoU reaches mean + std of the candidates' IoUs (std with n - 1,
  as the official code's torch.std) and that lie inside the box are positives; a location
  positive for several boxes takes the one of highest IoU (the first on a tie). Static shapes:
  top-k per level is over a fixed number of locations, the mean and std over a fixed count."""
  xy = jnp.asarray(pts.xy)                                           # [N, 2]
  half = jnp.asarray(pts.stride * (anchor_scale / 2))[:, None]       # [N, 1]
  x, y = xy[:, 0:1], xy[:, 1:2]
  x0, y0, x1, y1 = (boxes[None, :, i] for i in range(4))             # [1, M]
  ltrb = jnp.stack([x - x0, y - y0, x1 - x, y1 - y], axis=-1)       # [N, M, 4]
  # IoU of every location's anchor with every box.
  iw = jnp.maximum(jnp.minimum(x + half, x1) - jnp.maximum(x - half, x0), 0)
  ih = jnp.maximum(jnp.minimum(y + half, y1) - jnp.maximum(y - half, y0), 0)
  inter = iw * ih
  union = (2 * half) ** 2 + (x1 - x0) * (y1 - y0) - inter
  iou = inter / jnp.maximum(union, 1e-12)                            # [N, M]
  # Squared distance to the box centre (monotone in the distance; exact on pixel grids).
  dist = (x - (x0 + x1) / 2) ** 2 + (y - (y0 + y1) / 2) ** 2          # [N, M]
  num_boxes = boxes.shape[0]
  picked, start = [], 0
  for h, w in pts.level_sizes:
    n = h * w
    # lax.top_k returns the lower index first among equal values: the nearer-first order
    # breaks distance ties by location index.
    _, idx = jax.lax.top_k(-dist[start:start + n].T, min(topk, n))  # [M, k]
    picked.append(idx + start)
    start += n
  picked = jnp.concatenate(picked, axis=1)                           # [M, K]
  cand_iou = jnp.take_along_axis(iou.T, picked, axis=1)              # [M, K]
  k = picked.shape[1]
  mean = jnp.mean(cand_iou, axis=1)
  std = jnp.sqrt(jnp.sum((cand_iou - mean[:, None]) ** 2, axis=1) / max(k - 1, 1))
  threshold = mean + std                                             # [M]
  is_candidate = jnp.zeros((num_boxes, xy.shape[0]), bool).at[
      jnp.arange(num_boxes)[:, None], picked].set(True).T            # [N, M]
  inside = (jnp.min(ltrb, axis=-1) > ATSS_INSIDE_EPS) & valid[None, :]
  positive_for = is_candidate & inside & (iou >= threshold[None, :])
  best = jnp.argmax(jnp.where(positive_for, iou, -1.0), axis=1)      # [N]
  return _assignment(ltrb, positive_for, best, inside)


def assign_targets(boxes: jnp.ndarray,
                   classes: jnp.ndarray,
                   valid: jnp.ndarray,
                   *,
                   image_size: Tuple[int, int],
                   strides: Sequence[int] = DEFAULT_STRIDES,
                   size_ranges: Sequence[Tuple[float, float]] = DEFAULT_SIZE_RANGES,
                   center_sampling_radius: float = 0.0,
                   norm_reg_targets: bool = False,
                   location_mode: str = 'half',
                   inclusive_ranges: bool = True,
                   assigner: str = 'fcos',
                   atss_topk: int = 9,
                   atss_anchor_scale: float = 8.0) -> Targets:
  """FCOS targets for one image, by FCOS's rule or ATSS's.

  Args:
    boxes: [M, 4] float (x0, y0, x1, y1) in pixels of the padded input image.
    classes: [M] int class index of each box.
    valid: [M] bool, False for padding rows.
    image_size: static (height, width) of the padded input.
    strides: static stride of each FPN level.
    size_ranges: static (lo, hi) per level; a location of that level takes a box only if
      lo <= max(l, t, r, b) <= hi (strict < on both ends when `inclusive_ranges` is False, as
      torchvision does).
    center_sampling_radius: 0 = off; else a location must also lie strictly inside the square of
      half-side radius * stride around the box centre (the region clipped to the box).
    norm_reg_targets: divide the ltrb targets by the level stride (improved FCOS / torchvision).
    location_mode: 'half' (official, i*s + s//2) or 'torchvision' (see `points`).
    inclusive_ranges: see `size_ranges`.
    assigner: 'fcos' (the rule above) or 'atss' (see `_match_atss`; size ranges and center
      sampling are then unused).
    atss_topk: ATSS's candidates per level and box (9 in the paper).
    atss_anchor_scale: side of a location's ATSS anchor in strides (8 in the paper).

  Returns:
    `Targets` for the N locations of the image, in flat index order (P3..P7, row-major).
    With FCOS's rule a location that lies strictly inside several candidate boxes takes the one
    of smallest area (w*h; the first in box order on a tie).
  """
  match = match_locations(boxes, valid, image_size=image_size, strides=strides,
                          size_ranges=size_ranges,
                          center_sampling_radius=center_sampling_radius,
                          location_mode=location_mode, inclusive_ranges=inclusive_ranges,
                          assigner=assigner, atss_topk=atss_topk,
                          atss_anchor_scale=atss_anchor_scale)
  classes = jnp.asarray(classes).astype(jnp.int32).reshape(-1)
  if classes.shape[0] == 0:
    classes = jnp.zeros((1,), jnp.int32)
  positive = match.box >= 0
  target_ltrb = match.ltrb
  if norm_reg_targets:
    stride = points_lib.make_points(image_size, strides, location_mode).stride
    target_ltrb = target_ltrb / jnp.asarray(stride)[:, None]
  target_classes = jnp.where(positive, classes[jnp.maximum(match.box, 0)], -1)
  return Targets(target_classes, target_ltrb, centerness_target(target_ltrb))


def match_kwargs(model_config) -> dict:
  """The static `match_locations` settings of a model config (`config.model`)."""
  kw = assigner_kwargs(model_config)
  del kw['norm_reg_targets']
  return kw


def assigner_kwargs(model_config) -> dict:
  """The static assigner settings of a model config (`config.model`)."""
  return dict(
      strides=tuple(model_config.strides),
      size_ranges=tuple(tuple(r) for r in model_config.size_ranges),
      center_sampling_radius=float(model_config.center_sampling_radius),
      norm_reg_targets=bool(model_config.norm_reg_targets),
      location_mode=model_config.location_mode,
      inclusive_ranges=bool(model_config.inclusive_ranges),
      assigner=model_config.assigner,
      atss_topk=int(model_config.atss_topk),
      atss_anchor_scale=float(model_config.atss_anchor_scale))


def assign_targets_batch(boxes, classes, valid, *, image_size, **kwargs) -> Targets:
  """`assign_targets` vmapped over a leading batch axis."""
  fn = functools.partial(assign_targets, image_size=tuple(image_size), **kwargs)
  return jax.vmap(fn)(boxes, classes, valid)
