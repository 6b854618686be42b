"""COCO data of an evaluation: the ground truth (from the official annotation file or built from
the TFDS split), COCO results (one detection each: image id, category id, [x, y, w, h] in
original pixels, score), their validation, and the files they are read from and written to."""

import collections
import json
import logging
import math
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from fcos_jax import errors
from fcos_jax.data import categories as categories_lib
from fcos_jax.data import input_pipeline
from fcos_jax.data.preprocessing import image_shape_from_header

class DetectionsFileError(errors.DataError):
  """A results file that does not fit the ground truth (unknown image ids or categories)."""


def ground_truth_from_tfds(builder, split: str,
                           categories: categories_lib.Categories) -> Dict[str, Any]:
  """COCO-format ground truth of a TFDS split (absolute [x, y, w, h] boxes, areas, crowd)."""
  ds = input_pipeline.read_examples(builder, split)
  ds = ds.map(lambda ex: dict(ex, _hw=image_shape_from_header(ex['image'])))
  images, annotations = [], []
  next_id = 1
  for ex in ds.as_numpy_iterator():
    h, w = (int(v) for v in ex['_hw'])
    image_id = int(ex['image/id'])
    images.append({'id': image_id, 'height': h, 'width': w,
                   'file_name': ex['image/filename'].decode()})
    obj = ex['objects']
    for k in range(len(obj['label'])):
      ymin, xmin, ymax, xmax = (float(v) for v in obj['bbox'][k])
      annotations.append({
          'id': next_id, 'image_id': image_id,
          'category_id': int(categories.ids[int(obj['label'][k])]),
          'bbox': [xmin * w, ymin * h, (xmax - xmin) * w, (ymax - ymin) * h],
          'area': float(obj['area'][k]), 'iscrowd': int(obj['is_crowd'][k])})
      next_id += 1
  images.sort(key=lambda im: im['id'])
  return {'images': images, 'annotations': annotations, 'categories': categories.to_coco()}


def load_ground_truth(config, split: Optional[str] = None,
                      annotations: Optional[str] = None) -> Dict[str, Any]:
  """COCO-format ground truth of the split: the `annotations` JSON if given, else built from
  the config's TFDS dataset."""
  if annotations:
    if not tf.io.gfile.exists(annotations):
      raise errors.DataError(f'{annotations}: annotation file not found')
    with tf.io.gfile.GFile(annotations, 'rb') as f:
      try:
        gt = json.loads(f.read().decode('utf-8-sig'))  # a byte-order mark is read, not refused
      except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise errors.DataError(f'{annotations}: malformed JSON: {e}') from None
    missing = [k for k in ('images', 'annotations', 'categories')
               if not isinstance(gt, dict) or not isinstance(gt.get(k), list)]
    if missing:
      raise errors.DataError(f'{annotations}: not COCO ground truth: no list {missing}')
    return repair_ground_truth(gt, annotations)
  builder = input_pipeline.get_builder(config.data)
  return ground_truth_from_tfds(builder, split or config.data.eval_split,
                                categories_lib.from_builder(builder))


def repair_ground_truth(gt: Dict[str, Any], path: str) -> Dict[str, Any]:
  """COCO ground truth that pycocotools can score: records without an `id` (images,
  categories) or an image, category or box (annotations) are refused naming the record; the
  fields hand-made files often leave out are filled in as COCO defines them and counted:
  `iscrowd` 0, `area` the box's w * h, a missing annotation `id` a new unique one."""
  for key in ('images', 'categories'):
    for i, rec in enumerate(gt[key]):
      if not isinstance(rec, dict) or not _is_int(rec.get('id')):
        raise errors.DataError(f'{path}: {key}[{i}] has no integer "id": {str(rec)[:120]}')
  used = {a.get('id') for a in gt['annotations'] if isinstance(a, dict)}
  next_id = max([i for i in used if _is_int(i)], default=0) + 1
  repaired, annotations = collections.Counter(), []
  for i, ann in enumerate(gt['annotations']):
    bbox = ann.get('bbox') if isinstance(ann, dict) else None
    if not (isinstance(ann, dict) and _is_int(ann.get('image_id')) and
            _is_int(ann.get('category_id')) and isinstance(bbox, list) and len(bbox) == 4 and
            all(_is_finite_number(v) for v in bbox)):
      raise errors.DataError(f'{path}: annotations[{i}] needs an integer image_id and '
                             f'category_id and a bbox of 4 numbers: {str(ann)[:160]}')
    ann = dict(ann)
    if 'iscrowd' not in ann:
      ann['iscrowd'] = 0
      repaired['iscrowd (set to 0)'] += 1
    if not _is_finite_number(ann.get('area')):
      ann['area'] = float(bbox[2]) * float(bbox[3])
      repaired['area (set to the box w*h)'] += 1
    if not _is_int(ann.get('id')):
      ann['id'] = next_id
      next_id += 1
      repaired['id (numbered after the largest)'] += 1
    annotations.append(ann)
  if repaired:
    logging.warning('%s: annotations without %s', path,
                    ', '.join(f'{k}: {n}' for k, n in repaired.items()))
  return dict(gt, annotations=annotations)


