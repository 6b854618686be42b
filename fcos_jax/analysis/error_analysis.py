"""`evaluate.py --analysis DIR`: from an evaluation's detections and ground truth, the
score-vs-IoU calibration (the paper's Fig. 7), precision-recall curves per category, the
confusion matrix and pictures of a few images with detections and ground truth, as PNGs, plus
`analysis.json` and a printed table."""

import json
import os
from typing import Any, Dict, Optional, Sequence

import numpy as np

from fcos_jax.analysis import calibration, coco_matching, plots

PR_IOU = 0.5
CONFUSION_MIN_SCORE = 0.5


def draw_pictures(config, gt: Dict[str, Any], results: Sequence[Dict[str, Any]], out_dir: str,
                  *, split: Optional[str] = None, num_images: int = 6,
                  min_score: float = CONFUSION_MIN_SCORE) -> list:
  """`pictures` written as PNGs into out_dir; returns the files written."""
  files = []
  for image_id, picture in pictures(config, gt, results, split=split, num_images=num_images,
                                    min_score=min_score):
    path = os.path.join(out_dir, f'detections_{image_id}.png')
    picture.save(path)
    files.append(path)
  return files


def pictures(config, gt: Dict[str, Any], results: Sequence[Dict[str, Any]], *,
             split: Optional[str] = None, num_images: int = 6,
             min_score: float = CONFUSION_MIN_SCORE) -> list:
  """[(image id, PIL image)] of the first `num_images` images of the split with their
  detections (score >= min_score, a colour per class) and ground truth (white) drawn, and a
  key of both underneath."""
  from fcos_jax import visualize
  from fcos_jax.data import input_pipeline
  builder = input_pipeline.get_builder(config.data)
  ds = input_pipeline.read_examples(builder, split or config.data.eval_split, decode_images=True)
  names = {c['id']: c['name'] for c in gt['categories']}
  labels = {c['id']: i for i, c in enumerate(gt['categories'])}
  out = []
  for ex in ds.take(num_images).as_numpy_iterator():
    image_id = int(ex['image/id'])
    dets = [{'bbox': [r['bbox'][0], r['bbox'][1], r['bbox'][0] + r['bbox'][2],
                      r['bbox'][1] + r['bbox'][3]], 'score': r['score'],
             'label': labels[r['category_id']], 'class_name': names[r['category_id']]}
            for r in results if r['image_id'] == image_id and r['score'] >= min_score]
    boxes = [[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2],
              a['bbox'][1] + a['bbox'][3]] for a in gt['annotations']
             if a['image_id'] == image_id]
    image = ex['image']
    scale = max(1, -(-384 // max(image.shape[:2])))
    picture = visualize.draw_detections(image, dets, scale=scale, ground_truth=boxes)
    key = [('ground truth', visualize.GROUND_TRUTH_COLOR)] + [
        (f'predicted {names[c["id"]]}', visualize.PALETTE[labels[c['id']] %
                                                          len(visualize.PALETTE)])
        for c in gt['categories'] if any(d['label'] == labels[c['id']] for d in dets)]
    out.append((image_id, visualize.add_key(picture, key)))
  return out


def analyze(config, gt: Dict[str, Any], results: Sequence[Dict[str, Any]], out_dir: str, *,
            split: Optional[str] = None, num_pictures: int = 6) -> Dict[str, Any]:
  """Writes the PNGs and analysis.json into out_dir; returns the numbers."""
  os.makedirs(out_dir, exist_ok=True)
  matched = coco_matching.matched_scores(gt, results)
  corr = calibration.score_iou_correlation(matched)
  calibration.plot_score_vs_iou(matched, corr, os.path.join(out_dir, 'score_vs_iou.png'))
  curves = coco_matching.pr_curves(gt, results, PR_IOU)
  plots.plot_pr_curves(curves, os.path.join(out_dir, 'pr_curves.png'), PR_IOU)
  cm = coco_matching.confusion_matrix(gt, results, iou_threshold=PR_IOU,
                                      min_score=CONFUSION_MIN_SCORE)
  plots.plot_confusion(cm, os.path.join(out_dir, 'confusion_matrix.png'))
  pictures = draw_pictures(config, gt, results, out_dir, split=split, num_images=num_pictures)
  summary = {'calibration': corr,
             'ap50_per_category': {c['name']: c['ap'] for c in curves},
             'confusion': {'labels': cm['labels'], 'columns': cm['columns'],
                           'counts': cm['counts'].tolist(), 'iou_threshold': PR_IOU,
                           'min_score': CONFUSION_MIN_SCORE},
             'pictures': [os.path.basename(p) for p in pictures]}
  with open(os.path.join(out_dir, 'analysis.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  return summary


def format_analysis(summary: Dict[str, Any]) -> str:
  """The numbers as plain text."""
  c = summary['calibration']
  cm = summary['confusion']
  lines = [f'score vs IoU ({c["num_matched"]} matched detections, IoU >= 0.1): Pearson r '
           f'{c["corr_class_prob"]:.3f} without centerness, {c["corr_final_score"]:.3f} with',
           f'AP{int(100 * PR_IOU)} per category (COCOeval PR curves): ' + ', '.join(
               f'{name} {ap:.3f}' for name, ap in summary['ap50_per_category'].items()),
           f'confusion matrix (IoU >= {cm["iou_threshold"]:g}, score >= {cm["min_score"]:g}; '
           'rows ground truth, columns predicted):']
  width = max(len(s) for s in cm['labels'] + cm['columns']) + 1
  lines.append(' ' * (width + 2) + ''.join(f'{s:>{width}}' for s in cm['columns']))
  for label, row in zip(cm['labels'], np.asarray(cm['counts'])):
    lines.append(f'  {label:<{width}}' + ''.join(f'{v:>{width}}' for v in row))
  return '\n'.join(lines)
