"""Periodic reporting of a training run: the step metrics averaged since the last report, the
learning rate, throughput, progress and ETA, to the log and TensorBoard."""

import logging
import time
from typing import Any, Dict, List, Optional

import jax
import numpy as np
import tensorflow as tf


def log_scalars(writer, step: int, scalars: Dict[str, float]) -> None:
  """One log line, and the scalars in TensorBoard (`writer` None: the log only)."""
  logging.info('step %d: %s', step, ', '.join(f'{k}={v:.4g}' for k, v in scalars.items()))
  if writer is not None:
    with writer.as_default():
      for k, v in scalars.items():
        tf.summary.scalar(k, v, step=step)
    writer.flush()


def _duration(seconds: float) -> str:
  return (time.strftime('%H:%M:%S', time.gmtime(seconds)) if seconds < 86400
          else f'{seconds / 86400:.1f} days')


class Reporter:
  """Collects each step's metrics (device arrays, fetched only when reporting: no host round
  trip per step) and reports every `config.log_every` steps and at the last step."""

  def __init__(self, config, schedule, start_step: int, writer: Optional[Any]):
    self._config, self._schedule, self._writer = config, schedule, writer
    self._pending: List[Dict[str, Any]] = []
    self._truncated = 0
    self._run_start, self._run_start_step = time.perf_counter(), start_step
    self._last_time, self._last_step = time.perf_counter(), start_step

  def add(self, metrics: Dict[str, Any], truncated_boxes: int) -> None:
    self._pending.append(metrics)
    self._truncated += truncated_boxes

  def due(self, step: int) -> bool:
    return step % self._config.log_every == 0 or step == self._config.num_train_steps

  def report(self, step: int) -> None:
    """Averages since the last report: losses, gradient norm, positives; the learning rate of
    the last update, images/s, seconds per step and boxes truncated to `data.max_boxes`."""
    config = self._config
    values = jax.device_get(self._pending)
    scalars = {k: float(np.mean([m[k] for m in values])) for k in values[0]}
    elapsed = time.perf_counter() - self._last_time
    steps = step - self._last_step
    scalars.update(learning_rate=float(self._schedule((step - 1) // config.grad_accum_steps)),
                   images_per_second=steps * config.batch_size / elapsed,
                   step_seconds=elapsed / steps, truncated_boxes=float(self._truncated))
    if jax.process_index() == 0:
      log_scalars(self._writer, step, scalars)
      rate = (step - self._run_start_step) / (time.perf_counter() - self._run_start)
      logging.info('progress: step %d of %d (%.0f%%), %.2f steps/s, ETA %s', step,
                   config.num_train_steps, 100 * step / config.num_train_steps, rate,
                   _duration((config.num_train_steps - step) / rate))
    self._pending, self._truncated = [], 0
    self._last_time, self._last_step = time.perf_counter(), step
