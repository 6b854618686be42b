"""Checkpoints: the train state through orbax, the data stream's position beside it.

Orbax writes each step to a temporary directory and renames it when complete, so a checkpoint
half-written by a killed process is never listed. The data position of step N (tf.data's
iterator state, or an index-sampled stream's few integers) is written (per process) before
orbax's step N, so any finalized orbax step has its data position. A checkpoint that fails
to restore (corrupted files, non-finite values) is set aside in favour of the previous one; a
lost data position only restarts the data stream.
"""

import json
import logging
import os
from typing import Any, List, Optional

import jax
import orbax.checkpoint as ocp
import tensorflow as tf

from fcos_jax import barriers, errors, trees
from fcos_jax.weights import shapes

# The data position of an index-sampled stream, a small JSON file (else tf.data's iterator state).
POSITION_FILE = 'position.json'
# The best evaluated weights of a run, a params checkpoint beside (not in) the rotation.
BEST_DIR = 'best'


def best_weights(workdir: str) -> str:
  """The `best/` params checkpoint of a run (what `--step best` reads)."""
  return os.path.join(workdir, BEST_DIR)


class CheckpointMismatchError(errors.CheckpointError):
  """An intact checkpoint whose tensors do not fit the model / optimizer being restored."""

  def __init__(self, step: int, directory: str, mismatches: List[str]):
    self.step, self.directory, self.mismatches = step, directory, mismatches
    super().__init__(f'checkpoint of step {step} in {directory} does not fit this model: '
                     + shapes.summarize(mismatches))


def saved_shapes(step_directory: str) -> shapes.Shapes:
  """Tensor shapes of a saved train state, from its metadata alone (no array is read)."""
  with ocp.PyTreeCheckpointer() as ckptr:
    tree = ckptr.metadata(os.path.join(step_directory, 'default')).item_metadata.tree
  return trees.shapes_by_path(tree)


class Checkpointer:
  """Saves/restores (state, data iterator) in `workdir`; keeps the last `keep` steps."""

  def __init__(self, workdir: str, keep: int = 3):
    self.directory = checkpoints_directory(workdir)
    self.data_directory = absolute(
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
      write_data_position(path, data_iterator)
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
    abstract = shapes.abstract_like(state_like)
    unusable = []
    wanted = trees.shapes_by_path(abstract)
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        saved = saved_shapes(os.path.join(self.directory, str(step)))
      except Exception:  # noqa: BLE001 - unreadable metadata: a damaged checkpoint
        saved = {}
      mismatches = shapes.shape_mismatches(saved, wanted) if saved else []
      if mismatches:  # intact, but written for another configuration: never set it aside
        raise CheckpointMismatchError(step, self.directory, mismatches)
      try:
        state = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
        bad = trees.non_finite_paths(state)
        if bad:  # a train step never writes one (train_step's `finite`): damaged files
          raise ValueError(f'checkpoint corrupted: non-finite values in {", ".join(bad[:3])}'
                           + (f' and {len(bad) - 3} more tensors' if len(bad) > 3 else ''))
      except Exception as e:  # noqa: BLE001 - any failure means: try the previous one
        logging.warning('checkpoint of step %d in %s cannot be restored (%s: %s); trying an '
                        'older one', step, self.directory, type(e).__name__, errors.first_line(e))
        unusable.append(step)
        continue
      logging.info('restored checkpoint of step %d from %s', step, self.directory)
      if data_iterator is not None:
        self._restore_data_position(step, data_iterator)
      self._set_aside(unusable)
      return state
    self._set_aside(unusable)
    return None

  def _restore_data_position(self, step: int, data_iterator) -> None:
    """Moves the iterator to step's position; a missing or unreadable position (deleted
    data_state, another input pipeline) restarts the data stream but keeps the restored weights
    and optimizer state: losing an epoch's position is cheaper than losing the training."""
    try:
      read_data_position(self._data_path(step), data_iterator)
    except Exception as e:  # noqa: BLE001
      logging.warning('step %d: parameters and optimizer state restored, but the data '
                      'position cannot be (%s: %s); the data stream restarts from its '
                      'beginning', step, type(e).__name__, errors.first_line(e))

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
    barriers.wait_for_all(f'checkpoints_set_aside_{steps[0]}')
    self.manager.reload()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def write_data_position(path: str, data_iterator) -> None:
  """The stream's position into folder `path`: an index-sampled stream's few integers
  (data/train_stream.py), else tf.data's iterator state."""
  if hasattr(data_iterator, 'position'):
    tf.io.gfile.makedirs(path)
    with tf.io.gfile.GFile(os.path.join(path, POSITION_FILE), 'w') as f:
      json.dump(data_iterator.position(), f)
  else:
    tf.train.Checkpoint(iterator=data_iterator).write(os.path.join(path, 'iterator'))


def read_data_position(path: str, data_iterator) -> None:
  """Moves the stream to the position `write_data_position` wrote into `path`."""
  if hasattr(data_iterator, 'seek'):
    path = os.path.join(path, POSITION_FILE)
    if not tf.io.gfile.exists(path):
      raise FileNotFoundError(f'no data position at {path}')
    with tf.io.gfile.GFile(path) as f:
      data_iterator.seek(json.load(f))
  else:
    path = os.path.join(path, 'iterator')
    if not tf.io.gfile.exists(path + '.index'):
      raise FileNotFoundError(f'no data-iterator state at {path}')
    tf.train.Checkpoint(iterator=data_iterator).read(path).assert_consumed()


def checkpoints_directory(workdir: str) -> str:
  return absolute(os.path.join(workdir, 'checkpoints'))


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
  abstract = shapes.abstract_like(variables_like)
  path = os.path.join(checkpoints_directory(workdir), str(step), 'default')
  with ocp.PyTreeCheckpointer() as ckptr:
    try:
      saved = saved_shapes(os.path.dirname(path))
    except Exception as e:  # noqa: BLE001
      raise _corrupted(workdir, step, e) from None
    wanted = trees.shapes_by_path(abstract)
    saved = {k: v for k, v in saved.items() if k.split('/')[0] in abstract}
    mismatches = shapes.shape_mismatches(saved, wanted)
    if mismatches:
      raise CheckpointMismatchError(step, checkpoints_directory(workdir), mismatches)
    try:
      variables = ckptr.restore(
          path,
          args=ocp.args.PyTreeRestore(
              item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
              partial_restore=True))
      bad = trees.non_finite_paths(variables)
      if bad:
        raise ValueError(f'non-finite values in {", ".join(bad[:3])}')
    except Exception as e:  # noqa: BLE001 - damaged files: name them, point to another step
      raise _corrupted(workdir, step, e) from None
    return variables


def _corrupted(workdir: str, step: int, e: Exception) -> errors.CheckpointError:
  older = [s for s in saved_steps(workdir) if s < step]
  return errors.CheckpointError(
      f'checkpoint of step {step} in {checkpoints_directory(workdir)} is corrupted '
      f'({type(e).__name__}: {errors.first_line(e)}); '
      + (f'use an earlier one with --step {older[-1]} (saved: {older})' if older
         else 'no earlier checkpoint is saved'))


def absolute(path: str) -> str:
  """Absolute local path (orbax needs one); cloud paths (gs://...) pass through."""
  return path if '://' in path else os.path.abspath(path)
