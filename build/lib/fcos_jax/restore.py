"""Weights for a model from files: a training workdir's checkpoint, a params checkpoint (e.g.
imported torchvision weights), or an init checkpoint merged into a fresh train state.

Inference (evaluate, export) restores only `params` and `batch_stats`: no optimizer is built.
"""

import logging
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from fcos_jax import checkpoints, errors
from fcos_jax.models import fcos


def flat_by_path(tree) -> Dict[str, Any]:
  """{"['a']['b']": leaf} of a pytree: tensors addressed by their path."""
  return {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def abstract_variables(model) -> Dict[str, Any]:
  """ShapeDtypeStructs of the model's {'params', 'batch_stats'} (shapes do not depend on the
  image size)."""
  like = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3), jnp.float32))
  return {'params': like['params'], 'batch_stats': like.get('batch_stats', {})}


def load_variables(config, workdir: str, step: Optional[int] = None):
  """(model, {'params', 'batch_stats'}, step) of checkpoint `step` (default: latest) in workdir."""
  model = fcos.create_model(config.model)
  if step is None:
    steps = checkpoints.saved_steps(workdir)
    if not steps:
      raise errors.CheckpointError(
          f'no checkpoint in {checkpoints.checkpoints_directory(workdir)}')
    step = steps[-1]
  variables = checkpoints.restore_variables(workdir, step, abstract_variables(model))
  return model, variables, step


def load_params_variables(config, path: str):
  """(model, variables) from a params checkpoint (e.g. an imported torchvision detector); every
  tensor the model needs must be there with its shape."""
  model = fcos.create_model(config.model)
  like = abstract_variables(model)
  loaded = checkpoints.load_params(path)
  variables = {}
  for collection in like:
    want = flat_by_path(like[collection])
    have = flat_by_path(loaded.get(collection, {}))
    if set(want) != set(have):
      raise errors.CheckpointError(f'{path}: {collection} does not fit the model: missing '
                       f'{sorted(set(want) - set(have))[:5]}, unexpected '
                       f'{sorted(set(have) - set(want))[:5]}')
    for key, spec in want.items():
      if tuple(have[key].shape) != tuple(spec.shape):
        raise errors.CheckpointError(f'{path}: {collection}{key} has shape '
                                     f'{tuple(have[key].shape)}, the '
                         f'model needs {tuple(spec.shape)}')
    variables[collection] = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32),
                                                   loaded.get(collection, {}))
  return model, variables


def load_for_inference(config, *, workdir: Optional[str] = None, step: Optional[int] = None,
                       params: Optional[str] = None) -> Tuple[Any, Dict[str, Any], int]:
  """(model, variables, step) from a params checkpoint (step 0) or a training workdir."""
  if params:
    model, variables = load_params_variables(config, params)
    return model, variables, 0
  if workdir:
    return load_variables(config, workdir, step)
  raise errors.UserError('give a training workdir or a params checkpoint')


def merge_init_checkpoint(state, path: str, skip_mismatched: bool = False):
  """Copy every tensor of an init checkpoint into the matching place of a train state.

  Tensors the model has but the file lacks keep their fresh init (e.g. the FCOS head when
  starting from an ImageNet backbone); a tensor in the file that the model lacks, or of another
  shape, is an error naming it, unless `skip_mismatched` (fine-tuning on other classes): then
  those keep their fresh init too, and are listed in the log.
  """
  loaded = checkpoints.load_params(path)
  counts = {}
  new = {}
  skipped = []
  for collection in ('params', 'batch_stats'):
    target = getattr(state, collection)
    flat_target = flat_by_path(target)
    flat_src = flat_by_path(loaded.get(collection, {}))
    unknown = sorted(set(flat_src) - set(flat_target))
    if unknown and skip_mismatched:
      skipped += [f'{collection}{k} (not in the model)' for k in unknown]
    elif unknown:
      raise errors.CheckpointError(f'{path}: {collection} {unknown[:5]} (and '
                                   f'{max(len(unknown) - 5, 0)} '
                       'more) do not exist in the model')

    def pick(key_path, x):
      key = jax.tree_util.keystr(key_path)
      if key not in flat_src:
        return x
      src = np.asarray(flat_src[key])
      if src.shape != x.shape and skip_mismatched:
        skipped.append(f'{collection}{key} ({src.shape} in the file, {x.shape} here)')
        return x
      if src.shape != x.shape:
        raise errors.CheckpointError(f'{path}: {collection}{key} has shape {src.shape}, the '
                                     'model needs '
                         f'{x.shape}')
      return jax.device_put(jnp.asarray(src, x.dtype), x.sharding)
    new[collection] = jax.tree_util.tree_map_with_path(pick, target)
    taken = sum(1 for k, v in flat_target.items()
                if k in flat_src and np.shape(flat_src[k]) == tuple(v.shape))
    counts[collection] = (taken, len(flat_target))
  logging.info('initialized from %s: params %d of %d tensors, batch_stats %d of %d', path,
               *counts['params'], *counts['batch_stats'])
  if skipped:
    logging.warning('init_skip_mismatched: %d tensor(s) of %s keep their fresh init: %s',
                    len(skipped), path, '; '.join(skipped))
  return state.replace(params=new['params'], batch_stats=new['batch_stats'])
