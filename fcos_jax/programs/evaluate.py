"""Offline COCO evaluation.

  python evaluate.py --workdir DIR [--step N|best]      # the run's recorded config
  python evaluate.py --config configs/coco.py --workdir DIR [--step N] [--split validation]
      [--annotations instances_val2017.json]          # official ground truth (default: from TFDS)
  python evaluate.py --config configs/coco.py --params DIR   # a params checkpoint
  python evaluate.py --config configs/coco.py --detections results.json [--annotations ...]
  python evaluate.py ... --oracle_centerness       # also with the ground-truth centerness
  python evaluate.py ... --analysis DIR            # calibration, PR curves, confusion, pictures
  python evaluate.py ... --tta flip,scales=0.8:1.2  # test-time augmentation, merged by NMS

Restores a checkpoint (the latest by default), runs the jitted model + postprocess over the split
on all local devices (and every process of a multi-process run), maps detections back to the
original images, and scores them with pycocotools' COCOeval (bbox). Prints the 12 standard numbers
and writes metrics, a per-category AP table and the detections (COCO results format) as JSON.
With --detections, an existing results file is scored without a model (metrics go to
`<its name>_metrics.json` beside it). --oracle_centerness
evaluates a second time with each location's ground-truth centerness in place of the predicted
one (the paper's 36.6 -> 42.1 AP on COCO); --analysis writes the error analysis of
`fcos_jax.analysis.error_analysis` (PNGs and analysis.json) into DIR.
"""

import os
import re

from absl import flags, logging
from ml_collections import config_flags

from fcos_jax.programs import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, cli.config_help(from_workdir=True),
                                          lock_config=True)
cli.define_weights_flags()
_SPLIT = flags.DEFINE_string('split', None, 'TFDS split (default: config.data.eval_split).')
_ANNOTATIONS = flags.DEFINE_string('annotations', None, 'COCO ground-truth JSON (default: built '
                                   'from the TFDS split).')
_DETECTIONS = flags.DEFINE_string('detections', None, 'Score this COCO results file instead of '
                                  "running a model (or a glob of JSON-lines shards: "
                                  "'OUT/results-*.jsonl' of batch_predict.py).")
_OUT = flags.DEFINE_string('out', None, 'Where to write results (default: workdir, or the '
                           'folder of --detections).')
_ORACLE = flags.DEFINE_bool('oracle_centerness', False, 'Also evaluate with the ground-truth '
                            'centerness of every location instead of the predicted one.')
_ANALYSIS = flags.DEFINE_string('analysis', None, 'Write the error analysis (score-vs-IoU, PR '
                                'curves, confusion matrix, pictures) into this folder.')
cli.define_tta_flag()
cli.define_distributed_flags()
cli.define_compilation_cache_flag()
flags.mark_flag_as_required('config')
FLAGS = flags.FLAGS


def print_metrics(metrics):
  from fcos_jax.evaluation.scoring import STAT_NAMES, per_category_table
  print(f'evaluated {metrics["num_images"]} images of {metrics["split_size"]}')
  for name in STAT_NAMES:
    print(f'  {name:<6} {metrics[name]:.4f}')
  if metrics['per_category_ap']:
    print('per-category AP:')
    print('\n'.join(per_category_table(metrics['per_category_ap'])))
  if 'model_seconds' in metrics:
    print(f'inference: {metrics["model_seconds"]:.1f} s of model time, '
          f'{metrics["model_images_per_second"]:.1f} images/s after compilation, '
          f'{metrics["images_per_second"]:.1f} images/s overall (data, compile, model); '
          f'{metrics["compiled_shapes"]} input shapes compiled in '
          f'{metrics["compile_seconds"]:.1f} s; '
          f'COCOeval: {metrics["coco_eval_seconds"]:.1f} s')


def main(argv):
  cli.no_arguments(argv)
  cli.initialize_distributed()
  cli.enable_compilation_cache()
  import jax
  from fcos_jax import errors, evaluation
  from fcos_jax.evaluation import coco_data
  config = cli.get_config(_CONFIG)
  split = _SPLIT.value or config.data.eval_split
  if _DETECTIONS.value and FLAGS.tta:
    raise errors.UserError('--tta with --detections: a results file is scored as it is (run '
                           'the model with --tta instead)')
  if _DETECTIONS.value:
    metrics = evaluation.score_results_file(config, _DETECTIONS.value, split=split,
                                            annotations=_ANNOTATIONS.value)
    out_dir = _OUT.value or os.path.dirname(os.path.abspath(_DETECTIONS.value))
    # Named after the detections (results.json -> results_metrics.json): scoring two files in
    # one folder never writes over the other's metrics, nor over a model evaluation's.
    stem = os.path.splitext(os.path.basename(_DETECTIONS.value))[0]
    # Shards 'results-*.jsonl' score as one file: results_metrics.json.
    stem = re.sub(r'[-_.]*[*?[].*$', '', stem) or 'results'
    coco_data.write_outputs(out_dir, stem, metrics)
    print(f'metrics written to {os.path.join(out_dir, stem + "_metrics.json")}')
    print_metrics(metrics)
    return
  if not (FLAGS.workdir or FLAGS.params):
    raise errors.UserError('--workdir (with checkpoints), --params or --detections is required')
  tta = cli.tta_spec()
  if tta and _ORACLE.value:
    raise errors.UserError('--tta and --oracle_centerness: the oracle has no augmented views; '
                           'run them separately')
  model, variables, step = cli.load_weights(config)
  logging.info('evaluating checkpoint of step %s on split %r', step, split)
  out_dir = _OUT.value or FLAGS.workdir or FLAGS.params
  tag = f'offline_eval_{step}' + ('_raw_weights' if FLAGS.raw_weights and config.ema_decay
                                  else '')
  predict_fn = None
  if tta:
    from fcos_jax import inference
    predict_fn = inference.make_predict_fn(config, model, tta)
    tag += '_tta_' + str(tta).replace(',', '_').replace('=', '').replace(':', '-')
  metrics = evaluation.evaluate(config, model, variables, workdir=out_dir, split=split,
                                annotations=_ANNOTATIONS.value, tag=tag,
                                progress=True, class_prob=bool(_ANALYSIS.value),
                                keep_outputs=bool(_ANALYSIS.value), predict_fn=predict_fn)
  if jax.process_index() == 0:
    print(f'checkpoint step {step}, split {split!r}' + (f', TTA {tta}' if tta else ''))
    print_metrics(metrics)
  if _ORACLE.value:
    from fcos_jax.analysis import oracle_centerness
    oracle = oracle_centerness.evaluate(config, model, variables, workdir=out_dir, split=split,
                                        annotations=_ANNOTATIONS.value,
                                        tag=f'{tag}_oracle_centerness',
                                        progress=True)
    if jax.process_index() == 0:
      print('with the ground-truth centerness (oracle):')
      print_metrics(oracle)
      print(f'AP {metrics["AP"]:.4f} -> {oracle["AP"]:.4f} with the ground-truth centerness')
  if _ANALYSIS.value and jax.process_index() == 0:
    from fcos_jax.analysis import error_analysis
    summary = error_analysis.analyze(config, metrics['ground_truth'], metrics['results'],
                                     _ANALYSIS.value, split=split)
    print(error_analysis.format_analysis(summary))
    print(f'wrote the error analysis to {_ANALYSIS.value}')


def run():
  cli.run(main, workdir_config=True)


if __name__ == '__main__':
  run()
