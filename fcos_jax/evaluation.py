"""COCO evaluation: detections over a TFDS split, mapped back to the original images, scored by
pycocotools' COCOeval (bbox). Ground truth comes from the official annotation file or is built
from the TFDS split itself (boxes, crowd flags, areas)."""

import contextlib
import io
import json
import math
import logging
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np
import tensorflow as tf
from jax.sharding import NamedSharding, PartitionSpec as P

from fcos_jax import errors, inference, train_step
from fcos_jax.data import categories as categories_lib
from fcos_jax.data import input_pipeline
from fcos_jax.data.preprocessing import image_shape_from_header

STAT_NAMES = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl',
              'AR1', 'AR10', 'AR100', 'ARs', 'ARm', 'ARl')


class DetectionsFileError(errors.DataError):
  """A results file that does not fit the ground truth (unknown image ids or categories)."""


def ground_truth_from_tfds(builder, split: str,
                           categories: categories_lib.Categories) -> Dict[str, Any]:
  """COCO-format ground truth of a TFDS split (absolute [x, y, w, h] boxes, areas, crowd)."""
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          decoders={'image': tfds_skip_decoding()})
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
    with tf.io.gfile.GFile(annotations) as f:
      try:
        gt = json.load(f)
      except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise errors.DataError(f'{annotations}: malformed JSON: {e}') from None
    missing = [k for k in ('images', 'annotations', 'categories')
               if not isinstance(gt, dict) or not isinstance(gt.get(k), list)]
    if missing:
      raise errors.DataError(f'{annotations}: not COCO ground truth: no list {missing}')
    return gt
  builder = input_pipeline.get_builder(config.data)
  return ground_truth_from_tfds(builder, split or config.data.eval_split,
                                categories_lib.from_builder(builder))


def tfds_skip_decoding():
  import tensorflow_datasets as tfds
  return tfds.decode.SkipDecoding()


def to_coco_results(det, batch, class_ids: Sequence[int],
                    class_prob: bool = False) -> List[Dict[str, Any]]:
  """Detections of one batch (numpy) -> COCO result dicts in original-image pixels;
  `class_ids[k]` is the COCO category id of model output k. With `class_prob`, each result also
  carries the class probability without the centerness factor ('class_prob')."""
  results = []
  for k in np.flatnonzero(batch['mask']):
    n = int(det['num_valid'][k])
    if n == 0:
      continue
    oh, ow = batch['orig_size'][k]
    rh, rw = batch['image_size'][k]
    boxes = det['boxes'][k, :n] * np.array([ow / rw, oh / rh, ow / rw, oh / rh])
    for j, (box, score, cls) in enumerate(zip(boxes, det['scores'][k, :n],
                                              det['classes'][k, :n])):
      results.append({'image_id': int(batch['image_id'][k]),
                      'category_id': int(class_ids[int(cls)]),
                      'bbox': [float(box[0]), float(box[1]), float(box[2] - box[0]),
                               float(box[3] - box[1])],
                      'score': float(score)})
      if class_prob:
        results[-1]['class_prob'] = float(det['class_probs'][k, j])
  return results


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


