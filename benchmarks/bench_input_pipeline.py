"""Training input pipeline throughput (images/s) at COCO resolution on this machine.

Generates COCO-sized synthetic images (about 640x480, a third portrait), converts them with the
project's converter (cached in --data_dir), then times the training pipeline: read, decode,
resize to shorter side 800 / longer <= 1333, flip, pad to the COCO config's buckets, batch.

  python -m benchmarks.bench_input_pipeline [--images 256 --batch 8 --batches 40]
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import tensorflow as tf  # noqa: E402

from fcos_jax.configs import coco  # noqa: E402
from fcos_jax.data import coco_conversion, input_pipeline, sizes, synthetic  # noqa: E402


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--images', type=int, default=256)
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--batches', type=int, default=40)
  parser.add_argument('--data_dir', default=os.path.join(tempfile.gettempdir(), 'fcos_bench_data'))
  args = parser.parse_args()
  name = f'bench_shapes_{args.images}'
  if not os.path.exists(os.path.join(args.data_dir, name)):
    raw = os.path.join(args.data_dir, f'raw_{args.images}')
    synthetic.generate(raw, {'train': args.images}, seed=0, image_size=(480, 640),
                       size_jitter=0.1)
    coco_conversion.convert(name, args.data_dir, {'train': (f'{raw}/annotations/train.json',
                                                         f'{raw}/images/train')})
  config = coco.get_data_config()
  config.update(dataset=name, data_dir=args.data_dir)
  ds = input_pipeline.create_train_dataset(config, args.batch, seed=0)
  it = ds.as_numpy_iterator()
  for _ in range(5):  # warm up: fill buffers, trace functions
    next(it)
  start = time.perf_counter()
  for _ in range(args.batches):
    next(it)
  elapsed = time.perf_counter() - start
  ips = args.batches * args.batch / elapsed
  print(f'cores: {os.cpu_count()}, TF {tf.__version__}, batch {args.batch}, '
        f'{args.batches} batches after 5 warm-up batches')
  print(f'{"pipeline":<44}{"images/s":>10}{"ms/batch":>10}')
  buckets = ' / '.join(f'{h}x{w}' for h, w in sizes.bucket_shapes(
      config.min_sizes, config.max_size, config.size_divisibility))
  print(f'{"train 800/1333, buckets " + buckets:<44}{ips:>10.1f}'
        f'{elapsed / args.batches * 1e3:>10.1f}')


if __name__ == '__main__':
  main()
