"""Sliced inference on a large image of many small objects, with a trained run's model.

Builds a 4000x3000 image as a 32 x 24 mosaic of 125 px synthetic shapes scenes (the demo's
objects, each 9-90 px: small next to the whole image), then detects it whole (the model's
normal size: the image shrinks to the config's eval size) and sliced (--slice px tiles,
--overlap), with and without the full-image pass, and, for reference, each scene alone. Prints
recall at IoU 0.5 (same class), precision, and duplicates (objects matched by two or more
detections of their class) among detections scoring >= --min_score, and the time of each.

  python -m benchmarks.sliced_inference --config configs/shapes.py --workdir /tmp/shapes \
      [--slice 128 --overlap 0.2 --min_score 0.3]
"""

import argparse
import os
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import numpy as np  # noqa: E402

from benchmarks.bench_train_step import load_config  # noqa: E402

CELL, COLS, ROWS = 125, 32, 24


def mosaic(seed: int = 0):
  """(image [3000, 4000, 3] uint8, [(class index, [x0, y0, x1, y1])]) of synthetic scenes."""
  from fcos_jax.data import synthetic
  rng = np.random.default_rng(seed)
  image = np.zeros((ROWS * CELL, COLS * CELL, 3), np.uint8)
  objects = []
  for r in range(ROWS):
    for c in range(COLS):
      cell, objs = synthetic.make_image(rng, CELL, CELL, 4, 0.0)
      image[r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL] = np.asarray(cell)
      for label, (x0, y0, x1, y1) in objs:
        objects.append((label, [x0 + c * CELL, y0 + r * CELL, x1 + c * CELL, y1 + r * CELL]))
  return image, objects


def iou_matrix(a, b):
  a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
  iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) -
               np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
  ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) -
               np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
  inter = iw * ih
  area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])
  return inter / np.maximum(area(a)[:, None] + area(b)[None] - inter, 1e-9)


def scores_of(dets, objects, min_score: float):
  """(recall, precision, objects found twice or more) at IoU 0.5, same class, of the detections
  scoring >= min_score."""
  dets = [d for d in dets if d['score'] >= min_score]
  if not dets:
    return 0.0, 0.0, 0
  boxes = [d['bbox'] for d in dets]
  labels = np.array([d['label'] for d in dets])
  gt_labels = np.array([o[0] for o in objects])
  ious = iou_matrix([o[1] for o in objects], boxes) * (gt_labels[:, None] == labels[None])
  recall = float((ious.max(1) >= 0.5).mean())
  precision = float((ious.max(0) >= 0.5).mean())
  duplicates = int(((ious >= 0.5).sum(1) > 1).sum())  # objects found more than once
  return recall, precision, duplicates


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', required=True)
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--slice', type=int, default=128)
  parser.add_argument('--overlap', type=float, default=0.2)
  parser.add_argument('--min_score', type=float, default=0.3)
  args = parser.parse_args()
  from fcos_jax import serving
  from fcos_jax.data import input_pipeline
  from fcos_jax.weights import params
  config = load_config(args.config)
  model, variables, _ = params.load_for_inference(config, workdir=args.workdir)
  cats = input_pipeline.dataset_categories(config.data)
  detector = serving.Detector.from_model(config, model, variables, cats)
  image, objects = mosaic()
  detector.detect_sliced(image[:600, :600], args.slice, args.overlap)  # compile
  detector.detect(image)

  def cells():  # the scenes one by one, each at its own size: what slicing can hope for
    crops = [image[r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL] for r in range(ROWS)
             for c in range(COLS)]
    out = []
    for i, dets in enumerate(detector.detect_many(crops, 32)):
      y, x = (i // COLS) * CELL, (i % COLS) * CELL
      out += [dict(d, bbox=[d['bbox'][0] + x, d['bbox'][1] + y, d['bbox'][2] + x,
                            d['bbox'][3] + y]) for d in dets]
    return out
  runs = [('whole image', lambda: detector.detect(image)),
          ('each 125 px scene alone (reference)', cells),
          (f'sliced {args.slice} px, overlap {args.overlap:g}',
           lambda: detector.detect_sliced(image, args.slice, args.overlap, batch_size=32)),
          ('sliced + full-image pass',
           lambda: detector.detect_sliced(image, args.slice, args.overlap, full=True,
                                          batch_size=32))]
  print(f'{image.shape[1]}x{image.shape[0]} image, {len(objects)} objects; detections scoring '
        f'>= {args.min_score:g}')
  print('| mode | recall@0.5 | precision@0.5 | objects found twice | detections | seconds |')
  print('| --- | --- | --- | --- | --- | --- |')
  for name, fn in runs:
    start = time.perf_counter()
    dets = fn()
    seconds = time.perf_counter() - start
    recall, precision, dup = scores_of(dets, objects, args.min_score)
    kept = sum(d['score'] >= args.min_score for d in dets)
    print(f'| {name} | {recall:.3f} | {precision:.3f} | {dup} | {kept} | {seconds:.1f} |')


if __name__ == '__main__':
  main()
