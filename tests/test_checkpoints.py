"""Checkpointer.restore_latest on a small state: what is restored, what is set aside, what is
only warned about (the trainer-level runs are in test_trainer.py)."""

import logging
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from fcos_jax.weights import checkpoints


def state_of(step, scale=1.0):
  return {'step': jnp.int32(step), 'params': {'w': jnp.full((3, 4), scale, jnp.float32)},
          'opt': {'mu': jnp.arange(4, dtype=jnp.float32) * scale}}


def data_iterator():
  return iter(tf.data.Dataset.range(100))


def write_run(workdir, steps, bad_step=None):
  """Checkpoints at `steps`, each with the data position after `step` elements; the one of
  `bad_step` (written by hand, as damaged files would read) holds a NaN."""
  ckpt = checkpoints.Checkpointer(workdir, keep=5)
  it = data_iterator()
  done = 0
  for step in steps:
    while done < step:
      next(it)
      done += 1
    state = state_of(step, float(step))
    if step == bad_step:
      state['opt']['mu'] = state['opt']['mu'].at[1].set(jnp.nan)
    ckpt.save(step, state, it)
  ckpt.close()


def restore(workdir):
  ckpt = checkpoints.Checkpointer(workdir, keep=5)
  it = data_iterator()
  state = ckpt.restore_latest(state_of(0), it)
  ckpt.close()
  return state, int(next(it))


def test_restores_state_and_data_position(tmp_path):
  write_run(str(tmp_path), [2, 5])
  state, first = restore(str(tmp_path))
  assert int(state['step']) == 5 and first == 5
  np.testing.assert_array_equal(np.asarray(state['params']['w']), np.full((3, 4), 5.0))


def test_lost_data_position_keeps_weights_and_restarts_the_stream(tmp_path, caplog):
  write_run(str(tmp_path), [2, 5])
  shutil.rmtree(tmp_path / 'data_state' / 'process_0' / 'step_5')
  with caplog.at_level(logging.WARNING):
    state, first = restore(str(tmp_path))
  assert int(state['step']) == 5 and first == 0  # the newest weights; the stream from the start
  assert 'data stream restarts from its beginning' in caplog.text
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['2', '5']  # nothing set aside


def test_unreadable_data_position_restarts_the_stream(tmp_path, caplog):
  write_run(str(tmp_path), [2, 5])
  data = tmp_path / 'data_state' / 'process_0' / 'step_5'
  for root, _, files in os.walk(data):
    for f in files:
      with open(os.path.join(root, f), 'wb') as fh:
        fh.write(b'garbage')
  with caplog.at_level(logging.WARNING):
    state, first = restore(str(tmp_path))
  assert int(state['step']) == 5 and first == 0
  assert 'parameters and optimizer state restored' in caplog.text
  assert 'Traceback' not in caplog.text and len(caplog.text.splitlines()) < 5


def test_non_finite_checkpoint_is_set_aside_naming_the_tensor(tmp_path, caplog):
  write_run(str(tmp_path), [2, 5], bad_step=5)
  with caplog.at_level(logging.WARNING):
    state, first = restore(str(tmp_path))
  assert int(state['step']) == 2 and first == 2
  assert 'checkpoint of step 5' in caplog.text
  assert 'checkpoint corrupted: non-finite values in opt/mu' in caplog.text
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['2', '5.unrestorable']


def test_no_checkpoint_restores_nothing(tmp_path):
  assert restore(str(tmp_path)) == (None, 0)


@pytest.mark.parametrize('leaf', ['params/w', 'step'])
def test_non_finite_paths_names_only_floating_leaves_with_nan_or_inf(leaf):
  from fcos_jax import trees
  state = state_of(1)
  assert trees.non_finite_paths(state) == []
  if leaf == 'params/w':
    state['params']['w'] = state['params']['w'].at[0, 0].set(jnp.inf)
    assert trees.non_finite_paths(state) == ['params/w']
  else:  # an integer leaf cannot hold a NaN: never reported
    state['step'] = jnp.int32(-1)
    assert trees.non_finite_paths(state) == []
