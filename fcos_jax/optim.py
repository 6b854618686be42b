"""Optimizer and learning-rate schedule (optax), with the official FCOS parameter groups:
no weight decay on biases and norm parameters, a larger learning rate for biases, nothing at all
for the frozen backbone stages."""

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from fcos_jax.models.fcos import trainable_mask

OPTIMIZERS = ('sgd', 'adamw')
WARMUP_METHODS = ('constant', 'linear')


def learning_rate_schedule(opt_config, batch_size: int) -> Callable[[jnp.ndarray], jnp.ndarray]:
  """Base lr scaled linearly with the batch size, warmup, then x`decay_factor` at each of
  `decay_steps`. Warmup 'constant' multiplies by `warmup_factor` (official FCOS); 'linear' ramps
  from `warmup_factor` to 1 (detectron2, mmdetection)."""
  lr = opt_config.base_lr * batch_size / opt_config.base_batch_size
  decay = optax.piecewise_constant_schedule(
      lr, {int(s): opt_config.decay_factor for s in opt_config.decay_steps})
  warmup_steps = int(opt_config.warmup_steps)
  factor = float(opt_config.warmup_factor)
  method = opt_config.warmup_method
  if method not in WARMUP_METHODS:
    raise ValueError(f'warmup_method must be one of {WARMUP_METHODS}, got {method!r}')

  def schedule(step):
    if method == 'constant':
      warm = factor
    else:
      warm = factor + (1 - factor) * step / max(warmup_steps, 1)
    return decay(step) * jnp.where(step < warmup_steps, warm, 1.0)
  return schedule


def _path_names(path):
  return [getattr(p, 'key', str(p)) for p in path]


def decay_mask(params):
  """True for the parameters that get weight decay: conv kernels, not biases or norm params."""
  return jax.tree_util.tree_map_with_path(lambda path, _: _path_names(path)[-1] == 'kernel',
                                          params)


def bias_mask(params):
  """True for every bias (the official code gives all of them `bias_lr_factor` x the lr)."""
  return jax.tree_util.tree_map_with_path(lambda path, _: _path_names(path)[-1] == 'bias',
                                          params)


def create_optimizer(config, params) -> optax.GradientTransformation:
  """The optimizer of `config.optimizer` for `params` (frozen stages masked out)."""
  o = config.optimizer
  schedule = learning_rate_schedule(o, effective_batch_size(config))
  parts = []
  if o.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(o.grad_clip_norm))
  if o.name == 'sgd':
    # torch SGD order: g + wd * p, then momentum, then -lr (x bias_lr_factor for biases).
    parts += [optax.add_decayed_weights(o.weight_decay, mask=decay_mask(params)),
              optax.trace(decay=o.momentum, nesterov=False)]
  elif o.name == 'adamw':
    parts += [optax.scale_by_adam(),
              optax.add_decayed_weights(o.weight_decay, mask=decay_mask(params))]
  else:
    raise ValueError(f'optimizer.name must be one of {OPTIMIZERS}, got {o.name!r}')
  parts.append(optax.scale_by_learning_rate(schedule))
  if o.bias_lr_factor != 1.0:
    parts.append(optax.masked(optax.scale(o.bias_lr_factor), bias_mask(params)))
  tx = optax.chain(*parts)
  labels = jax.tree_util.tree_map(lambda t: 'train' if t else 'frozen',
                                  trainable_mask(params, config.model.freeze_at))
  tx = optax.multi_transform({'train': tx, 'frozen': optax.set_to_zero()}, labels)
  if config.grad_accum_steps > 1:
    # Average k micro-batch gradients, update once: the schedule counts updates.
    tx = optax.MultiSteps(tx, every_k_schedule=config.grad_accum_steps)
  return tx


def effective_batch_size(config) -> int:
  """Images per optimizer update: `batch_size` x `grad_accum_steps`."""
  return config.batch_size * config.grad_accum_steps


def scale_schedule_to_batch(config):
  """(config, summary) with the step counts of `config` rescaled to its global batch.

  With `optimizer.scale_schedule_with_batch`, `num_train_steps`, `checkpoint_every` and
  `eval_every` (in batches) and `optimizer.warmup_steps` / `decay_steps` (in updates) are read
  as stated for updates of `optimizer.base_batch_size` images, and scaled by
  base_batch_size / batch, so that a run of any global batch sees the same images at the same
  learning rate per image (the lr scales linearly, `learning_rate_schedule`; Goyal et al. 2017,
  detectron2's REFERENCE_WORLD_SIZE). Without it, or at the base batch, `config` is returned
  as is. `summary` is the one line that says what was applied.
  """
  o = config.optimizer
  effective = effective_batch_size(config)
  lr = o.base_lr * effective / o.base_batch_size
  if not o.get('scale_schedule_with_batch', False) or effective == o.base_batch_size:
    return config, (f'global batch {effective}: lr {lr:g} (base_lr {o.base_lr:g} x '
                    f'{effective}/{o.base_batch_size}); step counts as configured')
  per_update = o.base_batch_size / effective
  per_step = o.base_batch_size / config.batch_size

  def scaled(n, factor):
    return max(1, round(n * factor)) if n else 0

  config = config.copy_and_resolve_references()
  before = (config.num_train_steps, o.warmup_steps, tuple(o.decay_steps))
  config.num_train_steps = scaled(config.num_train_steps, per_step)
  config.checkpoint_every = scaled(config.checkpoint_every, per_step)
  config.eval_every = scaled(config.eval_every, per_step)
  so = config.optimizer
  so.warmup_steps = scaled(o.warmup_steps, per_update)
  so.decay_steps = tuple(scaled(int(s), per_update) for s in o.decay_steps)
  return config, (
      f'global batch {effective} = {effective / o.base_batch_size:g} x base_batch_size '
      f'{o.base_batch_size} (optimizer.scale_schedule_with_batch): lr {lr:g}, steps '
      f'{before[0]} -> {config.num_train_steps}, warmup {before[1]} -> {so.warmup_steps}, '
      f'decay {before[2]} -> {so.decay_steps}, checkpoint_every {config.checkpoint_every}, '
      f'eval_every {config.eval_every}')
