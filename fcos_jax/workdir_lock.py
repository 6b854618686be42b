"""One owner per workdir: process 0 of a training run holds `<workdir>/LOCK` (host, pid, start,
command) for the run's life, so a second run on the same workdir is refused before it can set
aside or overwrite the first one's checkpoints. A lock left by a killed process on this host is
recognized as stale and taken over."""

import contextlib
import datetime
import json
import logging
import os
import socket
import sys

import jax
import numpy as np
import tensorflow as tf

from fcos_jax import barriers, errors

LOCK_NAME = 'LOCK'


class WorkdirInUseError(errors.UserError):
  """Another live run holds the workdir."""


def lock_path(workdir: str) -> str:
  return os.path.join(workdir, LOCK_NAME)


def _holder_record() -> dict:
  return {'host': socket.gethostname(), 'pid': os.getpid(),
          'started': datetime.datetime.now().isoformat(timespec='seconds'),
          'command': ' '.join(sys.argv)[:500]}


def _read(path: str) -> dict:
  try:
    with tf.io.gfile.GFile(path) as f:
      holder = json.load(f)
    return holder if isinstance(holder, dict) else {}
  except (OSError, ValueError, tf.errors.OpError):
    return {}  # being written, or damaged: treated as held by an unknown run


def _alive(pid) -> bool:
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return False
  except (PermissionError, ValueError, TypeError, OverflowError):
    return True  # another user's process, or a pid we cannot check: assume it runs
  return True


def _is_stale(holder: dict) -> bool:
  """Held by a process of this host that no longer runs (a lock on another host is never
  judged from here: its process cannot be seen)."""
  return holder.get('host') == socket.gethostname() and not _alive(holder.get('pid'))


def _create(path: str, record: dict) -> bool:
  """Creates the lock file if none exists (atomic on a local disk; on a cloud path a check then
  a write, which narrows but does not close the window)."""
  text = json.dumps(record, indent=1)
  if '://' in path:
    if tf.io.gfile.exists(path):
      return False
    with tf.io.gfile.GFile(path, 'w') as f:
      f.write(text)
    return True
  try:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
  except FileExistsError:
    return False
  with os.fdopen(fd, 'w') as f:
    f.write(text)
  return True


def acquire(workdir: str) -> dict:
  """Takes the workdir's lock for this process; returns the record written. Raises
  WorkdirInUseError naming the holder when a live run holds it."""
  path, record = lock_path(workdir), _holder_record()
  for _ in range(2):  # a second try after taking a stale lock away
    try:
      tf.io.gfile.makedirs(workdir)
      created = _create(path, record)
    except (OSError, tf.errors.OpError) as e:
      raise errors.UserError(f'{workdir}: the workdir cannot be written '
                             f'({errors.first_line(e)})') from None
    if created:
      return record
    holder = _read(path)
    if not _is_stale(holder):
      who = (f"process {holder.get('pid', '?')} on host {holder.get('host', '?')} since "
             f"{holder.get('started', '?')}: `{holder.get('command', '?')}`") if holder else \
          'an unknown run (the lock file is unreadable)'
      raise WorkdirInUseError(
          f'{workdir} is in use by {who}. Wait for that run to end or use another --workdir; '
          f'if it is gone (a crashed host), delete {path}.')
    logging.warning('taking over the lock of %s from process %s, which no longer runs',
                    workdir, holder.get('pid'))
    tf.io.gfile.remove(path)
  raise WorkdirInUseError(f'{workdir}: another run took the lock {path} while this one '
                          'started; use another --workdir')


def release(workdir: str, record: dict) -> None:
  """Removes the lock if it is still this process's (never another run's)."""
  path = lock_path(workdir)
  if _read(path) == record:
    tf.io.gfile.remove(path)


@contextlib.contextmanager
def held(workdir: str):
  """The workdir locked by process 0 for the block; every process raises the same one-line
  error when it is held elsewhere (so no process waits alone on a collective)."""
  record, failure = None, ''
  existed = tf.io.gfile.exists(workdir)
  if jax.process_index() == 0:
    try:
      record = acquire(workdir)
    except WorkdirInUseError as e:
      failure = str(e)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    barriers.wait_for_all('workdir_lock_decided')
    ok = multihost_utils.broadcast_one_to_all(np.int32(not failure))
    if not int(ok) and not failure:
      failure = f'{workdir} is in use by another run (see process 0)'
  if failure:
    raise WorkdirInUseError(failure)
  try:
    yield
  finally:
    if record is not None:
      release(workdir, record)
      if not existed and '://' not in workdir and os.path.isdir(workdir) and \
          not os.listdir(workdir):
        os.rmdir(workdir)  # a run that stopped before writing anything leaves no folder
