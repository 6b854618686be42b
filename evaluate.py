"""Offline COCO evaluation.

  python evaluate.py --config configs/coco.py --workdir DIR [--step N] [--split validation]
      [--annotations instances_val2017.json]          # official ground truth (default: from TFDS)
  python evaluate.py --config configs/coco.py --detections results.json [--annotations ...]

Restores a checkpoint (the latest by default), runs the jitted model + postprocess over the split
on all local devices (and every process of a multi-process run), maps detections back to the
original images, and scores them with pycocotools' COCOeval (bbox). Prints the 12 standard numbers
and writes metrics, a per-category AP table and the detections (COCO results format) as JSON.
With --detections, an existing results file is scored without a model.
"""

import json
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (get_config()).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Training workdir with checkpoints; results '
                               'are written here.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: latest).')
_PARAMS = flags.DEFINE_string('params', None, 'A params checkpoint instead of --workdir\'s '
                              '(e.g. from python -m fcos_jax.tools.import_torchvision).')
_SPLIT = flags.DEFINE_string('split', None, 'TFDS split (default: config.data.eval_split).')
_ANNOTATIONS = flags.DEFINE_string('annotations', None, 'COCO ground-truth JSON (default: built '
                                   'from the TFDS split).')
_DETECTIONS = flags.DEFINE_string('detections', None, 'Score this COCO results file instead of '
                                  'running a model.')
_OUT = flags.DEFINE_string('out', None, 'Where to write results (default: workdir, or the '
                           'folder of --detections).')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in a multi-process run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process.')
flags.mark_flag_as_required('config')


def print_metrics(metrics, per_category):
  from fcos_jax.evaluation import STAT_NAMES
  print(f'evaluated {metrics["num_images"]} images of {metrics["split_size"]}')
  for name in STAT_NAMES:
    print(f'  {name:<6} {metrics[name]:.4f}')
  if per_category:
    print('per-category AP:')
    for name, ap in sorted(per_category.items(), key=lambda kv: -kv[1]):
      print(f'  {name:<24} {ap:.4f}')
  if 'model_seconds' in metrics:
    print(f'inference: {metrics["model_seconds"]:.1f} s of model time, '
          f'{metrics["model_images_per_second"]:.1f} images/s after compilation, '
          f'{metrics["images_per_second"]:.1f} images/s overall (data, compile, model); '
          f'COCOeval: {metrics["coco_eval_seconds"]:.1f} s')


def score_file(config, detections, annotations, split, out_dir):
  import tensorflow as tf
  from fcos_jax import evaluation
  from fcos_jax.data import input_pipeline
  with tf.io.gfile.GFile(detections) as f:
    try:
      results = json.load(f)
    except json.JSONDecodeError as e:
      raise evaluation.DetectionsFileError(f'{detections}: malformed JSON: {e}') from None
  if not isinstance(results, list):
    raise evaluation.DetectionsFileError(f'{detections}: expected a JSON list of detections')
  if annotations:
    with tf.io.gfile.GFile(annotations) as f:
      gt = json.load(f)
  else:
    builder = input_pipeline.get_builder(config.data)
    gt = evaluation.ground_truth_from_tfds(builder, split,
                                           input_pipeline.get_categories(builder))
  scored = evaluation.coco_eval(gt, results)
  metrics = dict(scored['stats'], num_images=len(gt['images']), split_size=len(gt['images']),
                 num_detections=len(results), per_category_ap=scored['per_category_ap'])
  with tf.io.gfile.GFile(os.path.join(out_dir, 'offline_metrics.json'), 'w') as f:
    json.dump(metrics, f, indent=1)
  return metrics


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  import jax
  if _COORDINATOR.value:
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               coordinator_bind_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  config = _CONFIG.value
  split = _SPLIT.value or config.data.eval_split
  if _DETECTIONS.value:
    out_dir = _OUT.value or os.path.dirname(os.path.abspath(_DETECTIONS.value))
    os.makedirs(out_dir, exist_ok=True)
    metrics = score_file(config, _DETECTIONS.value, _ANNOTATIONS.value, split, out_dir)
    print_metrics(metrics, metrics['per_category_ap'])
    return
  if not (_WORKDIR.value or _PARAMS.value):
    raise app.UsageError('--workdir (with checkpoints), --params or --detections is required')
  from fcos_jax import evaluation, trainer
  if _PARAMS.value:
    model, variables = trainer.load_params_variables(config, _PARAMS.value)
    step = 0
  else:
    model, variables, step = trainer.load_variables(config, _WORKDIR.value, _STEP.value)
  logging.info('evaluating checkpoint of step %d on split %r', step, split)
  out_dir = _OUT.value or _WORKDIR.value or _PARAMS.value
  import tensorflow as tf
  tf.io.gfile.makedirs(out_dir)
  metrics = evaluation.evaluate(config, model, variables, workdir=out_dir, split=split,
                                annotations=_ANNOTATIONS.value, tag=f'offline_eval_{step}',
                                progress=True)
  if jax.process_index() == 0:
    print(f'checkpoint step {step}, split {split!r}')
    print_metrics(metrics, metrics['per_category_ap'])


if __name__ == '__main__':
  app.run(main)
