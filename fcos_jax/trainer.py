"""The training loop: data -> on-device step -> logs, checkpoints, evaluation; resumable."""

import concurrent.futures
import logging
import os
import signal
import time
from typing import Any, Dict

import jax
import numpy as np
import tensorflow as tf
from jax.sharding import NamedSharding, PartitionSpec as P

from fcos_jax import checkpoints, errors, evaluation, optim, restore, train_step
from fcos_jax.data import categories, input_pipeline, sizes, synthetic


class NonFiniteLossError(errors.UserError, FloatingPointError):
  """Training diverged: reported as one line, the last good checkpoint kept."""


def prepare_synthetic_data(config) -> None:
  """Generate + convert the synthetic dataset if the config asks for it (process 0 writes)."""
  d = config.data
  if not d.get('synthetic'):
    return
  if jax.process_index() == 0:
    synthetic.ensure_dataset(d.dataset, d.data_dir,
                             {d.train_split: d.synthetic_train_images,
                              d.eval_split: d.synthetic_eval_images},
                             seed=config.seed, image_size=tuple(d.synthetic_image_size))
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices('synthetic_data_ready')


class _Preemption:
  """SIGTERM (TPU/cloud preemption) -> save and exit at the next step boundary."""

  def __init__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handler)

  def _handler(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM received: saving a checkpoint and exiting')
    self.requested = True

  def reached(self, step: int) -> bool:
    if jax.process_count() > 1:
      # All processes must agree on the step: the coordination service decides.
      from jax.experimental import multihost_utils
      try:
        return multihost_utils.reached_preemption_sync_point(step) or self.requested
      except Exception:  # noqa: BLE001 - no preemption service: fall back to the signal flag
        pass
    return self.requested

  def restore(self):
    signal.signal(signal.SIGTERM, self._previous)


class _AheadCompiler:
  """Compiles the train step for every bucket shape in one background thread, from the start.

  XLA's compilation (16 s a program for the demo on a 2-core CPU, minutes for large models on
  accelerators) then overlaps the data preparation and pipeline start of a fresh run instead of
  holding up the loop whenever a bucket first appears. The programs are the ones the loop would
  compile: same function, the state's and the pipeline's shapes, dtypes and shardings.
  """

  def __init__(self, step_fn, state, config, sharding):
    abstract_state = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='compile')
    self._futures = {
        shape: self._executor.submit(self._compile, step_fn, abstract_state,
                                     train_step.batch_spec(config, shape, sharding))
        for shape in map(tuple, sizes.train_shapes(config.data))}

  @staticmethod
  def _compile(step_fn, abstract_state, batch_spec):
    t = time.perf_counter()
    return step_fn.lower(abstract_state, batch_spec).compile(), time.perf_counter() - t

  def get(self, shape):
    """(compiled step, seconds its compilation took) for `shape`, waiting for it if needed;
    None for a shape that was not compiled ahead."""
    future = self._futures.get(tuple(shape))
    return None if future is None else future.result()

  def close(self):
    """Drops the compilations not started yet (an error, or nothing left to train)."""
    self._executor.shutdown(wait=False, cancel_futures=True)


def _log_scalars(writer, step: int, scalars: Dict[str, float]) -> None:
  logging.info('step %d: %s', step, ', '.join(f'{k}={v:.4g}' for k, v in scalars.items()))
  if writer is not None:
    with writer.as_default():
      for k, v in scalars.items():
        tf.summary.scalar(k, v, step=step)
    writer.flush()


