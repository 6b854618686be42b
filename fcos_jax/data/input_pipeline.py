"""tf.data input pipelines from TFDS to device-ready batches with static shapes.

Training: each process reads its own part of the split, drops crowd boxes and images left
without boxes, resizes (random shorter side from `min_sizes`), flips, and pads to one of at most
two bucket shapes (landscape / portrait, multiples of `size_divisibility`). Each batch holds one
bucket. Which bucket a step uses is drawn from a seeded sequence that is the same on every
process, so all processes feed the same shape to the same step of the SPMD program.

Evaluation: deterministic, no flip, every image of the split exactly once; a bucket's last partial
batch is filled with masked dummy examples ('mask' False), never dropped. Each example carries its
image id, original (h, w) and resized (h, w) so detections map back to the original image. With
`eval_padding='per_image'` each image is padded to its own next multiple of `size_divisibility`
and batches hold images of one exact padded shape (grouped from the headers, before decoding), so
inference compiles once per shape that occurs (about 18 per orientation at 800/1333 and 32).
"""

import logging
from typing import Any, Dict, Optional, Sequence

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from fcos_jax import errors
from fcos_jax.data import categories as categories_lib
from fcos_jax.data import preprocessing as pp
from fcos_jax.data import sizes

# 'bucket': the fixed bucket shapes (at most two programs); 'per_image': each image padded to its
# own next multiple of size_divisibility (one program per shape that occurs).
EVAL_PADDINGS = ('bucket', 'per_image')
# ArrayRecord records fetched per read.
READ_CHUNK = 64

class DatasetNotPreparedError(errors.UserError, RuntimeError):
  """The config names a TFDS dataset that is not prepared where it points."""


def get_builder(data_config) -> tfds.core.DatasetBuilder:
  """The TFDS builder named by the config; a clear error if the data is not prepared."""
  name, data_dir = data_config.dataset, data_config.data_dir
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise DatasetNotPreparedError(
        f'TFDS dataset {name!r} not found in data_dir={data_dir!r}. For a COCO-format dataset '
        f'run `python -m fcos_jax.data.convert_coco --name {name} --data_dir DIR ...`; for a '
        f'TFDS catalog dataset run `tfds build {name} --data_dir DIR`.') from e
  if not builder.is_prepared():
    raise DatasetNotPreparedError(
        f'TFDS dataset {name!r} is not prepared in {builder.data_dir}. Prepare it with '
        f'`tfds build {name} --data_dir {data_dir or "~/tensorflow_datasets"}` (COCO needs '
        f'the ~25 GB download; with manual files use --manual_dir), or in Python '
        f'`tfds.builder({name!r}, data_dir=...).download_and_prepare()`. A COCO-format dataset '
        'of your own: `python -m fcos_jax.data.convert_coco`.')
  return builder


def dataset_categories(data_config, coco_fallback: bool = False) -> categories_lib.Categories:
  """The categories (label -> COCO category id and name) of the config's dataset; with
  `coco_fallback`, COCO's built-in list when a `coco/...` dataset is not prepared here (to run
  or export a COCO detector without the data)."""
  try:
    return categories_lib.from_builder(get_builder(data_config))
  except DatasetNotPreparedError:
    if coco_fallback and data_config.dataset.startswith('coco'):
      return categories_lib.coco()
    raise


def process_split(split: str, process_index: int, process_count: int):
  """This process's disjoint, near-equal part of `split`."""
  if process_count == 1:
    return split
  return tfds.even_splits(split, n=process_count, drop_remainder=False)[process_index]


def _decode(example: Dict[str, tf.Tensor], pil_exact: bool = False) -> tf.Tensor:
  return pp.decode_image(example['image'], pil_exact)


def file_format(builder: tfds.core.DatasetBuilder) -> str:
  """'tfrecord' or 'array_record': how the prepared dataset is stored."""
  stored = builder.info.file_format
  return str(getattr(stored, 'value', stored))


def random_access(builder: tfds.core.DatasetBuilder) -> bool:
  """Whether the prepared records can be read by index (ArrayRecord; TFDS's tf.data reader
  refuses them, so `_read` goes through its data source)."""
  return file_format(builder) == 'array_record'


def record_source(builder, split):
  """The serialized records of `split` of an ArrayRecord dataset, by index."""
  return builder.as_data_source(split=split,
                                deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)


def read_records(source, indices: np.ndarray):
  """The records at `indices`, in that order, fetched in chunks (ArrayRecord reads a chunk in
  parallel, which matters on network storage)."""
  for start in range(0, len(indices), READ_CHUNK):
    yield from source.__getitems__(indices[start:start + READ_CHUNK].tolist())


