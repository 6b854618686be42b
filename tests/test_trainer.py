"""train.py end to end (subprocesses): resume after SIGKILL, SIGTERM, corrupted checkpoints,
two processes over loopback, config errors, compile count, and the final evaluation."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, 'tests', 'tiny_config.py')


def env(devices=1):
  e = dict(os.environ)
  e.update(XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}', PYTHONPATH=ROOT,
           TF_CPP_MIN_LOG_LEVEL='3', TF_ENABLE_ONEDNN_OPTS='0', PYTHONUNBUFFERED='1')
  return e


def command(workdir, data_dir, *extra):
  return [sys.executable, os.path.join(ROOT, 'train.py'), f'--config={CONFIG}',
          f'--workdir={workdir}', f'--config.data.data_dir={data_dir}', '--alsologtostderr',
          *extra]


def run(workdir, data_dir, *extra, devices=1, check=True):
  out = subprocess.run(command(workdir, data_dir, *extra), cwd=ROOT, env=env(devices),
                       capture_output=True, text=True, timeout=600)
  if check and out.returncode != 0:
    raise AssertionError(f'train.py failed ({out.returncode}):\n{out.stderr[-6000:]}')
  return out


def checksum(log):
  m = re.findall(r'final step (\d+); parameter checksum ([0-9.e+-]+)', log)
  assert m, log[-3000:]
  return int(m[-1][0]), float(m[-1][1])


def start_and_wait(workdir, data_dir, pattern, *extra):
  """Start train.py and return (process, log so far) once `pattern` appears in its log."""
  proc = subprocess.Popen(command(workdir, data_dir, *extra), cwd=ROOT, env=env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  log = ''
  deadline = time.time() + 300
  while time.time() < deadline:
    line = proc.stdout.readline()
    if not line and proc.poll() is not None:
      break
    log += line
    if re.search(pattern, line):
      return proc, log
  proc.kill()
  raise AssertionError(f'never saw {pattern!r}:\n{log[-4000:]}')


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('train_data'))


@pytest.fixture(scope='module')
def reference_run(tmp_path_factory, data_dir):
  """An uninterrupted 12-step run: (workdir, log)."""
  workdir = str(tmp_path_factory.mktemp('reference'))
  out = run(workdir, data_dir, '--config.eval_at_end=True')
  return workdir, out.stderr, out.stdout


def test_uninterrupted_run_compiles_once_per_bucket(reference_run):
  workdir, log, _ = reference_run
  assert checksum(log)[0] == 12
  compiles = re.findall(r'compiled the train step for image shape \((\d+), (\d+)\)', log)
  assert 1 <= len(compiles) <= 2 and len(set(compiles)) == len(compiles)
  assert re.search(r'(\d+) compiled train program\(s\)', log).group(1) == str(len(compiles))
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['12', '4', '8']
  assert os.listdir(os.path.join(workdir, 'tensorboard'))
  assert re.search(r'step 12: .*loss_total=', log)
  assert 'global batch 4: lr 0.0005 (base_lr 0.002 x 4/16); step counts as configured' in log


def test_a_rerun_loads_its_programs_from_the_compilation_cache(reference_run, data_dir,
                                                              tmp_path):
  """The reference run filled the session's cache (conftest); a new run of the same config
  loads the train and inference programs from it and trains to the same parameters."""
  cache = os.environ['JAX_COMPILATION_CACHE_DIR']
  assert any(name.startswith('jit_local_step-') for name in os.listdir(cache))
  e = env()
  e['JAX_LOG_COMPILES'] = '1'  # cache hits are logged as warnings then
  out = subprocess.run(command(str(tmp_path / 'rerun'), data_dir, '--config.eval_at_end=True'),
                       cwd=ROOT, env=e, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-4000:]
  for program in ('jit_local_step', 'jit_predict'):
    assert f"Persistent compilation cache hit for '{program}'" in out.stderr, program
  assert checksum(out.stderr) == checksum(reference_run[1])


def test_an_unusable_cache_folder_is_a_warning_not_an_error(data_dir, tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a folder')
  out = run(str(tmp_path / 'w'), data_dir, f'--compilation_cache_dir={blocker}/cache',
            '--config.keep_checkpoints=0', check=False)
  # The program warns and goes on: here to the config check that stops it, in one line.
  assert 'no compilation cache (--compilation_cache_dir)' in out.stderr
  assert out.returncode == 1 and 'error: config.keep_checkpoints = 0' in out.stderr


def test_final_evaluation_reports_ap(reference_run):
  workdir, _, stdout = reference_run
  assert re.search(r'final evaluation \(6 images\): AP [0-9.]+', stdout)
  for name in ('eval_12_metrics.json', 'eval_12_detections.json'):
    assert os.path.exists(os.path.join(workdir, name))


def test_progress_and_eval_pictures_are_logged(reference_run):
  import glob
  import tensorflow as tf
  workdir, log, _ = reference_run
  assert re.search(r'progress: step 12 of 12 \(100%\), [0-9.]+ steps/s, ETA 00:00:00', log)
  tags = set()
  for path in glob.glob(os.path.join(workdir, 'tensorboard', '*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      tags.update(v.tag for v in event.summary.value)
  pictures = [t for t in tags if t.startswith('eval/detections/')]
  assert len(pictures) == 4, sorted(tags)


def test_demo_data_preparation_shows_progress_and_a_short_summary(reference_run):
  """The run made its synthetic data: a bar with a total while generating, the per-split counts
  at the end, no log line per image without boxes and no TFDS banner."""
  _, log, stdout = reference_run
  assert 'generating train: 100%' in log and '24/24' in log
  assert re.search(r'train: 24 images, \d+ boxes written', log), log[:3000]
  assert 'image_without_boxes: image id' not in log
  assert 'Downloading and preparing' not in stdout + log


def test_sigkill_then_resume_matches_uninterrupted_run(reference_run, data_dir, tmp_path):
  workdir = str(tmp_path / 'killed')
  # An evaluation after step 5 gives the asynchronous checkpoint of step 4 time to be finalized
  # before the kill (steps of the tiny model take milliseconds); it does not change the training.
  proc, log = start_and_wait(workdir, data_dir, r'step 6: ', '--config.eval_every=5')
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert '4' in os.listdir(os.path.join(workdir, 'checkpoints'))
  assert os.path.exists(os.path.join(workdir, 'LOCK'))  # left by the killed run: stale
  out = run(workdir, data_dir)
  assert 'taking over the lock' in out.stderr
  assert re.search(r'resuming at step (4|8)', out.stderr)
  assert not os.path.exists(os.path.join(workdir, 'LOCK'))  # released at the end
  step, value = checksum(out.stderr)
  assert step == 12
  assert value == pytest.approx(checksum(reference_run[1])[1], rel=1e-6)


def test_sigterm_saves_and_exits_cleanly(data_dir, tmp_path):
  workdir = str(tmp_path / 'term')
  proc, log = start_and_wait(workdir, data_dir, r'step 2: ', '--config.data.aspect_buckets=False')
  proc.send_signal(signal.SIGTERM)
  rest, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, (log + rest)[-4000:]
  saved = re.search(r'checkpoint of step (\d+) written after SIGTERM', log + rest)
  assert saved, (log + rest)[-4000:]
  step = int(saved.group(1))
  assert 2 <= step < 12
  assert str(step) in os.listdir(os.path.join(workdir, 'checkpoints'))
  assert os.path.isdir(os.path.join(workdir, 'data_state', 'process_0', f'step_{step}'))


def test_corrupted_latest_checkpoint_is_skipped(reference_run, data_dir, tmp_path):
  import shutil
  workdir = str(tmp_path / 'corrupt')
  shutil.copytree(reference_run[0], workdir)
  # Damage every file of step 12's state; a half-written step (orbax's tmp dir) is ignored too.
  for root, _, files in os.walk(os.path.join(workdir, 'checkpoints', '12')):
    for f in files:
      with open(os.path.join(root, f), 'wb') as fh:
        fh.write(b'garbage')
  os.makedirs(os.path.join(workdir, 'checkpoints', '16.orbax-checkpoint-tmp-1234'))
  out = run(workdir, data_dir, '--config.num_train_steps=14')
  assert 'checkpoint of step 12' in out.stderr and 'cannot be restored' in out.stderr
  assert 'resuming at step 8' in out.stderr
  assert checksum(out.stderr)[0] == 14
  steps = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
  assert '12.unrestorable' in steps and '12' in steps and '14' in steps  # 12 written anew


def test_second_run_on_a_live_workdir_is_refused_naming_the_holder(reference_run, data_dir,
                                                                   tmp_path):
  import json
  import shutil
  workdir = str(tmp_path / 'busy')
  shutil.copytree(reference_run[0], workdir)
  before = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
  holder = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])
  try:  # a live process of this host holds the lock, as a running train.py would
    with open(os.path.join(workdir, 'LOCK'), 'w') as f:
      json.dump({'host': socket.gethostname(), 'pid': holder.pid, 'started': 'earlier',
                 'command': 'train.py --workdir=busy'}, f)
    out = run(workdir, data_dir, '--config.num_train_steps=16', check=False)
  finally:
    holder.kill()
  assert out.returncode == 1
  assert f'is in use by process {holder.pid} on host {socket.gethostname()}' in out.stderr
  assert 'Traceback' not in out.stderr
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == before  # nothing touched
  assert os.path.exists(os.path.join(workdir, 'LOCK'))  # the holder's lock stays


def test_workdir_that_cannot_be_created_is_one_line(data_dir, tmp_path):
  (tmp_path / 'a_file').write_text('not a folder')  # permissions would not stop root
  out = run(str(tmp_path / 'a_file' / 'w'), data_dir, check=False)
  assert out.returncode == 1 and 'Traceback' not in out.stderr, out.stderr[-3000:]
  assert 'the workdir cannot be written' in out.stderr and 'a_file/w' in out.stderr


@pytest.fixture
def small_disk(tmp_path):
  """A 3 MB tmpfs (where mounting is allowed: root in a container that permits it)."""
  disk = tmp_path / 'disk'
  disk.mkdir()
  mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', str(disk)],
                           capture_output=True, text=True)
  if mounted.returncode != 0:
    pytest.skip(f'cannot mount a small tmpfs here ({mounted.stderr.strip()[:100]}); the '
                'in-process test below covers the same error path')
  try:
    yield disk
  finally:
    subprocess.run(['umount', '-l', str(disk)], capture_output=True)


def test_disk_full_at_a_checkpoint_is_one_line(data_dir, small_disk):
  workdir = small_disk / 'run'
  workdir.mkdir()
  with open(small_disk / 'filler', 'wb') as f:  # leave about 64 KB: config.json, LOCK, logs
    f.write(b'\0' * (3 * 2 ** 20 - 64 * 2 ** 10))
  out = run(str(workdir), data_dir, '--config.data.aspect_buckets=False', check=False)
  assert out.returncode == 1, out.stderr[-3000:]
  lines = [line for line in out.stderr.splitlines() if line.startswith('error: ')]
  assert len(lines) == 1 and 'Traceback' not in out.stderr, out.stderr[-3000:]
  assert 'checkpoint of step 4 could not be written' in lines[0], lines[0]
  assert 'free space or fix permissions' in lines[0]


class FailingCheckpointer:
  """Writes like a full disk: every save and close raises ENOSPC."""

  def __init__(self, directory):
    self.directory = directory

  def save(self, *args):
    raise OSError(28, 'No space left on device')

  def close(self):
    raise OSError(28, 'No space left on device')


def test_checkpoint_write_failure_is_one_line_saying_what_is_safe(tmp_path):
  import jax.numpy as jnp
  from fcos_jax import trainer
  from fcos_jax.weights import checkpoints
  ckpt = checkpoints.Checkpointer(str(tmp_path))
  ckpt.save(4, {'w': jnp.ones(3)})
  ckpt.close()
  failing = FailingCheckpointer(ckpt.directory)
  try:
    failing.save(8)
  except OSError as e:
    error = trainer.checkpoint_write_error(failing, 8, e)
  assert str(error) == (f'checkpoint of step 8 could not be written to {ckpt.directory} '
                        '(OSError: No space left on device); the checkpoints [4] are complete: '
                        'free space or fix permissions, then run the same command to resume')
  with pytest.raises(trainer.errors.CheckpointError, match='step 8 could not be written'):
    trainer._close(failing, 8)  # a failing final (async) write is the run's error
  with pytest.raises(KeyError):  # ... unless another error is already leaving the loop
    try:
      raise KeyError('the first error')
    finally:
      trainer._close(failing, 8)


def free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_on_loopback_finish_with_identical_parameters(data_dir, tmp_path):
  workdir = str(tmp_path / 'multi')
  address = f'127.0.0.1:{free_port()}'
  procs = [subprocess.Popen(
      command(workdir, data_dir, f'--coordinator_address={address}', '--num_processes=2',
              f'--process_id={i}', '--config.num_train_steps=6', '--config.checkpoint_every=3',
              '--config.data.aspect_buckets=False'),
      cwd=ROOT, env=env(devices=2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  logs = [p.communicate(timeout=600)[0] for p in procs]
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-5000:]
    assert 'process 0 of 2' in log or 'process 1 of 2' in log
    assert '4 global devices' in log
  sums = [checksum(log) for log in logs]
  assert sums[0][0] == sums[1][0] == 6
  assert sums[0][1] == sums[1][1]
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['3', '6']


def _start_pair(workdir, data_dir, *extra):
  address = f'127.0.0.1:{free_port()}'
  return [subprocess.Popen(
      command(workdir, data_dir, f'--coordinator_address={address}', '--num_processes=2',
              f'--process_id={i}', '--config.data.aspect_buckets=False',
              *extra),
      cwd=ROOT, env=env(devices=2), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]


def _wait_for(proc, pattern):
  """Reads `proc`'s log until `pattern` appears; returns the log so far."""
  log = ''
  deadline = time.time() + 300
  while time.time() < deadline:
    line = proc.stdout.readline()
    if not line and proc.poll() is not None:
      break
    log += line
    if re.search(pattern, line):
      return log
  raise AssertionError(f'never saw {pattern!r}:\n{log[-4000:]}')


