"""The dataset browser: its filters and counts against the COCO JSON the dataset was made from,
its pictures through the real program, its mistakes as one line."""

import json
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from fcos_jax.analysis import dataset_browser as browser
from tests import tiny_config
from tests.test_user_errors import assert_one_line_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _data_config(shapes_tfds):
  d = tiny_config.get_config().data
  d.update(dataset=shapes_tfds[0], data_dir=shapes_tfds[1], synthetic=False)
  return d


def test_filters_and_summary_match_the_coco_json(shapes_coco, shapes_tfds):
  coco = json.load(open(f'{shapes_coco}/annotations/validation.json'))
  names = [c['name'] for c in coco['categories']]
  label = {c['id']: i for i, c in enumerate(coco['categories'])}
  d = _data_config(shapes_tfds)
  s = browser.summarize(browser.split_examples(d, 'validation', decode=False), len(names))
  plain = [a for a in coco['annotations'] if not a['iscrowd']]
  want = np.bincount([label[a['category_id']] for a in plain], minlength=len(names))
  np.testing.assert_array_equal(s['per_class'], want)
  with_boxes = {a['image_id'] for a in plain}
  assert s['images'] == len(coco['images'])
  assert s['without_boxes'] == len(coco['images']) - len(with_boxes)
  np.testing.assert_allclose(np.sort(s['sides']),
                             np.sort([np.sqrt(a['bbox'][2] * a['bbox'][3]) for a in plain]),
                             rtol=1e-4)
  # --class: exactly the images holding a box of that class; --image_id: those ids.
  ring = label[next(c['id'] for c in coco['categories'] if c['name'] == names[-1])]
  holding = {a['image_id'] for a in coco['annotations'] if label[a['category_id']] == ring}
  got = {ex['image_id'] for ex in browser.split_examples(d, 'validation',
                                                         class_names=[names[-1]])}
  assert got == holding and 0 < len(got) < len(coco['images'])
  ids = sorted(im['id'] for im in coco['images'])[:2]
  assert sorted(ex['image_id'] for ex in browser.split_examples(d, 'validation',
                                                               image_ids=ids)) == ids


def test_positives_are_dots_in_their_levels_colour():
  im = Image.new('RGB', (64, 64))
  browser.mark_positives(im, np.array([[10.0, 20.0], [40.0, 30.0]]), np.array([0, 1]))
  assert im.getpixel((10, 20)) == browser.LEVEL_COLORS[0]
  assert im.getpixel((40, 30)) == browser.LEVEL_COLORS[1]
  assert im.getpixel((30, 50)) == (0, 0, 0)


def test_the_program_writes_the_pictures(shapes_tfds, tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='3')
  common = [sys.executable, '-m', 'fcos_jax.programs.browse',
            f'--config={ROOT}/tests/tiny_config.py', f'--config.data.dataset={shapes_tfds[0]}',
            f'--config.data.data_dir={shapes_tfds[1]}', '--config.data.synthetic=False',
            f'--out={tmp_path}']
  out = subprocess.run(common + ['--num=4', '--train_batches=1', '--positives'], env=env,
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'validation_images.png (4 images)' in out.stdout and 'train: 24 images' in out.stdout
  for name in ('validation_images.png', 'train_batch_0.png', 'summary.png'):
    with Image.open(tmp_path / name) as im:
      assert im.width > 200 and im.height > 150, name
      assert len(set(im.convert('RGB').getdata())) > 50, name  # a picture, not a blank
  bad = subprocess.run(common + ['--class=unicorn'], env=env, capture_output=True, text=True,
                       cwd=ROOT, timeout=600)
  assert_one_line_error(bad, "--class 'unicorn'", 'not a class of')
