"""Restoring weights: a workdir checkpoint without its optimizer, params checkpoints, and the
--workdir / --params choice of the programs."""

import jax
import numpy as np
import pytest

from fcos_jax import checkpoints, errors, restore, train_step
from tests import tiny_config


@pytest.fixture(scope='module')
def saved_run(tmp_path_factory):
  """A workdir with the train state of step 7 (params perturbed away from the init)."""
  config = tiny_config.get_config()
  mesh = train_step.make_mesh(jax.devices()[:1])
  _, _, state = train_step.build_training(config, mesh)
  params = jax.tree_util.tree_map(lambda x: x + 0.5, state.params)
  state = state.replace(params=params, step=state.step + 7)
  workdir = str(tmp_path_factory.mktemp('run'))
  ckpt = checkpoints.Checkpointer(workdir)
  ckpt.save(7, state)
  ckpt.close()
  return config, workdir, jax.device_get(state.params)


def test_load_variables_restores_params_without_the_optimizer(saved_run):
  config, workdir, params = saved_run
  model, variables, step = restore.load_variables(config, workdir)
  assert step == 7 and set(variables) == {'params', 'batch_stats'}
  jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(variables['params']),
                         params)
  assert model.num_classes == config.model.num_classes
  with pytest.raises(errors.CheckpointError, match='no checkpoint of step 3'):
    restore.load_variables(config, workdir, step=3)


def test_load_variables_of_an_empty_workdir_creates_nothing(tmp_path):
  config = tiny_config.get_config()
  with pytest.raises(errors.CheckpointError, match='no checkpoint in'):
    restore.load_variables(config, str(tmp_path / 'nothing'))
  assert not (tmp_path / 'nothing').exists()


def test_params_checkpoint_and_the_choice_between_sources(saved_run, tmp_path):
  import orbax.checkpoint as ocp
  config, workdir, params = saved_run
  _, from_workdir, _ = restore.load_for_inference(config, workdir=workdir)
  path = str(tmp_path / 'params')
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path, jax.device_get(from_workdir))
  _, from_params, step = restore.load_for_inference(config, params=path, workdir=workdir)
  assert step == 0  # --params wins over --workdir
  jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(from_params['params']),
                         params)
  config.model.fpn_channels = 8  # another model: the mismatched tensor is named
  with pytest.raises(errors.CheckpointError, match=r"\['fpn'\].*has shape"):
    restore.load_for_inference(config, params=path)
  with pytest.raises(errors.UserError, match='workdir or a params checkpoint'):
    restore.load_for_inference(config)