def _preempted_step(proc, log_so_far):
  rest = proc.communicate(timeout=600)[0]
  log = log_so_far + rest
  assert proc.returncode == 0, log[-5000:]
  saved = re.findall(r'checkpoint of step (\d+) written after SIGTERM', log)
  assert len(saved) == 1, log[-5000:]
  return int(saved[0])


@pytest.mark.slow  # 6 min on 2 cores: four two-process runs
def test_two_processes_preempted_stop_at_one_step_and_resume_bit_equal(data_dir, tmp_path):
  """SIGTERM to one process of two, then to both: each time both save the same step (JAX's
  preemption service decides, not a flag per process) and exit 0; the resumed run ends with the
  parameters of an uninterrupted one."""
  steps = ('--config.num_train_steps=60', '--config.checkpoint_every=100',
           '--config.log_every=1')
  reference = _start_pair(str(tmp_path / 'reference'), data_dir, *steps)
  logs = [p.communicate(timeout=600)[0] for p in reference]
  assert all(p.returncode == 0 for p in reference), logs[0][-3000:] + logs[1][-3000:]
  want = checksum(logs[0])
  assert want[0] == 60 and checksum(logs[1]) == want
  workdir = str(tmp_path / 'preempted')
  for signalled in ((1,), (0, 1)):
    procs = _start_pair(workdir, data_dir, *steps)
    started = [_wait_for(procs[0], r'step \d+: '), '']
    for i in signalled:
      procs[i].send_signal(signal.SIGTERM)
    saved = [_preempted_step(p, log) for p, log in zip(procs, started)]
    assert saved[0] == saved[1] < 60, saved
    assert str(saved[0]) in os.listdir(os.path.join(workdir, 'checkpoints'))
  procs = _start_pair(workdir, data_dir, *steps)
  logs = [p.communicate(timeout=600)[0] for p in procs]
  assert all(p.returncode == 0 for p in procs), logs[0][-3000:]
  assert f'resuming at step {saved[0]}' in logs[0]
  assert checksum(logs[0]) == checksum(logs[1]) == want


