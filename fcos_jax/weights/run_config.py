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


RUN_INFO_FILE = 'run_info.json'


def _code_version() -> Dict[str, Any]:
  """The package version and, in a git checkout, the commit of the code and whether it had
  uncommitted changes."""
  import subprocess
  import fcos_jax
  from importlib import metadata
  try:
    version = metadata.version('fcos_jax')
  except metadata.PackageNotFoundError:
    version = None
  out: Dict[str, Any] = {'fcos_jax_version': version}
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
