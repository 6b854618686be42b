"""The TFDS input pipeline on the synthetic and hand-made datasets, checked against the original
COCO annotations and image files."""

import collections
import io
import json

import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from fcos_jax.configs import coco
from fcos_jax.data import input_pipeline as ip
from fcos_jax.data import categories
from fcos_jax.data import preprocessing as pp
from fcos_jax.data import sizes
from fcos_jax.normalize import normalize_images


def data_config(name, data_dir, **overrides):
  c = coco.get_data_config()
  c.update(dataset=name, data_dir=data_dir, min_sizes=(96,), max_size=128, eval_min_size=96,
           size_divisibility=32, max_boxes=8, shuffle_buffer=16)
  c.update(overrides)
  return c


def load_coco(root, split):
  with open(f'{root}/annotations/{split}.json') as f:
    coco_json = json.load(f)
  anns = collections.defaultdict(list)
  for a in coco_json['annotations']:
    anns[a['image_id']].append(a)
  return {im['id']: im for im in coco_json['images']}, anns


def take(ds, n):
  return list(ds.take(n).as_numpy_iterator())


def test_train_batches_shapes_dtypes_and_buckets(shapes_tfds):
  c = data_config(*shapes_tfds)
  batches = take(ip.create_train_dataset(c, 4, seed=0), 8)
  shapes = set()
  for b in batches:
    assert b['image'].dtype == np.uint8 and b['image'].shape[0] == 4
    assert b['boxes'].shape == (4, 8, 4) and b['boxes'].dtype == np.float32
    assert b['classes'].shape == (4, 8) and b['classes'].dtype == np.int32
    assert b['box_valid'].shape == (4, 8) and b['box_valid'].dtype == bool
    assert b['image_size'].shape == (4, 2) and b['num_truncated'].shape == (4,)
    h, w = b['image'].shape[1:3]
    shapes.add((h, w))
    # Landscape bucket holds images with w >= h, portrait the others; all fit their bucket.
    landscape = w >= h
    assert ((b['image_size'][:, 1] >= b['image_size'][:, 0]) == landscape).all()
    assert (b['image_size'] <= [h, w]).all()
  assert shapes == {(96, 128), (128, 96)}


def test_boxes_and_pixels_follow_resize_and_flip(shapes_tfds, shapes_coco):
  check_resize_and_flip(take(ip.create_train_dataset(data_config(*shapes_tfds), 4, seed=1), 6),
                        shapes_coco)


def check_resize_and_flip(batches, shapes_coco):
  """Each training example against its JPEG resized by PIL and its COCO boxes (data_config's
  96/128 sizes); both flips occur."""
  images, anns = load_coco(shapes_coco, 'train')
  flips = collections.Counter()
  for b in batches:
    for k in range(len(b['image_id'])):
      im = images[int(b['image_id'][k])]
      h, w = im['height'], im['width']
      nh, nw = (int(v) for v in b['image_size'][k])
      scale = min(96 / min(h, w), 128 / max(h, w))
      assert abs(nh - h * scale) <= 1 and abs(nw - w * scale) <= 1
      # Which way did it go? Compare with the original resized independently by PIL.
      with Image.open(f'{shapes_coco}/images/train/{im["file_name"]}') as f:
        ref = np.asarray(f.convert('RGB').resize((nw, nh), Image.BILINEAR), np.float32)
      got = b['image'][k, :nh, :nw].astype(np.float32)
      err_plain = np.abs(got - ref).mean()
      err_flip = np.abs(got[:, ::-1] - ref).mean()
      flipped = err_flip < err_plain
      assert min(err_plain, err_flip) < 8 < max(err_plain, err_flip)
      flips[flipped] += 1
      sx, sy = nw / w, nh / h
      want = []
      for a in anns[im['id']]:
        x, y, bw, bh = a['bbox']
        box = [x * sx, y * sy, (x + bw) * sx, (y + bh) * sy]
        if flipped:
          box = [nw - box[2], box[1], nw - box[0], box[3]]
        want.append(box)
      n = len(want)
      assert b['box_valid'][k].sum() == n and b['box_valid'][k, :n].all()
      if n:
        np.testing.assert_allclose(b['boxes'][k, :n], want, atol=1e-3)
      assert (b['boxes'][k, n:] == 0).all()
      # Padding pixels are zero.
      assert (b['image'][k, nh:] == 0).all() and (b['image'][k, :, nw:] == 0).all()
  assert flips[True] > 0 and flips[False] > 0


