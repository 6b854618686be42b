"""Training input pipeline throughput (images/s) at COCO resolution on this machine.

Generates COCO-sized synthetic images (about 640x480, a third portrait), converts them with the
project's converter (cached in --data_dir), then times the training pipeline: read, decode,
resize to shorter side 800 / longer <= 1333, flip, pad to the COCO config's buckets, batch.

Per sampler: 'buffer' reads TFRecord through shuffle buffers, 'index' reads ArrayRecord by
index (data/train_stream.py); the same images converted both ways.

  python -m benchmarks.bench_input_pipeline [--images 256 --batch 8 --batches 40 --rounds 2]
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import tensorflow as tf  # noqa: E402

from fcos_jax.configs import coco  # noqa: E402
from fcos_jax.data import coco_conversion, sizes, synthetic, train_stream  # noqa: E402


def _time(config, batch: int, batches: int) -> float:
  """Seconds for `batches` batches after 5 warm-up ones (buffers filled, functions traced)."""
  it = train_stream.open_train_stream(config, batch, seed=0, process_index=0, process_count=1)
  for _ in range(5):
    next(it)
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  elapsed = time.perf_counter() - start
  if hasattr(it, 'close'):
    it.close()
  return elapsed


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--images', type=int, default=256)
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--batches', type=int, default=40)
  parser.add_argument('--samplers', default='buffer,index',
                      help="'buffer' (TFRecord, shuffle buffers), 'index' (ArrayRecord)")
  parser.add_argument('--rounds', type=int, default=1, help='each sampler timed this many times, '
                      'in turn')
  parser.add_argument('--data_dir', default=os.path.join(tempfile.gettempdir(), 'fcos_bench_data'))
  args = parser.parse_args()
  samplers = args.samplers.split(',')
  raw = os.path.join(args.data_dir, f'raw_{args.images}')
  configs = {}
  for sampler in samplers:
    file_format = 'array_record' if sampler == 'index' else 'tfrecord'
    name = f'bench_shapes_{args.images}' + ('_ar' if sampler == 'index' else '')
    if not os.path.exists(os.path.join(args.data_dir, name)):
      if not os.path.exists(raw):
        synthetic.generate(raw, {'train': args.images}, seed=0, image_size=(480, 640),
                           size_jitter=0.1)
      coco_conversion.convert(name, args.data_dir, {'train': (f'{raw}/annotations/train.json',
                                                           f'{raw}/images/train')},
                              file_format=file_format)
    config = coco.get_data_config()
    config.update(dataset=name, data_dir=args.data_dir, sampler=sampler)
    configs[sampler] = config
  times = {s: [] for s in samplers}
  for _ in range(args.rounds):
    for sampler in samplers:
      times[sampler].append(_time(configs[sampler], args.batch, args.batches))
  config = configs[samplers[0]]
  print(f'cores: {os.cpu_count()}, TF {tf.__version__}, batch {args.batch}, '
        f'{args.batches} batches after 5 warm-up batches, {args.images} images')
  buckets = ' / '.join(f'{h}x{w}' for h, w in sizes.bucket_shapes(
      config.min_sizes, config.max_size, config.size_divisibility))
  print(f'train 800/1333, buckets {buckets}')
  print(f'{"sampler (records)":<28}{"images/s":>10}{"ms/batch":>10}   each round (images/s)')
  for sampler in samplers:
    best = min(times[sampler])
    label = 'index (ArrayRecord)' if sampler == 'index' else 'buffer (TFRecord)'
    rounds = ', '.join(f'{args.batches * args.batch / t:.1f}' for t in times[sampler])
    print(f'{label:<28}{args.batches * args.batch / best:>10.1f}'
          f'{best / args.batches * 1e3:>10.1f}   {rounds}')


if __name__ == '__main__':
  main()
