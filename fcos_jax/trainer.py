"""The training loop: data -> on-device step -> logs, checkpoints, evaluation; resumable."""

import logging
import os
import signal
import time
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
from jax.sharding import NamedSharding, PartitionSpec as P

from fcos_jax import checkpoints, evaluation, optim, train_step
from fcos_jax.data import input_pipeline, synthetic
from fcos_jax.data.preprocessing import bucket_shapes
from fcos_jax.models import fcos


class NonFiniteLossError(FloatingPointError):
  pass


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


def _flat(tree) -> Dict[str, Any]:
  """{"['a']['b']": leaf} of a pytree: tensors addressed by their path."""
  return {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def merge_init_checkpoint(state: train_step.TrainState, path: str) -> train_step.TrainState:
  """Copy every tensor of an init checkpoint into the matching place of the state.

  Tensors the model has but the file lacks keep their fresh init (e.g. the FCOS head when
  starting from an ImageNet backbone); a tensor in the file that the model lacks, or of another
  shape, is an error naming it.
  """
  loaded = checkpoints.load_params(path)
  counts = {}
  new = {}
  for collection in ('params', 'batch_stats'):
    target = getattr(state, collection)
    flat_target = _flat(target)
    flat_src = _flat(loaded.get(collection, {}))
    unknown = sorted(set(flat_src) - set(flat_target))
    if unknown:
      raise ValueError(f'{path}: {collection} {unknown[:5]} (and {max(len(unknown) - 5, 0)} '
                       'more) do not exist in the model')

    def pick(key_path, x):
      key = jax.tree_util.keystr(key_path)
      if key not in flat_src:
        return x
      src = np.asarray(flat_src[key])
      if src.shape != x.shape:
        raise ValueError(f'{path}: {collection}{key} has shape {src.shape}, the model needs '
                         f'{x.shape}')
      return jax.device_put(jnp.asarray(src, x.dtype), x.sharding)
    new[collection] = jax.tree_util.tree_map_with_path(pick, target)
    counts[collection] = (len(flat_src), len(flat_target))
  logging.info('initialized from %s: params %d of %d tensors, batch_stats %d of %d', path,
               *counts['params'], *counts['batch_stats'])
  return state.replace(params=new['params'], batch_stats=new['batch_stats'])


def build_training(config, mesh):
  """(model, optimizer, initial replicated state) of a config."""
  model = fcos.create_model(config.model)
  shape = bucket_shapes(config.data.min_sizes, config.data.max_size,
                        config.data.size_divisibility, config.data.aspect_buckets)[0]
  abstract = jax.eval_shape(model.init, jax.random.key(0),
                            jnp.zeros((1,) + shape + (3,), jnp.float32))
  tx = optim.create_optimizer(config, abstract['params'])
  return model, tx, train_step.create_train_state(config, model, tx, mesh, shape)


def load_variables(config, workdir: str, step: Optional[int] = None):
  """(model, {'params', 'batch_stats'}, step) of checkpoint `step` (default: latest) in workdir."""
  mesh = train_step.make_mesh()
  model, _, state = build_training(config, mesh)
  ckpt = checkpoints.Checkpointer(workdir, config.keep_checkpoints)
  try:
    step = ckpt.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'no checkpoint in {ckpt.directory}')
    state = ckpt.restore(step, state)
  finally:
    ckpt.close()
  return model, {'params': state.params, 'batch_stats': state.batch_stats}, step