def test_crowd_empty_and_too_many_boxes(edge_tfds):
  name, data_dir, coco_json = edge_tfds
  c = data_config(name, data_dir, max_boxes=5, random_flip=False, min_sizes=(64,),
                  max_size=96, size_divisibility=32)
  seen = collections.defaultdict(list)
  for b in take(ip.create_train_dataset(c, 2, seed=0), 12):
    for k in range(2):
      seen[int(b['image_id'][k])].append(
          (b['box_valid'][k].sum(), b['num_truncated'][k], b['boxes'][k], b['image_size'][k]))
  # Image 2 has no boxes and image 5 only a crowd box: never used for training.
  assert set(seen) == {1, 3, 4}
  for n, trunc, boxes, _ in seen[1]:
    assert n == 1 and trunc == 0  # the crowd box is gone
  anns3 = [a for a in coco_json['annotations'] if a['image_id'] == 3]
  largest = sorted(anns3, key=lambda a: -a['bbox'][2] * a['bbox'][3])[:5]
  keep_ids = sorted(a['id'] for a in largest)
  for n, trunc, boxes, size in seen[3]:
    assert n == 5 and trunc == 3
    sx = size[1] / 96
    sy = size[0] / 64
    want = [[a['bbox'][0] * sx, a['bbox'][1] * sy, (a['bbox'][0] + a['bbox'][2]) * sx,
             (a['bbox'][1] + a['bbox'][3]) * sy]
            for a in sorted(anns3, key=lambda a: a['id']) if a['id'] in keep_ids]
    np.testing.assert_allclose(boxes[:5], want, atol=1e-3)


def test_eval_covers_every_image_once_with_a_padded_last_batch(shapes_tfds, shapes_coco):
  c = data_config(*shapes_tfds)
  images, _ = load_coco(shapes_coco, 'validation')
  ids, padded = [], 0
  for b in ip.create_eval_dataset(c, 4).as_numpy_iterator():
    assert b['image'].shape[0] == 4 and b['mask'].shape == (4,)
    padded += int((~b['mask']).sum())
    for k in np.flatnonzero(b['mask']):
      im = images[int(b['image_id'][k])]
      assert tuple(b['orig_size'][k]) == (im['height'], im['width'])
      scale = min(96 / min(im['height'], im['width']), 128 / max(im['height'], im['width']))
      np.testing.assert_allclose(b['image_size'][k], [im['height'] * scale, im['width'] * scale],
                                 atol=1)
      ids.append(int(b['image_id'][k]))
    assert (b['image'][~b['mask']] == 0).all()
  assert sorted(ids) == sorted(images)
  assert padded > 0  # 11 images in batches of 4: some batches are padded, none dropped


def test_images_without_boxes_can_be_kept_as_negatives(edge_tfds):
  name, data_dir, _ = edge_tfds
  c = data_config(name, data_dir, max_boxes=5, random_flip=False, min_sizes=(64,),
                  max_size=96, size_divisibility=32, keep_empty_images=True)
  seen = collections.defaultdict(list)
  for b in take(ip.create_train_dataset(c, 2, seed=0), 12):
    for k in range(2):
      seen[int(b['image_id'][k])].append(int(b['box_valid'][k].sum()))
  assert set(seen) == {1, 2, 3, 4, 5}  # 2 (no boxes) and 5 (only a crowd box) now train
  assert set(seen[2]) == set(seen[5]) == {0}


def test_eval_batches_can_carry_their_ground_truth(edge_tfds):
  """with_boxes: non-crowd boxes in resized pixels, largest max_boxes kept, the cut counted;
  the default eval batches stay as they were."""
  name, data_dir, coco_json = edge_tfds
  c = data_config(name, data_dir, max_boxes=5, min_sizes=(64,), max_size=96, eval_min_size=64)
  plain = next(ip.create_eval_dataset(c, 5, split='train').as_numpy_iterator())
  assert 'boxes' not in plain
  seen = {}
  for b in ip.create_eval_dataset(c, 5, split='train', with_boxes=True).as_numpy_iterator():
    for k in np.flatnonzero(b['mask']):
      seen[int(b['image_id'][k])] = (b['boxes'][k], b['box_valid'][k], b['num_truncated'][k],
                                     b['image_size'][k], b['orig_size'][k])
  assert sorted(seen) == [1, 2, 3, 4, 5]
  for image_id, (boxes, valid, cut, size, orig) in seen.items():
    anns = [a for a in coco_json['annotations'] if a['image_id'] == image_id and
            not a['iscrowd']]
    kept = sorted(sorted(anns, key=lambda a: -a['bbox'][2] * a['bbox'][3])[:5],
                  key=lambda a: a['id'])
    assert valid.sum() == len(kept) and cut == len(anns) - len(kept)
    sx, sy = size[1] / orig[1], size[0] / orig[0]
    want = [[a['bbox'][0] * sx, a['bbox'][1] * sy, (a['bbox'][0] + a['bbox'][2]) * sx,
             (a['bbox'][1] + a['bbox'][3]) * sy] for a in kept]
    np.testing.assert_allclose(boxes[:len(kept)], np.reshape(want, (-1, 4)), atol=1e-3)


