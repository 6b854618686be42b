"""Weights for a model from files: a training workdir's checkpoint, a params checkpoint (e.g.
imported torchvision weights), or an init checkpoint merged into a fresh train state.

Inference (evaluate, export) restores only `params` and `batch_stats`: no optimizer is built.
"""

import logging
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import tensorflow as tf

from fcos_jax import errors, trees
from fcos_jax.models import fcos
from fcos_jax.weights import checkpoints, shapes

COLLECTIONS = ('params', 'batch_stats')


def load_params(path: str) -> Any:
  """Parameters (and frozen-BN statistics) from an orbax checkpoint written by the weight-import
  tool or by training: {'params': ..., 'batch_stats': ...} as numpy arrays."""
  path = checkpoints.absolute(path)
  if not tf.io.gfile.isdir(path):
    raise errors.CheckpointError(f'{path}: no such params checkpoint (a folder written by the '
                                 'weight-import tool or by training)')
  with ocp.StandardCheckpointer() as ckptr:
    try:
      restored = ckptr.restore(path)
    except Exception as e:  # noqa: BLE001 - say which file, not orbax's internals
      raise errors.CheckpointError(f'{path}: cannot be read as a params checkpoint '
                                   f'({type(e).__name__}: {str(e)[:200]})') from None
  if 'params' not in restored:
    raise errors.CheckpointError(f'{path}: no "params" in the checkpoint (keys: '
                                 f'{sorted(restored)})')
  return restored


def load_variables(config, workdir: str, step: Optional[int] = None, raw_weights: bool = False):
  """(model, {'params', 'batch_stats'}, step) of checkpoint `step` (default: latest) in workdir;
  'params' are the moving average when the run kept one (`config.ema_decay`), unless
  `raw_weights`."""
  model = fcos.create_model(config.model)
  if step is None:
    steps = checkpoints.saved_steps(workdir)
    if not steps:
      raise errors.CheckpointError(
          f'no checkpoint in {checkpoints.checkpoints_directory(workdir)}')
    step = steps[-1]
  like = fcos.abstract_variables(model)
  if config.ema_decay and not raw_weights:
    like = dict(like, ema_params=like['params'])
  variables = checkpoints.restore_variables(workdir, step, like)
  if 'ema_params' in variables:
    logging.info('using the moving average of the weights (--raw_weights: the trained ones)')
    variables = {'params': variables['ema_params'], 'batch_stats': variables['batch_stats']}
  return model, variables, step


def load_params_variables(config, path: str):
  """(model, variables) from a params checkpoint (e.g. an imported torchvision detector); every
  tensor the model needs must be there with its shape."""
  model = fcos.create_model(config.model)
  like = fcos.abstract_variables(model)
  restored = load_params(path)
  loaded = {c: restored.get(c, {}) for c in COLLECTIONS}
  mismatches = shapes.shape_mismatches(trees.shapes_by_path(loaded), trees.shapes_by_path(like),
                                       where='the file')
  if mismatches:
    raise errors.CheckpointError(f'{path} does not fit the model: {shapes.summarize(mismatches)}')
  return model, jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), loaded)


BEST = 'best'  # the step name of a run's best evaluated weights (checkpoints.best_weights)


def load_for_inference(config, *, workdir: Optional[str] = None, step=None,
                       params: Optional[str] = None,
                       raw_weights: bool = False) -> Tuple[Any, Dict[str, Any], Any]:
  """(model, variables, step) from a params checkpoint (step 0) or a training workdir; `step`
  an int, None (the latest) or 'best' (the weights kept by `config.best_metric`)."""
  if params:
    model, variables = load_params_variables(config, path=params)
    return model, variables, 0
  if workdir and step == BEST:
    path = checkpoints.best_weights(workdir)
    if not tf.io.gfile.isdir(path):
      raise errors.CheckpointError(f'{workdir} has no best weights yet (they are written at '
                                   'evaluations during training: config.eval_every)')
    model, variables = load_params_variables(config, path=path)
    return model, variables, BEST
  if workdir:
    return load_variables(config, workdir, step, raw_weights)
  raise errors.UserError('give a training workdir or a params checkpoint')


def merge_init_checkpoint(state, path: str, skip_mismatched: bool = False):
  """Copy every tensor of an init checkpoint into the matching place of a train state.

  Tensors the model has but the file lacks keep their fresh init (e.g. the FCOS head when
  starting from an ImageNet backbone); a tensor in the file that the model lacks, or of another
  shape, is an error naming it, unless `skip_mismatched` (fine-tuning on other classes): then
  those keep their fresh init too, and are listed in the log.
  """
  target = {c: getattr(state, c) for c in COLLECTIONS}
  restored = load_params(path)
  source = trees.leaves_by_path({c: restored.get(c, {}) for c in COLLECTIONS})
  wanted = trees.shapes_by_path(target)
  mismatches = shapes.shape_mismatches(trees.shapes_by_path(source), wanted, where='the file',
                                       missing_ok=True)
  if mismatches and not skip_mismatched:
    raise errors.CheckpointError(f'{path} does not fit the model: {shapes.summarize(mismatches)}')

  def pick(key_path, x):
    src = source.get(trees.path_name(key_path))
    if src is None or tuple(src.shape) != tuple(x.shape):
      return x
    return jax.device_put(jnp.asarray(np.asarray(src), x.dtype), x.sharding)
  merged = jax.tree_util.tree_map_with_path(pick, target)
  for c in COLLECTIONS:
    taken = sum(1 for k, shape in wanted.items()
                if k.startswith(c + '/') and k in source and tuple(source[k].shape) == shape)
    logging.info('initialized %s from %s: %d of %d tensors', c, path, taken,
                 sum(1 for k in wanted if k.startswith(c + '/')))
  if mismatches:
    logging.warning('init_skip_mismatched: %d tensor(s) of %s keep their fresh init: %s',
                    len(mismatches), path, '; '.join(mismatches))
  if getattr(state, 'ema_params', None):  # the moving average starts at the merged weights
    merged['ema_params'] = jax.tree_util.tree_map(lambda x: x.copy(), merged['params'])
  return state.replace(**merged)
