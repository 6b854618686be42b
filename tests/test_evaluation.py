"""COCO evaluation: ground truth paths, mapping back to the original image, offline scoring and
its errors, and the every-image-once count."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcos_jax import evaluation
from fcos_jax.evaluation import coco_data, prediction, scoring
from fcos_jax.data import input_pipeline
from tests import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def config(shapes_tfds):
  c = tiny_config.get_config()
  c.data.update(dataset=shapes_tfds[0], data_dir=shapes_tfds[1], synthetic=False,
                min_sizes=(96,), max_size=128, eval_min_size=96)
  return c


def tfds_ground_truth(config):
  return coco_data.load_ground_truth(config, 'validation')


def test_tfds_ground_truth_equals_the_coco_json(config, shapes_coco):
  gt = tfds_ground_truth(config)
  with open(f'{shapes_coco}/annotations/validation.json') as f:
    coco = json.load(f)
  assert [(im['id'], im['height'], im['width']) for im in gt['images']] == \
      [(im['id'], im['height'], im['width']) for im in sorted(coco['images'], key=lambda i: i['id'])]
  assert gt['categories'] == coco['categories']
  key = lambda a: (a['image_id'], a['category_id'], round(a['bbox'][0], 2))  # noqa: E731
  ours = sorted(gt['annotations'], key=key)
  theirs = sorted(coco['annotations'], key=key)
  assert len(ours) == len(theirs) > 10
  for a, b in zip(ours, theirs):
    assert a['image_id'] == b['image_id'] and a['category_id'] == b['category_id']
    np.testing.assert_allclose(a['bbox'], b['bbox'], atol=1e-3)
    assert a['area'] == pytest.approx(b['area'], abs=1) and a['iscrowd'] == b['iscrowd']


def perturbed_results(coco, seed=0):
  rng = np.random.default_rng(seed)
  results = []
  for a in coco['annotations']:
    x, y, w, h = a['bbox']
    jitter = rng.normal(0, 0.08, 4) * [w, h, w, h]
    results.append({'image_id': a['image_id'], 'category_id': a['category_id'],
                    'bbox': [x + jitter[0], y + jitter[1], w + jitter[2], h + jitter[3]],
                    'score': float(rng.random())})
  return results


def test_both_ground_truth_paths_give_the_same_ap(config, shapes_coco):
  with open(f'{shapes_coco}/annotations/validation.json') as f:
    coco = json.load(f)
  results = perturbed_results(coco)
  from_json = scoring.coco_eval(coco, results)['stats']
  from_tfds = scoring.coco_eval(tfds_ground_truth(config), results)['stats']
  assert 0.2 < from_json['AP'] < 0.95
  for name in scoring.STAT_NAMES:
    assert from_tfds[name] == pytest.approx(from_json[name], abs=1e-9), name


def test_detections_map_back_to_the_original_frame(config):
  """Ground truth pushed through the eval batches' resize, then mapped back, scores AP = 1."""
  gt = tfds_ground_truth(config)
  by_image = {}
  for a in gt['annotations']:
    by_image.setdefault(a['image_id'], []).append(a)
  cats = input_pipeline.dataset_categories(config.data)
  label_of = {c: i for i, c in enumerate(cats.ids)}
  results = []
  for batch in input_pipeline.create_eval_dataset(config.data, 4).as_numpy_iterator():
    n = 10
    det = {'boxes': np.zeros((4, n, 4), np.float32), 'scores': np.zeros((4, n), np.float32),
           'classes': np.zeros((4, n), np.int32), 'num_valid': np.zeros(4, np.int32)}
    for k in np.flatnonzero(batch['mask']):
      anns = by_image.get(int(batch['image_id'][k]), [])
      sy = batch['image_size'][k][0] / batch['orig_size'][k][0]
      sx = batch['image_size'][k][1] / batch['orig_size'][k][1]
      for j, a in enumerate(anns):
        x, y, w, h = a['bbox']
        det['boxes'][k, j] = [x * sx, y * sy, (x + w) * sx, (y + h) * sy]
        det['scores'][k, j] = 1.0 - 0.01 * j
        det['classes'][k, j] = label_of[a['category_id']]
      det['num_valid'][k] = len(anns)
    results += prediction.to_coco_results(det, batch, cats.ids)
  stats = scoring.coco_eval(gt, results)['stats']
  assert stats['AP'] == pytest.approx(1.0)
  assert stats['AP75'] == pytest.approx(1.0)


def test_every_image_is_evaluated_once(config, capsys):
  from fcos_jax.models import fcos
  model = fcos.create_model(config.model)
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 96, 128, 3)))
  config.postprocess.score_threshold = 0.0
  metrics = evaluation.evaluate(config, model, variables, tag='test', progress=True)
  gt = tfds_ground_truth(config)
  assert metrics['num_images'] == metrics['split_size'] == len(gt['images']) == 11
  assert 'evaluating validation: 100%' in capsys.readouterr().err  # the bar has its total
  assert prediction.split_images(config.data, 'validation[:4]') == 4
  assert metrics['num_detections'] > 0
  assert 0.0 <= metrics['AP'] <= 1.0


