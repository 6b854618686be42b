"""The training stream and its position: index-sampled batches from random-access records.

With a dataset stored as ArrayRecord (`fcos convert --file_format array_record`, or TFDS's
`tfds build --file_format=array_record`), each aspect bucket's stream reads this process's
records in a seeded permutation, a new one each epoch. Everything after the read (header scan,
filters, augmentation drawn from (seed, position), padding, batching) is the shuffle-buffer
pipeline's own (`input_pipeline`), so a batch is a pure function of the seed and the stream
positions. The checkpointed position is then a few integers (the step, and per bucket how many
records its stream has read) instead of tf.data's iterator state, which holds the shuffle
buffers of encoded images and the decoded batches in flight (about 420 MB at the COCO config).
"""

import io
import logging
import weakref
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from fcos_jax import errors
from fcos_jax.data import input_pipeline, sizes

# 'buffer': tf.data shuffle buffers, the iterator state checkpointed (any TFDS format);
# 'index': per-epoch permutations of random-access records, the position a few integers
# (ArrayRecord); 'auto': 'index' where the records allow it.
SAMPLERS = ('auto', 'buffer', 'index')
POSITION_FORMAT = 'fcos_jax.train_stream/1'


def resolve_sampler(data_config, builder: tfds.core.DatasetBuilder) -> str:
  """`data.sampler`, with 'auto' decided by the dataset's file format."""
  sampler, indexed = data_config.sampler, input_pipeline.random_access(builder)
  if sampler == 'auto':
    return 'index' if indexed else 'buffer'
  if sampler == 'index' and not indexed:
    raise errors.ConfigError(
        f"config.data.sampler='index' reads records by index, but {builder.name} in "
        f'{builder.data_dir} is stored as {input_pipeline.file_format(builder)}: convert it '
        "with --file_format array_record, or use config.data.sampler='buffer'")
  if sampler == 'buffer' and indexed:
    raise errors.ConfigError(
        f"config.data.sampler='buffer' checkpoints tf.data's iterator state, which cannot hold "
        f"reads of {builder.name}'s ArrayRecord files in {builder.data_dir}: use "
        "config.data.sampler='index' (or 'auto')")
  return sampler


def open_train_stream(data_config, batch_size: int, *, seed: int, process_index: int,
                      process_count: int, label_map: Optional[Sequence[int]] = None):
  """This process's infinite iterator of training batches (`input_pipeline.create_train_dataset`
  elements): an `IndexedBatches` where the records allow it, else a tf.data iterator."""
  builder = input_pipeline.get_builder(data_config)
  sampler = resolve_sampler(data_config, builder)
  if process_index == 0:
    logging.info('training data: %s', 'index sampler over ArrayRecord (its position in a '
                 'checkpoint: a few integers)' if sampler == 'index' else 'shuffle buffers over '
                 'TFRecord (their tf.data state goes into each checkpoint; ArrayRecord data '
                 'would need a few integers)')
  if sampler == 'buffer':
    return iter(input_pipeline.create_train_dataset(
        data_config, batch_size, seed=seed, process_index=process_index,
        process_count=process_count, label_map=label_map))
  return IndexedBatches(data_config, batch_size, seed=seed, process_index=process_index,
                        process_count=process_count, label_map=label_map, builder=builder)


