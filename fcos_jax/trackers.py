"""Experiment tracking behind one interface: every logged and evaluated scalar goes to
`metrics.csv` (one row per step, fixed columns) and `metrics.jsonl` in the workdir, always, and
to the trackers of `config.trackers`: TensorBoard (the default), Weights & Biases, MLflow."""

import csv
import importlib
import json
import logging
import os
import time
import uuid
from typing import Any, Dict, List

from fcos_jax import errors, trees
from fcos_jax.evaluation.scoring import STAT_NAMES

TRACKERS = ('tensorboard', 'csv', 'wandb', 'mlflow')
# The package each optional tracker imports, and the extra that installs it.
_PACKAGES = {'wandb': ('wandb', 'wandb'), 'mlflow': ('mlflow', 'mlflow')}
TRAIN_COLUMNS = ('loss_total', 'loss_cls', 'loss_box', 'loss_centerness', 'num_pos',
                 'grad_norm', 'learning_rate', 'images_per_second', 'step_seconds',
                 'truncated_boxes')
CSV_COLUMNS = ('step', 'time') + TRAIN_COLUMNS + tuple(f'eval/{k}' for k in STAT_NAMES)
CSV_FILE, JSONL_FILE = 'metrics.csv', 'metrics.jsonl'


def require(names) -> None:
  """One `ConfigError` naming the extra, before anything is built, for a tracker whose package
  is not installed (or an unknown tracker name)."""
  for name in names:
    if name not in TRACKERS:
      raise errors.ConfigError(f'config.trackers: unknown tracker {name!r}; one of '
                               f'{", ".join(TRACKERS)}')
    if name in _PACKAGES:
      package, extra = _PACKAGES[name]
      try:
        importlib.import_module(package)
      except ImportError:
        raise errors.ConfigError(f'config.trackers names {name!r}, but {package} is not '
                                 f'installed: pip install "fcos_jax[{extra}]"') from None


def read_rows(workdir: str) -> List[Dict[str, str]]:
  """The rows of a run's `metrics.csv` (empty when there is none)."""
  path = os.path.join(workdir, CSV_FILE)
  if not os.path.exists(path):
    return []
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def _drop_after(path: str, step: int, is_csv: bool) -> int:
  """Drops the records of steps after `step` from a metrics file (a resume trains them again);
  returns how many were dropped."""
  if not os.path.exists(path):
    return 0
  with open(path, newline='') as f:
    lines = f.readlines()
  head, body = (lines[:1], lines[1:]) if is_csv else ([], lines)

  def step_of(line):
    return int(line.split(',', 1)[0]) if is_csv else int(json.loads(line)['step'])
  kept = [line for line in body if line.strip() and step_of(line) <= step]
  if len(kept) != len(body):
    with open(path + '.tmp', 'w', newline='') as f:
      f.writelines(head + kept)
    os.replace(path + '.tmp', path)
  return len(body) - len(kept)


