"""Detect objects in images with an exported model and draw them.

  python predict.py --export EXPORT_DIR --image a.jpg [--image b.png ...] --out OUT_DIR
      [--min_score 0.3]

Writes OUT_DIR/<name>.png with boxes, class names and scores drawn, and
OUT_DIR/detections.json with the detections in original image pixels.
"""

import json
import os

from absl import app, flags

_EXPORT = flags.DEFINE_string('export', None, 'Directory written by export.py.')
_IMAGES = flags.DEFINE_multi_string('image', [], 'Image file(s).')
_OUT = flags.DEFINE_string('out', None, 'Output directory.')
_MIN_SCORE = flags.DEFINE_float('min_score', 0.3, 'Draw detections scoring at least this.')
_DRAW_SCALE = flags.DEFINE_integer('draw_scale', 0, 'Enlarge the picture this many times '
                                   '(0: enough for a longer side of at least 512 px).')
flags.mark_flags_as_required(['export', 'out'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not _IMAGES.value:
    raise app.UsageError('give at least one --image')
  import numpy as np
  from PIL import Image
  from fcos_jax import serving, visualize
  detector = serving.Detector(_EXPORT.value)
  os.makedirs(_OUT.value, exist_ok=True)
  results = {}
  for path in _IMAGES.value:
    with Image.open(path) as im:
      image = np.asarray(im.convert('RGB'))
    dets = detector.detect(image)
    results[path] = dets
    shown = [d for d in dets if d['score'] >= _MIN_SCORE.value]
    out = os.path.join(_OUT.value, os.path.splitext(os.path.basename(path))[0] + '.png')
    scale = _DRAW_SCALE.value or max(1, -(-512 // max(image.shape[:2])))
    visualize.draw_detections(image, shown, scale=scale).save(out)
    print(f'{path}: {len(dets)} detections, {len(shown)} drawn (score >= {_MIN_SCORE.value}) '
          f'-> {out}')
  with open(os.path.join(_OUT.value, 'detections.json'), 'w') as f:
    json.dump(results, f, indent=1)


if __name__ == '__main__':
  app.run(main)
