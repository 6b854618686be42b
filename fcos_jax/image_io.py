"""Reading user images as 8-bit RGB, the one form the model takes: grayscale, palette, CMYK and
alpha images are converted, 16-bit images scaled (not clipped) to 8 bits, an EXIF orientation
applied on request, and every such change is reported to the caller, which counts it. Images
of more pixels than a limit (decompression bombs) are refused from their header, before any
pixel is decoded."""

import io
import warnings
from typing import Optional, Tuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fcos_jax import errors

SIXTEEN_BIT_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N', 'I')
# PIL's own default (about 9459 x 9459), the programs' --max_pixels default.
DEFAULT_MAX_PIXELS = 89_478_485
EXIF_ORIENTATION_TAG = 0x0112


def set_pixel_limit(max_pixels: int) -> None:
  """Makes `max_pixels` PIL's decompression-bomb limit for this process (a program's
  --max_pixels), so that images up to it open and larger ones fail from their header."""
  if max_pixels < 1:
    raise errors.UserError(f'--max_pixels {max_pixels}: must be positive')
  Image.MAX_IMAGE_PIXELS = max_pixels


def check_pixels(im: Image.Image, path: str) -> None:
  """`DataError` naming `path` if the opened (not yet decoded) image has more pixels than
  PIL's limit (`set_pixel_limit`)."""
  limit = Image.MAX_IMAGE_PIXELS
  if limit and im.size[0] * im.size[1] > limit:
    raise errors.DataError(f'{path}: {im.size[0]}x{im.size[1]} = {im.size[0] * im.size[1]} '
                           f'pixels, above the limit of {limit} (a decompression bomb?); raise '
                           '--max_pixels to read it')


def exif_orientation(im: Image.Image) -> int:
  """The image's EXIF orientation (1: as stored; 2..8: mirrored and/or rotated)."""
  try:
    value = im.getexif().get(EXIF_ORIENTATION_TAG, 1)
    return int(value) if value in range(1, 9) else 1
  except Exception:  # noqa: BLE001 - unreadable EXIF: treated as none
    return 1


def open_image(path: str, data: Optional[bytes] = None) -> Image.Image:
  """The opened image (header read, pixels not yet), `DataError` naming the file if it is
  missing, unreadable or above the pixel limit. With `data`, the file's bytes already read
  (from a remote file system or a dataset), `path` only names it."""
  try:
    with warnings.catch_warnings():  # PIL warns between 1x and 2x its limit: refused below
      warnings.simplefilter('ignore', Image.DecompressionBombWarning)
      im = Image.open(path if data is None else io.BytesIO(data))
  except FileNotFoundError:
    raise errors.DataError(f'{path}: no such file') from None
  except Image.DecompressionBombError as e:
    raise errors.DataError(f'{path}: {e}; raise --max_pixels to read it') from None
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    raise errors.DataError(f'{path}: not a readable image ({e})') from None
  try:
    check_pixels(im, path)
  except errors.DataError:
    im.close()
    raise
  return im


def to_rgb8(im: Image.Image) -> Tuple[np.ndarray, Optional[str]]:
  """(uint8 [H, W, 3] array, what was changed or None) of a loaded PIL image."""
  if im.mode in SIXTEEN_BIT_MODES:  # 0..65535: scale to 0..255 (PIL's convert would clip)
    gray = np.asarray(im).astype(np.float64) * (255.0 / 65535.0)
    gray = np.clip(np.round(gray), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1), f'{im.mode} scaled to 8 bits'
  if im.mode == 'RGB':
    return np.asarray(im), None
  return np.asarray(im.convert('RGB')), f'{im.mode} converted to RGB'


def read_rgb8(path: str, apply_exif_orientation: bool = False, data: Optional[bytes] = None
              ) -> Tuple[np.ndarray, Optional[str]]:
  """(uint8 RGB array, what was changed or None) of an image file (or its bytes, `data`),
  turned upright by its EXIF orientation with `apply_exif_orientation`; `DataError` naming
  the file if it is missing, not a readable image or above the pixel limit."""
  with open_image(path, data) as im:
    try:
      im.load()
      orientation = exif_orientation(im) if apply_exif_orientation else 1
      if orientation != 1:
        im = ImageOps.exif_transpose(im)
      pixels, change = to_rgb8(im)
    except (OSError, SyntaxError, ValueError) as e:
      raise errors.DataError(f'{path}: not a readable image ({e})') from None
  if orientation != 1:
    change = '; '.join(filter(None, [f'EXIF orientation {orientation} applied', change]))
  return pixels, change
