"""Experiment tracking: metrics.csv / metrics.jsonl kept in step with a resume, and through
train.py the W&B (offline) and MLflow (file store) writers, a missing tracker package and bad
tracking settings as one line each before anything compiles."""

import csv
import glob
import json
import os

import ml_collections
import pytest

from fcos_jax import trackers
from tests.test_trainer import run


def _config(names=('csv',)):
  return ml_collections.ConfigDict({'trackers': names})


def test_rows_merge_per_step_and_a_resume_drops_the_later_ones(tmp_path):
  workdir = str(tmp_path)
  t = trackers.Trackers(_config(), workdir, 0)
  t.log(2, {'loss_total': 1.5, 'learning_rate': 0.1})
  t.log(4, {'loss_total': 1.25})
  t.log(4, {'eval/AP': 0.5})  # the evaluation of step 4 joins its row
  t.log(6, {'loss_total': 1.0})
  t.close()
  rows = trackers.read_rows(workdir)
  assert [(r['step'], r['loss_total'], r['eval/AP']) for r in rows] == \
      [('2', '1.5', ''), ('4', '1.25', '0.5'), ('6', '1', '')]
  with open(tmp_path / trackers.JSONL_FILE) as f:
    assert [json.loads(line)['step'] for line in f] == [2, 4, 4, 6]
  t = trackers.Trackers(_config(), workdir, 4)  # resumed at step 4: step 6 is trained again
  t.log(6, {'loss_total': 0.75})
  t.close()
  rows = trackers.read_rows(workdir)
  assert [(r['step'], r['loss_total']) for r in rows] == [('2', '1.5'), ('4', '1.25'),
                                                           ('6', '0.75')]
  with open(tmp_path / trackers.CSV_FILE, newline='') as f:
    assert next(csv.reader(f)) == list(trackers.CSV_COLUMNS)
  with open(tmp_path / trackers.JSONL_FILE) as f:
    assert [json.loads(line)['step'] for line in f] == [2, 4, 4, 6]


def test_a_process_other_than_0_writes_nothing(tmp_path):
  t = trackers.Trackers(_config(), str(tmp_path), 0, active=False)
  t.log(2, {'loss_total': 1.0})
  t.close()
  assert os.listdir(tmp_path) == []


def test_wandb_offline_and_mlflow_file_store_through_train_py(tmp_path, monkeypatch):
  monkeypatch.setenv('WANDB_MODE', 'offline')
  monkeypatch.setenv('WANDB_SILENT', 'true')
  workdir = tmp_path / 'run'
  run(str(workdir), str(tmp_path / 'data'), '--config.num_train_steps=4',
      "--config.trackers=('csv', 'wandb', 'mlflow')", '--config.eval_at_end=True')
  offline = glob.glob(str(workdir / 'wandb' / 'offline-run-*' / 'run-*.wandb'))
  assert len(offline) == 1 and os.path.getsize(offline[0]) > 0
  metric_files = glob.glob(str(workdir / 'mlruns' / '*' / '*' / 'metrics' / 'loss_total'))
  assert len(metric_files) == 1
  with open(metric_files[0]) as f:  # lines of "timestamp value step"
    assert [int(line.split()[2]) for line in f] == [2, 4]
  assert glob.glob(str(workdir / 'mlruns' / '*' / '*' / 'metrics' / 'eval.AP'))
  params_dir = os.path.dirname(os.path.dirname(metric_files[0]))
  with open(os.path.join(params_dir, 'params', 'optimizer.base_lr')) as f:
    assert float(f.read()) > 0  # the config is recorded with the run
  assert not (workdir / 'tensorboard').exists()  # not asked for


def test_a_missing_tracker_package_names_the_extra(tmp_path):
  """A `wandb` that cannot be imported (a module raising ImportError, first on the path)."""
  import subprocess
  from tests.test_trainer import command, env
  fake = tmp_path / 'no_wandb'
  fake.mkdir()
  (fake / 'wandb.py').write_text("raise ImportError('No module named wandb')\n")
  e = env()
  e['PYTHONPATH'] = f'{fake}{os.pathsep}{e["PYTHONPATH"]}'
  out = subprocess.run(command(str(tmp_path / 'run'), str(tmp_path / 'data'),
                               "--config.trackers=('wandb',)"), env=e, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 1
  assert out.stderr.strip().splitlines()[-1] == (
      "error: config.trackers names 'wandb', but wandb is not installed: "
      'pip install "fcos_jax[wandb]"')
  assert not (tmp_path / 'run').exists()


@pytest.mark.parametrize('override,message', [
    ("--config.trackers=('csv', 'tensorbord')", "trackers = 'tensorbord': must be one of"),
    ('--config.best_metric=APx', "best_metric = 'APx': must be one of"),
    ('--config.early_stopping_patience=2', 'needs evaluations during training: set eval_every'),
    ('--config.ema_decay=1.5', 'ema_decay'),
])
def test_bad_settings_are_one_line_before_anything_compiles(tmp_path, override, message):
  out = run(str(tmp_path / 'run'), str(tmp_path / 'data'), override, check=False)
  assert out.returncode == 1
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith('error: ') and message in last, last
  assert 'Compiling' not in out.stderr and not (tmp_path / 'run').exists()
