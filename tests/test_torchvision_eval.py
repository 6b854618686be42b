"""`evaluate.py --config configs/coco_torchvision.py` gives torchvision's own detections, image by
image, on JPEGs that need a real resize (both orientations, odd sizes, an upscale) and padding.

The reference is torchvision itself: the same randomized `fcos_resnet50_fpn` called as a user
would, `model([to_tensor(PIL image)])`, one image at a time (so each is padded to its own
multiple of 32). Sizes are scaled down (shorter side 320, longer at most 533) to keep the test
fast; the arithmetic is the same as at 800 / 1333.
"""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import to_tensor

from fcos_jax.evaluation import scoring
from tests.torchvision_model import randomized_fcos

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIN_SIZE, MAX_SIZE = 320, 533
# (h, w): landscape, portrait, odd sizes, a portrait whose resize floors differently from a
# round (479.6 -> 479, not 480), and an upscale. Padded shapes 320x448 (x3), 448x320 and 480x320:
# three programs, and batches of 2 leave masked dummies.
SIZES = [(480, 640), (640, 480), (375, 500), (640, 427), (150, 200)]


def make_image(hw, seed):
  """Smooth colour blobs plus noise, JPEG-encoded at quality 90: every decoder detail shows."""
  rng = np.random.default_rng(seed)
  small = rng.integers(0, 256, (hw[0] // 16 + 1, hw[1] // 16 + 1, 3), dtype=np.uint8)
  image = np.asarray(Image.fromarray(small).resize((hw[1], hw[0]), Image.BILINEAR), np.int32)
  return np.clip(image + rng.integers(-25, 26, image.shape), 0, 255).astype(np.uint8)


def torchvision_detections(tv, path):
  with torch.no_grad():
    out = tv([to_tensor(Image.open(path).convert('RGB'))])[0]
  keep = out['labels'].numpy() > 0  # label 0 (__background__) is no category of the dataset
  return {k: out[k].numpy()[keep] for k in ('boxes', 'scores', 'labels')}


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  from fcos_jax.configs import coco_torchvision
  from fcos_jax.data import coco_conversion
  from fcos_jax.models import fcos
  from fcos_jax.weights import torchvision_import
  import jax
  import jax.numpy as jnp

  root = tmp_path_factory.mktemp('tv_eval')
  tv = randomized_fcos()
  tv.transform.min_size, tv.transform.max_size = (MIN_SIZE,), MAX_SIZE
  model = fcos.create_model(coco_torchvision.get_config().model)
  like = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  state_dict = {k: v.numpy() for k, v in tv.state_dict().items()}
  torchvision_import.save(torchvision_import.convert(state_dict, like, 'fcos'),
                          str(root / 'params'))

  os.makedirs(root / 'images')
  images, annotations, want = [], [], {}
  rng = np.random.default_rng(0)
  for i, hw in enumerate(SIZES):
    image_id = 10 + i
    path = str(root / 'images' / f'{image_id}.jpg')
    Image.fromarray(make_image(hw, i)).save(path, quality=90)
    images.append({'id': image_id, 'file_name': f'{image_id}.jpg', 'height': hw[0],
                   'width': hw[1]})
    want[image_id] = torchvision_detections(tv, path)
    # Ground truth: torchvision's 4 best boxes of some size, jittered, so that AP is far from 0
    # and 1 (random weights also give many boxes clipped flat on the border).
    w = want[image_id]
    sized = np.flatnonzero(np.min(w['boxes'][:, 2:] - w['boxes'][:, :2], 1) >= 8)[:4]
    for box, label in zip(w['boxes'][sized], w['labels'][sized]):
      x0, y0, x1, y1 = (box + rng.normal(0, 3, 4)).tolist()
      x0, y0 = max(x0, 0), max(y0, 0)
      x1, y1 = min(max(x1, x0 + 2), hw[1]), min(max(y1, y0 + 2), hw[0])
      annotations.append({'id': len(annotations) + 1, 'image_id': image_id,
                          'category_id': int(label), 'bbox': [x0, y0, x1 - x0, y1 - y0],
                          'area': (x1 - x0) * (y1 - y0), 'iscrowd': 0})
  # Every category id torchvision can output (1..90, N/A slots included).
  gt = {'images': images, 'annotations': annotations,
        'categories': [{'id': c, 'name': f'c{c}'} for c in range(1, 91)]}
  with open(root / 'gt.json', 'w') as f:
    json.dump(gt, f)
  data_dir = str(root / 'tfds')
  coco_conversion.convert('tv_eval', data_dir,
                       {'validation': (str(root / 'gt.json'), str(root / 'images'))})
  out = subprocess.run(
      [sys.executable, 'evaluate.py', '--config', 'configs/coco_torchvision.py',
       '--params', str(root / 'params'), '--out', str(root / 'out'),
       '--config.data.dataset=tv_eval', f'--config.data.data_dir={data_dir}',
       f'--config.data.eval_min_size={MIN_SIZE}', f'--config.data.max_size={MAX_SIZE}',
       '--config.eval_batch_size=2'],
      cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  (path,) = glob.glob(str(root / 'out' / '*_detections.json'))
  with open(path) as f:
    got = json.load(f)
  return gt, want, got, out.stdout


def test_evaluate_gives_torchvisions_detections_image_by_image(setup):
  gt, want, got, stdout = setup
  assert '3 input shapes compiled' in stdout, stdout[-2000:]
  total, box_err, score_err = 0, 0.0, 0.0
  for image_id, w in want.items():
    mine = [r for r in got if r['image_id'] == image_id]
    assert len(mine) == len(w['scores']) > 10, image_id  # the same count per image
    boxes = np.array([[r['bbox'][0], r['bbox'][1], r['bbox'][0] + r['bbox'][2],
                       r['bbox'][1] + r['bbox'][3]] for r in mine])
    scores = np.array([r['score'] for r in mine])
    labels = np.array([r['category_id'] for r in mine])
    used = np.zeros(len(mine), bool)
    for b, s, l in zip(w['boxes'], w['scores'], w['labels']):
      ok = ~used & (labels == l) & (np.abs(boxes - b).max(1) <= 1e-2) & (np.abs(scores - s) <= 1e-4)
      assert ok.any(), (image_id, b, s, l)
      k = np.flatnonzero(ok)[0]
      used[k] = True
      box_err = max(box_err, np.abs(boxes[k] - b).max())
      score_err = max(score_err, abs(scores[k] - s))
    total += len(mine)
  print(f'{total} detections on {len(want)} images, all matched; largest differences: box '
        f'{box_err:.1e} px (original pixels), score {score_err:.1e}')


def test_coco_ap_of_both_is_equal(setup):
  gt, want, got, _ = setup
  theirs = [{'image_id': image_id, 'category_id': int(l), 'score': float(s),
             'bbox': [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
            for image_id, w in want.items()
            for b, s, l in zip(w['boxes'], w['scores'], w['labels'])]
  ours = [r for r in got if r['bbox'][2] > 0 and r['bbox'][3] > 0]
  theirs = [r for r in theirs if r['bbox'][2] > 0 and r['bbox'][3] > 0]
  a = scoring.coco_eval(gt, ours)['stats']
  b = scoring.coco_eval(gt, theirs)['stats']
  print(f"AP ours {a['AP']:.6f}, torchvision {b['AP']:.6f}")
  assert 0.05 < b['AP'] < 0.95
  for name in scoring.STAT_NAMES:
    assert a[name] == pytest.approx(b[name], abs=1e-9), name