@pytest.mark.parametrize('bad,match', [
    ([{'image_id': 99999, 'category_id': 1, 'bbox': [0, 0, 1, 1], 'score': 1.0}], 'image_id 99999'),
    ([{'image_id': 1, 'category_id': 2, 'bbox': [0, 0, 1, 1], 'score': 1.0}], 'category_id 2'),
    ([{'image_id': 1, 'category_id': 1, 'bbox': [0, 0, 1, 1]}], "lacks \\['score'\\]"),
])
def test_bad_results_are_rejected(config, bad, match):
  with pytest.raises(coco_data.DetectionsFileError, match=match):
    scoring.coco_eval(tfds_ground_truth(config), bad)


def run_evaluate(*args):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.run([sys.executable, os.path.join(ROOT, 'evaluate.py'),
                         f'--config={ROOT}/tests/tiny_config.py', *args],
                        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


def test_offline_detections_file(config, shapes_coco, shapes_tfds, tmp_path):
  with open(f'{shapes_coco}/annotations/validation.json') as f:
    coco = json.load(f)
  path = tmp_path / 'results.json'
  path.write_text(json.dumps(perturbed_results(coco)))
  want = scoring.coco_eval(coco, perturbed_results(coco))['stats']['AP']
  common = [f'--config.data.dataset={shapes_tfds[0]}', f'--config.data.data_dir={shapes_tfds[1]}',
            '--config.data.synthetic=False']
  out = run_evaluate(f'--detections={path}', *common)
  assert out.returncode == 0, out.stderr[-3000:]
  assert f'AP     {want:.4f}' in out.stdout
  with open(tmp_path / 'results_metrics.json') as f:
    assert json.load(f)['AP'] == pytest.approx(want)
  # Official-annotations path gives the same number, also from a hand-made file: a byte-order
  # mark, no iscrowd, area or annotation id (filled in as COCO defines them, and counted).
  stripped = dict(coco, annotations=[{k: v for k, v in a.items() if k not in ('area', 'id')
                                      and (k, v) != ('iscrowd', 0)}
                                     for a in coco['annotations']])
  crowd = sum(bool(a['iscrowd']) for a in coco['annotations'])
  gt = tmp_path / 'hand_made.json'
  gt.write_bytes(b'\xef\xbb\xbf' + json.dumps(stripped).encode())
  out = run_evaluate(f'--detections={path}', f'--annotations={gt}', *common)
  assert out.returncode == 0, out.stderr[-3000:]
  assert f'AP     {want:.4f}' in out.stdout
  n = len(coco['annotations'])
  assert (f'annotations without iscrowd (set to 0): {n - crowd}, area (set to the box w*h): {n}, '
          f'id (numbered after the largest): {n}') in out.stderr
  # A ground-truth image without an id: one line naming the record.
  broken = dict(coco, images=[{k: v for k, v in im.items() if k != 'id'}
                              for im in coco['images']])
  gt.write_text(json.dumps(broken))
  out = run_evaluate(f'--detections={path}', f'--annotations={gt}', *common)
  assert out.returncode == 1 and 'images[0] has no integer "id"' in out.stderr
  assert 'Traceback' not in out.stderr
  bad = tmp_path / 'bad.json'
  bad.write_text(json.dumps([{'image_id': 424242, 'category_id': 1, 'bbox': [0, 0, 2, 2],
                              'score': 0.5}]))
  out = run_evaluate(f'--detections={bad}', *common)
  assert out.returncode != 0 and 'image_id 424242 is not in the ground truth' in out.stderr
  bad.write_text('[{"image_id": 1,')
  out = run_evaluate(f'--detections={bad}', *common)
  assert out.returncode != 0 and 'malformed JSON' in out.stderr


def test_per_category_table_shows_a_class_without_ground_truth_last():
  """A class absent from the split (COCOeval's -1, AP NaN) prints '-' below the scored ones,
  with a note; the others in AP order, their APs from the recall thresholds by hand."""
  cats = [{'id': 1, 'name': 'half'}, {'id': 2, 'name': 'absent'}, {'id': 3, 'name': 'all'}]
  gt = {'images': [{'id': i, 'height': 100, 'width': 100} for i in (1, 2)],
        'categories': cats,
        'annotations': [{'id': k + 1, 'image_id': i, 'category_id': c, 'bbox': [10, 10, 30, 30],
                         'area': 900, 'iscrowd': 0}
                        for k, (i, c) in enumerate([(1, 1), (2, 1), (1, 3)])]}
  results = [{'image_id': 1, 'category_id': 1, 'bbox': [10, 10, 30, 30], 'score': 0.9},
             {'image_id': 1, 'category_id': 3, 'bbox': [10, 10, 30, 30], 'score': 0.8},
             {'image_id': 2, 'category_id': 2, 'bbox': [50, 50, 20, 20], 'score': 0.7}]
  per_cat = scoring.coco_eval(gt, results)['per_category_ap']
  assert per_cat['all'] == pytest.approx(1.0) and np.isnan(per_cat['absent'])
  # One of two boxes found first: precision 1 up to recall 0.5, 51 of COCO's 101 thresholds.
  assert per_cat['half'] == pytest.approx(51 / 101)
  lines = scoring.per_category_table(per_cat)
  assert [line.split() for line in lines[:3]] == [['all', '1.0000'], ['half', '0.5050'],
                                                  ['absent', '-']]
  assert lines[3] == '- : no ground truth in this split' and len(lines) == 4
  assert 'nan' not in ''.join(lines)
  assert scoring.per_category_table({'x': 0.25}) == ['  x                        0.2500']
