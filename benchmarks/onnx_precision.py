"""Size and onnxruntime CPU latency of ONNX exports of one model in several precisions.

Give export directories (export.py --format onnx [--precision int8]); each one's first model runs
on the same random uint8 batches, the exports taking turns (rounds interleaved, so that machine
load hits all alike); prints the median latency per batch size and the ratio to the first.

  python -m benchmarks.onnx_precision /tmp/shapes_onnx /tmp/shapes_int8 [--batches 1,8]
"""

import argparse
import json
import os
import time

import numpy as np


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('exports', nargs='+')
  parser.add_argument('--batches', default='1,8')
  parser.add_argument('--rounds', type=int, default=20)
  args = parser.parse_args()
  from fcos_jax import serving
  detectors, sizes = [], []
  for folder in args.exports:
    meta = json.load(open(os.path.join(folder, 'metadata.json')))
    sizes.append(sum(os.path.getsize(os.path.join(folder, m['file'])) for m in meta['models']))
    detectors.append((meta.get('precision', 'float32'), serving.Detector(folder)))
  shape = detectors[0][1].shapes[0]
  rng = np.random.default_rng(0)
  print('| export | precision | MiB | ' + ' | '.join(f'batch {b} ms (ratio)'
                                                  for b in args.batches.split(',')) + ' |')
  print('| --- | --- | --- | ' + ' | '.join('---' for _ in args.batches.split(',')) + ' |')
  table = {i: [] for i in range(len(detectors))}
  for b in map(int, args.batches.split(',')):
    images = rng.integers(0, 256, (b,) + tuple(shape) + (3,), dtype=np.uint8)
    sizes_in = np.array([shape] * b, np.int32)
    times = {i: [] for i in range(len(detectors))}
    for _, d in detectors:
      d(images, sizes_in)  # warm up
    for _ in range(args.rounds):
      for i, (_, d) in enumerate(detectors):
        start = time.perf_counter()
        d(images, sizes_in)
        times[i].append(time.perf_counter() - start)
    for i in table:
      table[i].append(1e3 * float(np.median(times[i])))
  for i, (precision, _) in enumerate(detectors):
    cells = [f'{t:.1f} ({t / table[0][k]:.2f}x)' for k, t in enumerate(table[i])]
    print(f'| {args.exports[i]} | {precision} | {sizes[i] / 2**20:.2f} | ' + ' | '.join(cells)
          + ' |')


if __name__ == '__main__':
  main()
