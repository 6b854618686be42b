"""How many of torchvision's detections the evaluation path reproduces, per input-path variant.

A randomized torchvision `fcos_resnet50_fpn` (every tensor matters, `tests/torchvision_model.py`)
is imported with the project's tool; COCO-like 640x480 and 480x640 JPEGs are converted to TFDS and
run through `evaluation.predict_split` (what `evaluate.py` runs) at 800 / 1333 under each variant
of `configs/coco_torchvision.py`, and compared with torchvision's own `model([image])` on the same
files. Matched: same category, IoU >= 0.95 (boxes clipped to zero area: corners within 0.05 px),
score within 0.01 (the issue's criterion), as a fraction of torchvision's detections.

  python -m benchmarks.torchvision_match [--images 4]
"""

import argparse
import json
import os
import tempfile
import time

import torch  # noqa: F401  (torch and torchvision before TensorFlow: the other order segfaults)
import torchvision  # noqa: F401

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from fcos_jax.evaluation import prediction  # noqa: E402
from fcos_jax.configs import coco_torchvision  # noqa: E402
from fcos_jax.data import coco_conversion  # noqa: E402
from fcos_jax.models import fcos  # noqa: E402
from fcos_jax.weights import torchvision_import  # noqa: E402
from tests.test_torchvision_eval import make_image, torchvision_detections  # noqa: E402
from tests.torchvision_model import randomized_fcos  # noqa: E402

VARIANTS = {
    # main before this change: fixed 896x1408 buckets, rounded sizes and pixels, TF's fast IDCT,
    # padding locations kept.
    'before (buckets /128)': dict(size_divisibility=128, eval_padding='bucket',
                                  torchvision_exact=False, drop_outside=False),
    'before, size_divisibility=32': dict(size_divisibility=32, eval_padding='bucket',
                                         torchvision_exact=False, drop_outside=False),
    'project mode, per-image /32': dict(size_divisibility=32, eval_padding='per_image',
                                        torchvision_exact=False, drop_outside=True),
    'torchvision-exact (coco_torchvision.py)': {},
}


def box_match(a, b):
  """[len(a), len(b)] bool: IoU >= 0.95, or, for boxes clipped flat on the border (IoU
  undefined), every coordinate within 0.05 px."""
  iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]),
               0, None)
  ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]),
               0, None)
  inter = iw * ih
  area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
  union = area(a)[:, None] + area(b)[None, :] - inter
  close = np.abs(a[:, None] - b[None]).max(-1) <= 0.05
  return np.where(union > 0, inter >= 0.95 * union, close)


def matched_fraction(want, results):
  matched = total = 0
  for image_id, w in want.items():
    mine = [r for r in results if r['image_id'] == image_id]
    gb = np.array([[r['bbox'][0], r['bbox'][1], r['bbox'][0] + r['bbox'][2],
                    r['bbox'][1] + r['bbox'][3]] for r in mine]).reshape(-1, 4)
    gs = np.array([r['score'] for r in mine])
    gl = np.array([r['category_id'] for r in mine])
    same_box = box_match(w['boxes'].astype(np.float64), gb)
    for k in range(len(w['scores'])):
      ok = (gl == w['labels'][k]) & same_box[k] & (np.abs(gs - w['scores'][k]) <= 0.01)
      matched += bool(ok.any())
    total += len(w['scores'])
  return matched / max(total, 1)


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--images', type=int, default=4)
  args = parser.parse_args()
  root = tempfile.mkdtemp(prefix='tv_match_')
  tv = randomized_fcos()
  config = coco_torchvision.get_config()
  model = fcos.create_model(config.model)
  like = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  variables = torchvision_import.convert({k: v.numpy() for k, v in tv.state_dict().items()},
                                         like, 'fcos')
  os.makedirs(f'{root}/images')
  images, want = [], {}
  for i in range(args.images):
    hw = (480, 640) if i % 2 == 0 else (640, 480)
    path = f'{root}/images/{i + 1}.jpg'
    Image.fromarray(make_image(hw, i)).save(path, quality=90)
    images.append({'id': i + 1, 'file_name': f'{i + 1}.jpg', 'height': hw[0], 'width': hw[1]})
    want[i + 1] = torchvision_detections(tv, path)
  with open(f'{root}/gt.json', 'w') as f:
    json.dump({'images': images, 'annotations': [],
               'categories': [{'id': c, 'name': f'c{c}'} for c in range(1, 91)]}, f)
  coco_conversion.convert('tv_match', f'{root}/tfds', {'validation': (f'{root}/gt.json',
                                                                   f'{root}/images')})
  n_want = sum(len(w['scores']) for w in want.values())
  print(f'{args.images} images, {n_want} torchvision detections')
  print('| variant | matched | zero-area detections | shapes compiled | compile s |')
  print('| --- | --- | --- | --- | --- |')
  for name, overrides in VARIANTS.items():
    cfg = coco_torchvision.get_config()
    cfg.data.dataset, cfg.data.data_dir = 'tv_match', f'{root}/tfds'
    cfg.eval_batch_size = 2
    for k, v in overrides.items():
      (cfg.postprocess if k == 'drop_outside' else cfg.data)[k] = v
    t = time.perf_counter()
    pred = prediction.predict_split(cfg, model, variables)
    flat = sum(r['bbox'][2] <= 0 or r['bbox'][3] <= 0 for r in pred['results'])
    print(f"| {name} | {100 * matched_fraction(want, pred['results']):.1f}% | {flat} of "
          f"{len(pred['results'])} | {pred['compiled_shapes']} | {pred['compile_seconds']:.1f} "
          f"({time.perf_counter() - t:.0f} s in all) |", flush=True)


if __name__ == '__main__':
  main()
