"""Scoring COCO results with pycocotools' COCOeval (bbox): the 12 standard numbers and the AP of
each category."""

import contextlib
import io
import json
import logging
import math
import time
from typing import Any, Dict, List, Optional, Sequence

from fcos_jax.evaluation import coco_data

STAT_NAMES = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl',
              'AR1', 'AR10', 'AR100', 'ARs', 'ARm', 'ARl')


def coco_eval(gt: Dict[str, Any], results: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
  """COCOeval (bbox) -> the 12 standard numbers, per-category AP and COCOeval's printout."""
  from pycocotools.coco import COCO
  from pycocotools.cocoeval import COCOeval
  coco_data.check_results(results, gt)
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    coco_gt = COCO()
    coco_gt.dataset = json.loads(json.dumps(gt))
    coco_gt.createIndex()
    if not results:
      stats = {name: 0.0 for name in STAT_NAMES}
      return {'stats': stats, 'per_category_ap': {}, 'summary': 'no detections'}
    coco_dt = coco_gt.loadRes([dict(r) for r in results])
    ev = COCOeval(coco_gt, coco_dt, 'bbox')
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
  stats = {name: float(v) for name, v in zip(STAT_NAMES, ev.stats)}
  per_cat = {}
  precision = ev.eval['precision']  # [T, R, K, A, M]
  for k, cat_id in enumerate(ev.params.catIds):
    p = precision[:, :, k, 0, -1]
    p = p[p > -1]
    name = coco_gt.cats[cat_id]['name']
    per_cat[name] = float(p.mean()) if p.size else float('nan')
  return {'stats': stats, 'per_category_ap': per_cat, 'summary': out.getvalue()}


NO_GROUND_TRUTH_NOTE = '- : no ground truth in this split'


def per_category_table(per_category_ap: Dict[str, float]) -> List[str]:
  """Lines of the per-category AP table, best first: a category without ground truth in the
  split (AP NaN, COCO's "undefined") shows '-', last, with a note under the table."""
  undefined = [name for name, ap in per_category_ap.items() if math.isnan(ap)]
  rows = sorted((kv for kv in per_category_ap.items() if not math.isnan(kv[1])),
                key=lambda kv: -kv[1])
  lines = [f'  {name:<24} {ap:.4f}' for name, ap in rows]
  lines += [f'  {name:<24} {"-":>6}' for name in undefined]
  return lines + ([NO_GROUND_TRUTH_NOTE] if undefined else [])


def score(gt: Dict[str, Any], results: Sequence[Dict[str, Any]],
          num_images: Optional[int] = None) -> Dict[str, Any]:
  """COCO metrics of `results` against `gt`; `num_images` (if given) must be the split's size."""
  if num_images is not None and num_images != len(gt['images']):
    raise RuntimeError(f'evaluated {num_images} images but the split has {len(gt["images"])}')
  if not gt['annotations']:
    logging.warning('the ground truth holds no annotation: every AP and AR below is -1, COCO\'s '
                    '"undefined" (nothing to find)')
  t = time.perf_counter()
  scored = coco_eval(gt, results)
  logging.info('COCOeval:\n%s', scored['summary'])
  return dict(scored['stats'], split_size=len(gt['images']), num_detections=len(results),
              per_category_ap=scored['per_category_ap'],
              coco_eval_seconds=time.perf_counter() - t)
