"""The training loop: data -> on-device step -> logs, checkpoints, evaluation; resumable."""

import logging
import os
import sys
from typing import Any, Dict

import jax
import numpy as np
import tensorflow as tf

from fcos_jax import (best_checkpoint, errors, evaluation, optim, sharding, train_step, trackers,
                      workdir_lock)
from fcos_jax.analysis import curves
from fcos_jax.data import categories, input_pipeline, synthetic, train_stream
from fcos_jax.preemption import Preemption
from fcos_jax.train_log import Reporter, log_scalars
from fcos_jax.train_programs import StepPrograms
from fcos_jax.weights import checkpoints, params, run_config


class NonFiniteLossError(errors.UserError, FloatingPointError):
  """Training diverged: reported as one line, the last good checkpoint kept."""


def check_can_start(config, workdir: str) -> None:
  """What must hold before anything is built: devices that split the batch, pretrained weights
  for a frozen-BN backbone, a dataset that exists."""
  if config.data.max_size < max(config.data.min_sizes):  # training sizes: checked here only
    raise errors.ConfigError(
        f'config.data.max_size = {config.data.max_size}: must be at least the largest of '
        f'data.min_sizes {tuple(config.data.min_sizes)}: it caps the longer side, so below '
        'them it would override every training size (swapped values?)')
  if config.batch_size % jax.device_count():
    raise errors.ConfigError(f'config.batch_size = {config.batch_size}: must be a multiple of '
                             f'the {jax.device_count()} devices')
  if (config.model.backbone_norm == 'frozen_bn' and not config.init_checkpoint and
      not config.train_from_scratch and not checkpoints.saved_steps(workdir)):
    raise errors.ConfigError(
        'config.init_checkpoint is empty but the frozen-BN backbone needs pretrained weights: '
        'make them with `python -m fcos_jax.programs.import_torchvision --download resnet50 '
        '--out weights/r50` and pass --config.init_checkpoint=weights/r50 (or '
        '--config.train_from_scratch=True to train from random weights anyway)')
  if config.init_checkpoint and not tf.io.gfile.exists(config.init_checkpoint):
    raise errors.ConfigError(f'config.init_checkpoint = {config.init_checkpoint!r}: no such '
                             'checkpoint (nothing was created)')
  if not config.data.synthetic:  # a missing dataset fails here, before any compilation
    input_pipeline.dataset_categories(config.data)
  trackers.require(config.trackers)


def train_and_evaluate(config, workdir: str) -> Dict[str, Any]:
  """Trains `config` in `workdir` (resuming if it holds checkpoints), evaluates at the end.

  Returns the final evaluation metrics (on process 0; {} elsewhere or without eval data).
  """
  tf.config.set_visible_devices([], 'GPU')  # tf.data only; keep TF off the accelerators
  check_can_start(config, workdir)
  with workdir_lock.held(workdir):  # before anything reads or sets aside its checkpoints
    return _build_and_train(config, workdir)


def _build_and_train(config, workdir: str) -> Dict[str, Any]:
  config, scaling = optim.scale_schedule_to_batch(config)
  if jax.process_index() == 0:
    logging.info('%s', scaling)
  mesh = sharding.make_mesh()
  model, tx, state = train_step.build_training(config, mesh)
  batch_sharding = sharding.batch_sharding(mesh)
  programs = StepPrograms(train_step.make_train_step(config, model, tx, mesh), state, config,
                          batch_sharding, ahead=not checkpoints.saved_steps(workdir))
  try:
    return _train(config, workdir, model, state, programs, batch_sharding)
  finally:
    programs.close()


def _restore_or_init(config, workdir: str, state, ckpt, data_iter):
  """The newest restorable checkpoint (data iterator moved to its position), else the fresh
  state filled from `config.init_checkpoint`; the run's config recorded either way."""
  try:
    restored = ckpt.restore_latest(state, data_iter)
  except checkpoints.CheckpointMismatchError as e:
    ckpt.close()
    changes = run_config.config_changes(workdir, config)
    raise errors.CheckpointError(
        f'{workdir} holds a run of another configuration (checkpoint of step {e.step}: '
        f'{e.mismatches[0]}; config keys changed since that run: '
        f'{", ".join(c.split(":")[0] for c in changes) or "none recorded"}). Nothing was '
        'changed: resume it with its own config, or start a new run with another --workdir.'
    ) from None
  if jax.process_index() == 0:
    run_config.write_config(workdir, config, int((restored or state).step))
    run_config.record_start(workdir, int((restored or state).step))
  if restored is not None:
    return restored
  if config.init_checkpoint:
    return params.merge_init_checkpoint(state, config.init_checkpoint,
                                        skip_mismatched=config.init_skip_mismatched)
  return state