def train_and_evaluate(config, workdir: str) -> Dict[str, Any]:
  """Trains `config` in `workdir` (resuming if it holds checkpoints), evaluates at the end.

  Returns the final evaluation metrics (on process 0; {} elsewhere or without eval data).
  """
  tf.config.set_visible_devices([], 'GPU')  # tf.data only; keep TF off the accelerators
  if config.batch_size % jax.device_count():
    raise errors.ConfigError(f'config.batch_size = {config.batch_size}: must be a multiple of '
                             f'the {jax.device_count()} devices')
  if (config.model.backbone_norm == 'frozen_bn' and not config.init_checkpoint and
      not config.get('train_from_scratch', False) and not checkpoints.saved_steps(workdir)):
    raise errors.ConfigError(
        'config.init_checkpoint is empty but the frozen-BN backbone needs pretrained weights: '
        'make them with `python -m fcos_jax.tools.import_torchvision --download resnet50 --out '
        'weights/r50` and pass --config.init_checkpoint=weights/r50 (or '
        '--config.train_from_scratch=True to train from random weights anyway)')
  if not config.data.get('synthetic'):  # a missing dataset fails here, before any compilation
    input_pipeline.dataset_categories(config.data)
  mesh = train_step.make_mesh()
  model, tx, state = train_step.build_training(config, mesh)
  step_fn = train_step.make_train_step(config, model, tx, mesh)
  sharding = NamedSharding(mesh, P(train_step.DATA_AXIS))
  # A fresh run compiles while its data is prepared; a resume loads its programs from the
  # compilation cache when the loop first meets each shape.
  ahead = None if checkpoints.saved_steps(workdir) else _AheadCompiler(step_fn, state, config,
                                                                          sharding)
  try:
    return _train(config, workdir, model, state, step_fn, sharding, ahead)
  finally:
    if ahead is not None:
      ahead.close()


