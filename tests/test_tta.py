"""Test-time augmentation: the views against numpy / TensorFlow references, the merged detections
against views computed by hand, and flip symmetry of the whole program."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcos_jax import errors, inference, postprocess, tta
from tests import tiny_config


@pytest.mark.parametrize('text,flip,scales', [
    ('flip', True, (1.0,)), ('scales=1.2:0.8', False, (1.0, 0.8, 1.2)),
    ('flip,scales=0.8:1:1.2', True, (1.0, 0.8, 1.2)), ('', False, (1.0,)),
    ('none', False, (1.0,))])
def test_parse(text, flip, scales):
  spec = tta.parse(text)
  assert spec == tta.Spec(flip, scales)
  assert len(spec.views) == len(scales) * (2 if flip else 1)
  assert spec.views[0] == (1.0, False)
  assert tta.parse(str(spec)) == spec


@pytest.mark.parametrize('text,needle', [('flop', "unknown part 'flop'"),
                                         ('scales=a', "scale 'a' is not a number"),
                                         ('scales=9', 'outside'), ('scales=', 'unknown part')])
def test_parse_mistakes_are_user_errors(text, needle):
  with pytest.raises(errors.UserError, match=needle):
    tta.parse(text)


def test_flip_within_each_images_width():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (2, 5, 9, 3), dtype=np.uint8)
  sizes = np.array([[5, 9], [4, 6]], np.int32)
  got = np.asarray(tta.flip_images(images, sizes))
  for b, (h, w) in enumerate(sizes):
    np.testing.assert_array_equal(got[b, :, :w], images[b, :, :w][:, ::-1])
    np.testing.assert_array_equal(got[b, :, w:], images[b, :, w:])  # padding stays right


def test_unflip_boxes_is_the_mirror_of_each_image():
  boxes = np.array([[[1, 2, 4, 5]], [[0, 0, 6, 3]]], np.float32)
  sizes = np.array([[10, 9], [8, 6]], np.int32)
  got = np.asarray(tta.unflip_boxes(boxes, sizes))
  # pixel columns [x0, x1) of an image of width w are [w - x1, w - x0) mirrored
  np.testing.assert_array_equal(got, [[[5, 2, 8, 5]], [[0, 0, 6, 3]]])
  np.testing.assert_array_equal(tta.unflip_boxes(got, sizes), boxes)


def test_rescale_against_tensorflow_bilinear():
  import tensorflow as tf
  rng = np.random.default_rng(1)
  images = rng.integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)
  sizes = np.array([[64, 96], [50, 70]], np.int32)
  got, got_sizes, factors = (np.asarray(x) for x in tta.rescale_images(images, sizes, 1.25, 32))
  assert got.shape == (2, 96, 128, 3)  # 80 x 120 padded to multiples of 32
  want = tf.image.resize(images.astype(np.float32), (80, 120), 'bilinear').numpy()
  assert np.abs(got[:, :80, :120].astype(int) - np.round(want)).max() <= 1
  assert not got[:, 80:].any() and not got[:, :, 120:].any()
  np.testing.assert_array_equal(got_sizes, [[80, 120], [62, 88]])  # round(50 * 1.25) = 62
  np.testing.assert_allclose(factors, [1.25, 1.25])
  boxes = np.array([[[10, 20, 30, 40]]] * 2, np.float32)
  np.testing.assert_allclose(tta.unscale_boxes(boxes * 1.25, factors), boxes, rtol=1e-6)


@pytest.fixture(scope='module')
def detector():
  config, model, variables, _ = tiny_config.random_detector()
  config.postprocess.max_detections = 30
  return config, model, variables


def test_merged_detections_come_from_the_views_computed_by_hand(detector):
  """Every merged row is a row of one view, each view run by hand (numpy flip, TensorFlow resize,
  the plain program) and mapped back by hand."""
  import tensorflow as tf
  config, model, variables = detector
  spec = tta.parse('flip,scales=1.5')
  rng = np.random.default_rng(2)
  images = rng.integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)
  sizes = np.array([[64, 96], [60, 80]], np.int32)
  merged = jax.jit(inference.make_predict_fn(config, model, spec))(variables, images, sizes)
  plain = jax.jit(inference.make_predict_fn(config, model))
  rows = []
  for scale, flipped in spec.views:
    view, view_sizes = images.copy(), sizes.copy()
    if scale != 1.0:
      big = np.round(tf.image.resize(images.astype(np.float32), (96, 144), 'bilinear').numpy())
      view = np.zeros((2, 96, 160, 3), np.uint8)
      view[:, :, :144] = np.clip(big, 0, 255)
      view_sizes = np.round(sizes * 1.5).astype(np.int32)
    if flipped:
      for b, (h, w) in enumerate(view_sizes):
        view[b, :, :w] = view[b, :, :w][:, ::-1].copy()
    det = jax.tree_util.tree_map(np.asarray, plain(variables, view, view_sizes))
    boxes = det.boxes.copy()
    if flipped:
      w = view_sizes[:, None, 1]
      boxes[..., 0], boxes[..., 2] = w - det.boxes[..., 2], w - det.boxes[..., 0]
    boxes = boxes / scale
    rows.append((boxes, det.scores, det.classes, det.valid))
  merged = jax.tree_util.tree_map(np.asarray, merged)
  assert (merged.num_valid == 30).all()
  from_scaled = 0
  for b in range(2):
    for k in range(merged.num_valid[b]):
      box = merged.boxes[b, k]
      hits = [v for v, (bx, sc, cl, ok) in enumerate(rows)
              if (ok[b] & (cl[b] == merged.classes[b, k]) &
                  (np.abs(np.minimum(bx[b], [sizes[b, 1], sizes[b, 0]] * 2) - box).max(-1)
                   < 0.05) & (np.abs(sc[b] - merged.scores[b, k]) < 1e-3)).any()]
      assert hits, (b, k, box)
      from_scaled += any(spec.views[v][0] != 1.0 for v in hits)
  assert from_scaled > 0  # the scaled views do take part


def test_flipping_the_input_mirrors_the_flip_tta_result(detector):
  """With flip TTA the program sees the same two views of an image and of its mirror, so the
  detections of the mirror are the mirrored detections."""
  from tests.test_exporters import assert_same_detections
  config, model, variables = detector
  predict = jax.jit(inference.make_predict_fn(config, model, tta.parse('flip')))
  rng = np.random.default_rng(3)
  images = rng.integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)
  sizes = np.array([[64, 96], [56, 72]], np.int32)
  mirrored = np.asarray(tta.flip_images(images, sizes))
  got = predict(variables, mirrored, sizes)
  want = predict(variables, images, sizes)
  got = {k: np.asarray(v) for k, v in got._asdict().items()}
  want = {k: np.asarray(v) for k, v in want._asdict().items()}
  got['boxes'] = np.asarray(tta.unflip_boxes(got['boxes'], sizes)) * got['valid'][..., None]
  assert (want['num_valid'] > 0).all()
  assert_same_detections(got, want)


def test_merge_runs_nms_across_views():
  """Two views that found the same box: one row survives; another class's box stays."""
  one = postprocess.Detections(
      boxes=jnp.array([[[0, 0, 10, 10], [0, 0, 0, 0]]], jnp.float32),
      scores=jnp.array([[0.9, 0.0]]), classes=jnp.array([[1, -1]]),
      valid=jnp.array([[True, False]]), num_valid=jnp.array([1]),
      class_probs=jnp.array([[0.8, 0.0]]))
  two = one._replace(boxes=jnp.array([[[0.5, 0, 10, 10], [0, 0, 10, 10]]], jnp.float32),
                     scores=jnp.array([[0.7, 0.6]]), classes=jnp.array([[1, 2]]),
                     valid=jnp.array([[True, True]]))
  det = postprocess.merge_detections([one, two], clip_sizes=jnp.array([[20.0, 20.0]]),
                                     nms_threshold=0.6, max_detections=3)
  assert int(det.num_valid[0]) == 2
  np.testing.assert_allclose(det.scores[0], [0.9, 0.6, 0.0])
  np.testing.assert_array_equal(det.classes[0], [1, 2, -1])
