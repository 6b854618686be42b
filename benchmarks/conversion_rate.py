"""Conversion rate (images/s): the single-process converter against the same conversion on
Apache Beam's in-process runner with several worker processes, on COCO-sized synthetic JPEGs.

Generates --images synthetic images of about 640x480 (cached in --data_dir), then converts
them through the real program (`python -m fcos_jax.programs.convert_coco`, the same command a
user runs), once per mode and --rounds times in turn, each into a fresh folder. The wall time
covers the whole program (start, record checks, per-image work, writing, the report), so the
table is what a user waits for.

  python -m benchmarks.conversion_rate [--images 600 --workers 2 --rounds 2]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _convert(raw: str, out: str, beam_options: str = '') -> float:
  """Seconds for one run of the converter on the generated train split into `out`."""
  args = [sys.executable, '-m', 'fcos_jax.programs.convert_coco', '--name=rate',
          f'--data_dir={out}', f'--annotations={raw}/annotations/train.json',
          f'--images={raw}/images/train', '--split=train']
  if beam_options:
    args.append(f'--beam_pipeline_options={beam_options}')
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='3', TF_ENABLE_ONEDNN_OPTS='0')
  start = time.perf_counter()
  done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT)
  elapsed = time.perf_counter() - start
  if done.returncode:
    raise SystemExit(f'conversion failed ({done.returncode}):\n{done.stderr[-3000:]}')
  return elapsed


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--images', type=int, default=600)
  parser.add_argument('--workers', type=int, default=2)
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--data_dir', default=os.path.join(tempfile.gettempdir(),
                                                          'fcos_bench_conversion'))
  args = parser.parse_args()
  from fcos_jax.data import synthetic
  raw = os.path.join(args.data_dir, f'raw_{args.images}')
  if not os.path.exists(os.path.join(raw, 'annotations', 'train.json')):
    synthetic.generate(raw, {'train': args.images}, seed=0, image_size=(480, 640),
                       size_jitter=0.1)
  jpeg_kb = sum(os.path.getsize(os.path.join(raw, 'images', 'train', f))
                for f in os.listdir(os.path.join(raw, 'images', 'train'))) / 1024 / args.images
  modes = {'single process': '',
           f'Beam, {args.workers} worker processes':
               f'direct_num_workers={args.workers},direct_running_mode=multi_processing'}
  times = {m: [] for m in modes}
  for _ in range(args.rounds):
    for mode, options in modes.items():
      out = tempfile.mkdtemp(prefix='conversion_', dir=args.data_dir)
      try:
        times[mode].append(_convert(raw, out, options))
      finally:
        shutil.rmtree(out, ignore_errors=True)
  print(f'{args.images} synthetic JPEGs of about 640x480 ({jpeg_kb:.0f} KB on average), '
        f'{os.cpu_count()} cores, the whole program timed, {args.rounds} round(s)')
  print(f'{"mode":<30}{"images/s":>10}{"wall (s)":>10}   each round (s)')
  for mode in modes:
    best = min(times[mode])
    print(f'{mode:<30}{args.images / best:>10.1f}{best:>10.1f}   '
          + ', '.join(f'{t:.1f}' for t in times[mode]))


if __name__ == '__main__':
  main()