class IndexedBatches:
  """Training batches from seeded per-epoch permutations of random-access records.

  Same elements as `input_pipeline.create_train_dataset`. `position()` -> a small JSON-able dict
  after the last batch returned; `seek(position)` continues from one, with exactly the batches
  an uninterrupted stream would have given.
  """

  def __init__(self, data_config, batch_size: int, *, seed: int, process_index: int,
               process_count: int, label_map: Optional[Sequence[int]] = None,
               builder: Optional[tfds.core.DatasetBuilder] = None):
    builder = builder or input_pipeline.get_builder(data_config)
    self._config, self._batch_size, self._seed = data_config, batch_size, seed
    self._process = (process_index, process_count)
    self._label_map = label_map
    self._deserialize = input_pipeline.deserializer(builder)
    self._source = input_pipeline.record_source(builder, data_config.train_split)
    self._records = len(self._source)
    self._indices = np.arange(process_index, self._records, process_count)
    if not len(self._indices):
      raise errors.DataError(f'{builder.name} split {data_config.train_split!r} has '
                             f'{self._records} records, fewer than the {process_count} processes')
    self._shapes = sizes.train_shapes(data_config)
    self._weights = np.asarray(input_pipeline.checked_bucket_fractions(builder, data_config),
                               np.float64)
    self._step = 0
    self._next = [0] * len(self._shapes)
    # The running tf.data iterator, held in a list that a finalizer empties at exit: an
    # iterator over a Python generator still alive at interpreter shutdown hangs it.
    self._running = []
    self._known: Dict[int, Optional[tuple]] = {}  # record index -> `_eligible`, as learned
    weakref.finalize(self, self._running.clear)

  def position(self) -> Dict[str, Any]:
    return {'format': POSITION_FORMAT, 'step': self._step, 'next': list(self._next),
            'seed': self._seed, 'process_index': self._process[0],
            'process_count': self._process[1], 'batch_size': self._batch_size,
            'records': self._records}

  def seek(self, position: Dict[str, Any]) -> None:
    """Continue after `position` (from `position()` of a stream of the same settings)."""
    want = self.position()
    differing = [k for k in want if k not in ('step', 'next') and position.get(k) != want[k]]
    if differing or len(position.get('next', ())) != len(self._next):
      raise ValueError('the saved data position is of another stream ('
                       + ', '.join(f'{k} {position.get(k)} -> {want[k]}' for k in differing)
                       + ')' if differing else 'the saved data position has other buckets')
    self._step, self._next = int(position['step']), [int(n) for n in position['next']]
    self.close()

  def close(self) -> None:
    """Stops the reading (the next batch starts it again from the position)."""
    self._running.clear()

  def __iter__(self):
    return self

  def __next__(self) -> Dict[str, tf.Tensor]:
    if not self._running:
      self._running.append(iter(self._dataset(self._step, self._next)))
    batch = next(self._running[0])
    self._next[int(batch.pop('_stream'))] = int(batch.pop('_next'))
    self._step += 1
    return batch

  def _epoch_order(self, bucket: int, epoch: int) -> np.ndarray:
    rng = np.random.default_rng([self._seed, self._process[0], bucket, epoch])
    return self._indices[rng.permutation(len(self._indices))]

  def _read(self, bucket: int, start: int):
    """(record, stream position) from `start` on, forever, leaving out the records that
    `_eligible` rules out for this bucket (the tf.data filter after it stays the rule; this only
    saves reading, parsing and scanning them, once per record and bucket stream)."""
    n = len(self._indices)
    pos = start
    while True:
      epoch, offset = divmod(pos, n)
      order = self._epoch_order(bucket, epoch)
      for first in range(offset, n, input_pipeline.READ_CHUNK):
        chunk = order[first:first + input_pipeline.READ_CHUNK]
        wanted = [i for i, index in enumerate(chunk)
                  if self._known.get(int(index), (bucket, True)) == (bucket, True)]
        for i, record in zip(wanted, input_pipeline.read_records(self._source, chunk[wanted])):
          index = int(chunk[i])
          if index not in self._known:
            self._known[index] = self._eligible(record)
          if self._known[index] in ((bucket, True), None):
            yield record, epoch * n + first + i
      pos = (epoch + 1) * n

  def _eligible(self, record: bytes) -> Optional[tuple]:
    """(bucket, has a box to train on) of a record from its image header (PIL, nothing
    decoded), or None where that cannot be read here (the tf.data filter decides)."""
    try:
      feature = tf.train.Example.FromString(record).features.feature
      with Image.open(io.BytesIO(feature['image'].bytes_list.value[0])) as image:
        w, h = image.size
      crowd = feature['objects/is_crowd'].int64_list.value
    except Exception:  # noqa: BLE001 - any other encoding or layout: not ruled out
      return None
    return (sizes.bucket_of((h, w), self._shapes),
            bool(self._config.keep_empty_images or not all(crowd)))

  def _stream(self, bucket: int, start: int) -> tf.data.Dataset:
    d = self._config
    ds = tf.data.Dataset.from_generator(
        lambda: self._read(bucket, start),
        output_signature=(tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int64)))
    ds = ds.map(lambda record, pos: dict(self._deserialize(record), _pos=pos),
                num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(input_pipeline.with_shape(len(self._shapes)),
                num_parallel_calls=tf.data.AUTOTUNE)
    keep_empty = d.keep_empty_images
    ds = ds.filter(lambda ex: (ex['_bucket'] == bucket) &
                   (keep_empty or tf.reduce_any(~ex['objects']['is_crowd'])))
    process_index = self._process[0]
    preprocess = input_pipeline.train_preprocess(
        d, self._shapes[bucket], self._seed * 1_000_003 + 7919 * process_index + 101 * bucket,
        self._label_map)
    ds = ds.map(lambda ex: dict(preprocess(ex['_pos'], ex), _pos=ex['_pos']),
                num_parallel_calls=tf.data.AUTOTUNE)

    def finish(batch):
      pos = batch.pop('_pos')
      return dict(batch, _stream=tf.constant(bucket, tf.int64), _next=tf.reduce_max(pos) + 1)
    return ds.batch(self._batch_size, drop_remainder=True).map(finish)

  def _dataset(self, step: int, next_positions: List[int]) -> tf.data.Dataset:
    buckets = [b for b in range(len(self._shapes)) if self._weights[b] > 0]
    streams = [self._stream(b, next_positions[b]) for b in buckets]
    if len(streams) == 1:
      ds = streams[0]
    else:
      # The bucket of step k from (seed, k) alone: the same on every process, and on a resume.
      logits = tf.constant(np.log(self._weights[buckets])[None], tf.float32)
      seed = self._seed

      def choose(k):
        return tf.random.stateless_categorical(logits, 1, tf.stack([tf.constant(seed, tf.int64),
                                                                    k]))[0, 0]
      choices = tf.data.Dataset.range(step, np.iinfo(np.int64).max).map(choose)
      ds = tf.data.Dataset.choose_from_datasets(streams, choices)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)
