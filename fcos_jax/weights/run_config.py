"""The record of a run's config beside its checkpoints (`config.json`), and what changed since."""

import json
import logging
import os
from typing import Any, Dict, List, Tuple

import tensorflow as tf

from fcos_jax import trees

CONFIG_FILE = 'config.json'


def _flat(tree: Dict[str, Any]) -> Dict[str, Any]:
  """{'model.num_classes': 5} of a nested config dict (lists and tuples are values)."""
  return trees.leaves_by_path(tree, sep='.', is_leaf=lambda x: not isinstance(x, dict))


ABSENT = '(absent)'


def _changes(path, config) -> List[Tuple[str, Any, Any]]:
  """(key, old, new) for every value of `config` that differs from the record at `path`
  (ABSENT on the side that lacks the key)."""
  if path is None or not tf.io.gfile.exists(path):
    return []
  with tf.io.gfile.GFile(path) as f:
    old = _flat(json.load(f))
  new = _flat(json.loads(config.to_json_best_effort()))
  return [(k, old.get(k, ABSENT), new.get(k, ABSENT))
          for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def config_changes(workdir: str, config) -> List[str]:
  """'key: old -> new' for every config value that differs from the run's `config.json`."""
  return [f'{k}: {old} -> {new}'
          for k, old, new in _changes(os.path.join(workdir, CONFIG_FILE), config)]


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


def recorded_config_path(workdir: str):
  """The run's latest recorded config: the newest `config_resumed_at_<step>.json`, else
  `config.json`; None if the workdir has neither."""
  resumed = tf.io.gfile.glob(os.path.join(workdir, 'config_resumed_at_*.json'))
  steps = []
  for path in resumed:
    digits = os.path.basename(path)[len('config_resumed_at_'):-len('.json')]
    if digits.isdigit():
      steps.append((int(digits), path))
  if steps:
    return max(steps)[1]
  path = os.path.join(workdir, CONFIG_FILE)
  return path if tf.io.gfile.exists(path) else None


def _typed_like(value, default):
  """A JSON value in the type of the default it replaces (JSON has lists, configs tuples)."""
  if isinstance(default, tuple) and isinstance(value, list):
    inner = default[0] if default else None
    return tuple(_typed_like(v, inner) for v in value)
  if isinstance(value, list):
    return tuple(_typed_like(v, None) for v in value)
  if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  return value


def _merge(node, recorded: Dict[str, Any]) -> None:
  for key, value in recorded.items():
    if isinstance(value, dict) and key in node and hasattr(node[key], 'keys'):
      _merge(node[key], value)
    elif key in node:
      node[key] = _typed_like(value, node[key])
    else:  # a key of the run's own config file that the defaults lack
      node[key] = _typed_like(value, None)


def recorded_config(workdir: str):
  """The config a run trained with, from its record: its values laid over the shipped defaults
  (`configs/coco.py`), so keys added since the run keep their defaults and values keep their
  types. A ConfigError names the file if there is no record or it cannot be read."""
  from fcos_jax import errors
  from fcos_jax.configs import coco
  path = recorded_config_path(workdir)
  if path is None:
    raise errors.ConfigError(f'{workdir} has no recorded config ({CONFIG_FILE}): is it a '
                             'training workdir? Give --config')
  try:
    with tf.io.gfile.GFile(path) as f:
      recorded = json.load(f)
  except (OSError, ValueError) as e:
    raise errors.ConfigError(f'cannot read {path}: {e}') from None
  config = coco.get_config()
  try:
    _merge(config, recorded)
  except (TypeError, ValueError, KeyError) as e:
    raise errors.ConfigError(f'{path} does not fit the config schema: {e}') from None
  return config


CATEGORIES_FILE = 'categories.json'


def write_categories(workdir: str, cats) -> None:
  """The run's class names and category ids (`categories.json`), so that predictions from the
  workdir are named without the dataset."""
  with tf.io.gfile.GFile(os.path.join(workdir, CATEGORIES_FILE), 'w') as f:
    json.dump(cats.to_coco(), f, indent=1)


def read_categories(workdir: str):
  """The `Categories` a run recorded, or None (runs from before the record, or no workdir)."""
  from fcos_jax.data import categories
  path = os.path.join(workdir, CATEGORIES_FILE)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    cats = json.load(f)
  return categories.Categories(tuple(c['id'] for c in cats), tuple(c['name'] for c in cats))


def differing_keys(workdir: str, config) -> str:
  """'model.num_classes: 2 -> 5, ...' of the recorded model and data keys where `config` differs
  from the run's recorded config ('' when none, or when nothing is recorded); keys added since
  the run are left out (they take their defaults)."""
  return ', '.join(f'{k}: {old} -> {new}'
                   for k, old, new in _changes(recorded_config_path(workdir), config)
                   if k.startswith(('model.', 'data.')) and old != ABSENT)


RUN_INFO_FILE = 'run_info.json'


def _code_version() -> Dict[str, Any]:
  """The package version and, in a git checkout, the commit of the code and whether it had
  uncommitted changes."""
  import subprocess
  import fcos_jax
  out: Dict[str, Any] = {'fcos_jax_version': fcos_jax.__version__}
  root = os.path.dirname(os.path.dirname(os.path.abspath(fcos_jax.__file__)))
  try:
    commit = subprocess.run(['git', '-C', root, 'rev-parse', 'HEAD'], capture_output=True,
                            text=True, timeout=10)
    dirty = subprocess.run(['git', '-C', root, 'status', '--porcelain', '--untracked-files=no'],
                           capture_output=True, text=True, timeout=10)
  except (OSError, subprocess.SubprocessError):
    return out
  if commit.returncode == 0:
    out.update(git_commit=commit.stdout.strip(), git_dirty=bool(dirty.stdout.strip()))
  return out


def record_start(workdir: str, step: int) -> None:
  """Appends this start of the run (time, step, command line, code version, JAX and devices) to
  `run_info.json`: with `config.json`, what a result can be traced back to."""
  import sys
  import time
  import jax
  path = os.path.join(workdir, RUN_INFO_FILE)
  starts = []
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      starts = json.load(f).get('starts', [])
  starts.append(dict(
      time=time.strftime('%Y-%m-%dT%H:%M:%S%z'), step=step, argv=sys.argv,
      jax_version=jax.__version__, devices=f'{jax.device_count()} x {jax.devices()[0].device_kind}',
      processes=jax.process_count(), **_code_version()))
  with tf.io.gfile.GFile(path, 'w') as f:
    json.dump({'starts': starts}, f, indent=1)
