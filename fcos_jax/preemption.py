"""Preemption: SIGTERM (TPU/cloud preemption) asks the training loop to save and exit at the
next step boundary, at the same step on every process.

One process: a SIGTERM handler of our own sets a flag. Several processes: JAX's preemption
service decides (`multihost_utils.reached_preemption_sync_point`): `jax.distributed.initialize`
installs its SIGTERM notifier, a notice reaching any process is passed to all, and every process
returns True at the same step (one past the largest step any process had reached). A handler of
our own would replace that notifier, and a per-process flag would let processes stop at
different steps, the others then waiting forever in a collective.
"""

import logging
import signal

import jax


class Preemption:
  """`reached(step)` says whether to save and exit after `step`; it must be called after every
  step on every process. `restore` puts the previous SIGTERM handler back."""

  def __init__(self):
    self.requested = False
    self._previous = None
    self._multi = jax.process_count() > 1
    if not self._multi:
      self._previous = signal.signal(signal.SIGTERM, self._handler)

  def _handler(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM received: saving a checkpoint and exiting')
    self.requested = True

  def reached(self, step: int) -> bool:
    if not self._multi:
      return self.requested
    from jax.experimental import multihost_utils
    if multihost_utils.reached_preemption_sync_point(step):
      logging.warning('preemption notice: every process saves a checkpoint at step %d and exits',
                      step)
      self.requested = True
    return self.requested

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
