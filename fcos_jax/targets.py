"""FCOS target assignment: static-shape, vectorized, jit-able, runs on device inside the step.

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
                    inclusive_ranges: bool = True) -> Assignment:
  """The FCOS matching rule for one image: the box each location takes (see `assign_targets`
  for the arguments and the rule). `num_inside` counts the boxes whose interior (and centre
  region, with center sampling) holds the location, ignoring the level size ranges."""
  if len(size_ranges) != len(strides):
    raise ValueError(f'{len(strides)} strides but {len(size_ranges)} size ranges')
  pts = points_lib.make_points(image_size, strides, location_mode)
  ranges = np.asarray(size_ranges, np.float32)[pts.level]           # [N, 2]
  xy = jnp.asarray(pts.xy)                                           # [N, 2]
  stride = jnp.asarray(pts.stride)                                   # [N]

  boxes = jnp.asarray(boxes, jnp.float32).reshape(-1, 4)
  valid = jnp.asarray(valid, bool)
  if boxes.shape[0] == 0:  # M = 0: one padding row keeps the reductions well-defined.
    boxes, valid = jnp.zeros((1, 4)), jnp.zeros((1,), bool)
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
  positive = jnp.any(candidate, axis=1)

  target_ltrb = jnp.take_along_axis(ltrb, best[:, None, None], axis=1)[:, 0]
  return Assignment(box=jnp.where(positive, best, -1).astype(jnp.int32),
                    ltrb=jnp.where(positive[:, None], target_ltrb, 0.0),
                    num_candidates=jnp.sum(candidate, axis=1, dtype=jnp.int32),
                    num_inside=jnp.sum(inside, axis=1, dtype=jnp.int32))


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
                   inclusive_ranges: bool = True) -> Targets:
  """FCOS targets for one image.

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

  Returns:
    `Targets` for the N locations of the image, in flat index order (P3..P7, row-major).
    A location that lies strictly inside several candidate boxes takes the one of smallest area
    (w*h; the first in box order on a tie).
  """
  match = match_locations(boxes, valid, image_size=image_size, strides=strides,
                          size_ranges=size_ranges,
                          center_sampling_radius=center_sampling_radius,
                          location_mode=location_mode, inclusive_ranges=inclusive_ranges)
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
      inclusive_ranges=bool(model_config.inclusive_ranges))


def assign_targets_batch(boxes, classes, valid, *, image_size, **kwargs) -> Targets:
  """`assign_targets` vmapped over a leading batch axis."""
  fn = functools.partial(assign_targets, image_size=tuple(image_size), **kwargs)
  return jax.vmap(fn)(boxes, classes, valid)