@pytest.mark.parametrize('override,message', [
    ('--config.batch_sise=4', 'batch_sise'),
    ('--config.batch_size=four', 'batch_size'),
])
def test_bad_config_overrides_name_the_key(tmp_path, data_dir, override, message):
  out = run(str(tmp_path / 'bad'), data_dir, override, check=False)
  assert out.returncode != 0
  assert message in out.stderr



def test_evaluate_and_export_restore_the_workdir(reference_run, data_dir, tmp_path):
  """evaluate.py --workdir restores the final step's weights: the same AP as the evaluation at
  the end of training; export.py writes an artifact from the same workdir."""
  import json
  workdir = reference_run[0]
  with open(os.path.join(workdir, 'eval_12_metrics.json')) as f:
    want = json.load(f)
  common = [f'--config={CONFIG}', f'--workdir={workdir}', f'--config.data.data_dir={data_dir}']
  out = subprocess.run([sys.executable, os.path.join(ROOT, 'evaluate.py'), *common,
                        f'--out={tmp_path}'], cwd=ROOT, env=env(), capture_output=True,
                       text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-4000:]
  with open(tmp_path / 'offline_eval_12_metrics.json') as f:
    got = json.load(f)
  assert got['num_images'] == want['num_images'] == 6
  for name in ('AP', 'AP50', 'AR100'):
    assert got[name] == pytest.approx(want[name], abs=1e-6), name
  out = subprocess.run([sys.executable, os.path.join(ROOT, 'export.py'), *common,
                        f'--out={tmp_path / "export"}'], cwd=ROOT, env=env(),
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-4000:]
  assert 'exported checkpoint step 12' in out.stdout
  assert os.path.exists(tmp_path / 'export' / 'metadata.json')
  out = subprocess.run([sys.executable, os.path.join(ROOT, 'export.py'), *common,
                        f'--out={tmp_path / "export_tf"}', '--format=savedmodel'], cwd=ROOT,
                       env=env(), capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-4000:]
  assert '(savedmodel, float32): saved_model;' in out.stdout
  assert os.path.exists(tmp_path / 'export_tf' / 'saved_model' / 'saved_model.pb')


