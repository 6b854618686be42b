"""Checkpoints: the train state through orbax, the tf.data iterator position beside it.

Orbax writes each step to a temporary directory and renames it when complete, so a checkpoint
half-written by a killed process is never listed. The data-iterator state of step N is written
(per process) before orbax's step N, so any finalized orbax step has its data position. A
checkpoint that fails to restore (corrupted files) is skipped in favour of the previous one.
"""

import json
import logging
import os
from typing import Any, Dict, List, Optional, Tuple

import flax
import jax
import orbax.checkpoint as ocp
import tensorflow as tf

from fcos_jax import errors


class CheckpointMismatchError(errors.CheckpointError):
  """An intact checkpoint whose tensors do not fit the model / optimizer being restored."""

  def __init__(self, step: int, directory: str, mismatches: List[str]):
    self.step, self.directory, self.mismatches = step, directory, mismatches
    super().__init__(f'checkpoint of step {step} in {directory} does not fit this model: '
                     + '; '.join(mismatches[:3])
                     + (f' (+{len(mismatches) - 3} more)' if len(mismatches) > 3 else ''))


def _path_str(path) -> str:
  return '/'.join(str(getattr(k, 'key', getattr(k, 'idx', getattr(k, 'name', k)))) for k in path)


def shapes_by_path(tree) -> Dict[str, Tuple[int, ...]]:
  """{'params/fpn/p6/kernel': shape} of a pytree of arrays, ShapeDtypeStructs or orbax array
  metadata (list indices and dict keys spelled alike)."""
  tree = flax.serialization.to_state_dict(tree)
  return {_path_str(p): tuple(getattr(v, 'shape', ()))
          for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def saved_shapes(step_directory: str) -> Dict[str, Tuple[int, ...]]:
  """Tensor shapes of a saved train state, from its metadata alone (no array is read)."""
  with ocp.PyTreeCheckpointer() as ckptr:
    tree = ckptr.metadata(os.path.join(step_directory, 'default')).item_metadata.tree
  return shapes_by_path(tree)


def shape_mismatches(saved: Dict[str, Tuple[int, ...]],
                     wanted: Dict[str, Tuple[int, ...]]) -> List[str]:
  """Human-readable differences between saved and wanted tensor shapes, mismatched first."""
  out = [f'{k} is {saved[k]} in the checkpoint, {wanted[k]} in the model'
         for k in sorted(set(saved) & set(wanted)) if saved[k] != wanted[k]]
  out += [f'{k} is missing from the checkpoint' for k in sorted(set(wanted) - set(saved))]
  out += [f'{k} is in the checkpoint, not in the model' for k in sorted(set(saved) - set(wanted))]
  return out


class Checkpointer:
  """Saves/restores (state, data iterator) in `workdir`; keeps the last `keep` steps."""

  def __init__(self, workdir: str, keep: int = 3):
    self.directory = checkpoints_directory(workdir)
    self.data_directory = _absolute(
        os.path.join(workdir, 'data_state', f'process_{jax.process_index()}'))
    tf.io.gfile.makedirs(self.data_directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=True))

  def _data_path(self, step: int) -> str:
    return os.path.join(self.data_directory, f'step_{step}')

  def save(self, step: int, state: Any, data_iterator=None) -> None:
    if data_iterator is not None:
      path = self._data_path(step)
      if tf.io.gfile.exists(path):
        tf.io.gfile.rmtree(path)
      tf.train.Checkpoint(iterator=data_iterator).write(os.path.join(path, 'iterator'))
    self.manager.save(step, args=ocp.args.StandardSave(state), force=True)
    self._prune_data_states(keep_also=step)

  def _prune_data_states(self, keep_also: int) -> None:
    keep = set(self.manager.all_steps()) | {keep_also}
    for name in tf.io.gfile.listdir(self.data_directory):
      name = name.rstrip('/')
      if name.startswith('step_') and int(name[5:]) not in keep:
        tf.io.gfile.rmtree(os.path.join(self.data_directory, name))

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def restore_latest(self, state_like: Any, data_iterator=None) -> Optional[Any]:
    """The newest restorable state (with the iterator moved to its position), else None.

    `state_like`: a state whose arrays give the shapes, dtypes and shardings to restore into.
    """
    abstract = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state_like)
    unusable = []
    wanted = shapes_by_path(abstract)
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        saved = saved_shapes(os.path.join(self.directory, str(step)))
      except Exception:  # noqa: BLE001 - unreadable metadata: a damaged checkpoint
        saved = {}
      mismatches = shape_mismatches(saved, wanted) if saved else []
      if mismatches:  # intact, but written for another configuration: never set it aside
        raise CheckpointMismatchError(step, self.directory, mismatches)
      try:
        state = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
        if data_iterator is not None:
          path = os.path.join(self._data_path(step), 'iterator')
          if not tf.io.gfile.exists(path + '.index'):
            raise FileNotFoundError(f'no data-iterator state at {path}')
          tf.train.Checkpoint(iterator=data_iterator).read(path).assert_consumed()
        logging.info('restored checkpoint of step %d from %s', step, self.directory)
        self._set_aside(unusable)
        return state
      except Exception as e:  # noqa: BLE001 - any failure means: try the previous one
        logging.warning('checkpoint of step %d in %s cannot be restored (%s: %s); trying an '
                        'older one', step, self.directory, type(e).__name__, e)
        unusable.append(step)
    self._set_aside(unusable)
    return None

  def _set_aside(self, steps) -> None:
    """Rename unrestorable steps to '<step>.unrestorable' (kept for inspection, no longer
    listed), so that training can write those steps again."""
    if not steps:
      return
    if jax.process_index() == 0:
      for step in steps:
        src = os.path.join(self.directory, str(step))
        tf.io.gfile.rename(src, f'{src}.unrestorable', overwrite=True)
        logging.warning('moved unrestorable checkpoint %s aside to %s.unrestorable', src, src)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices('checkpoints_set_aside')
    self.manager.reload()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def checkpoints_directory(workdir: str) -> str:
  return _absolute(os.path.join(workdir, 'checkpoints'))


