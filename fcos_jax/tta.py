"""Test-time augmentation: the views of a padded batch (horizontal flip, rescaled copies) and the
maps of their boxes back to the batch's pixels, all static-shape and jit-able.

A spec reads `flip`, `scales=0.8:1.2` or both (`flip,scales=0.8:1:1.2`); scale 1 (the input as
it is) is always one of the views, and with `flip` every scale is also seen flipped. Every view
of a bucket shape is one more static shape in the same compiled program.
"""

import math
from typing import NamedTuple, Tuple

import jax
import jax.numpy as jnp

from fcos_jax.errors import UserError


class Spec(NamedTuple):
  flip: bool = False
  scales: Tuple[float, ...] = (1.0,)

  @property
  def views(self) -> Tuple[Tuple[float, bool], ...]:
    """(scale, flipped) of every view, the plain input first."""
    return tuple((s, f) for s in self.scales for f in ((False, True) if self.flip else (False,)))

  def __str__(self) -> str:
    parts = ['flip'] if self.flip else []
    if self.scales != (1.0,):
      parts.append('scales=' + ':'.join(f'{s:g}' for s in self.scales))
    return ','.join(parts) or 'none'


NONE = Spec()
MAX_SCALE = 4.0


def parse(text: str) -> Spec:
  """`flip`, `scales=S1:S2:...`, comma-separated; '' or 'none' = no augmentation."""
  flip, scales = False, [1.0]
  for part in (p.strip() for p in (text or '').split(',')):
    if part in ('', 'none'):
      continue
    if part == 'flip':
      flip = True
      continue
    key, _, value = part.partition('=')
    if key != 'scales' or not value:
      raise UserError(f'--tta {text!r}: unknown part {part!r} (use flip and/or '
                      'scales=0.8:1.2, comma-separated)')
    for s in value.split(':'):
      try:
        scale = float(s)
      except ValueError:
        raise UserError(f'--tta {text!r}: scale {s!r} is not a number') from None
      if not 0.1 <= scale <= MAX_SCALE:
        raise UserError(f'--tta {text!r}: scale {scale:g} is outside [0.1, {MAX_SCALE:g}]')
      if scale not in scales:
        scales.append(scale)
  return Spec(flip, (1.0,) + tuple(sorted(s for s in scales if s != 1.0)))


def scaled_shape(shape: Tuple[int, int], scale: float, divisibility: int) -> Tuple[int, int]:
  """The padded shape of a view at `scale`: the scaled canvas rounded up to `divisibility`."""
  return tuple(int(math.ceil(round(n * scale) / divisibility) * divisibility) for n in shape)


def flip_images(images, image_sizes):
  """Each image mirrored within its own width (the padding stays bottom/right)."""
  x = jnp.arange(images.shape[2])
  w = image_sizes[:, 1:2]
  cols = jnp.where(x[None] < w, w - 1 - x[None], x[None])  # [B, W]
  return jnp.take_along_axis(images, cols[:, None, :, None], axis=2)


def unflip_boxes(boxes, image_sizes):
  """Boxes [B, K, 4] of flipped images in the unflipped ones' pixels (x -> w - x)."""
  w = image_sizes[:, None, 1:2].astype(boxes.dtype)
  return jnp.concatenate([w - boxes[..., 2:3], boxes[..., 1:2], w - boxes[..., 0:1],
                          boxes[..., 3:4]], axis=-1)


def rescale_images(images, image_sizes, scale: float, divisibility: int):
  """uint8 images [B, H, W, 3] resized by `scale` (bilinear, as preprocessing resizes) and padded
  to `scaled_shape`; returns them, their unpadded sizes and the (y, x) factors applied."""
  h, w = images.shape[1:3]
  sh, sw = round(h * scale), round(w * scale)
  resized = jax.image.resize(images.astype(jnp.float32), (images.shape[0], sh, sw, 3),
                             'bilinear', antialias=False)
  resized = jnp.clip(jnp.round(resized), 0, 255).astype(jnp.uint8)
  ph, pw = scaled_shape((h, w), scale, divisibility)
  padded = jnp.pad(resized, ((0, 0), (0, ph - sh), (0, pw - sw), (0, 0)))
  factors = jnp.array([sh / h, sw / w], jnp.float32)
  sizes = jnp.maximum(jnp.round(image_sizes.astype(jnp.float32) * factors), 1).astype(jnp.int32)
  # The image's zero padding was resized with it: keep it out of the unpadded size.
  sizes = jnp.minimum(sizes, jnp.array([sh, sw], jnp.int32))
  return padded, sizes, factors


def unscale_boxes(boxes, factors):
  """Boxes [B, K, 4] of a view resized by `factors` (y, x) back in the input's pixels."""
  return boxes / jnp.stack([factors[1], factors[0], factors[1], factors[0]])
