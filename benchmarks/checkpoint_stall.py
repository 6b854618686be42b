"""The data-iterator part of a checkpoint at the COCO config: its size and the loop's stall.

Prepares `coco/2017` with TFDS's own builder from COCO-sized generated JPEGs (about 640x480,
`fcos_jax.data.mock_coco`, cached in --data_dir), builds the COCO config's training pipeline
(shuffle buffer 1000 per aspect bucket, shorter side 800, batch --batch per host), reads
--batches batches, then writes the iterator state as `Checkpointer.save` does
(`tf.train.Checkpoint(iterator=...).write`, synchronous: the loop waits for it). Reports the
state's size on disk, the write time, the restore time, and whether the restored iterator yields
the batch the original one does next.

  python -m benchmarks.checkpoint_stall [--images 1200 --batch 16 --batches 4]
"""

import argparse
import os
import shutil
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from fcos_jax.configs import coco  # noqa: E402
from fcos_jax.data import input_pipeline, mock_coco  # noqa: E402


def _size(path: str) -> int:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def measure(data_dir: str, images: int, batch: int, batches: int, settle_s: float,
            image_size=(480, 640), shuffle_buffer: int = 1000, min_size: int = 800,
            max_size: int = 1333):
  """{'state_mb', 'write_s', 'restore_s', 'same_next_batch', ...} of one iterator checkpoint."""
  import tensorflow_datasets as tfds
  builder = tfds.builder('coco/2017', data_dir=data_dir)
  if not builder.is_prepared():  # else the cached one, with its own image count
    builder = mock_coco.prepare(data_dir, {'train': images, 'validation': 2, 'test': 1},
                                image_size=image_size)
  images = builder.info.splits['train'].num_examples
  train_bytes = sum(os.path.getsize(os.path.join(builder.data_dir, f))
                    for f in os.listdir(builder.data_dir) if f.startswith('coco-train.'))
  config = coco.get_data_config()
  config.update(data_dir=data_dir, shuffle_buffer=shuffle_buffer, min_sizes=(min_size,),
                max_size=max_size)

  def pipeline():
    return input_pipeline.create_train_dataset(config, batch, seed=0, process_index=0,
                                               process_count=1)

  it = iter(pipeline())
  for _ in range(batches):
    next(it)
  time.sleep(settle_s)  # let the prefetch and map buffers fill, as during a training step
  out = tempfile.mkdtemp(prefix='iterator_state_')
  try:
    t = time.perf_counter()
    tf.train.Checkpoint(iterator=it).write(os.path.join(out, 'iterator'))
    write_s = time.perf_counter() - t
    state_mb = _size(out) / 2**20
    want = next(it)
    restored = iter(pipeline())
    t = time.perf_counter()
    tf.train.Checkpoint(iterator=restored).read(os.path.join(out, 'iterator')).assert_consumed()
    restore_s = time.perf_counter() - t
    got = next(restored)
    same = all(np.array_equal(want[k].numpy(), got[k].numpy()) for k in want)
  finally:
    shutil.rmtree(out, ignore_errors=True)
  return {'state_mb': state_mb, 'write_s': write_s, 'restore_s': restore_s,
          'same_next_batch': same, 'batch': batch, 'images': images,
          'shuffle_buffer': shuffle_buffer, 'image_mb': train_bytes / 2**20 / images}


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--images', type=int, default=1200)
  parser.add_argument('--batch', type=int, default=16)
  parser.add_argument('--batches', type=int, default=4)
  parser.add_argument('--settle_s', type=float, default=10.0)
  parser.add_argument('--data_dir', default=os.path.join(tempfile.gettempdir(),
                                                          'fcos_bench_mock_coco'))
  args = parser.parse_args()
  r = measure(args.data_dir, args.images, args.batch, args.batches, args.settle_s)
  print(f'coco/2017 (mock, {r["images"]} JPEGs of {r["image_mb"] * 1024:.0f} KB on average), '
        f'shuffle buffer {r["shuffle_buffer"]} per bucket, batch {r["batch"]} per host')
  print(f'{"iterator state (MB)":<28}{"write (s)":>10}{"restore (s)":>12}{"same next batch":>17}')
  print(f'{r["state_mb"]:<28.1f}{r["write_s"]:>10.2f}{r["restore_s"]:>12.2f}'
        f'{str(r["same_next_batch"]):>17}')


if __name__ == '__main__':
  main()
