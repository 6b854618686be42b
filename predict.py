"""Detect objects in images with an exported model and draw them.

  python predict.py --export EXPORT_DIR --image a.jpg [--image b.png ...] --out OUT_DIR
      [--min_score 0.3]

Writes one picture per input with boxes, class names and scores drawn, under OUT_DIR at the
input's path relative to the inputs' common folder (so two inputs never share an output), and
OUT_DIR/detections.json with the detections in original image pixels. An unreadable input is
skipped with a message; the others are still written.
"""

import json
import os

from absl import flags

from fcos_jax import cli

_EXPORT = flags.DEFINE_string('export', None, 'Directory written by export.py.')
_IMAGES = flags.DEFINE_multi_string('image', [], 'Image file(s).')
_OUT = flags.DEFINE_string('out', None, 'Output directory.')
_MIN_SCORE = flags.DEFINE_float('min_score', 0.3, 'Draw detections scoring at least this.')
_DRAW_SCALE = flags.DEFINE_integer('draw_scale', 0, 'Enlarge the picture this many times '
                                   '(0: enough for a longer side of at least 512 px).')
flags.mark_flags_as_required(['export', 'out'])


def output_paths(inputs, out_dir):
  """Input path -> OUT_DIR/<path relative to the common folder>.png, distinct per input."""
  absolute = [os.path.abspath(p) for p in inputs]
  common = os.path.commonpath([os.path.dirname(p) for p in absolute]) if absolute else ''
  return {p: os.path.join(out_dir, os.path.splitext(os.path.relpath(a, common))[0] + '.png')
          for p, a in zip(inputs, absolute)}


def main(argv):
  from fcos_jax import errors
  if len(argv) > 1:
    raise errors.UserError(f'unexpected arguments: {argv[1:]}')
  if not _IMAGES.value:
    raise errors.UserError('give at least one --image')
  from fcos_jax import image_io, serving, visualize
  detector = serving.Detector(_EXPORT.value)
  inputs = list(dict.fromkeys(_IMAGES.value))
  outputs = output_paths(inputs, _OUT.value)
  results, skipped = {}, []
  for path in inputs:
    try:
      image, change = image_io.read_rgb8(path)
    except errors.DataError as e:
      print(f'skipped: {e}')
      skipped.append(path)
      continue
    dets = detector.detect(image)
    results[path] = dets
    shown = [d for d in dets if d['score'] >= _MIN_SCORE.value]
    out = outputs[path]
    os.makedirs(os.path.dirname(out), exist_ok=True)
    scale = _DRAW_SCALE.value or max(1, -(-512 // max(image.shape[:2])))
    visualize.draw_detections(image, shown, scale=scale).save(out)
    print(f'{path}: {len(dets)} detections, {len(shown)} drawn (score >= {_MIN_SCORE.value}) '
          f'-> {out}' + (f' ({change})' if change else ''))
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, 'detections.json'), 'w') as f:
    json.dump(results, f, indent=1)
  print(f'{len(results)} of {len(inputs)} images done' +
        (f', {len(skipped)} skipped: {", ".join(skipped)}' if skipped else ''))


if __name__ == '__main__':
  cli.run(main)