def saved_steps(workdir: str):
  """Steps of the finalized checkpoints in `workdir`, oldest first (nothing is created)."""
  directory = checkpoints_directory(workdir)
  if not tf.io.gfile.isdir(directory):
    return []
  with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(
      create=False, read_only=True)) as manager:
    return sorted(manager.all_steps())


def restore_variables(workdir: str, step: int, variables_like: Any) -> Any:
  """{'params', 'batch_stats'} of the train state saved at `step` in `workdir`, without the
  optimizer state (orbax partial restore). `variables_like`: arrays or ShapeDtypeStructs
  giving shapes, dtypes and shardings."""
  if step not in saved_steps(workdir):
    raise errors.CheckpointError(f'no checkpoint of step {step} in '
                                 f'{checkpoints_directory(workdir)} (have {saved_steps(workdir)})')
  abstract = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, 'sharding', None)),
      variables_like)
  path = os.path.join(checkpoints_directory(workdir), str(step), 'default')
  with ocp.PyTreeCheckpointer() as ckptr:
    try:
      saved = saved_shapes(os.path.dirname(path))
    except Exception as e:  # noqa: BLE001
      raise errors.CheckpointError(f'checkpoint of step {step} in {workdir} cannot be read '
                                   f'({type(e).__name__}: {e})') from None
    wanted = shapes_by_path(abstract)
    saved = {k: v for k, v in saved.items() if k.split('/')[0] in abstract}
    mismatches = shape_mismatches(saved, wanted)
    if mismatches:
      raise CheckpointMismatchError(step, checkpoints_directory(workdir), mismatches)
    return ckptr.restore(
        path,
        args=ocp.args.PyTreeRestore(
            item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
            partial_restore=True))


def _flat_config(tree, prefix='') -> Dict[str, Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat_config(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def config_changes(workdir: str, config) -> List[str]:
  """'key: old -> new' for every config value that differs from the run's `config.json`."""
  path = os.path.join(workdir, 'config.json')
  if not tf.io.gfile.exists(path):
    return []
  with tf.io.gfile.GFile(path) as f:
    old = _flat_config(json.load(f))
  new = _flat_config(json.loads(config.to_json_best_effort()))
  return [f'{k}: {old.get(k, "(absent)")} -> {new.get(k, "(absent)")}'
          for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def write_config(workdir: str, config, step: int) -> None:
  """`config.json` for a new run; on a resume with a changed config the first one stays and the
  new one is kept beside it as `config_resumed_at_<step>.json`."""
  path = os.path.join(workdir, 'config.json')
  if tf.io.gfile.exists(path):
    changes = config_changes(workdir, config)
    if not changes:
      return
    logging.warning('config changed since the run began: %s', '; '.join(changes))
    path = os.path.join(workdir, f'config_resumed_at_{step}.json')
  with tf.io.gfile.GFile(path, 'w') as f:
    f.write(config.to_json_best_effort(indent=1))


def _absolute(path: str) -> str:
  """Absolute local path (orbax needs one); cloud paths (gs://...) pass through."""
  return path if '://' in path else os.path.abspath(path)


def load_params(path: str) -> Any:
  """Parameters (and frozen-BN statistics) from an orbax checkpoint written by the weight-import
  tool or by training: {'params': ..., 'batch_stats': ...} as numpy arrays."""
  path = _absolute(path)
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
