"""The size rules: bucket shapes, and the resize that the TF input pipeline and the JAX-only
serving code each implement (same sizes, same pixels, same bucket)."""

import numpy as np
import pytest
import tensorflow as tf

from fcos_jax import serving
from fcos_jax.data import preprocessing as pp
from fcos_jax.data import sizes

SHAPES = [(480, 640), (640, 480), (375, 500), (427, 640), (101, 100), (100, 101), (333, 333),
          (50, 80), (17, 1000), (1000, 17), (1, 1)]


def test_bucket_shapes_and_bucket_choice():
  assert sizes.bucket_shapes((640, 800), 1333, 128) == ((896, 1408), (1408, 896))
  assert sizes.bucket_shapes((128,), 160, 32, aspect_buckets=False) == ((160, 160),)
  two = ((896, 1408), (1408, 896))
  assert [sizes.bucket_of(hw, two) for hw in [(480, 640), (640, 480), (500, 500)]] == [0, 1, 0]
  assert sizes.bucket_of((640, 480), ((160, 160),)) == 0
  for hw in SHAPES:
    assert sizes.bucket_of(hw, two) == int(pp.bucket_index(tf.constant(hw), 2))


@pytest.mark.parametrize('min_size,max_size', [(800, 1333), (128, 160), (64, 96)])
def test_resized_size_equals_the_pipeline(min_size, max_size):
  for hw in SHAPES:
    scale = pp.resize_scale(tf.constant(hw), min_size, max_size)
    _, new_hw = pp.resize_image(tf.zeros(hw + (3,), tf.uint8), scale)
    want = tuple(int(v) for v in new_hw.numpy())
    assert sizes.resized_size(hw, min_size, max_size) == want, hw
    # Independently, in float64: each side is the scaled side rounded (within float32's slack),
    # the scale bringing the shorter side to min_size unless the longer would pass max_size.
    scale = min(min_size / min(hw), max_size / max(hw))
    for got, side in zip(want, hw):
      assert abs(got - max(side * scale, 1)) <= 0.5 + 1e-3, (hw, want)


def test_serving_preprocess_gives_the_pipeline_pixels(tmp_path):
  """`Detector.preprocess` (jax.image.resize) and the input pipeline (tf.image.resize): the same
  resized size, bucket and padding, pixels within 1 (float rounding at .5)."""
  detector = serving.Detector.__new__(serving.Detector)
  detector.metadata = {'preprocessing': {'min_size': 128, 'max_size': 160}}
  detector.models = {(128, 160): None, (160, 128): None}
  rng = np.random.default_rng(0)
  for hw in [(96, 128), (128, 96), (75, 100), (100, 101), (50, 80)]:
    image = rng.integers(0, 256, hw + (3,), dtype=np.uint8)
    padded, (nh, nw) = detector.preprocess(image)
    shapes = ((128, 160), (160, 128))
    scale = pp.resize_scale(tf.constant(hw), 128, 160)
    resized, new_hw = pp.resize_image(tf.constant(image), scale)
    want = pp.pad_image(resized, shapes[int(pp.bucket_index(tf.constant(hw), 2))]).numpy()
    assert (nh, nw) == tuple(new_hw.numpy())
    assert padded.shape == want.shape
    diff = np.abs(padded.astype(int) - want.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01, (hw, diff.max(), diff.mean())


@pytest.mark.parametrize('min_size,max_size', [(800, 1333), (320, 533)])
def test_torchvision_size_rule_equals_torchvision(min_size, max_size):
  """`sizes.resized_size_torchvision` and its graph form give the size of torchvision's own
  resize (`GeneralizedRCNNTransform`), where the project's rounded rule often does not."""
  import torch
  from torchvision.models.detection.transform import _resize_image_and_masks
  differs = 0
  for hw in SHAPES + [(480, 640), (612, 612), (427, 640), (640, 359)]:
    out, _ = _resize_image_and_masks(torch.zeros((3,) + hw), min_size, max_size)
    want = tuple(out.shape[-2:])
    assert sizes.resized_size_torchvision(hw, min_size, max_size) == want, hw
    assert tuple(pp.resized_size_torchvision(tf.constant(hw), min_size, max_size).numpy()) == want
    differs += sizes.resized_size(hw, min_size, max_size) != want
  assert differs >= 3
  assert sizes.padded_shape((800, 1066), 32) == (800, 1088)


def test_exact_decode_and_resize_give_torchvisions_pixels():
  """PIL-exact JPEG decoding and the float resize: torchvision's input pixels up to float
  rounding (TF's default decoding is several levels off; rounding to uint8 half a level)."""
  import io
  import torch
  from PIL import Image
  rng = np.random.default_rng(1)
  image = rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, 'JPEG', quality=90)
  data = tf.constant(buf.getvalue())
  pil = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert('RGB'))
  assert (pp.decode_image(data, pil_exact=True).numpy() == pil).all()
  assert np.abs(pp.decode_image(data).numpy().astype(int) - pil).max() >= 2
  new_hw = sizes.resized_size_torchvision(pil.shape[:2], 800, 1333)
  got = pp.resize_image_float(tf.constant(pil), new_hw).numpy()
  want = torch.nn.functional.interpolate(
      torch.from_numpy(pil.astype(np.float32)).permute(2, 0, 1)[None], scale_factor=800 / 375,
      mode='bilinear', recompute_scale_factor=True, align_corners=False)[0].permute(1, 2, 0)
  assert got.shape == tuple(want.shape) == (800, 1066, 3)
  assert np.abs(got - want.numpy()).max() < 5e-3
