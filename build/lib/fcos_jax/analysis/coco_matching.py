"""COCOeval's matching, read out for error analysis with faster-coco-eval (a maintained C++
reimplementation of pycocotools' COCOeval that also exposes which detection matched which ground
truth box; its AP equals pycocotools', tested): per-class precision-recall curves, the
class-agnostic confusion matrix, and the (score, IoU) of every matched detection.

Matching is COCOeval's: per image, detections in score order take the unmatched ground-truth box
of highest IoU at or above the threshold (crowd boxes absorb duplicates and count for nothing).
"""

import contextlib
import io
from typing import Any, Dict, List, Sequence

import numpy as np

BACKGROUND, MISSED = 'background', 'missed'


def _coco_pair(gt: Dict[str, Any], results: Sequence[Dict[str, Any]]):
  from faster_coco_eval import COCO
  coco_gt = COCO(gt, use_deepcopy=True)
  with contextlib.redirect_stdout(io.StringIO()):
    coco_dt = coco_gt.loadRes([dict(r) for r in results])
  return coco_gt, coco_dt


def pr_curves(gt: Dict[str, Any], results: Sequence[Dict[str, Any]],
              iou_threshold: float = 0.5) -> List[Dict[str, Any]]:
  """Per category with ground truth: COCOeval's interpolated precision at the 101 recall
  thresholds (at `iou_threshold`, all areas, every detection), the score there and the AP."""
  from faster_coco_eval.extra import Curves
  if not results:
    return []
  coco_gt, coco_dt = _coco_pair(gt, results)
  curves = Curves(coco_gt, coco_dt, iou_tresh=iou_threshold, useCats=True).build_curve('id')
  names = {c['id']: c['name'] for c in gt['categories']}
  return [{'category_id': int(c['category_id']), 'name': names[int(c['category_id'])],
           'recall': np.asarray(c['recall_list'], np.float64),
           'precision': np.asarray(c['precision_list'], np.float64),
           'scores': np.asarray(c['scores'], np.float64),
           'ap': float(np.mean(c['precision_list']))} for c in curves]


def confusion_matrix(gt: Dict[str, Any], results: Sequence[Dict[str, Any]], *,
                     iou_threshold: float = 0.5, min_score: float = 0.3) -> Dict[str, Any]:
  """Class-agnostic matching of the detections scoring >= `min_score`: counts [K+1, K+1] with
  rows = ground-truth category, then 'background' (detections matching no box) and columns =
  predicted category, then 'missed' (boxes no detection matched)."""
  from faster_coco_eval.extra import PreviewResults
  names = [c['name'] for c in gt['categories']]
  k = len(names)
  matrix = np.zeros((k + 1, k + 1), np.int64)
  kept = [r for r in results if r['score'] >= min_score]
  if kept:
    coco_gt, coco_dt = _coco_pair(gt, kept)
    with contextlib.redirect_stdout(io.StringIO()):
      ev = PreviewResults(coco_gt, coco_dt, iou_tresh=iou_threshold, useCats=False)
    order = [c['id'] for c in gt['categories']]
    if list(ev.cocoGt.cats) != order:
      raise AssertionError('category order changed inside faster-coco-eval')
    cm = ev.compute_confusion_matrix()  # [K, K + 2]: gt x predicted, then fp (by predicted
    matrix[:k, :k] = cm[:, :k]          # category) and fn (by ground-truth category)
    matrix[k, :k] = cm[:, k]
    matrix[:k, k] = cm[:, k + 1]
  else:
    for a in gt['annotations']:
      if not a.get('iscrowd'):
        matrix[[c['id'] for c in gt['categories']].index(a['category_id']), k] += 1
  return {'labels': names + [BACKGROUND], 'columns': names + [MISSED], 'counts': matrix,
          'iou_threshold': iou_threshold, 'min_score': min_score}


def matched_scores(gt: Dict[str, Any], results: Sequence[Dict[str, Any]], *,
                   iou_threshold: float = 0.1) -> Dict[str, np.ndarray]:
  """For every detection COCOeval matches (class-aware) to a ground-truth box at IoU >=
  `iou_threshold`: the IoU, its score and, when the results carry it, its class probability.
  The low default threshold keeps poorly localized detections in the picture."""
  from faster_coco_eval.extra import PreviewResults
  out = {'iou': [], 'score': [], 'class_prob': []}
  if results:
    coco_gt, coco_dt = _coco_pair(gt, results)
    with contextlib.redirect_stdout(io.StringIO()):
      ev = PreviewResults(coco_gt, coco_dt, iou_tresh=iou_threshold, useCats=True)
    for ann in ev.cocoDt.anns.values():
      if ann.get('gt_id') is not None and not ev.cocoGt.anns[ann['gt_id']].get('iscrowd'):
        out['iou'].append(ann['iou'])
        out['score'].append(ann['score'])
        out['class_prob'].append(ann.get('class_prob', np.nan))
  return {k: np.asarray(v, np.float64) for k, v in out.items()}