def _train(config, workdir, model, state, step_fn, sharding, ahead):
  """`train_and_evaluate` once the train state exists and its step is compiling."""
  is_main = jax.process_index() == 0
  prepare_synthetic_data(config)
  label_map = categories.training_label_map(config.model,
                                            input_pipeline.dataset_categories(config.data))
  tf.io.gfile.makedirs(workdir)

  local_batch = config.batch_size // jax.process_count()
  dataset = input_pipeline.create_train_dataset(config.data, local_batch, seed=config.seed,
                                                label_map=label_map)
  data_iter = iter(dataset)
  ckpt = checkpoints.Checkpointer(workdir, config.keep_checkpoints)
  try:
    restored = ckpt.restore_latest(state, data_iter)
  except checkpoints.CheckpointMismatchError as e:
    ckpt.close()
    changes = checkpoints.config_changes(workdir, config)
    raise errors.CheckpointError(
        f'{workdir} holds a run of another configuration (checkpoint of step {e.step}: '
        f'{e.mismatches[0]}; config keys changed since that run: '
        f'{", ".join(c.split(":")[0] for c in changes) or "none recorded"}). Nothing was '
        'changed: resume it with its own config, or start a new run with another --workdir.'
    ) from None
  if is_main:
    checkpoints.write_config(workdir, config, int((restored or state).step))
  if restored is not None:
    state = restored
  elif config.init_checkpoint:
    state = restore.merge_init_checkpoint(
        state, config.init_checkpoint,
        skip_mismatched=config.get('init_skip_mismatched', False))
  start_step = int(state.step)
  if start_step:
    logging.info('resuming at step %d', start_step)

  writer = tf.summary.create_file_writer(os.path.join(workdir, 'tensorboard')) if is_main else None
  schedule = optim.learning_rate_schedule(config.optimizer, optim.effective_batch_size(config))
  accum = config.get('grad_accum_steps', 1)
  run_start, run_start_step = time.perf_counter(), start_step
  compiled: Dict[tuple, Any] = {}
  pending, truncated = [], 0
  last_log_time, last_log_step = time.perf_counter(), start_step
  preemption = _Preemption()

  def check_finite():
    bad = int(state.bad_step)
    if bad >= 0:
      last = ckpt.latest_step()
      kept = (f'the last good checkpoint (step {last}) in {ckpt.directory} is kept'
              if last is not None else 'no checkpoint had been written yet')
      clip = config.optimizer.grad_clip_norm
      advice = (f'lower optimizer.base_lr (gradient clipping at {clip} is already on)' if clip
                else 'lower optimizer.base_lr or set optimizer.grad_clip_norm')
      raise NonFiniteLossError(  # bad is the 0-based state.step; logs count steps from 1
          f'non-finite loss or gradient at step {bad + 1}: training stopped, parameters were '
          f'not updated from that step on, and {kept}. Try to {advice}.')

  saved = {ckpt.latest_step()}

  def save(step):
    if step in saved:  # e.g. SIGTERM right after a periodic save
      return
    check_finite()
    ckpt.save(step, state, data_iter)
    saved.add(step)

  step = start_step
  try:
    while step < config.num_train_steps:
      host_batch = next(data_iter)
      truncated += int(np.sum(host_batch['num_truncated']))
      batch = input_pipeline.to_global_arrays(train_step.train_batch(host_batch), sharding)
      shape = batch['image'].shape[1:3]
      if shape not in compiled:
        t = time.perf_counter()
        program = ahead.get(shape) if ahead is not None else None
        if program is None:
          program = step_fn.lower(state, batch).compile(), time.perf_counter() - t
        compiled[shape] = program[0]
        logging.info('compiled the train step for image shape %s in %.1f s (%d program(s) so '
                     'far); the loop waited %.1f s for it', shape, program[1], len(compiled),
                     time.perf_counter() - t)
      state, metrics = compiled[shape](state, batch)
      step += 1
      pending.append(metrics)
      if step % config.log_every == 0 or step == config.num_train_steps:
        check_finite()
        values = jax.device_get(pending)
        scalars = {k: float(np.mean([m[k] for m in values])) for k in values[0]}
        elapsed = time.perf_counter() - last_log_time
        scalars.update(learning_rate=float(schedule((step - 1) // accum)),
                       images_per_second=(step - last_log_step) * config.batch_size / elapsed,
                       step_seconds=elapsed / (step - last_log_step),
                       truncated_boxes=float(truncated))
        if is_main:
          _log_scalars(writer, step, scalars)
          rate = (step - run_start_step) / (time.perf_counter() - run_start)
          left = (config.num_train_steps - step) / rate
          logging.info('progress: step %d of %d (%.0f%%), %.2f steps/s, ETA %s', step,
                       config.num_train_steps, 100 * step / config.num_train_steps, rate,
                       time.strftime('%H:%M:%S', time.gmtime(left)) if left < 86400
                       else f'{left / 86400:.1f} days')
        pending, truncated = [], 0
        last_log_time, last_log_step = time.perf_counter(), step
      if step % config.checkpoint_every == 0:
        save(step)
      if preemption.reached(step):
        save(step)
        ckpt.wait()
        logging.warning('checkpoint of step %d written after SIGTERM; exiting', step)
        return {'preempted_at': step, 'train_programs': len(compiled)}
      if config.eval_every and step % config.eval_every == 0 and step < config.num_train_steps:
        run_eval(config, model, state, workdir, step, writer)
    save(step)
    ckpt.wait()
  finally:
    preemption.restore()
    ckpt.close()
  logging.info('final step %d; parameter checksum %.10e; %d compiled train program(s)', step,
               params_checksum(state.params), len(compiled))
  result = {'final_step': step, 'train_programs': len(compiled)}
  if config.eval_at_end:
    result.update(run_eval(config, model, state, workdir, step, writer))
  return result


def params_checksum(params) -> float:
  """Sum of |p| over all parameters: a cheap fingerprint to compare processes and runs."""
  return float(sum(np.abs(np.asarray(x.addressable_data(0), np.float64)).sum()
                   for x in jax.tree_util.tree_leaves(params)))


def run_eval(config, model, state, workdir: str, step: int, writer) -> Dict[str, Any]:
  variables = {'params': state.params, 'batch_stats': state.batch_stats}
  num_pictures = config.get('eval_pictures', 0)
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
    _log_scalars(writer, step, {f'eval/{k}': v for k, v in metrics.items()
                                if isinstance(v, float)})
  return metrics