class Trackers:
  """Process 0 of a run logs; the other processes hold a no-op instance (`active=False`)."""

  def __init__(self, config, workdir: str, start_step: int, active: bool = True):
    self.active = active
    self.tensorboard = None
    self._wandb = self._mlflow = None
    self._row: Dict[str, Any] = {}
    if not active:
      return
    self._csv_path = os.path.join(workdir, CSV_FILE)
    self._jsonl_path = os.path.join(workdir, JSONL_FILE)
    dropped = (_drop_after(self._csv_path, start_step, is_csv=True) +
               _drop_after(self._jsonl_path, start_step, is_csv=False))
    if dropped:
      logging.info('resuming at step %d: %d logged rows of later steps dropped from %s',
                   start_step, dropped, workdir)
    if not os.path.exists(self._csv_path):
      with open(self._csv_path, 'w', newline='') as f:
        csv.writer(f).writerow(CSV_COLUMNS)
    names = tuple(config.trackers)
    if 'tensorboard' in names:
      import tensorflow as tf
      self.tensorboard = tf.summary.create_file_writer(os.path.join(workdir, 'tensorboard'))
    if 'wandb' in names:
      self._wandb = _start_wandb(config, workdir)
    if 'mlflow' in names:
      self._mlflow = _start_mlflow(config, workdir)

  def log(self, step: int, scalars: Dict[str, float]) -> None:
    """Scalars of `step` (merged into one CSV row per step, written when the step changes)."""
    if not self.active:
      return
    if self._row and self._row['step'] != step:
      self.flush()
    self._row = dict(self._row or {'step': step, 'time': round(time.time(), 3)}, **scalars)
    with open(self._jsonl_path, 'a') as f:
      f.write(json.dumps({'step': step, 'time': round(time.time(), 3), **scalars}) + '\n')
    if self.tensorboard is not None:
      import tensorflow as tf
      with self.tensorboard.as_default():
        for k, v in scalars.items():
          tf.summary.scalar(k, v, step=step)
      self.tensorboard.flush()
    if self._wandb is not None:
      self._wandb.log(dict(scalars), step=step)
    if self._mlflow is not None:
      self._mlflow.log_metrics({k.replace('/', '.'): float(v) for k, v in scalars.items()},
                               step=step)

  def flush(self) -> None:
    if not (self.active and self._row):
      return
    with open(self._csv_path, 'a', newline='') as f:
      csv.writer(f).writerow([_cell(self._row.get(c)) for c in CSV_COLUMNS])
    self._row = {}

  def close(self) -> None:
    self.flush()
    if self._wandb is not None:
      self._wandb.finish()
    if self._mlflow is not None:
      self._mlflow.end_run()


def _cell(value) -> str:
  return '' if value is None else f'{value:.6g}' if isinstance(value, float) else str(value)


def _flat_config(config) -> Dict[str, Any]:
  return trees.leaves_by_path(json.loads(config.to_json_best_effort()), sep='.',
                              is_leaf=lambda x: not isinstance(x, dict))


def _start_wandb(config, workdir: str):
  """A W&B run in the workdir (WANDB_MODE=offline keeps it local); resumed by the id stored
  beside the checkpoints."""
  import wandb
  id_path = os.path.join(workdir, 'wandb_run_id')
  if os.path.exists(id_path):
    with open(id_path) as f:
      run_id = f.read().strip()
  else:
    run_id = uuid.uuid4().hex[:8]  # W&B's run ids: 8 characters of [a-z0-9]
  with open(id_path, 'w') as f:
    f.write(run_id)
  return wandb.init(project=config.wandb_project, dir=workdir, id=run_id, resume='allow',
                    name=os.path.basename(os.path.abspath(workdir)), config=_flat_config(config))


def _start_mlflow(config, workdir: str):
  """An MLflow run (default store: a file store in workdir/mlruns, which needs no database
  packages; a server or database through `config.mlflow_tracking_uri`); resumed by its stored id."""
  import mlflow
  if config.mlflow_tracking_uri:
    mlflow.set_tracking_uri(config.mlflow_tracking_uri)
  else:  # MLflow 3 keeps its file store working (in maintenance) when told so
    os.environ.setdefault('MLFLOW_ALLOW_FILE_STORE', 'true')
    mlflow.set_tracking_uri('file://' + os.path.abspath(os.path.join(workdir, 'mlruns')))
  mlflow.set_experiment(config.mlflow_experiment)
  id_path = os.path.join(workdir, 'mlflow_run_id')
  if os.path.exists(id_path):
    with open(id_path) as f:
      mlflow.start_run(run_id=f.read().strip())
  else:
    run = mlflow.start_run(run_name=os.path.basename(os.path.abspath(workdir)))
    with open(id_path, 'w') as f:
      f.write(run.info.run_id)
    mlflow.log_params({k: str(v)[:500] for k, v in _flat_config(config).items()})
  return mlflow