def test_two_processes_read_disjoint_shards_covering_the_split(shapes_tfds, shapes_coco):
  c = data_config(*shapes_tfds)
  val_images, _ = load_coco(shapes_coco, 'validation')
  eval_ids = []
  for p in range(2):
    ds = ip.create_eval_dataset(c, 4, process_index=p, process_count=2)
    eval_ids.append({int(i) for b in ds.as_numpy_iterator() for i in b['image_id'][b['mask']]})
  assert not eval_ids[0] & eval_ids[1]
  assert eval_ids[0] | eval_ids[1] == set(val_images)

  train_images, train_anns = load_coco(shapes_coco, 'train')
  with_boxes = {i for i in train_images if train_anns[i]}
  train_ids, shapes = [], []
  for p in range(2):
    ds = ip.create_train_dataset(c, 2, seed=5, process_index=p, process_count=2)
    batches = take(ds, 30)
    train_ids.append({int(i) for b in batches for i in b['image_id']})
    shapes.append([b['image'].shape for b in batches])
  assert not train_ids[0] & train_ids[1]
  assert train_ids[0] | train_ids[1] == with_boxes
  # Every process feeds the same bucket shape at the same step.
  assert shapes[0] == shapes[1]


def test_train_pipeline_is_deterministic_given_the_seed(shapes_tfds):
  c = data_config(*shapes_tfds)
  a = take(ip.create_train_dataset(c, 3, seed=11), 5)
  b = take(ip.create_train_dataset(c, 3, seed=11), 5)
  other = take(ip.create_train_dataset(c, 3, seed=12), 5)
  for x, y in zip(a, b):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  assert any(not np.array_equal(x['image_id'], y['image_id']) for x, y in zip(a, other))


def test_missing_dataset_gives_a_clear_error(tmp_path):
  c = data_config('no_such_dataset_here', str(tmp_path))
  with pytest.raises(ip.DatasetNotPreparedError, match='convert_coco|tfds build'):
    ip.create_train_dataset(c, 2)


def test_categories_map_labels_to_coco_ids(shapes_tfds):
  from fcos_jax.data import synthetic
  cats = ip.dataset_categories(data_config(*shapes_tfds))
  assert cats.to_coco() == list(synthetic.CATEGORIES)
  assert len(categories.COCO_CATEGORY_IDS) == 80 and len(set(categories.COCO_CATEGORY_IDS)) == 80


@pytest.mark.parametrize('fmt', ['JPEG', 'PNG'])
def test_image_shape_from_header(fmt):
  buf = io.BytesIO()
  Image.fromarray(np.zeros((37, 300, 3), np.uint8)).save(buf, format=fmt)
  hw = pp.image_shape_from_header(tf.constant(buf.getvalue()))
  assert hw.numpy().tolist() == [37, 300]


def test_bucket_shapes():
  assert sizes.bucket_shapes((640, 800), 1333, 128) == ((896, 1408), (1408, 896))
  assert sizes.bucket_shapes((800,), 1333, 128, aspect_buckets=False) == ((1408, 1408),)
  assert sizes.bucket_shapes((128,), 128, 32) == ((128, 128),)


def test_normalize_images_on_device():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (2, 8, 10, 3), dtype=np.uint8)
  sizes = np.array([[5, 7], [8, 10]], np.int32)
  mean, std = (10.0, 20.0, 30.0), (2.0, 4.0, 8.0)
  got = np.asarray(normalize_images(jnp.asarray(images), jnp.asarray(sizes), mean, std))
  want = np.zeros_like(got)
  for k, (h, w) in enumerate(sizes):
    want[k, :h, :w] = (images[k, :h, :w] - np.array(mean)) / np.array(std)
  np.testing.assert_allclose(got, want, rtol=1e-6)



def test_to_global_arrays_shards_the_batch_over_devices():
  import jax
  from jax.sharding import NamedSharding, PartitionSpec as P
  mesh = jax.make_mesh((8,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
  sharding = NamedSharding(mesh, P('data'))
  host = {'image': np.arange(16 * 4 * 4 * 3, dtype=np.uint8).reshape(16, 4, 4, 3) % 251,
          'boxes': np.random.default_rng(0).random((16, 2, 4)).astype(np.float32)}
  out = ip.to_global_arrays(host, sharding)
  assert out['image'].sharding == sharding and out['image'].shape == (16, 4, 4, 3)
  assert len(out['image'].addressable_shards) == 8
  assert out['image'].addressable_shards[1].data.shape == (2, 4, 4, 3)
  np.testing.assert_array_equal(np.asarray(out['image'].addressable_shards[1].data),
                                host['image'][2:4])
  np.testing.assert_array_equal(np.asarray(out['boxes']), host['boxes'])
