"""Per-example preprocessing in TensorFlow, on the host (tf.data graphs).

Resize (shorter side to `min_size`, longer at most `max_size`), optional horizontal flip, pad to
a fixed bucket shape, boxes to absolute (x0, y0, x1, y1) padded to `max_boxes`. The size rules
are `fcos_jax.data.sizes`' written as graph ops (a test checks both agree). Images stay uint8
until they reach the device (4x less host->device traffic than float32), where
`fcos_jax.normalize` applies the pixel mean/std and zeroes the padding.
"""

from typing import Dict, Tuple

import tensorflow as tf


def image_shape_from_header(encoded: tf.Tensor) -> tf.Tensor:
  """(height, width) int32 of a JPEG or PNG from its header, without decoding the pixels."""
  def png_shape():
    # PNG: 8-byte signature, IHDR length + type, then width and height as big-endian uint32.
    raw = tf.io.decode_raw(tf.strings.substr(encoded, 16, 8), tf.uint8)
    raw = tf.cast(raw, tf.int32)
    w = raw[0] * 2**24 + raw[1] * 2**16 + raw[2] * 2**8 + raw[3]
    h = raw[4] * 2**24 + raw[5] * 2**16 + raw[6] * 2**8 + raw[7]
    return tf.stack([h, w])
  return tf.cond(tf.io.is_jpeg(encoded),
                 lambda: tf.image.extract_jpeg_shape(encoded)[:2], png_shape)


def decode_image(encoded: tf.Tensor, pil_exact: bool = False) -> tf.Tensor:
  """uint8 [H, W, 3] of a JPEG or PNG. `pil_exact`: JPEGs with the accurate integer IDCT, which
  gives PIL's (libjpeg-turbo's default) pixels; TF's default fast IDCT is up to 6/255 off."""
  if pil_exact:
    image = tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method='INTEGER_ACCURATE'),
        lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False))
  else:
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
  return tf.ensure_shape(image, (None, None, 3))


def bucket_index(hw: tf.Tensor, num_buckets: int) -> tf.Tensor:
  """`sizes.bucket_of` in graph ops: 0 for landscape/square (w >= h), 1 for portrait; always 0
  with a single bucket."""
  if num_buckets == 1:
    return tf.constant(0, tf.int64)
  return tf.cast(hw[0] > hw[1], tf.int64)


def resize_scale(hw: tf.Tensor, min_size, max_size: int) -> tf.Tensor:
  """Scale that brings the shorter side to `min_size` unless the longer would exceed max_size."""
  hw = tf.cast(hw, tf.float32)
  min_size = tf.cast(min_size, tf.float32)
  return tf.minimum(min_size / tf.reduce_min(hw), max_size / tf.reduce_max(hw))


def scaled_size(hw: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
  """`sizes.resized_size` in graph ops: round(side * scale) in float32, at least 1 (int32)."""
  return tf.maximum(tf.cast(tf.round(tf.cast(hw, tf.float32) * scale), tf.int32), 1)


def resize_image(image: tf.Tensor, scale: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """Bilinear resize (no antialiasing, as torchvision/detectron2) -> (uint8 image, new (h, w))."""
  new_hw = scaled_size(tf.shape(image)[:2], scale)
  resized = tf.image.resize(image, new_hw, method='bilinear', antialias=False)
  return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8), new_hw


def resized_size_torchvision(hw: tf.Tensor, min_size, max_size) -> tf.Tensor:
  """`sizes.resized_size_torchvision` in graph ops: float64 scale, floored sizes (int32)."""
  hw64 = tf.cast(hw, tf.float64)
  scale = tf.minimum(tf.cast(min_size, tf.float64) / tf.reduce_min(hw64),
                     tf.cast(max_size, tf.float64) / tf.reduce_max(hw64))
  return tf.cast(tf.floor(hw64 * scale), tf.int32)


def resize_image_float(image: tf.Tensor, new_hw: tf.Tensor) -> tf.Tensor:
  """Bilinear resize to `new_hw`, half-pixel centres, no antialiasing, float32 output (not
  rounded): torchvision's `F.interpolate(mode='bilinear', align_corners=False)` up to float
  rounding (~1e-3 of 255)."""
  return tf.image.resize(tf.cast(image, tf.float32), new_hw, method='bilinear', antialias=False)


def normalized_to_absolute(bbox: tf.Tensor, hw: tf.Tensor) -> tf.Tensor:
  """TFDS [ymin, xmin, ymax, xmax] in [0, 1] -> (x0, y0, x1, y1) in pixels of size hw."""
  h, w = tf.cast(hw[0], tf.float32), tf.cast(hw[1], tf.float32)
  return tf.stack([bbox[:, 1] * w, bbox[:, 0] * h, bbox[:, 3] * w, bbox[:, 2] * h], axis=-1)


def flip_boxes(boxes: tf.Tensor, width: tf.Tensor) -> tf.Tensor:
  width = tf.cast(width, tf.float32)
  return tf.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], axis=-1)


def pad_image(image: tf.Tensor, shape: Tuple[int, int]) -> tf.Tensor:
  """Zero-pad at the bottom/right to `shape` (H, W)."""
  hw = tf.shape(image)[:2]
  tf.debugging.assert_less_equal(hw, tf.constant(shape, tf.int32),
                                 message='resized image larger than its bucket')
  image = tf.pad(image, [[0, shape[0] - hw[0]], [0, shape[1] - hw[1]], [0, 0]])
  return tf.ensure_shape(image, (shape[0], shape[1], 3))


def pad_to_multiple(image: tf.Tensor, divisibility: int) -> tf.Tensor:
  """Zero-pad at the bottom/right to the next multiple of `divisibility` (`sizes.padded_shape`),
  as torchvision's `batch_images` pads one image."""
  hw = tf.shape(image)[:2]
  padded = (hw + divisibility - 1) // divisibility * divisibility
  return tf.pad(image, [[0, padded[0] - hw[0]], [0, padded[1] - hw[1]], [0, 0]])


def pad_boxes(boxes: tf.Tensor, classes: tf.Tensor, max_boxes: int) -> Dict[str, tf.Tensor]:
  """Keep at most `max_boxes` boxes (the largest by area), pad to `max_boxes` with a mask.

  The number dropped is returned as 'num_truncated' so the caller can count and log it.
  """
  n = tf.shape(boxes)[0]
  area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  keep = tf.minimum(n, max_boxes)
  order = tf.argsort(area, direction='DESCENDING', stable=True)[:keep]
  order = tf.sort(order)  # keep the original order among the survivors
  boxes, classes = tf.gather(boxes, order), tf.gather(classes, order)
  pad = max_boxes - keep
  return {
      'boxes': tf.ensure_shape(tf.pad(boxes, [[0, pad], [0, 0]]), (max_boxes, 4)),
      'classes': tf.ensure_shape(tf.pad(tf.cast(classes, tf.int32), [[0, pad]]), (max_boxes,)),
      'box_valid': tf.ensure_shape(tf.range(max_boxes) < keep, (max_boxes,)),
      'num_truncated': n - keep,
  }