def coco_eval(gt: Dict[str, Any], results: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
  """COCOeval (bbox) -> the 12 standard numbers, per-category AP and COCOeval's printout."""
  from pycocotools.coco import COCO
  from pycocotools.cocoeval import COCOeval
  check_results(results, gt)
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


def host_copy(tree):
  """numpy copy of a pytree of (possibly multi-process, replicated) arrays."""
  return jax.tree_util.tree_map(
      lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else x, tree)


def predict_split(config, model, variables, *, split: Optional[str] = None,
                  batch_size: Optional[int] = None, progress: bool = False,
                  oracle_centerness: bool = False, class_prob: bool = False) -> Dict[str, Any]:
  """Detections (COCO results) for this process's part of the split, plus counts and timing.

  `oracle_centerness`: with the ground-truth centerness instead of the predicted one (see
  `inference.make_predict_fn`). `class_prob`: results also carry the class probability alone.
  """
  categories = input_pipeline.dataset_categories(config.data)
  class_ids = categories_lib.model_class_ids(config.model, categories)
  valid_ids = set(categories.ids)
  batch_size = batch_size or config.eval_batch_size
  devices = jax.local_devices()
  devices = devices[:math.gcd(batch_size, len(devices))]  # as many as split the batch evenly
  # Inference needs no cross-process communication: a mesh over the local devices only lets
  # processes with different numbers of batches run independently.
  mesh = train_step.make_mesh(devices)
  sharding = NamedSharding(mesh, P(train_step.DATA_AXIS))
  predict = jax.jit(inference.make_predict_fn(config, model, oracle_centerness=oracle_centerness))
  inputs = ('image', 'image_size') + (('boxes', 'box_valid') if oracle_centerness else ())
  variables = jax.device_put(host_copy(variables), NamedSharding(mesh, P()))
  ds = input_pipeline.create_eval_dataset(config.data, batch_size, split=split,
                                          with_boxes=oracle_centerness)
  results, num_images, model_time = [], 0, 0.0
  bar = None
  if progress:
    from tqdm import tqdm
    bar = tqdm(desc=f'evaluating {split or config.data.eval_split}', unit='images')
  compiled, compile_time, steady_time, steady_images = {}, {}, 0.0, 0
  start = time.perf_counter()
  for batch in ds.as_numpy_iterator():
    args = [jax.device_put(batch[k], sharding) for k in inputs]
    shape = batch['image'].shape
    if shape not in compiled:  # one program per padded shape: compiled (and timed) apart
      t = time.perf_counter()
      compiled[shape] = predict.lower(variables, *args).compile()
      compile_time[shape] = time.perf_counter() - t
      logging.info('compiled inference for input %s in %.1f s (%d shapes so far)', shape,
                   compile_time[shape], len(compiled))
    t = time.perf_counter()
    det = jax.device_get(compiled[shape](variables, *args)._asdict())
    elapsed = time.perf_counter() - t
    model_time += elapsed
    steady_time += elapsed
    steady_images += int(batch['mask'].sum())
    # Outputs with no category in this dataset (torchvision's background / N/A slots) are dropped.
    results += [r for r in to_coco_results(det, batch, class_ids, class_prob)
                if r['category_id'] in valid_ids]
    num_images += int(batch['mask'].sum())
    if bar is not None:
      bar.update(int(batch['mask'].sum()))
  if bar is not None:
    bar.close()
  if compiled:
    logging.info('%d input shapes compiled in %.1f s (%.1f s each on average)', len(compiled),
                 sum(compile_time.values()), sum(compile_time.values()) / len(compiled))
  return {'results': results, 'num_images': num_images, 'model_seconds': model_time,
          'total_seconds': time.perf_counter() - start,
          'model_images_per_second': steady_images / steady_time if steady_time else float('nan'),
          'compiled_shapes': len(compiled), 'compile_seconds': sum(compile_time.values())}


def gather_results(results: List[Dict[str, Any]], num_images: int, shared_dir: Optional[str],
                   tag: str) -> Tuple[List[Dict[str, Any]], int]:
  """All processes' (results, image count), complete on process 0 (through files in
  `shared_dir/{tag}_parts`, which every process must see); a single process passes through."""
  if jax.process_count() == 1:
    return results, num_images
  if shared_dir is None:
    raise ValueError('a multi-process evaluation needs a shared workdir')
  from jax.experimental import multihost_utils
  tmp = os.path.join(shared_dir, f'{tag}_parts')
  tf.io.gfile.makedirs(tmp)
  part_path = os.path.join(tmp, f'process_{jax.process_index()}.json')
  with tf.io.gfile.GFile(part_path, 'w') as f:
    json.dump({'results': results, 'num_images': num_images}, f)
  multihost_utils.sync_global_devices(f'{tag}_written')
  if jax.process_index() == 0:
    results, num_images = [], 0
    for p in range(jax.process_count()):
      with tf.io.gfile.GFile(os.path.join(tmp, f'process_{p}.json')) as f:
        part = json.load(f)
      results += part['results']
      num_images += part['num_images']
  multihost_utils.sync_global_devices(f'{tag}_read')
  return results, num_images


def score(gt: Dict[str, Any], results: Sequence[Dict[str, Any]],
          num_images: Optional[int] = None) -> Dict[str, Any]:
  """COCO metrics of `results` against `gt`; `num_images` (if given) must be the split's size."""
  if num_images is not None and num_images != len(gt['images']):
    raise RuntimeError(f'evaluated {num_images} images but the split has {len(gt["images"])}')
  t = time.perf_counter()
  scored = coco_eval(gt, results)
  logging.info('COCOeval:\n%s', scored['summary'])
  return dict(scored['stats'], split_size=len(gt['images']), num_detections=len(results),
              per_category_ap=scored['per_category_ap'],
              coco_eval_seconds=time.perf_counter() - t)


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
  """A COCO results file (a JSON list of detections)."""
  if not tf.io.gfile.exists(path):
    raise DetectionsFileError(f'{path}: results file not found')
  with tf.io.gfile.GFile(path) as f:
    try:
      results = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise DetectionsFileError(f'{path}: malformed JSON: {e}') from None
  if not isinstance(results, list):
    raise DetectionsFileError(f'{path}: expected a JSON list of detections')
  return results


def score_results_file(config, path: str, *, split: Optional[str] = None,
                       annotations: Optional[str] = None) -> Dict[str, Any]:
  """Metrics of an existing COCO results file (no model) against the split's ground truth."""
  results = read_results_file(path)
  gt = load_ground_truth(config, split, annotations)
  try:
    check_result_values(results)
    check_results(results, gt)
  except DetectionsFileError as e:
    raise DetectionsFileError(f'{path}: {e}') from None
  return dict(score(gt, results), num_images=len(gt['images']))


def evaluate(config, model, variables, *, workdir: Optional[str] = None,
             split: Optional[str] = None, annotations: Optional[str] = None,
             tag: str = 'eval', progress: bool = False, oracle_centerness: bool = False,
             class_prob: bool = False, keep_outputs: bool = False) -> Dict[str, Any]:
  """Predict over the split on every process, gather on process 0, score with COCOeval.

  Returns (on every process) the metrics dict; process 0 also writes
  `{workdir}/{tag}_metrics.json` and `{workdir}/{tag}_detections.json` when `workdir` is given,
  and, with `keep_outputs`, returns the detections and ground truth under 'results' and
  'ground_truth' (error analysis, pictures). `oracle_centerness`, `class_prob`: see
  `predict_split`.
  """
  split = split or config.data.eval_split
  pred = predict_split(config, model, variables, split=split, progress=progress,
                       oracle_centerness=oracle_centerness, class_prob=class_prob)
  results, num_images = gather_results(pred['results'], pred['num_images'], workdir, tag)
  metrics = {'num_images': num_images, 'model_seconds': pred['model_seconds'],
             'images_per_second': pred['num_images'] / max(pred['total_seconds'], 1e-9),
             'model_images_per_second': pred['model_images_per_second'],
             'compiled_shapes': pred['compiled_shapes'],
             'compile_seconds': pred['compile_seconds']}
  if jax.process_index() != 0:
    return metrics
  gt = load_ground_truth(config, split, annotations)
  metrics.update(score(gt, results, num_images))
  if workdir is not None:
    write_outputs(workdir, tag, metrics, results)
  if keep_outputs:
    metrics.update(results=results, ground_truth=gt)
  return metrics