def deserializer(builder):
  """Serialized record -> the example `as_dataset` gives with the image left encoded."""
  features, skip = builder.info.features, {'image': tfds.decode.SkipDecoding()}
  return lambda record: features.deserialize_example(record, decoders=skip)


def _read(builder, split, shuffle_seed=None) -> tf.data.Dataset:
  """Examples of `split`, images encoded; `shuffle_seed`: the record order shuffled (per file
  for TFRecord, per record for ArrayRecord)."""
  if random_access(builder):
    source = record_source(builder, split)
    order = np.arange(len(source))
    if shuffle_seed is not None:
      order = np.random.default_rng(shuffle_seed).permutation(order)
    ds = tf.data.Dataset.from_generator(lambda: read_records(source, order),
                                        output_signature=tf.TensorSpec([], tf.string))
    return ds.map(deserializer(builder), num_parallel_calls=tf.data.AUTOTUNE)
  read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed, try_autocache=False)
  return builder.as_dataset(split=split, shuffle_files=shuffle_seed is not None,
                            read_config=read_config,
                            decoders={'image': tfds.decode.SkipDecoding()})


def read_examples(builder, split, decode_images: bool = False) -> tf.data.Dataset:
  """The examples of `split` in order, as `builder.as_dataset` gives them, for TFRecord and
  ArrayRecord alike; images left encoded unless `decode_images` (the pipeline's decoder)."""
  ds = _read(builder, split)
  if decode_images:
    ds = ds.map(lambda ex: dict(ex, image=_decode(ex)), num_parallel_calls=tf.data.AUTOTUNE)
  return ds


def with_shape(num_buckets):
  """Adds '_hw' (from the image header, nothing decoded) and its aspect '_bucket'."""
  def fn(ex):
    hw = pp.image_shape_from_header(ex['image'])
    return dict(ex, _hw=hw, _bucket=pp.bucket_index(hw, num_buckets))
  return fn


def no_training_images(data_config) -> errors.DataError:
  return errors.DataError(
      f'{data_config.dataset} split {data_config.train_split!r}: no image has a non-crowd box, '
      'and training skips images without one (config.data.keep_empty_images=True trains on them '
      'as background)')


def scan_buckets(builder, data_config, split: str, max_examples: int = 2000) -> Dict[str, Any]:
  """Header-only scan of the first examples of `split`: bucket fractions and empty images
  ('complete': the whole split was scanned).

  Run identically on every process (same examples), so the bucket weights agree everywhere.
  """
  shapes = sizes.train_shapes(data_config)
  ds = _read(builder, split).take(max_examples).map(with_shape(len(shapes)))
  counts = np.zeros(len(shapes), np.int64)
  empty = total = 0
  for ex in ds.map(lambda e: (e['_bucket'], tf.reduce_any(~e['objects']['is_crowd']))
                   ).as_numpy_iterator():
    counts[ex[0]] += 1
    empty += int(not ex[1])
    total += 1
  if total == 0:
    raise errors.DataError(f'split {split!r} of {builder.name} is empty')
  return {'bucket_fractions': counts / total, 'scanned': total, 'without_boxes': empty,
          'complete': total < max_examples}


def checked_bucket_fractions(builder, data_config) -> np.ndarray:
  """The training split's bucket fractions (`scan_buckets`), logged; a split whose scanned images
  all lack boxes (and would all be skipped) is the user's error."""
  stats = scan_buckets(builder, data_config, data_config.train_split)
  logging.info('bucket fractions %s (first %d images); %d of them have no non-crowd box and '
               '%s in training', np.round(stats['bucket_fractions'], 3), stats['scanned'],
               stats['without_boxes'],
               'are kept' if data_config.keep_empty_images else 'are skipped')
  if (stats['without_boxes'] == stats['scanned'] and not data_config.keep_empty_images
      and stats['complete']):
    raise no_training_images(data_config)
  return stats['bucket_fractions']


