"""The training progress line: the ETA's rate leaves out the wait for the first step."""

import logging

import ml_collections

from fcos_jax import train_log


class _Clock:
  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


class _Trackers:
  def log(self, step, scalars):
    pass


def test_eta_excludes_the_wait_for_the_first_step(monkeypatch, caplog):
  """60 s of compilation, then 1 s a step: at step 10 of 40, 30 steps (30 s) are left; a rate
  from the run's start would say 30 * 69 / 10 = 207 s."""
  clock = _Clock()
  monkeypatch.setattr(train_log.time, 'perf_counter', clock)
  config = ml_collections.ConfigDict(dict(log_every=10, num_train_steps=40, batch_size=2,
                                          grad_accum_steps=1))
  reporter = train_log.Reporter(config, lambda step: 0.1, 0, _Trackers())
  clock.now = 60.0  # compiled: step 1 done
  for step in range(1, 11):
    reporter.add({'loss': 1.0}, 0)
    clock.now += 1.0
  clock.now -= 1.0  # step 10 ends 9 s after step 1
  rate, eta = reporter.eta(10)
  assert rate == 1.0 and eta == 30.0
  with caplog.at_level(logging.INFO):
    reporter.report(10)
  assert 'progress: step 10 of 40 (25%), 1.00 steps/s, ETA 00:00:30' in caplog.text
  clock.now += 10.0  # 10 more steps at the same rate
  assert reporter.eta(20) == (1.0, 20.0)


def test_eta_at_the_first_step_uses_the_run_start(monkeypatch):
  clock = _Clock()
  monkeypatch.setattr(train_log.time, 'perf_counter', clock)
  config = ml_collections.ConfigDict(dict(log_every=1, num_train_steps=5, batch_size=1,
                                          grad_accum_steps=1))
  reporter = train_log.Reporter(config, lambda step: 0.1, 0, _Trackers())
  clock.now = 4.0
  reporter.add({'loss': 1.0}, 0)
  assert reporter.eta(1) == (0.25, 16.0)  # no interval after the first step yet
