"""The prediction loop of an evaluation: a jitted predict function over every image of this
process's part of a TFDS split, detections mapped back to the original images as COCO results,
and the results of all processes gathered on process 0."""

import json
import logging
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np
import tensorflow as tf

from fcos_jax import barriers, inference, sharding
from fcos_jax.data import categories as categories_lib
from fcos_jax.data import input_pipeline
from fcos_jax.evaluation import coco_data


def to_coco_results(det, batch, class_ids: Sequence[int],
                    class_prob: bool = False) -> List[Dict[str, Any]]:
  """Detections of one batch (numpy) -> COCO result dicts in original-image pixels;
  `class_ids[k]` is the COCO category id of model output k. With `class_prob`, each result also
  carries the class probability without the centerness factor ('class_prob')."""
  results = []
  for k in np.flatnonzero(batch['mask']):
    n = int(det['num_valid'][k])
    oh, ow = batch['orig_size'][k]
    rh, rw = batch['image_size'][k]
    boxes = det['boxes'][k, :n] * np.array([ow / rw, oh / rh, ow / rw, oh / rh])
    for j, (box, score, cls) in enumerate(zip(boxes, det['scores'][k, :n],
                                              det['classes'][k, :n])):
      results.append(coco_data.coco_result(batch['image_id'][k], class_ids[int(cls)], box,
                                           score))
      if class_prob:
        results[-1]['class_prob'] = float(det['class_probs'][k, j])
  return results


def split_images(data_config, split: Optional[str] = None) -> Optional[int]:
  """Images in this process's part of the split (default the eval split), from the TFDS split
  info: a progress bar's total. None where the split info does not say."""
  part = input_pipeline.process_split(split or data_config.eval_split, jax.process_index(),
                                      jax.process_count())
  try:
    return int(input_pipeline.get_builder(data_config).info.splits[part].num_examples)
  except (KeyError, ValueError, TypeError, AttributeError):
    return None


class _Programs:
  """The predict function compiled once per padded input shape, each compilation timed."""

  def __init__(self, predict):
    self._predict = predict
    self.compiled: Dict[Tuple[int, ...], Any] = {}
    self.seconds: Dict[Tuple[int, ...], float] = {}

  def get(self, variables, *args):
    """The program for the shape of these arguments, compiled on first sight."""
    shape = args[0].shape
    if shape not in self.compiled:
      t = time.perf_counter()
      self.compiled[shape] = self._predict.lower(variables, *args).compile()
      self.seconds[shape] = time.perf_counter() - t
      logging.info('compiled inference for input %s in %.1f s (%d shapes so far)', shape,
                   self.seconds[shape], len(self.compiled))
    return self.compiled[shape]


def predict_split(config, model, variables, *, split: Optional[str] = None,
                  batch_size: Optional[int] = None, progress: bool = False,
                  predict_fn: Optional[Callable[..., Any]] = None, with_boxes: bool = False,
                  class_prob: bool = False) -> Dict[str, Any]:
  """Detections (COCO results) for this process's part of the split, plus counts and timing.

  `predict_fn`: (variables, images, image_sizes[, boxes, box_valid with `with_boxes`]) ->
  `Detections`, default `inference.make_predict_fn`. `class_prob`: results also carry the
  class probability alone.
  """
  categories = input_pipeline.dataset_categories(config.data)
  class_ids = categories_lib.model_class_ids(config.model, categories)
  valid_ids = set(categories.ids)
  batch_size = batch_size or config.eval_batch_size
  mesh = sharding.local_mesh(batch_size)
  batch_sharding = sharding.batch_sharding(mesh)
  programs = _Programs(jax.jit(predict_fn or inference.make_predict_fn(config, model)))
  inputs = ('image', 'image_size') + (('boxes', 'box_valid') if with_boxes else ())
  variables = jax.device_put(sharding.host_copy(variables), sharding.replicated(mesh))
  ds = input_pipeline.create_eval_dataset(config.data, batch_size, split=split,
                                          with_boxes=with_boxes)
  results, num_images, model_time = [], 0, 0.0
  bar = None
  if progress:
    from tqdm import tqdm
    bar = tqdm(desc=f'evaluating {split or config.data.eval_split}', unit='images',
               total=split_images(config.data, split))
  start = time.perf_counter()
  for batch in ds.as_numpy_iterator():
    args = [jax.device_put(batch[k], batch_sharding) for k in inputs]
    program = programs.get(variables, *args)
    t = time.perf_counter()
    det = jax.device_get(program(variables, *args)._asdict())
    model_time += time.perf_counter() - t
    # Outputs with no category in this dataset (torchvision's background / N/A slots) are dropped.
    results += [r for r in to_coco_results(det, batch, class_ids, class_prob)
                if r['category_id'] in valid_ids]
    num_images += int(batch['mask'].sum())
    if bar is not None:
      bar.update(int(batch['mask'].sum()))
  if bar is not None:
    bar.close()
  compile_seconds = sum(programs.seconds.values())
  if programs.compiled:
    logging.info('%d input shapes compiled in %.1f s (%.1f s each on average)',
                 len(programs.compiled), compile_seconds, compile_seconds / len(programs.compiled))
  return {'results': results, 'num_images': num_images, 'model_seconds': model_time,
          'total_seconds': time.perf_counter() - start,
          'model_images_per_second': num_images / model_time if model_time else float('nan'),
          'compiled_shapes': len(programs.compiled), 'compile_seconds': compile_seconds}


def gather_results(results: List[Dict[str, Any]], num_images: int, shared_dir: Optional[str],
                   tag: str) -> Tuple[List[Dict[str, Any]], int]:
  """All processes' (results, image count), complete on process 0 (through files in
  `shared_dir/{tag}_parts`, which every process must see); a single process passes through."""
  if jax.process_count() == 1:
    return results, num_images
  if shared_dir is None:
    raise ValueError('a multi-process evaluation needs a shared workdir')
  tmp = os.path.join(shared_dir, f'{tag}_parts')
  tf.io.gfile.makedirs(tmp)
  part_path = os.path.join(tmp, f'process_{jax.process_index()}.json')
  with tf.io.gfile.GFile(part_path, 'w') as f:
    json.dump({'results': results, 'num_images': num_images}, f)
  barriers.wait_for_all(f'{tag}_written')
  if jax.process_index() == 0:
    results, num_images = [], 0
    for p in range(jax.process_count()):
      with tf.io.gfile.GFile(os.path.join(tmp, f'process_{p}.json')) as f:
        part = json.load(f)
      results += part['results']
      num_images += part['num_images']
  barriers.wait_for_all(f'{tag}_read')
  return results, num_images
