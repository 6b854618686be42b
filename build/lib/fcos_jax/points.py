"""Feature-map locations ("points") of the FPN levels: sizes, image coordinates and strides.

Every location has one flat index shared by the model outputs, the target assigner and the
postprocess: levels in order P3..P7, each level row-major (y, then x).
"""

from typing import NamedTuple, Sequence

import numpy as np

# Where a location sits inside its cell. 'half': (i*s + s//2), the official FCOS convention.
# 'torchvision': i * (padded_size // level_size) per axis, no offset, as torchvision's anchor
# generator places anchor centres (its P6/P7 strides are then not exactly 64/128).
LOCATION_MODES = ('half', 'torchvision')


class Points(NamedTuple):
  """Static (numpy) description of all locations of one padded image size."""
  xy: np.ndarray          # [N, 2] float32, (x, y) in input-image pixels.
  stride: np.ndarray      # [N] float32, nominal stride of the location's level (8, 16, ...).
  level: np.ndarray       # [N] int32, level index 0..L-1.
  level_sizes: tuple      # ((h, w), ...) per level.


def feature_size(size: int, stride: int) -> int:
  """Side of a level's feature map: the backbone's stride-2 convs with padding round up."""
  return -(-size // stride)


def level_sizes(image_size: Sequence[int], strides: Sequence[int]) -> tuple:
  h, w = image_size
  return tuple((feature_size(h, s), feature_size(w, s)) for s in strides)


def num_points(image_size: Sequence[int], strides: Sequence[int]) -> int:
  return sum(h * w for h, w in level_sizes(image_size, strides))


def make_points(image_size: Sequence[int], strides: Sequence[int],
                mode: str = 'half') -> Points:
  """All locations for a padded input of `image_size` = (height, width)."""
  if mode not in LOCATION_MODES:
    raise ValueError(f'location mode must be one of {LOCATION_MODES}, got {mode!r}')
  height, width = image_size
  xy, stride, level = [], [], []
  sizes = level_sizes(image_size, strides)
  for i, (s, (h, w)) in enumerate(zip(strides, sizes)):
    if mode == 'half':
      xs = np.arange(w) * s + s // 2
      ys = np.arange(h) * s + s // 2
    else:
      xs = np.arange(w) * (width // w)
      ys = np.arange(h) * (height // h)
    yy, xx = np.meshgrid(ys, xs, indexing='ij')
    xy.append(np.stack([xx.ravel(), yy.ravel()], axis=-1))
    stride.append(np.full(h * w, s))
    level.append(np.full(h * w, i))
  return Points(np.concatenate(xy).astype(np.float32),
                np.concatenate(stride).astype(np.float32),
                np.concatenate(level).astype(np.int32), sizes)


def locations(image_size: Sequence[int], strides: Sequence[int],
              mode: str = 'half') -> np.ndarray:
  """Location coordinates [N, 2] as (x, y) in input pixels, in flat index order."""
  return make_points(image_size, strides, mode).xy