def test_fine_tuning_a_detector_of_other_classes(data_dir, tmp_path):
  """train.py from a 91-way detector's params with init_skip_mismatched: it trains, and the log
  lists the class head as kept at its fresh init."""
  import jax
  import jax.numpy as jnp
  import orbax.checkpoint as ocp
  from fcos_jax.models import fcos
  from tests import tiny_config
  source = tiny_config.get_config().model
  source.num_classes = 91
  model = fcos.create_model(source)
  variables = jax.jit(model.init)(jax.random.key(1), jnp.zeros((1, 64, 64, 3)))
  path = str(tmp_path / 'detector91')
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path, jax.device_get(variables))
  out = run(str(tmp_path / 'w'), data_dir, f'--config.init_checkpoint={path}',
            '--config.init_skip_mismatched=True', '--config.num_train_steps=2')
  assert re.search(r"2 tensor\(s\) of .* keep their fresh init: .*cls_logits", out.stderr)
  assert checksum(out.stderr)[0] == 2


def test_workdir_alone_brings_the_runs_config_and_class_names(reference_run, tmp_path):
  """evaluate.py --workdir W needs no --config: it scores the run exactly as the run's own final
  evaluation did; an override that does not fit the checkpoint names the differing key."""
  import json
  workdir = reference_run[0]
  cats = json.load(open(os.path.join(workdir, 'categories.json')))
  assert [c['name'] for c in cats][:2] and all('id' in c for c in cats)
  out = subprocess.run([sys.executable, os.path.join(ROOT, 'evaluate.py'),
                        f'--workdir={workdir}', f'--out={tmp_path}'],
                       cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  offline = json.load(open(tmp_path / 'offline_eval_12_metrics.json'))
  final = json.load(open(os.path.join(workdir, 'eval_12_metrics.json')))
  assert offline['num_images'] == final['num_images'] > 0
  assert abs(offline['AP'] - final['AP']) < 1e-6 and abs(offline['AR100'] - final['AR100']) < 1e-6
  k = json.load(open(os.path.join(workdir, 'config.json')))['model']['num_classes']
  bad = subprocess.run([sys.executable, os.path.join(ROOT, 'evaluate.py'),
                        f'--workdir={workdir}', f'--config.model.num_classes={k + 1}'],
                       cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=600)
  last = bad.stderr.strip().splitlines()[-1]
  assert bad.returncode == 1 and 'Traceback' not in bad.stderr, bad.stderr[-3000:]
  assert last.startswith('error: checkpoint of step 12') and f'model.num_classes: {k} -> {k + 1}' \
      in last, last
