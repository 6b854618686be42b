"""Restoring weights: a workdir checkpoint without its optimizer, params checkpoints, and the
--workdir / --params choice of the programs."""

import jax
import numpy as np
import pytest

from fcos_jax import errors, sharding, train_step, trees
from fcos_jax.weights import checkpoints, params
from tests import tiny_config


@pytest.fixture(scope='module')
def saved_run(tmp_path_factory):
  """A workdir with the train state of step 7 (params perturbed away from the init, their
  moving average perturbed by another amount)."""
  config = tiny_config.get_config()
  assert config.ema_decay
  mesh = sharding.make_mesh(jax.devices()[:1])
  _, _, state = train_step.build_training(config, mesh)
  perturbed = jax.tree_util.tree_map(lambda x: x + 0.5, state.params)
  average = jax.tree_util.tree_map(lambda x: x + 0.25, state.params)
  state = state.replace(params=perturbed, ema_params=average, step=state.step + 7)
  workdir = str(tmp_path_factory.mktemp('run'))
  ckpt = checkpoints.Checkpointer(workdir)
  ckpt.save(7, state)
  ckpt.close()
  return config, workdir, jax.device_get(state.ema_params), jax.device_get(state.params)


def test_load_variables_restores_params_without_the_optimizer(saved_run):
  config, workdir, saved_average, saved_params = saved_run
  model, variables, step = params.load_variables(config, workdir)
  assert step == 7 and set(variables) == {'params', 'batch_stats'}
  # The moving average by default, the trained weights with raw_weights.
  jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(variables['params']),
                         saved_average)
  _, variables, _ = params.load_variables(config, workdir, raw_weights=True)
  jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(variables['params']),
                         saved_params)
  assert model.num_classes == config.model.num_classes
  with pytest.raises(errors.CheckpointError, match='no checkpoint of step 3'):
    params.load_variables(config, workdir, step=3)


def test_load_variables_of_an_empty_workdir_creates_nothing(tmp_path):
  config = tiny_config.get_config()
  with pytest.raises(errors.CheckpointError, match='no checkpoint in'):
    params.load_variables(config, str(tmp_path / 'nothing'))
  assert not (tmp_path / 'nothing').exists()


def test_params_checkpoint_and_the_choice_between_sources(saved_run, tmp_path):
  import orbax.checkpoint as ocp
  config, workdir, saved_params, _ = saved_run
  _, from_workdir, _ = params.load_for_inference(config, workdir=workdir)
  path = str(tmp_path / 'params')
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path, jax.device_get(from_workdir))
  _, from_params, step = params.load_for_inference(config, params=path, workdir=workdir)
  assert step == 0  # --params wins over --workdir
  jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(from_params['params']),
                         saved_params)
  config.model.fpn_channels = 8  # another model: the mismatched tensor is named
  with pytest.raises(errors.CheckpointError, match=r"params/fpn/.* in the file, .* in the model"):
    params.load_for_inference(config, params=path)
  with pytest.raises(errors.UserError, match='workdir or a params checkpoint'):
    params.load_for_inference(config)


def test_fine_tuning_on_other_classes_takes_every_tensor_that_fits(tmp_path):
  """A 91-way torchvision-layout detector as init checkpoint of a 5-class model: with
  init_skip_mismatched everything but the class head comes from the file; without, the first
  mismatched tensor is named."""
  import jax.numpy as jnp
  import orbax.checkpoint as ocp
  from fcos_jax.models import fcos
  config = tiny_config.get_config()
  source = tiny_config.get_config().model
  source.num_classes = 91
  model = fcos.create_model(source)
  variables = jax.jit(model.init)(jax.random.key(5), jnp.zeros((1, 64, 64, 3)))
  variables = jax.tree_util.tree_map(lambda x: x + 0.25, variables)
  path = str(tmp_path / 'detector91')
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path, jax.device_get(variables))
  _, _, state = train_step.build_training(config, sharding.make_mesh(jax.devices()[:1]))
  with pytest.raises(errors.CheckpointError, match='cls_logits'):
    params.merge_init_checkpoint(state, path)
  merged = params.merge_init_checkpoint(state, path, skip_mismatched=True)
  src = trees.leaves_by_path(jax.device_get(variables['params']))
  got = trees.leaves_by_path(jax.device_get(merged.params))
  fresh = trees.leaves_by_path(jax.device_get(state.params))
  from_file = {k for k in got if np.array_equal(got[k], src[k])}
  assert set(got) - from_file == {'head/cls_logits/kernel', 'head/cls_logits/bias'}
  for k in set(got) - from_file:
    np.testing.assert_array_equal(got[k], fresh[k])
  # The moving average starts at the merged weights, not at the fresh init.
  jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(merged.ema_params),
                         jax.device_get(merged.params))


def test_the_finetuning_example_config_is_valid():
  from fcos_jax.configs import finetune_example, validate
  config = finetune_example.get_config()
  validate.validate(config)
  assert config.init_skip_mismatched and config.model.label_space == 'dataset'