def coco_result(image_id: int, category_id: int, box_xyxy: Sequence[float], score: float
                ) -> Dict[str, Any]:
  """One COCO result: the box as [x, y, w, h], from x0, y0, x1, y1."""
  x0, y0, x1, y1 = (float(v) for v in box_xyxy)
  return {'image_id': int(image_id), 'category_id': int(category_id),
          'bbox': [x0, y0, x1 - x0, y1 - y0], 'score': float(score)}


def _is_int(v) -> bool:
  return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_finite_number(v) -> bool:
  return (isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
          and math.isfinite(v))


def check_result_values(results: Sequence[Any]) -> None:
  """A results file from elsewhere must be scoreable: pycocotools would count a NaN box as a
  match and accept negative sizes or infinite scores, so each field is checked and named."""
  for i, r in enumerate(results):
    if not isinstance(r, dict):
      raise DetectionsFileError(f'result {i}: expected an object, got {str(r)[:80]}')
    missing = {'image_id', 'category_id', 'bbox', 'score'} - set(r)
    if missing:
      raise DetectionsFileError(f'result {i} lacks {sorted(missing)}')
    for key in ('image_id', 'category_id'):
      if not _is_int(r[key]):
        raise DetectionsFileError(f'result {i}: {key} must be an integer, got {r[key]!r}')
    box = r['bbox']
    if not (isinstance(box, (list, tuple)) and len(box) == 4 and
            all(_is_finite_number(v) for v in box)):
      raise DetectionsFileError(f'result {i}: bbox must be [x, y, w, h] of finite numbers, '
                                f'got {box!r}')
    if not (box[2] > 0 and box[3] > 0):
      raise DetectionsFileError(f'result {i}: bbox width and height must be > 0, got {box!r}')
    if not _is_finite_number(r['score']):
      raise DetectionsFileError(f'result {i}: score must be a finite number, got '
                                f'{r["score"]!r}')


def check_results(results: Sequence[Dict[str, Any]], gt: Dict[str, Any]) -> None:
  """Every detection names an image and a category of the ground truth."""
  image_ids = {im['id'] for im in gt['images']}
  cat_ids = {c['id'] for c in gt['categories']}
  for i, r in enumerate(results):
    missing = {'image_id', 'category_id', 'bbox', 'score'} - set(r)
    if missing:
      raise DetectionsFileError(f'result {i} lacks {sorted(missing)}')
    if r['image_id'] not in image_ids:
      raise DetectionsFileError(f'result {i}: image_id {r["image_id"]} is not in the ground '
                                'truth')
    if r['category_id'] not in cat_ids:
      raise DetectionsFileError(f'result {i}: category_id {r["category_id"]} is not one of the '
                                f'ground truth categories {sorted(cat_ids)}')
    if len(r['bbox']) != 4:
      raise DetectionsFileError(f'result {i}: bbox must be [x, y, w, h], got {r["bbox"]}')


def write_outputs(out_dir: str, tag: str, metrics: Dict[str, Any],
                  results: Optional[Sequence[Dict[str, Any]]] = None) -> None:
  """`{out_dir}/{tag}_metrics.json` and, with results, `{out_dir}/{tag}_detections.json`."""
  tf.io.gfile.makedirs(out_dir)
  with tf.io.gfile.GFile(os.path.join(out_dir, f'{tag}_metrics.json'), 'w') as f:
    json.dump(metrics, f, indent=1)
  if results is not None:
    with tf.io.gfile.GFile(os.path.join(out_dir, f'{tag}_detections.json'), 'w') as f:
      json.dump(results, f)


def read_results_file(path: str) -> List[Dict[str, Any]]:
  """A COCO results file (a JSON list of detections), or a glob of JSON-lines shards of them
  (one detection per line: batch_predict.py's results-*.jsonl), on any TF file system."""
  if any(c in path for c in '*?['):
    shards = sorted(tf.io.gfile.glob(path))
    if not shards:
      raise DetectionsFileError(f'{path}: no results file matches')
    return [r for shard in shards for r in read_results_file(shard)]
  if not tf.io.gfile.exists(path):
    raise DetectionsFileError(f'{path}: results file not found')
  with tf.io.gfile.GFile(path, 'rb') as f:
    text = f.read().decode('utf-8-sig', errors='replace')
  if path.endswith('.jsonl'):
    results = []
    for n, line in enumerate(text.splitlines(), 1):
      try:
        results += [json.loads(line)] if line.strip() else []
      except json.JSONDecodeError as e:
        raise DetectionsFileError(f'{path}: line {n}: malformed JSON: {e}') from None
    return results
  try:
    results = json.loads(text)
  except json.JSONDecodeError as e:
    raise DetectionsFileError(f'{path}: malformed JSON: {e}') from None
  if not isinstance(results, list):
    raise DetectionsFileError(f'{path}: expected a JSON list of detections')
  return results