def load_params_variables(config, path: str):
  """(model, variables) from a params checkpoint (e.g. an imported torchvision detector); every
  tensor the model needs must be there with its shape."""
  model = fcos.create_model(config.model)
  like = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3), jnp.float32))
  loaded = checkpoints.load_params(path)
  variables = {}
  for collection in like:
    want = _flat(like[collection])
    have = _flat(loaded.get(collection, {}))
    if set(want) != set(have):
      raise ValueError(f'{path}: {collection} does not fit the model: missing '
                       f'{sorted(set(want) - set(have))[:5]}, unexpected '
                       f'{sorted(set(have) - set(want))[:5]}')
    for key, spec in want.items():
      if tuple(have[key].shape) != tuple(spec.shape):
        raise ValueError(f'{path}: {collection}{key} has shape {tuple(have[key].shape)}, the '
                         f'model needs {tuple(spec.shape)}')
    variables[collection] = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32),
                                                   loaded[collection])
  return model, variables


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
  tf.io.gfile.makedirs(workdir)
  tf.config.set_visible_devices([], 'GPU')  # tf.data only; keep TF off the accelerators
  is_main = jax.process_index() == 0
  prepare_synthetic_data(config)

  mesh = train_step.make_mesh()
  if config.batch_size % jax.device_count():
    raise ValueError(f'batch_size {config.batch_size} must be a multiple of the '
                     f'{jax.device_count()} devices')
  local_batch = config.batch_size // jax.process_count()
  model, tx, state = build_training(config, mesh)

  label_map = input_pipeline.training_label_map(
      config.model, input_pipeline.get_categories(input_pipeline.get_builder(config.data)))
  dataset = input_pipeline.create_train_dataset(config.data, local_batch, seed=config.seed,
                                                label_map=label_map)
  data_iter = iter(dataset)
  ckpt = checkpoints.Checkpointer(workdir, config.keep_checkpoints)
  restored = ckpt.restore_latest(state, data_iter)
  if restored is not None:
    state = restored
  elif config.init_checkpoint:
    state = merge_init_checkpoint(state, config.init_checkpoint)
  start_step = int(state.step)
  if start_step:
    logging.info('resuming at step %d', start_step)

  step_fn = train_step.make_train_step(config, model, tx, mesh)
  sharding = NamedSharding(mesh, P(train_step.DATA_AXIS))
  writer = tf.summary.create_file_writer(os.path.join(workdir, 'tensorboard')) if is_main else None
  schedule = optim.learning_rate_schedule(config.optimizer, config.batch_size)
  compiled: Dict[tuple, Any] = {}
  pending, truncated = [], 0
  last_log_time, last_log_step = time.perf_counter(), start_step
  preemption = _Preemption()

  def check_finite():
    bad = int(state.bad_step)
    if bad >= 0:
      raise NonFiniteLossError(
          f'non-finite loss or gradient at step {bad}: training stopped; parameters were not '
          f'updated from that step on, and the last good checkpoint (step '
          f'{ckpt.latest_step()}) in {ckpt.directory} is kept. Lower the learning rate or '
          'enable optimizer.grad_clip_norm.')

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
      batch = input_pipeline.to_global_arrays(
          {k: host_batch[k] for k in train_step.TRAIN_KEYS}, sharding)
      shape = batch['image'].shape[1:3]
      if shape not in compiled:
        t = time.perf_counter()
        compiled[shape] = step_fn.lower(state, batch).compile()
        logging.info('compiled the train step for image shape %s in %.1f s (%d program(s) so '
                     'far)', shape, time.perf_counter() - t, len(compiled))
      state, metrics = compiled[shape](state, batch)
      step += 1
      pending.append(metrics)
      if step % config.log_every == 0 or step == config.num_train_steps:
        check_finite()
        values = jax.device_get(pending)
        scalars = {k: float(np.mean([m[k] for m in values])) for k in values[0]}
        elapsed = time.perf_counter() - last_log_time
        scalars.update(learning_rate=float(schedule(step - 1)),
                       images_per_second=(step - last_log_step) * config.batch_size / elapsed,
                       step_seconds=elapsed / (step - last_log_step),
                       truncated_boxes=float(truncated))
        if is_main:
          _log_scalars(writer, step, scalars)
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
  metrics = evaluation.evaluate(config, model, variables, workdir=workdir, tag=f'eval_{step}')
  if jax.process_index() == 0 and 'AP' in metrics:
    logging.info('evaluation at step %d: %d images, AP %.4f, AP50 %.4f, AP75 %.4f; inference '
                 '%.1f images/s', step, metrics['num_images'], metrics['AP'], metrics['AP50'],
                 metrics['AP75'], metrics['images_per_second'])
    _log_scalars(writer, step, {f'eval/{k}': v for k, v in metrics.items()
                                if isinstance(v, float)})
  return metrics
