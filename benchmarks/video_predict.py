"""predict.py's video path per export: the first video (compiling included) and the next one.

  python -m benchmarks.video_predict /tmp/shapes_export /tmp/shapes_onnx [--frames 30]
      [--batch_size 8] [--size 240,320] [--video clip.mp4]

A video's frames go to `Detector.detect_many` in predict.py's batches of --batch_size (30
frames at 8: 8, 8, 8 and 6). Each export runs in a fresh process, twice over the same frames:
'first video' is predict.py's first video (compiling included), 'next video' the steady state.
A StableHLO export also runs as before the change ('eager': `Exported.call` outside `jax.jit`,
each batch size compiled, the last partial batch too), its detections compared with the
current runner's, and as a rerun of predict.py finds it ('cached': JAX's persistent
compilation cache, on in predict.py by default, filled by an earlier process). Elsewhere the
cache is off, so the compile times show. The frames are synthetic shapes (--size) or the first
--frames of --video.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def frames_of(args):
  """The video's frames: synthetic shapes of --size, or the first --frames of --video."""
  if args.video:
    from fcos_jax import video_io
    frames = []
    for frame in video_io.read_frames(args.video):
      frames.append(frame)
      if len(frames) == args.frames:
        break
    return frames
  from fcos_jax.data import synthetic
  h, w = (int(v) for v in args.size.split(','))
  rng = np.random.default_rng(0)
  return [synthetic.make_image(rng, h, w, 6, 0.0)[0] for _ in range(args.frames)]


class EagerProgram:
  """The StableHLO runner before jitting and padding: `Exported.call` on each batch as it is."""

  def __init__(self, program):
    self.exported, self.variables = program.exported, program.variables

  def __call__(self, images, image_sizes):
    import jax.numpy as jnp
    out = self.exported.call(self.variables, jnp.asarray(images, jnp.uint8),
                             jnp.asarray(image_sizes, jnp.int32))
    return {k: np.asarray(v) for k, v in out.items()}


def measure(export_dir, mode, args, cache_dir=None):
  """One export in this process: load, then two passes over the video in predict.py's
  batches; seconds per pass and per batch of the first, and every frame's detections."""
  import jax
  if cache_dir:
    jax.config.update('jax_compilation_cache_dir', cache_dir)
  else:
    jax.config.update('jax_enable_compilation_cache', False)
  from fcos_jax import serving
  frames = frames_of(args)
  t = time.perf_counter()
  detector = serving.Detector(export_dir)
  if mode == 'eager':
    detector.models = {k: EagerProgram(p) for k, p in detector.models.items()}
  row = {'format': detector.metadata.get('runtime', 'stablehlo'), 'mode': mode,
         'load_s': time.perf_counter() - t, 'passes': []}
  for _ in range(2):
    dets, batches = [], []
    for first in range(0, len(frames), args.batch_size):
      t = time.perf_counter()
      dets += detector.detect_many(frames[first:first + args.batch_size], args.batch_size)
      batches.append(time.perf_counter() - t)
    row['passes'].append(batches)
  row['detections'] = dets
  return row


def compare(a, b):
  """'equal', else the largest box or score difference of the same detections."""
  if a == b:
    return 'equal'
  if [[d['label'] for d in f] for f in a] != [[d['label'] for d in f] for f in b]:
    return 'different detections'
  diff = max(abs(x - y) for f, g in zip(a, b) for d, e in zip(f, g)
             for x, y in zip(d['bbox'] + [d['score']], e['bbox'] + [e['score']]))
  return f'max diff {diff:.1e}'


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('exports', nargs='+', help='export directories')
  parser.add_argument('--frames', type=int, default=30)
  parser.add_argument('--batch_size', type=int, default=8)
  parser.add_argument('--size', default='240,320', help='H,W of the synthetic frames')
  parser.add_argument('--video', default=None, help='read the frames from this video instead')
  parser.add_argument('--one', nargs=3, metavar=('EXPORT', 'MODE', 'CACHE'),
                      help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.one:
    export_dir, mode, cache_dir = args.one
    print(json.dumps(measure(export_dir, mode if mode == 'eager' else 'current', args,
                             cache_dir if mode == 'cached' else None)))
    return

  def run(export_dir, mode, cache_dir):
    cmd = [sys.executable, '-m', 'benchmarks.video_predict', *args.exports,
           f'--frames={args.frames}', f'--batch_size={args.batch_size}', f'--size={args.size}',
           '--one', export_dir, mode, cache_dir] + ([f'--video={args.video}'] if args.video
                                                      else [])
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    if out.returncode:
      sys.exit(out.stderr[-3000:])
    return dict(json.loads(out.stdout.strip().splitlines()[-1]), export=export_dir, mode=mode)
  rows = []
  for export_dir in args.exports:
    with open(os.path.join(export_dir, 'metadata.json')) as f:
      fmt = json.load(f).get('runtime', 'stablehlo')
    modes = ('current', 'eager', 'cached') if fmt == 'stablehlo' else ('current',)
    with tempfile.TemporaryDirectory() as cache_dir:
      for mode in modes:
        if mode == 'cached':
          run(export_dir, mode, cache_dir)  # fills the cache
        rows.append(run(export_dir, mode, cache_dir))
  current = {r['export']: r['detections'] for r in rows if r['mode'] == 'current'}
  print(f'{args.frames} frames in batches of {args.batch_size}')
  print('| export | format | runner | load s | first video s (per batch) | next video s '
        '| first video + load vs ONNX | detections vs current |')
  print('| --- | --- | --- | --- | --- | --- | --- | --- |')
  onnx = [r['load_s'] + sum(r['passes'][0]) for r in rows if r['format'] == 'onnx']
  for r in rows:
    first, nxt = r['passes']
    total = r['load_s'] + sum(first)
    ratio = f'{total / onnx[0]:.1f}x' if onnx else '-'
    same = compare(r['detections'], current[r['export']]) if r['mode'] != 'current' else '-'
    print(f'| {r["export"]} | {r["format"]} | {r["mode"]} | {r["load_s"]:.2f} | {sum(first):.2f} '
          f'({", ".join(f"{t:.2f}" for t in first)}) | {sum(nxt):.2f} | {ratio} | {same} |')


if __name__ == '__main__':
  main()
