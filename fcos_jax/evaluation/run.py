"""The two evaluations: a model over a split (predict on every process, gather, score on process
0, write the metrics and detections), and an existing COCO results file scored without a model."""

from typing import Any, Callable, Dict, Optional

import jax

from fcos_jax.evaluation import coco_data, prediction, scoring


def evaluate(config, model, variables, *, workdir: Optional[str] = None,
             split: Optional[str] = None, annotations: Optional[str] = None,
             tag: str = 'eval', progress: bool = False,
             predict_fn: Optional[Callable[..., Any]] = None, with_boxes: bool = False,
             class_prob: bool = False, keep_outputs: bool = False) -> Dict[str, Any]:
  """Predict over the split on every process, gather on process 0, score with COCOeval.

  Returns (on every process) the metrics dict; process 0 also writes
  `{workdir}/{tag}_metrics.json` and `{workdir}/{tag}_detections.json` when `workdir` is given,
  and, with `keep_outputs`, returns the detections and ground truth under 'results' and
  'ground_truth' (error analysis, pictures). `predict_fn`, `with_boxes`, `class_prob`: see
  `prediction.predict_split`.
  """
  split = split or config.data.eval_split
  pred = prediction.predict_split(config, model, variables, split=split, progress=progress,
                                  predict_fn=predict_fn, with_boxes=with_boxes,
                                  class_prob=class_prob)
  results, num_images = prediction.gather_results(pred['results'], pred['num_images'], workdir,
                                                  tag)
  metrics = {'num_images': num_images, 'model_seconds': pred['model_seconds'],
             'images_per_second': pred['num_images'] / max(pred['total_seconds'], 1e-9),
             'model_images_per_second': pred['model_images_per_second'],
             'compiled_shapes': pred['compiled_shapes'],
             'compile_seconds': pred['compile_seconds']}
  if jax.process_index() != 0:
    return metrics
  gt = coco_data.load_ground_truth(config, split, annotations)
  metrics.update(scoring.score(gt, results, num_images))
  if workdir is not None:
    coco_data.write_outputs(workdir, tag, metrics, results)
  if keep_outputs:
    metrics.update(results=results, ground_truth=gt)
  return metrics


def score_results_file(config, path: str, *, split: Optional[str] = None,
                       annotations: Optional[str] = None) -> Dict[str, Any]:
  """Metrics of an existing COCO results file (no model) against the split's ground truth."""
  results = coco_data.read_results_file(path)
  gt = coco_data.load_ground_truth(config, split, annotations)
  try:
    coco_data.check_result_values(results)
    coco_data.check_results(results, gt)
  except coco_data.DetectionsFileError as e:
    raise coco_data.DetectionsFileError(f'{path}: {e}') from None
  return dict(scoring.score(gt, results), num_images=len(gt['images']))
