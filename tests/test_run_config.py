"""The run's recorded config read back: the values it trained with, in the config's types, with
keys added since the run at their defaults, and the newest record after a changed resume."""

import json

import pytest

from fcos_jax import errors
from fcos_jax.configs import shapes
from fcos_jax.configs import validate
from fcos_jax.weights import run_config


def _record(tmp_path, name, config, drop=()):
  tree = json.loads(config.to_json_best_effort())
  for key in drop:
    section, leaf = key.split('.')
    del tree[section][leaf]
  (tmp_path / name).write_text(json.dumps(tree))


def test_recorded_config_round_trip_types_and_new_keys(tmp_path):
  config = shapes.get_config()
  config.model.num_classes = 2
  config.data.min_sizes = (96, 128)
  _record(tmp_path, 'config.json', config, drop=['model.assigner'])
  got = run_config.recorded_config(str(tmp_path))
  assert got.model.num_classes == 2 and got.data.dataset == 'fcos_shapes'
  assert got.data.min_sizes == (96, 128) and isinstance(got.data.min_sizes, tuple)
  assert got.model.size_ranges == tuple(tuple(r) for r in config.model.size_ranges)
  assert got.model.assigner == 'fcos'  # absent from the record: the default
  validate.validate(got)
  assert run_config.differing_keys(str(tmp_path), got) == ''
  got.model.num_classes = 3
  assert run_config.differing_keys(str(tmp_path), got) == 'model.num_classes: 2 -> 3'


def test_the_newest_resumed_record_wins_and_a_missing_one_is_one_error(tmp_path):
  config = shapes.get_config()
  _record(tmp_path, 'config.json', config)
  config.num_train_steps = 5
  _record(tmp_path, 'config_resumed_at_100.json', config)
  config.num_train_steps = 7
  _record(tmp_path, 'config_resumed_at_20.json', config)
  assert run_config.recorded_config_path(str(tmp_path)).endswith('config_resumed_at_100.json')
  assert run_config.recorded_config(str(tmp_path)).num_train_steps == 5
  with pytest.raises(errors.ConfigError, match='has no recorded config'):
    run_config.recorded_config(str(tmp_path / 'elsewhere'))
  (tmp_path / 'config_resumed_at_100.json').write_text('{not json')
  with pytest.raises(errors.ConfigError, match='cannot read .*config_resumed_at_100.json'):
    run_config.recorded_config(str(tmp_path))
