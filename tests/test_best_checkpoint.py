"""The best weights and early stopping: the standing of a run against its evaluations, and
through train.py on the tiny config: the stop, the best weights (the evaluated moving average),
`--step best` of evaluate, the curves, the summary and a resume of a stopped run."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from fcos_jax import best_checkpoint
from tests.test_trainer import CONFIG, ROOT, env, run


def _standing_by_hand(history, min_delta):
  """The rule written out: a value above the best is the new best; it resets the count only
  when it beats the old best by more than min_delta."""
  best, best_step, count = -np.inf, None, 0
  for step, value in history:
    if value > best + min_delta:
      count = 0
    else:
      count += 1
    if value > best:
      best, best_step = value, step
  return best_step, (None if best_step is None else best), count


@pytest.mark.parametrize('min_delta', [0.0, 0.01, 0.1])
def test_standing_follows_the_rule(min_delta):
  rng = np.random.default_rng(int(min_delta * 100))
  for _ in range(50):
    history = [(4 * (i + 1), float(v)) for i, v in enumerate(rng.random(rng.integers(0, 9)))]
    s = best_checkpoint.standing(history, min_delta)
    assert (s.best_step, s.best_value, s.without_improvement) == \
        _standing_by_hand(history, min_delta)


@pytest.fixture(scope='module')
def stopped_run(tmp_path_factory):
  """A run that evaluates every 4 steps and stops after one evaluation without an improvement
  of more than 1.0 AP (never possible): it stops at step 8 of 12."""
  data_dir = str(tmp_path_factory.mktemp('best_data'))
  workdir = str(tmp_path_factory.mktemp('best_run'))
  extra = ('--config.eval_every=4', '--config.early_stopping_patience=1',
           '--config.early_stopping_min_delta=1.0')
  out = run(workdir, data_dir, *extra)
  return workdir, data_dir, out, extra


def test_early_stopping_stops_with_a_final_checkpoint(stopped_run):
  workdir, _, out, _ = stopped_run
  assert 'early stopping at step 8: AP has not improved by more than 1.0' in out.stderr
  assert '8' in os.listdir(os.path.join(workdir, 'checkpoints'))
  assert '12' not in os.listdir(os.path.join(workdir, 'checkpoints'))
  with open(os.path.join(workdir, best_checkpoint.RECORD_FILE)) as f:
    record = json.load(f)
  assert [s for s, _ in record['history']] == [4, 8]
  assert record['evaluations_without_improvement'] == 1
  assert 'run summary' in out.stdout and f'best AP {record["best_value"]:.4f}' in out.stdout
  assert 'stopped early at step 8' in out.stdout
  assert re.search(r'training: [0-9.]+ s a step, [0-9.]+ images/s', out.stdout)
  assert f'--workdir {workdir} --step best' in out.stdout


def test_best_weights_are_the_evaluated_average_of_their_step(stopped_run):
  from fcos_jax.weights import checkpoints, params
  from tests import tiny_config
  workdir = stopped_run[0]
  with open(os.path.join(workdir, best_checkpoint.RECORD_FILE)) as f:
    record = json.load(f)
  config = tiny_config.get_config()
  best = params.load_params(checkpoints.best_weights(workdir))
  _, average, _ = params.load_variables(config, workdir, step=record['best_step'])
  _, raw, _ = params.load_variables(config, workdir, step=record['best_step'], raw_weights=True)
  leaves = lambda tree: [np.asarray(x) for x in __import__('jax').tree_util.tree_leaves(tree)]  # noqa
  for a, b in zip(leaves(best['params']), leaves(average['params'])):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(leaves(best['params']),
                                                       leaves(raw['params'])))


def test_evaluate_step_best_scores_the_best_weights(stopped_run, tmp_path):
  workdir, data_dir, _, _ = stopped_run
  with open(os.path.join(workdir, best_checkpoint.RECORD_FILE)) as f:
    record = json.load(f)
  out = subprocess.run([sys.executable, os.path.join(ROOT, 'evaluate.py'), f'--config={CONFIG}',
                        f'--workdir={workdir}', f'--config.data.data_dir={data_dir}',
                        '--step=best', f'--out={tmp_path}'], cwd=ROOT, env=env(),
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-4000:]
  assert 'checkpoint step best' in out.stdout
  with open(tmp_path / 'offline_eval_best_metrics.json') as f:
    got = json.load(f)
  assert got['AP'] == pytest.approx(record['best_value'], abs=1e-6)
  out = subprocess.run([sys.executable, os.path.join(ROOT, 'evaluate.py'), f'--config={CONFIG}',
                        f'--workdir={workdir}', f'--config.data.data_dir={data_dir}',
                        '--step=bset'], cwd=ROOT, env=env(), capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 1
  assert out.stderr.strip().splitlines()[-1] == \
      "error: --step 'bset': a checkpoint step (an integer) or 'best'"


def test_curves_are_drawn_and_redrawn_from_the_workdir(stopped_run, tmp_path):
  from PIL import Image
  workdir = stopped_run[0]
  with Image.open(os.path.join(workdir, 'curves.png')) as im:
    assert im.size == (1300, 380)
    assert len(set(im.convert('RGB').getdata())) > 50  # drawn, not blank
  out = subprocess.run([sys.executable, '-m', 'fcos_jax.programs.curves',
                        f'--workdir={workdir}', f'--out={tmp_path / "c.png"}'], cwd=ROOT,
                       env=env(), capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert os.path.getsize(tmp_path / 'c.png') > 10000
  out = subprocess.run([sys.executable, '-m', 'fcos_jax.programs.curves',
                        f'--workdir={tmp_path / "none"}'], cwd=ROOT, env=env(),
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 1 and 'no metrics' in out.stderr.strip().splitlines()[-1]


def test_metrics_csv_has_one_row_per_logged_step(stopped_run):
  from fcos_jax import trackers
  workdir = stopped_run[0]
  rows = trackers.read_rows(workdir)
  assert list(rows[0]) == list(trackers.CSV_COLUMNS)
  assert [int(r['step']) for r in rows] == [2, 4, 6, 8]
  assert [bool(r['eval/AP']) for r in rows] == [False, True, False, True]
  assert all(float(r['loss_total']) > 0 for r in rows)
  with open(os.path.join(workdir, 'run_info.json')) as f:
    start = json.load(f)['starts'][0]
  assert start['step'] == 0 and start['argv'][0].endswith('train.py')
  if os.path.isdir(os.path.join(ROOT, '.git')):
    assert len(start['git_commit']) == 40


def test_a_resumed_stopped_run_stops_again_at_once(stopped_run):
  workdir, data_dir, _, extra = stopped_run
  out = run(workdir, data_dir, *extra)
  assert 'resuming at step 8' in out.stderr
  assert 'early stopping at step 8' in out.stderr
  assert 'step 10:' not in out.stderr
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints')), key=int)[-1] == '8'


def test_export_and_predict_take_step_best(stopped_run, tmp_path):
  workdir, data_dir, _, _ = stopped_run
  common = [f'--config={CONFIG}', f'--workdir={workdir}', f'--config.data.data_dir={data_dir}',
            '--step=best']
  out = subprocess.run([sys.executable, os.path.join(ROOT, 'export.py'), *common,
                        f'--out={tmp_path / "export"}'], cwd=ROOT, env=env(),
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-4000:]
  assert 'exported checkpoint step best' in out.stdout
  from PIL import Image
  Image.new('RGB', (64, 64), (90, 120, 30)).save(tmp_path / 'in.png')
  out = subprocess.run([sys.executable, os.path.join(ROOT, 'predict.py'), *common,
                        f'--image={tmp_path / "in.png"}', f'--out={tmp_path / "pred"}'],
                       cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-4000:]
  assert (tmp_path / 'pred' / 'detections.json').exists()