def _train(config, workdir, model, state, programs, batch_sharding):
  """`train_and_evaluate` once the train state exists and its step is compiling."""
  synthetic.prepare(config)
  cats = input_pipeline.dataset_categories(config.data)
  label_map = categories.training_label_map(config.model, cats)
  tf.io.gfile.makedirs(workdir)
  if jax.process_index() == 0:
    run_config.write_categories(workdir, cats)
  data_iter = train_stream.open_train_stream(
      config.data, config.batch_size // jax.process_count(), seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count(), label_map=label_map)
  ckpt = checkpoints.Checkpointer(workdir, config.keep_checkpoints)
  state = _restore_or_init(config, workdir, state, ckpt, data_iter)
  step = int(state.step)
  if step:
    logging.info('resuming at step %d', step)
  tracked = trackers.Trackers(config, workdir, step, active=jax.process_index() == 0)
  reporter = Reporter(config, optim.learning_rate_schedule(config.optimizer,
                                                           optim.effective_batch_size(config)),
                      step, tracked)
  best = best_checkpoint.BestTracker(config, workdir, step)
  preemption = Preemption()
  saved = {ckpt.latest_step()}
  result = {'start_step': step}

  def save(step):
    if step in saved:  # e.g. SIGTERM right after a periodic save
      return
    check_finite(config, state, ckpt)
    try:
      ckpt.save(step, state, data_iter)
    except (OSError, ValueError, RuntimeError, tf.errors.OpError) as e:
      raise checkpoint_write_error(ckpt, step, e) from None
    saved.add(step)

  try:
    if best.should_stop():  # a resume of a run that stopped early
      logging.warning('early stopping at step %d: %s', step, _stop_reason(config, best))
      result['stopped_early_at'] = step
    while step < config.num_train_steps and 'stopped_early_at' not in result:
      try:
        host_batch = next(data_iter)
      except (StopIteration, tf.errors.OutOfRangeError):  # nothing left after the filters
        raise input_pipeline.no_training_images(config.data) from None
      batch = input_pipeline.to_global_arrays(train_step.train_batch(host_batch), batch_sharding)
      state, metrics = programs.get(state, batch)(state, batch)
      step += 1
      reporter.add(metrics, int(np.sum(host_batch['num_truncated'])))
      if reporter.due(step):
        check_finite(config, state, ckpt)
        reporter.report(step)
      if step % config.checkpoint_every == 0:
        save(step)
      if preemption.reached(step):
        save(step)
        ckpt.wait()
        logging.warning('checkpoint of step %d written after SIGTERM; exiting', step)
        return {'preempted_at': step, 'train_programs': len(programs.compiled)}
      if config.eval_every and step % config.eval_every == 0 and step < config.num_train_steps:
        result.update(run_eval(config, model, state, workdir, step, tracked, best))
        if best.should_stop():
          logging.warning('early stopping at step %d: %s', step, _stop_reason(config, best))
          result['stopped_early_at'] = step
          break
    save(step)
    try:
      ckpt.wait()
    except (OSError, ValueError, RuntimeError, tf.errors.OpError) as e:
      raise checkpoint_write_error(ckpt, step, e) from None
  finally:
    preemption.restore()
    if hasattr(data_iter, 'close'):
      data_iter.close()
    _close(ckpt, step)
  logging.info('final step %d; parameter checksum %.10e; %d compiled train program(s)', step,
               params_checksum(state), len(programs.compiled))
  result.update(final_step=step, train_programs=len(programs.compiled), **reporter.summary())
  if config.eval_at_end and 'stopped_early_at' not in result and result.get('step') != step:
    result.update(run_eval(config, model, state, workdir, step, tracked, best))
  tracked.close()
  s = best.standing
  if s.best_step is not None:
    result.update(best_step=s.best_step, best_value=s.best_value, best_metric=best.metric,
                  best_weights=checkpoints.best_weights(workdir))
  return result


def _close(ckpt, step: int) -> None:
  """Closes the checkpointer (finishing an async save); a failure is the run's error unless
  another one is already on its way out (which it would hide)."""
  in_flight = sys.exc_info()[1]  # called from `finally`: the exception leaving the loop
  try:
    ckpt.close()
  except (OSError, ValueError, RuntimeError, tf.errors.OpError) as e:
    if in_flight is None:
      raise checkpoint_write_error(ckpt, step, e) from None
    logging.warning('closing the checkpointer also failed: %s', e)


def checkpoint_write_error(ckpt, step: int, e: Exception) -> errors.CheckpointError:
  """A checkpoint that cannot be written (disk full, read-only, quota): one line saying what is
  safe, since the earlier checkpoints are complete and the run resumes from the newest."""
  return errors.CheckpointError(
      f'checkpoint of step {step} could not be written to {ckpt.directory} '
      f'({type(e).__name__}: {errors.first_line(e)}); the '
      f'checkpoints {checkpoints.saved_steps(os.path.dirname(ckpt.directory))} are complete: '
      'free space or fix permissions, then run the same command to resume')


def _stop_reason(config, best) -> str:
  s = best.standing
  return (f'{best.metric} has not improved by more than {config.early_stopping_min_delta} in '
          f'{s.without_improvement} evaluation(s) (best {s.best_value:.4f} at step '
          f'{s.best_step}; early_stopping_patience={config.early_stopping_patience})')


def check_finite(config, state, ckpt) -> None:
  """Raises `NonFiniteLossError` if a step's loss or gradient was not finite (`state.bad_step`,
  recorded on device; read here, when the loop logs or saves)."""
  bad = int(state.bad_step)
  if bad < 0:
    return
  last = ckpt.latest_step()
  kept = (f'the last good checkpoint (step {last}) in {ckpt.directory} is kept'
          if last is not None else 'no checkpoint had been written yet')
  clip = config.optimizer.grad_clip_norm
  advice = (f'lower optimizer.base_lr (gradient clipping at {clip} is already on)' if clip
            else 'lower optimizer.base_lr or set optimizer.grad_clip_norm')
  raise NonFiniteLossError(  # bad is the 0-based state.step; logs count steps from 1
      f'non-finite loss, gradient or update at step {bad + 1}: training stopped, parameters '
      f'were not updated from that step on, and {kept}. Try to {advice}.')


def params_checksum(state) -> float:
  """Sum of |p| over all parameters and their moving average: a cheap fingerprint to compare
  processes and runs."""
  weights = {'params': state.params, 'ema_params': state.ema_params}
  return float(sum(np.abs(np.asarray(x, np.float64)).sum()
                   for x in jax.tree_util.tree_leaves(sharding.host_copy(weights))))


def eval_variables(config, state) -> Dict[str, Any]:
  """The weights a run evaluates: the moving average with `config.ema_decay`, else the trained
  ones."""
  return {'params': state.ema_params if config.ema_decay else state.params,
          'batch_stats': state.batch_stats}


def run_eval(config, model, state, workdir: str, step: int, tracked, best) -> Dict[str, Any]:
  """Evaluation during training: metrics to the log and the trackers, `eval_pictures`
  validation images drawn with their detections (TensorBoard), the run's curves redrawn, the
  best weights kept."""
  variables = eval_variables(config, state)
  writer = tracked.tensorboard
  num_pictures = config.eval_pictures
  metrics = evaluation.evaluate(config, model, variables, workdir=workdir, tag=f'eval_{step}',
                                keep_outputs=bool(num_pictures))
  if num_pictures and writer is not None and 'ground_truth' in metrics:
    from fcos_jax.analysis import error_analysis
    with writer.as_default():
      for image_id, picture in error_analysis.pictures(
          config, metrics.pop('ground_truth'), metrics.pop('results'),
          num_images=num_pictures):
        tf.summary.image(f'eval/detections/image_{image_id}', np.asarray(picture)[None],
                         step=step)
    writer.flush()
  if jax.process_index() == 0 and 'AP' in metrics:
    logging.info('evaluation at step %d: %d images, AP %.4f, AP50 %.4f, AP75 %.4f; inference '
                 '%.1f images/s', step, metrics['num_images'], metrics['AP'], metrics['AP50'],
                 metrics['AP75'], metrics['images_per_second'])
    log_scalars(tracked, step, {f'eval/{k}': v for k, v in metrics.items()
                                if isinstance(v, float)})
    tracked.flush()
    curves.plot_curves(trackers.read_rows(workdir), os.path.join(workdir, curves.CURVES_FILE),
                       title=os.path.basename(os.path.abspath(workdir)))
  best.update(step, metrics, variables)
  return dict(metrics, step=step)