def train_preprocess(data_config, shape, seed, label_map=None):
  """(index, example) -> a padded training example; the random size and flip are drawn from
  (seed, index) alone, so an example's augmentation does not depend on what came before."""
  min_sizes = tf.constant(list(data_config.min_sizes), tf.float32)
  label_map = None if label_map is None else tf.constant(list(label_map), tf.int64)

  def fn(index, ex):
    rng = tf.random.experimental.stateless_split(tf.stack([tf.cast(seed, tf.int64), index]), 2)
    image = _decode(ex)
    hw = tf.shape(image)[:2]
    keep = ~ex['objects']['is_crowd']
    boxes = pp.normalized_to_absolute(tf.boolean_mask(ex['objects']['bbox'], keep), hw)
    classes = tf.boolean_mask(ex['objects']['label'], keep)
    if label_map is not None:
      classes = tf.gather(label_map, classes)
    pick = tf.random.stateless_uniform([], rng[0], 0, len(data_config.min_sizes), tf.int32)
    scale = pp.resize_scale(hw, min_sizes[pick], data_config.max_size)
    image, new_hw = pp.resize_image(image, scale)
    ratio = tf.cast(new_hw, tf.float32) / tf.cast(hw, tf.float32)
    boxes = boxes * tf.stack([ratio[1], ratio[0], ratio[1], ratio[0]])
    if data_config.random_flip:
      flip = tf.random.stateless_uniform([], rng[1]) < 0.5
      image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
      boxes = tf.cond(flip, lambda: pp.flip_boxes(boxes, new_hw[1]), lambda: boxes)
    out = pp.pad_boxes(boxes, classes, data_config.max_boxes)
    out.update(image=pp.pad_image(image, shape), image_size=new_hw,
               image_id=tf.cast(ex['image/id'], tf.int32))
    return out
  return fn


