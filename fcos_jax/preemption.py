"""Preemption: SIGTERM (TPU/cloud preemption) asks the training loop to save and exit at the
next step boundary."""

import logging
import signal

import jax


class Preemption:
  """Installs a SIGTERM handler for the lifetime of a training loop (`restore` puts the previous
  one back); `reached(step)` says whether to save and exit after `step`."""

  def __init__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handler)

  def _handler(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM received: saving a checkpoint and exiting')
    self.requested = True

  def reached(self, step: int) -> bool:
    if jax.process_count() > 1:
      # All processes must agree on the step: the coordination service decides.
      from jax.experimental import multihost_utils
      try:
        return multihost_utils.reached_preemption_sync_point(step) or self.requested
      except Exception:  # noqa: BLE001 - no preemption service: fall back to the signal flag
        pass
    return self.requested

  def restore(self):
    signal.signal(signal.SIGTERM, self._previous)
