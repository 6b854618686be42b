"""Periodic reporting of a training run: the step metrics averaged since the last report, the
learning rate, throughput, progress and ETA, to the log and the run's trackers."""

import logging
import time
from typing import Any, Dict, List, Tuple

import jax
import numpy as np


def log_scalars(trackers, step: int, scalars: Dict[str, float]) -> None:
  """One log line, and the scalars to every tracker of the run."""
  logging.info('step %d: %s', step, ', '.join(f'{k}={v:.4g}' for k, v in scalars.items()))
  trackers.log(step, scalars)


def _duration(seconds: float) -> str:
  return (time.strftime('%H:%M:%S', time.gmtime(seconds)) if seconds < 86400
          else f'{seconds / 86400:.1f} days')


class Reporter:
  """Collects each step's metrics (device arrays, fetched only when reporting: no host round
  trip per step) and reports every `config.log_every` steps and at the last step."""

  def __init__(self, config, schedule, start_step: int, trackers: Any):
    self._config, self._schedule, self._trackers = config, schedule, trackers
    self._pending: List[Dict[str, Any]] = []
    self._truncated = 0
    self._run_start, self._run_start_step = time.perf_counter(), start_step
    self._first_step_time = None  # when the run's first step was through (compiled and run)
    self._last_time, self._last_step = time.perf_counter(), start_step
    self.reported: List[Tuple[int, float]] = []  # (steps, seconds) of each report

  def add(self, metrics: Dict[str, Any], truncated_boxes: int) -> None:
    if self._first_step_time is None:
      self._first_step_time = time.perf_counter()
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
      log_scalars(self._trackers, step, scalars)
      rate, eta = self.eta(step)
      logging.info('progress: step %d of %d (%.0f%%), %.2f steps/s, ETA %s', step,
                   config.num_train_steps, 100 * step / config.num_train_steps, rate,
                   _duration(eta))
    self._pending, self._truncated = [], 0
    self._last_time, self._last_step = time.perf_counter(), step
    self.reported.append((steps, elapsed))

  def eta(self, step: int) -> Tuple[float, float]:
    """(steps/s, seconds left) at `step`, the rate measured from the run's first step on: the
    wait for the first step (restore, input warm-up, compilation) is not a step's time. With
    no step after the first yet, from the run's start."""
    start, start_step = self._run_start, self._run_start_step
    if self._first_step_time is not None and step > self._run_start_step + 1:
      start, start_step = self._first_step_time, self._run_start_step + 1
    rate = (step - start_step) / max(time.perf_counter() - start, 1e-9)
    return rate, (self._config.num_train_steps - step) / rate

  def summary(self) -> Dict[str, float]:
    """Seconds per step and images/s over the reports of this process's run."""
    reports = self.reported[1:] or self.reported  # the first one waited for compilation
    steps = sum(n for n, _ in reports)
    seconds = sum(t for _, t in reports)
    if not steps:
      return {}
    return {'train_step_seconds': seconds / steps,
            'train_images_per_second': steps * self._config.batch_size / seconds}


def run_summary(result: Dict[str, Any], workdir: str, program: str, config_args: str) -> str:
  """What a finished run reached, where its best weights are and how to use them: the lines
  `train.py` prints last. `program(name)` spells another program's command ('python
  evaluate.py' in a checkout, 'fcos-evaluate' when installed)."""
  lines = [f'run summary ({workdir}):']
  if 'best_step' in result:
    lines.append(f'  best {result["best_metric"]} {result["best_value"]:.4f} at step '
                 f'{result["best_step"]}; weights in {result["best_weights"]}')
  if 'AP' in result:
    lines.append(f'  last evaluation: AP {result["AP"]:.4f}, AP50 {result["AP50"]:.4f} at step '
                 f'{result["step"]}')
  if 'stopped_early_at' in result:
    lines.append(f'  stopped early at step {result["stopped_early_at"]} (early_stopping_patience)')
  if 'train_step_seconds' in result:
    lines.append(f'  training: {result["train_step_seconds"]:.3f} s a step, '
                 f'{result["train_images_per_second"]:.1f} images/s (after compilation)')
  step = ' --step best' if 'best_step' in result else ''
  lines.append(f'  evaluate: {program("evaluate")} {config_args} --workdir {workdir}{step}')
  lines.append(f'  export:   {program("export")} {config_args} --workdir {workdir}{step} '
               f'--out {workdir.rstrip("/")}_export')
  lines.append(f'  curves:   {workdir}/curves.png, metrics in {workdir}/metrics.csv')
  return '\n'.join(lines)
