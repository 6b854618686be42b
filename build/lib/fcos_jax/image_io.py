"""Reading user images as 8-bit RGB, the one form the model takes: grayscale, palette, CMYK and
alpha images are converted, 16-bit images scaled (not clipped) to 8 bits, and every such change
is reported to the caller, which counts it."""

from typing import Optional, Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from fcos_jax import errors

SIXTEEN_BIT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I')


def to_rgb8(im: Image.Image) -> Tuple[np.ndarray, Optional[str]]:
  """(uint8 [H, W, 3] array, what was changed or None) of a loaded PIL image."""
  if im.mode in SIXTEEN_BIT_MODES:  # 0..65535: scale to 0..255 (PIL's convert would clip)
    gray = np.asarray(im).astype(np.float64) * (255.0 / 65535.0)
    gray = np.clip(np.round(gray), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1), f'{im.mode} scaled to 8 bits'
  if im.mode == 'RGB':
    return np.asarray(im), None
  return np.asarray(im.convert('RGB')), f'{im.mode} converted to RGB'


def read_rgb8(path: str) -> Tuple[np.ndarray, Optional[str]]:
  """(uint8 RGB array, change or None) of an image file; `DataError` naming the file if it is
  missing or not a readable image."""
  try:
    with Image.open(path) as im:
      im.load()
      return to_rgb8(im)
  except FileNotFoundError:
    raise errors.DataError(f'{path}: no such file') from None
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    raise errors.DataError(f'{path}: not a readable image ({e})') from None
