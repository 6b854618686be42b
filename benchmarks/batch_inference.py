"""batch_predict.py (Beam) against predict.py on the same folder of images and the same export:
wall time of each command (start-up and compilation included, as a user sees it), images/s,
and whether the results rows are equal (exactly, or within float32 rounding of the batch
composition, see docs/inference.md).

  python -m benchmarks.batch_inference --export /tmp/shapes_export \
      --images ~/.cache/fcos_jax/data/fcos_shapes_coco/images/validation [--batch_size 8]
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(args):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='3', TF_ENABLE_ONEDNN_OPTS='0')
  start = time.perf_counter()
  out = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                       text=True)
  if out.returncode:
    raise SystemExit(f'{args[0]} failed:\n{out.stderr[-3000:]}')
  return time.perf_counter() - start


def rows(paths):
  found = []
  for path in paths:
    if path.endswith('.jsonl'):
      found += [json.loads(line) for line in open(path) if line.strip()]
    else:
      found += json.load(open(path))
  return sorted(found, key=lambda r: (r['file_name'], r['category_id'], -r['score']))


def largest_difference(a, b):
  if len(a) != len(b):
    return float('inf')
  return max((abs(x - y) for r, s in zip(a, b)
              for x, y in zip(r['bbox'] + [r['score']], s['bbox'] + [s['score']])), default=0.0)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--export', required=True)
  parser.add_argument('--images', required=True)
  parser.add_argument('--batch_size', type=int, default=8)
  args = parser.parse_args()
  count = len([f for f in glob.glob(os.path.join(args.images, '**', '*'), recursive=True)
               if os.path.isfile(f)])
  common = [f'--export={args.export}', f'--image={args.images}',
            f'--batch_size={args.batch_size}']
  runs = {
      'predict.py': (['predict.py'], []),
      'batch_predict.py, in-process': (['batch_predict.py'], []),
      'batch_predict.py, 2 processes': (['batch_predict.py'], [
          '--', '--direct_num_workers=2', '--direct_running_mode=multi_processing',
          '--runner=FnApiRunner']),
  }
  table = []
  with tempfile.TemporaryDirectory() as tmp:
    for i, (name, (program, extra)) in enumerate(runs.items()):
      out = os.path.join(tmp, str(i))
      seconds = timed([*program, *common, f'--out={out}', *extra])
      files = (glob.glob(os.path.join(out, 'results-*.jsonl')) or
               [os.path.join(out, 'results.json')])
      table.append((name, seconds, rows(files)))
  base = table[0]
  print(f'{count} images, --batch_size {args.batch_size}\n')
  print('| command | wall s | images/s | vs predict.py | results vs predict.py |')
  print('| --- | --- | --- | --- | --- |')
  for name, seconds, found in table:
    diff = largest_difference(found, base[2])
    same = ('equal' if diff == 0 else f'max diff {diff:.1e}' if diff != float('inf')
            else f'{len(found)} vs {len(base[2])} rows')
    print(f'| {name} | {seconds:.1f} | {count / seconds:.1f} | {base[1] / seconds:.2f}x | '
          f'{same} |')


if __name__ == '__main__':
  main()
