"""Checkpoints: the train state through orbax, the tf.data iterator position beside it.

Orbax writes each step to a temporary directory and renames it when complete, so a checkpoint
half-written by a killed process is never listed. The data-iterator state of step N is written
(per process) before orbax's step N, so any finalized orbax step has its data position. A
checkpoint that fails to restore (corrupted files) is skipped in favour of the previous one.
"""

import logging
import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
import tensorflow as tf


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
    for step in sorted(self.manager.all_steps(), reverse=True):
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
    raise FileNotFoundError(f'no checkpoint of step {step} in {checkpoints_directory(workdir)} '
                            f'(have {saved_steps(workdir)})')
  abstract = jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, 'sharding', None)),
      variables_like)
  with ocp.PyTreeCheckpointer() as ckptr:
    return ckptr.restore(
        os.path.join(checkpoints_directory(workdir), str(step), 'default'),
        args=ocp.args.PyTreeRestore(
            item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
            partial_restore=True))


def _absolute(path: str) -> str:
  """Absolute local path (orbax needs one); cloud paths (gs://...) pass through."""
  return path if '://' in path else os.path.abspath(path)


def load_params(path: str) -> Any:
  """Parameters (and frozen-BN statistics) from an orbax checkpoint written by the weight-import
  tool or by training: {'params': ..., 'batch_stats': ...} as numpy arrays."""
  path = _absolute(path)
  with ocp.StandardCheckpointer() as ckptr:
    restored = ckptr.restore(path)
  if 'params' not in restored:
    raise ValueError(f'{path}: no "params" in the checkpoint (keys: {sorted(restored)})')
  return restored
