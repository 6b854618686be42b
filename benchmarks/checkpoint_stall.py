"""The data part of a checkpoint at the COCO config: its size and the loop's stall, per sampler.

Prepares `coco/2017` with TFDS's own builder from COCO-sized generated JPEGs (about 640x480,
`fcos_jax.data.mock_coco`, cached in --data_dir; as TFRecord for the 'buffer' sampler, as
ArrayRecord for 'index'), builds the COCO config's training stream (shuffle buffer 1000 per
aspect bucket for 'buffer', shorter side 800, batch --batch per host), reads --batches batches,
then writes the data position as `Checkpointer.save` does (`checkpoints.write_data_position`,
before the asynchronous orbax save: the loop waits for it): tf.data's iterator state for
'buffer', position.json for 'index'. Reports the size on disk, the write time, the restore time, the time to the first
batch after the restore, and whether the restored stream yields the batch the original does next.

  python -m benchmarks.checkpoint_stall [--images 1200 --batch 16 --batches 4]
      [--samplers buffer,index]
"""

import argparse
import os
import shutil
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import numpy as np  # noqa: E402

from fcos_jax.configs import coco  # noqa: E402
from fcos_jax.data import mock_coco, train_stream  # noqa: E402
from fcos_jax.weights import checkpoints  # noqa: E402


def _size(path: str) -> int:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def prepared(data_dir: str, images: int, image_size, file_format: str):
  import tensorflow_datasets as tfds
  data_dir = os.path.join(data_dir, file_format)
  builder = tfds.builder('coco/2017', data_dir=data_dir)
  if not builder.is_prepared():  # else the cached one, with its own image count
    builder = mock_coco.prepare(data_dir, {'train': images, 'validation': 2, 'test': 1},
                                image_size=image_size, file_format=file_format)
  return builder, data_dir


def measure(data_dir: str, images: int, batch: int, batches: int, settle_s: float,
            sampler: str = 'buffer', image_size=(480, 640), shuffle_buffer: int = 1000,
            min_size: int = 800, max_size: int = 1333):
  """{'state_kb', 'write_s', 'restore_s', 'first_batch_s', 'same_next_batch', ...} of one data
  position checkpoint."""
  builder, data_dir = prepared(data_dir, images, image_size,
                               'array_record' if sampler == 'index' else 'tfrecord')
  images = builder.info.splits['train'].num_examples
  train_bytes = sum(os.path.getsize(os.path.join(builder.data_dir, f))
                    for f in os.listdir(builder.data_dir) if f.startswith('coco-train.'))
  config = coco.get_data_config()
  config.update(data_dir=data_dir, shuffle_buffer=shuffle_buffer, min_sizes=(min_size,),
                max_size=max_size, sampler=sampler)

  def stream():
    return train_stream.open_train_stream(config, batch, seed=0, process_index=0,
                                          process_count=1)

  it = stream()
  for _ in range(batches):
    next(it)
  time.sleep(settle_s)  # let the prefetch and map buffers fill, as during a training step
  out = tempfile.mkdtemp(prefix='data_position_')
  try:
    t = time.perf_counter()
    checkpoints.write_data_position(out, it)
    write_s = time.perf_counter() - t
    state_kb = _size(out) / 2**10
    want = next(it)
    if hasattr(it, 'close'):
      it.close()
    restored = stream()
    t = time.perf_counter()
    checkpoints.read_data_position(out, restored)
    restore_s = time.perf_counter() - t
    t = time.perf_counter()
    got = next(restored)
    first_batch_s = time.perf_counter() - t
    if hasattr(restored, 'close'):
      restored.close()
    same = all(np.array_equal(np.asarray(want[k]), np.asarray(got[k])) for k in want)
  finally:
    shutil.rmtree(out, ignore_errors=True)
  return {'sampler': sampler, 'state_kb': state_kb, 'write_s': write_s, 'restore_s': restore_s,
          'first_batch_s': first_batch_s, 'same_next_batch': same, 'batch': batch,
          'images': images, 'shuffle_buffer': shuffle_buffer,
          'image_mb': train_bytes / 2**20 / images}


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--images', type=int, default=1200)
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--batches', type=int, default=4)
  parser.add_argument('--settle_s', type=float, default=10.0)
  parser.add_argument('--samplers', default='buffer,index')
  parser.add_argument('--data_dir', default=os.path.join(tempfile.gettempdir(),
                                                          'fcos_bench_mock_coco'))
  args = parser.parse_args()
  rows = [measure(args.data_dir, args.images, args.batch, args.batches, args.settle_s, s)
          for s in args.samplers.split(',')]
  r = rows[0]
  print(f'coco/2017 (mock, {r["images"]} JPEGs of {r["image_mb"] * 1024:.0f} KB on average), '
        f'800/1333, batch {r["batch"]} per host; shuffle buffer {r["shuffle_buffer"]} per bucket '
        "for 'buffer'")
  print(f'{"sampler":<9}{"data position":>15}{"write (s)":>11}{"restore (s)":>13}'
        f'{"first batch (s)":>17}{"same next batch":>17}')
  for r in rows:
    size = (f'{r["state_kb"] / 1024:.1f} MB' if r['state_kb'] > 1024
            else f'{r["state_kb"] * 1024:.0f} bytes')
    print(f'{r["sampler"]:<9}{size:>15}{r["write_s"]:>11.4f}{r["restore_s"]:>13.4f}'
          f'{r["first_batch_s"]:>17.2f}{str(r["same_next_batch"]):>17}')


if __name__ == '__main__':
  main()
