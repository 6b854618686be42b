"""The record of a run's config beside its checkpoints (`config.json`), and what changed since."""

import json
import logging
import os
from typing import Any, Dict, List

import tensorflow as tf

from fcos_jax import trees

CONFIG_FILE = 'config.json'


def _flat(tree: Dict[str, Any]) -> Dict[str, Any]:
  """{'model.num_classes': 5} of a nested config dict (lists and tuples are values)."""
  return trees.leaves_by_path(tree, sep='.', is_leaf=lambda x: not isinstance(x, dict))


def config_changes(workdir: str, config) -> List[str]:
  """'key: old -> new' for every config value that differs from the run's `config.json`."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not tf.io.gfile.exists(path):
    return []
  with tf.io.gfile.GFile(path) as f:
    old = _flat(json.load(f))
  new = _flat(json.loads(config.to_json_best_effort()))
  return [f'{k}: {old.get(k, "(absent)")} -> {new.get(k, "(absent)")}'
          for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def write_config(workdir: str, config, step: int) -> None:
  """`config.json` for a new run; on a resume with a changed config the first one stays and the
  new one is kept beside it as `config_resumed_at_<step>.json`."""
  path = os.path.join(workdir, CONFIG_FILE)
  if tf.io.gfile.exists(path):
    changes = config_changes(workdir, config)
    if not changes:
      return
    logging.warning('config changed since the run began: %s', '; '.join(changes))
    path = os.path.join(workdir, f'config_resumed_at_{step}.json')
  with tf.io.gfile.GFile(path, 'w') as f:
    f.write(config.to_json_best_effort(indent=1))