def create_train_dataset(data_config, batch_size: int, *, seed: int = 0,
                         process_index: Optional[int] = None,
                         process_count: Optional[int] = None,
                         bucket_weights: Optional[Sequence[float]] = None,
                         label_map: Optional[Sequence[int]] = None) -> tf.data.Dataset:
  """Infinite dataset of batches of `batch_size` (this process's share of the global batch).

  `label_map`: class id to train for each dataset label (e.g. COCO category ids for a model
  whose outputs are indexed by category id); default: the label itself.

  Elements: 'image' uint8 [B, H, W, 3], 'image_size' int32 [B, 2] (resized h, w), 'boxes'
  float32 [B, M, 4] (x0, y0, x1, y1), 'classes' int32 [B, M], 'box_valid' bool [B, M],
  'num_truncated' int32 [B], 'image_id' int32 [B]. (H, W) is one of `sizes.train_shapes`.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  builder = get_builder(data_config)
  shapes = sizes.train_shapes(data_config)
  if bucket_weights is None:
    bucket_weights = checked_bucket_fractions(builder, data_config)
  split = process_split(data_config.train_split, process_index, process_count)
  streams, weights = [], []
  for b, shape in enumerate(shapes):
    if bucket_weights[b] <= 0:
      continue
    ds = _read(builder, split, shuffle_seed=seed + 1000 * process_index)
    ds = ds.map(with_shape(len(shapes)), num_parallel_calls=tf.data.AUTOTUNE)
    keep_empty = data_config.keep_empty_images
    ds = ds.filter(lambda ex, b=b: (ex['_bucket'] == b) &
                   (keep_empty or tf.reduce_any(~ex['objects']['is_crowd'])))
    # Shuffle, then repeat: epochs stay whole, each reshuffled (deterministically from the seed).
    ds = ds.shuffle(data_config.shuffle_buffer, seed=seed + 7919 * process_index + b,
                    reshuffle_each_iteration=True).repeat()
    ds = ds.enumerate()
    ds = ds.map(train_preprocess(data_config, shape,
                                  seed * 1_000_003 + 7919 * process_index + 101 * b, label_map),
                num_parallel_calls=tf.data.AUTOTUNE)
    streams.append(ds.batch(batch_size, drop_remainder=True))
    weights.append(float(bucket_weights[b]))
  if len(streams) == 1:
    ds = streams[0]
  else:
    # Same seed on every process: the bucket of step k is the same everywhere.
    ds = tf.data.Dataset.sample_from_datasets(streams, weights, seed=seed)
  options = tf.data.Options()
  options.deterministic = True
  return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def _eval_resized_size(data_config, hw):
  """The resized (h, w) of an evaluation image (`sizes.eval_resized_size` in graph ops)."""
  d = data_config
  if d.torchvision_exact:
    return pp.resized_size_torchvision(hw, d.eval_min_size, d.max_size)
  return pp.scaled_size(hw, pp.resize_scale(hw, d.eval_min_size, d.max_size))


def _eval_preprocess(data_config, shape, with_boxes=False):
  """`shape` None: pad to the next multiple of `size_divisibility` ('per_image')."""
  exact = data_config.torchvision_exact

  def fn(ex):
    image = _decode(ex, pil_exact=exact)
    hw = tf.shape(image)[:2]
    if exact:  # float32 pixels, never rounded to 8 bits, as torchvision resizes
      new_hw = _eval_resized_size(data_config, hw)
      image = pp.resize_image_float(image, new_hw)
    else:
      scale = pp.resize_scale(hw, data_config.eval_min_size, data_config.max_size)
      image, new_hw = pp.resize_image(image, scale)
    if shape is None:
      image = pp.pad_to_multiple(image, data_config.size_divisibility)
    else:
      image = pp.pad_image(image, shape)
    out = {'image': image, 'image_size': new_hw, 'orig_size': hw,
           'image_id': ex['image/id'], 'mask': tf.constant(True)}
    if with_boxes:  # non-crowd ground truth in resized pixels, as the training targets see it
      keep = ~ex['objects']['is_crowd']
      boxes = pp.normalized_to_absolute(tf.boolean_mask(ex['objects']['bbox'], keep), new_hw)
      out.update(pp.pad_boxes(boxes, tf.boolean_mask(ex['objects']['label'], keep),
                              data_config.max_boxes))
    return out
  return fn


def _padded_shape_key(data_config):
  """Example -> int64 key of its padded eval shape (H * 2**20 + W), from the image header."""
  d = data_config.size_divisibility

  def key(ex):
    new_hw = _eval_resized_size(data_config, pp.image_shape_from_header(ex['image']))
    padded = tf.cast((new_hw + d - 1) // d * d, tf.int64)
    return padded[0] * 2**20 + padded[1]
  return key


def _pad_batch(batch_size):
  def fn(batch):
    n = tf.shape(batch['mask'])[0]

    def pad(x):
      x = tf.pad(x, [[0, batch_size - n]] + [[0, 0]] * (len(x.shape) - 1))
      return tf.ensure_shape(x, [batch_size] + x.shape[1:])
    return {k: pad(v) for k, v in batch.items()}
  return fn


def create_eval_dataset(data_config, batch_size: int, *, split: Optional[str] = None,
                        process_index: Optional[int] = None,
                        process_count: Optional[int] = None,
                        with_boxes: bool = False) -> tf.data.Dataset:
  """Finite dataset: every image of this process's part of the split exactly once.

  Elements: 'image' uint8 [B, H, W, 3] (float32 with `torchvision_exact`), 'image_size' int32
  [B, 2] (resized h, w), 'orig_size' int32 [B, 2], 'image_id' int64 [B], 'mask' bool [B] (False
  on padding examples). (H, W): one of `sizes.eval_shapes`, or with `eval_padding='per_image'`
  each image's `sizes.padded_shape` (one shape per batch). With
  `with_boxes`, also the non-crowd ground truth as in training batches (resized pixels, padded to
  `max_boxes`): 'boxes', 'classes' (dataset labels), 'box_valid', 'num_truncated'.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  builder = get_builder(data_config)
  split = process_split(split or data_config.eval_split, process_index, process_count)
  if data_config.eval_padding == 'per_image':
    def batches(_, examples):
      examples = examples.map(_eval_preprocess(data_config, None, with_boxes),
                              num_parallel_calls=tf.data.AUTOTUNE)
      return examples.batch(batch_size).map(_pad_batch(batch_size))
    # Grouped on the encoded records (headers only), so at most one partial batch of encoded
    # images per shape is held, never decoded float images.
    ds = _read(builder, split).group_by_window(_padded_shape_key(data_config), batches,
                                               window_size=batch_size)
    return ds.prefetch(tf.data.AUTOTUNE)
  shapes = sizes.eval_shapes(data_config)
  ds = None
  for b, shape in enumerate(shapes):
    part = _read(builder, split).map(with_shape(len(shapes)))
    part = part.filter(lambda ex, b=b: ex['_bucket'] == b)
    part = part.map(_eval_preprocess(data_config, shape, with_boxes),
                    num_parallel_calls=tf.data.AUTOTUNE)
    part = part.batch(batch_size).map(_pad_batch(batch_size))
    ds = part if ds is None else ds.concatenate(part)
  return ds.prefetch(tf.data.AUTOTUNE)


def to_global_arrays(batch: Dict[str, np.ndarray], sharding) -> Dict[str, jax.Array]:
  """Host-local numpy batch -> global arrays, leading axis split over the data-parallel devices.

  The transfer starts at once and runs while the previous (asynchronously dispatched) step
  computes: a device prefetch of depth one that keeps the data iterator's position exact.
  """
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}
