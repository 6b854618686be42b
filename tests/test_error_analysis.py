"""Error analysis: faster-coco-eval's matching against pycocotools and hand-made known answers."""

import contextlib
import io
import json

import numpy as np
import pytest

from fcos_jax.evaluation import coco_data, scoring
from fcos_jax.analysis import calibration, coco_matching, error_analysis

CATS = [{'id': 2, 'name': 'a'}, {'id': 5, 'name': 'b'}]


def gt_of(boxes):
  """COCO ground truth: boxes as (image_id, category_id, x, y, w, h)."""
  return {'images': [{'id': i, 'height': 100, 'width': 100, 'file_name': f'{i}.jpg'}
                     for i in sorted({b[0] for b in boxes} | {1, 2})],
          'annotations': [{'id': k + 1, 'image_id': b[0], 'category_id': b[1],
                           'bbox': list(b[2:]), 'area': b[4] * b[5], 'iscrowd': 0}
                          for k, b in enumerate(boxes)],
          'categories': CATS}


def det(image_id, cat, x, y, w, h, score, class_prob=None):
  r = {'image_id': image_id, 'category_id': cat, 'bbox': [x, y, w, h], 'score': score}
  if class_prob is not None:
    r['class_prob'] = class_prob
  return r


def test_pr_curves_equal_pycocotools(shapes_coco):
  from pycocotools.coco import COCO
  from pycocotools.cocoeval import COCOeval
  with open(f'{shapes_coco}/annotations/validation.json') as f:
    gt = json.load(f)
  rng = np.random.default_rng(0)
  results = []
  for a in gt['annotations']:
    x, y, w, h = a['bbox']
    j = rng.normal(0, 0.12, 4) * [w, h, w, h]
    cat = a['category_id'] if rng.random() > 0.2 else gt['categories'][0]['id']
    results.append(det(a['image_id'], cat, x + j[0], y + j[1], w + j[2], h + j[3],
                       float(rng.random())))
  with contextlib.redirect_stdout(io.StringIO()):
    coco_gt = COCO()
    coco_gt.dataset = json.loads(json.dumps(gt))
    coco_gt.createIndex()
    ev = COCOeval(coco_gt, coco_gt.loadRes(results), 'bbox')
    ev.evaluate()
    ev.accumulate()
  curves = coco_matching.pr_curves(gt, results, 0.5)
  assert [c['category_id'] for c in curves] == ev.params.catIds
  for k, c in enumerate(curves):
    want = ev.eval['precision'][0, :, k, 0, -1]  # IoU 0.5, all areas, 100 detections
    np.testing.assert_allclose(c['precision'], want, atol=1e-12)
    np.testing.assert_allclose(c['recall'], ev.params.recThrs)
    assert c['ap'] == pytest.approx(want.mean())
  assert 0.3 < np.mean([c['ap'] for c in curves]) < 0.99
  # faster-coco-eval's own COCOeval gives pycocotools' 12 numbers.
  from faster_coco_eval import COCO as FCOCO, COCOeval_faster
  with contextlib.redirect_stdout(io.StringIO()):
    fgt = FCOCO(gt, use_deepcopy=True)
    fev = COCOeval_faster(fgt, fgt.loadRes(results), 'bbox')
    fev.evaluate()
    fev.accumulate()
    fev.summarize()
  theirs = scoring.coco_eval(gt, results)['stats']
  for name, value in zip(scoring.STAT_NAMES, fev.stats):
    assert value == pytest.approx(theirs[name], abs=1e-9), name


def test_confusion_matrix_known_answer():
  gt = gt_of([(1, 2, 10, 10, 20, 20),    # a: found as a
              (1, 5, 50, 50, 30, 30),    # b: found as a (class confusion)
              (2, 5, 10, 10, 20, 20),    # b: found as b
              (2, 2, 60, 60, 20, 20)])   # a: missed (its only detection overlaps too little)
  results = [det(1, 2, 11, 10, 20, 20, 0.9), det(1, 2, 51, 50, 30, 30, 0.8),
             det(2, 5, 10, 11, 20, 20, 0.7), det(2, 2, 72, 72, 20, 20, 0.6),   # IoU 0.19: fp
             det(1, 5, 80, 0, 10, 10, 0.5),                                   # background fp
             det(2, 5, 10, 10, 20, 20, 0.1)]                                  # below min_score
  cm = coco_matching.confusion_matrix(gt, results, iou_threshold=0.5, min_score=0.3)
  assert cm['labels'] == ['a', 'b', 'background'] and cm['columns'] == ['a', 'b', 'missed']
  np.testing.assert_array_equal(cm['counts'], [[1, 0, 1],
                                               [1, 1, 0],
                                               [1, 1, 0]])


