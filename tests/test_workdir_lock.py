"""The workdir lock: held, refused naming the holder, stale locks taken over, only one's own
lock released (train.py's refusal through the real command is in test_trainer.py)."""

import json
import logging
import os
import socket
import subprocess
import sys

import pytest

from fcos_jax import errors, workdir_lock


def write_lock(workdir, **holder):
  os.makedirs(workdir, exist_ok=True)
  with open(workdir_lock.lock_path(workdir), 'w') as f:
    json.dump(holder, f)


def dead_pid():
  proc = subprocess.Popen([sys.executable, '-c', 'pass'])
  proc.wait()
  return proc.pid


def test_second_acquire_is_refused_naming_the_holder(tmp_path):
  workdir = str(tmp_path / 'w')
  record = workdir_lock.acquire(workdir)
  assert record['pid'] == os.getpid()
  with pytest.raises(workdir_lock.WorkdirInUseError) as e:
    workdir_lock.acquire(workdir)
  assert isinstance(e.value, errors.UserError)
  message = str(e.value)
  assert f'process {os.getpid()} on host {socket.gethostname()}' in message
  assert workdir in message and '\n' not in message


def test_stale_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path, caplog):
  workdir = str(tmp_path)
  pid = dead_pid()
  write_lock(workdir, host=socket.gethostname(), pid=pid, started='x', command='train.py')
  with caplog.at_level(logging.WARNING):
    record = workdir_lock.acquire(workdir)
  assert f'from process {pid}, which no longer runs' in caplog.text
  with open(workdir_lock.lock_path(workdir)) as f:
    assert json.load(f) == record


def test_lock_of_another_host_is_never_judged_stale(tmp_path):
  write_lock(str(tmp_path), host='some-other-host', pid=dead_pid(), started='x', command='c')
  with pytest.raises(workdir_lock.WorkdirInUseError, match='on host some-other-host'):
    workdir_lock.acquire(str(tmp_path))


def test_unreadable_lock_is_refused_and_kept(tmp_path):
  path = workdir_lock.lock_path(str(tmp_path))
  with open(path, 'w') as f:
    f.write('{not json')
  with pytest.raises(workdir_lock.WorkdirInUseError, match='unknown run'):
    workdir_lock.acquire(str(tmp_path))
  assert open(path).read() == '{not json'


def test_release_removes_only_ones_own_lock(tmp_path):
  workdir = str(tmp_path)
  record = workdir_lock.acquire(workdir)
  workdir_lock.release(workdir, dict(record, pid=record['pid'] + 1))  # not ours: kept
  assert os.path.exists(workdir_lock.lock_path(workdir))
  workdir_lock.release(workdir, record)
  assert not os.path.exists(workdir_lock.lock_path(workdir))


def test_held_releases_on_error_and_refuses_while_held(tmp_path):
  workdir = str(tmp_path)
  with pytest.raises(RuntimeError):
    with workdir_lock.held(workdir):
      assert os.path.exists(workdir_lock.lock_path(workdir))
      with pytest.raises(workdir_lock.WorkdirInUseError):
        with workdir_lock.held(workdir):
          pass
      raise RuntimeError('the run failed')
  assert not os.path.exists(workdir_lock.lock_path(workdir))
