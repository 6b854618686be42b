"""The data-parallel training step: one jit-compiled program over all devices of all processes.

`jax.shard_map` inside `jit` over a 1-D 'data' mesh: each device normalizes its images, assigns
targets and computes the losses for its part of the batch; the loss normalizers (positives,
centerness sum) and the gradients are averaged over the 'data' axis; every device then applies
the same update to its replica of the state (and to the moving average of the weights, with
`config.ema_decay`). A non-finite loss, gradient, updated parameter or optimizer state leaves
the state unchanged and records the step in `state.bad_step`, which the host checks when it
logs or saves, so no per-step host round trip is needed and the last good parameters survive.
"""

from typing import Any, Dict, Tuple

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from fcos_jax import ema, losses, optim, sharding, targets, trees
from fcos_jax.models import fcos
from fcos_jax.normalize import image_normalizer
from fcos_jax.sharding import DATA_AXIS

TRAIN_KEYS = ('image', 'image_size', 'boxes', 'classes', 'box_valid')


@flax.struct.dataclass
class TrainState:
  step: jnp.ndarray
  params: Any
  batch_stats: Any          # frozen BN statistics (never updated); {} without frozen BN
  opt_state: Any
  bad_step: jnp.ndarray     # -1, or the first step whose loss, gradient or update was not finite
  ema_params: Any           # moving average of params with config.ema_decay; {} without


def create_train_state(config, model, tx, mesh) -> TrainState:
  """Initial state, created directly replicated on the mesh (same seed on every process)."""
  def init():
    variables = fcos.init_variables(model, jax.random.key(config.seed))
    params = variables['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables['batch_stats'], opt_state=tx.init(params),
                      bad_step=jnp.full((), -1, jnp.int32),
                      ema_params=params if config.ema_decay else {})
  return jax.jit(init, out_shardings=sharding.replicated(mesh))()


def build_training(config, mesh):
  """(model, optimizer, initial replicated state) of a config."""
  model = fcos.create_model(config.model)
  tx = optim.create_optimizer(config, fcos.abstract_variables(model)['params'])
  return model, tx, create_train_state(config, model, tx, mesh)


def make_train_step(config, model, tx, mesh):
  """jit(shard_map(step)) taking (state, batch) -> (state, metrics); donates the state."""
  assign_kw = targets.assigner_kwargs(config.model)
  loss_kw = losses.loss_kwargs(config)
  normalize = image_normalizer(config)

  def local_step(state: TrainState, batch: Dict[str, jax.Array]):
    images = normalize(batch['image'], batch['image_size'])
    tg = targets.assign_targets_batch(batch['boxes'], batch['classes'], batch['box_valid'],
                                      image_size=images.shape[1:3], **assign_kw)

    def loss_fn(params):
      out = model.apply({'params': params, 'batch_stats': state.batch_stats}, images)
      terms = losses.fcos_losses(out['cls_logits'], out['bbox_reg'], out['centerness'], tg,
                                 axis_name=DATA_AXIS, **loss_kw)
      return terms['total'], terms

    (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = jax.lax.pmean(grads, DATA_AXIS)
    terms = jax.lax.pmean(terms, DATA_AXIS)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # The update itself is checked too: a non-finite optimizer state (corrupted bytes) or an
    # overflow turns finite gradients into non-finite parameters.
    finite = (jnp.isfinite(terms['total']) & jnp.isfinite(optax.tree.norm(grads)) &
              trees.all_finite(params) & trees.all_finite(opt_state))
    ok = finite & (state.bad_step < 0)  # after a bad step the state stays frozen
    keep = lambda new, old: jax.tree_util.tree_map(  # noqa: E731
        lambda n, o: jnp.where(ok, n, o), new, old)
    ema_params = state.ema_params
    if config.ema_decay:  # after each optimizer update (every grad_accum_steps steps)
      updates_done = (state.step + 1) // config.grad_accum_steps
      updated = ok & ((state.step + 1) % config.grad_accum_steps == 0)
      ema_params = jax.tree_util.tree_map(
          lambda n, o: jnp.where(updated, n, o),
          ema.update(state.ema_params, params, config.ema_decay, updates_done), ema_params)
    new_state = state.replace(
        step=state.step + 1, params=keep(params, state.params), ema_params=ema_params,
        opt_state=keep(opt_state, state.opt_state),
        bad_step=jnp.where((state.bad_step < 0) & ~finite, state.step, state.bad_step))
    metrics = {f'loss_{k}' if k != 'num_pos' else k: v for k, v in terms.items()}
    metrics['num_pos'] = metrics['num_pos'] * jax.lax.psum(1, DATA_AXIS)  # total over devices
    metrics['grad_norm'] = optax.tree.norm(grads)
    return new_state, metrics

  step = jax.shard_map(local_step, mesh=mesh, in_specs=(P(), P(DATA_AXIS)),
                       out_specs=(P(), P()), check_vma=False)
  return jax.jit(step, donate_argnums=(0,))


def batch_spec(config, image_shape: Tuple[int, int],
               batch_sharding) -> Dict[str, jax.ShapeDtypeStruct]:
  """The global train batch of one bucket shape as the step receives it (the pipeline's
  `train_batch` through `input_pipeline.to_global_arrays`): what the step can be compiled for
  before any data exists."""
  b, m = config.batch_size, config.data.max_boxes
  spec = {'image': ((b, *image_shape, 3), jnp.uint8), 'image_size': ((b, 2), jnp.int32),
          'boxes': ((b, m, 4), jnp.float32), 'classes': ((b, m), jnp.int32),
          'box_valid': ((b, m), jnp.bool_)}
  return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding)
          for k, (shape, dtype) in spec.items()}


def train_batch(batch: Dict[str, Any]) -> Dict[str, Any]:
  """The part of a pipeline batch the step consumes."""
  return {k: batch[k] for k in TRAIN_KEYS}