def test_matched_scores_and_correlation_known_answer():
  gt = gt_of([(1, 2, 0, 0, 10, 10), (1, 5, 40, 40, 20, 20)])
  results = [det(1, 2, 0, 0, 10, 5, 0.9, 0.95),     # IoU 0.5
             det(1, 2, 0, 0, 10, 10, 0.8, 0.6),     # same box, already taken: duplicate
             det(1, 5, 40, 40, 20, 15, 0.4, 0.5),   # IoU 0.75
             det(1, 5, 0, 0, 10, 10, 0.3, 0.9)]     # wrong class, no overlap with a b: unmatched
  m = coco_matching.matched_scores(gt, results, iou_threshold=0.1)
  order = np.argsort(-m['score'])
  np.testing.assert_allclose(m['iou'][order], [0.5, 0.75])
  np.testing.assert_allclose(m['score'][order], [0.9, 0.4])
  np.testing.assert_allclose(m['class_prob'][order], [0.95, 0.5])
  # Pearson r from its definition.
  x, y = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0.2, 0.5, 0.3, 0.9])
  r = ((x - x.mean()) * (y - y.mean())).sum() / np.sqrt(((x - x.mean()) ** 2).sum() *
                                                       ((y - y.mean()) ** 2).sum())
  assert calibration.pearson(x, y) == pytest.approx(r)
  assert np.isnan(calibration.pearson([1.0], [2.0]))


def test_analysis_writes_pictures_and_table(shapes_tfds, shapes_coco, tmp_path):
  from tests import tiny_config
  config = tiny_config.get_config()
  config.data.update(dataset=shapes_tfds[0], data_dir=shapes_tfds[1], synthetic=False)
  gt = coco_data.load_ground_truth(config, 'validation')
  rng = np.random.default_rng(1)
  results = [det(a['image_id'], a['category_id'], *(np.array(a['bbox']) +
                                                    rng.normal(0, 1.5, 4)).tolist(),
                 float(rng.uniform(0.3, 1)), float(rng.uniform(0.3, 1)))
             for a in gt['annotations']]
  summary = error_analysis.analyze(config, gt, results, str(tmp_path), split='validation',
                                   num_pictures=2)
  for name in ('score_vs_iou.png', 'pr_curves.png', 'confusion_matrix.png'):
    assert (tmp_path / name).stat().st_size > 5000, name
  assert json.loads((tmp_path / 'analysis.json').read_text()) == json.loads(json.dumps(summary))
  assert len(summary['pictures']) == 2 and (tmp_path / summary['pictures'][0]).exists()
  n = len(gt['annotations'])
  counts = np.array(summary['confusion']['counts'])
  assert counts[:-1].sum() == n  # every box once: matched to some class or missed
  assert summary['calibration']['num_matched'] > n // 2
  text = error_analysis.format_analysis(summary)
  assert 'background' in text and 'Pearson r' in text
  # Each picture has a key strip underneath: white for ground truth, then the colour of each
  # class predicted (score >= 0.5) in that image, and no other class's colour.
  from PIL import Image
  from fcos_jax import visualize
  labels = {c['id']: i for i, c in enumerate(gt['categories'])}
  for name in summary['pictures']:
    image_id = int(name.split('_')[1].split('.')[0])
    info = next(im for im in gt['images'] if im['id'] == image_id)
    scale = max(1, -(-384 // max(info['height'], info['width'])))
    picture = np.asarray(Image.open(tmp_path / name).convert('RGB'))
    assert picture.shape[1] == info['width'] * scale
    strip = picture[info['height'] * scale:]
    assert 10 < strip.shape[0] < 60
    colours = {tuple(int(v) for v in c) for c in strip.reshape(-1, 3)}
    predicted = {labels[r['category_id']] for r in results
                 if r['image_id'] == image_id and r['score'] >= 0.5}
    assert predicted and visualize.GROUND_TRUTH_COLOR in colours
    for label, colour in enumerate(visualize.PALETTE[:len(labels)]):
      assert (colour in colours) == (label in predicted), (name, label)


def test_calibration_and_confusion_plots_have_a_colour_bar_and_legend(monkeypatch, tmp_path):
  """The colour bar spans the counts numpy bins (one scale for both panels), the y = x line is
  in a legend, and the confusion matrix's bar spans the shares 0 to 1."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  from fcos_jax.analysis import plots
  figures = []
  monkeypatch.setattr(plt, 'close', figures.append)
  rng = np.random.default_rng(0)
  iou = rng.uniform(0.1, 1, 500)
  matched = {'iou': iou, 'score': np.clip(iou + rng.normal(0, 0.05, 500), 0, 1),
             'class_prob': rng.uniform(0, 1, 500)}
  calibration.plot_score_vs_iou(matched, calibration.score_iou_correlation(matched),
                                str(tmp_path / 'c.png'))
  bins = np.linspace(0, 1, 41)
  most = max(np.histogram2d(iou, matched[k], bins=[bins, bins])[0].max()
             for k in ('score', 'class_prob'))
  fig = figures.pop()
  *panels, bar = fig.axes
  assert len(panels) == 2 and bar.get_ylabel() == 'detections per bin'
  assert [p.collections[0].norm.vmax for p in panels] == [most, most]
  assert [t.get_text() for t in panels[0].get_legend().get_texts()] == ['score = IoU']
  cm = coco_matching.confusion_matrix(
      gt_of([(1, 2, 10, 10, 20, 20)]), [det(1, 2, 10, 10, 20, 20, 0.9)], iou_threshold=0.5,
      min_score=0.5)
  plots.plot_confusion(cm, str(tmp_path / 'm.png'))
  ax, bar = figures.pop().axes
  assert bar.get_ylabel() == "share of the row's boxes" and bar.get_ylim() == (0, 1)
  assert (tmp_path / 'c.png').stat().st_size > 5000 and (tmp_path / 'm.png').stat().st_size > 5000
