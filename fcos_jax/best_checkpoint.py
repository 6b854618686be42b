"""The best evaluated weights of a run and early stopping.

At each evaluation during training, `config.best_metric` (e.g. AP) is compared with the best so
far: a better value writes the evaluated weights (EMA ones when the run keeps them) to
`workdir/best/`, a params checkpoint outside the `keep_checkpoints` rotation that
`--step best` of evaluate, export and predict reads. `config.early_stopping_patience`
evaluations in a row that improve by no more than `config.early_stopping_min_delta` stop the
run. Every evaluated value is kept in `workdir/best.json`, so a resume knows the best value and
the patience count at its step.
"""

import dataclasses
import json
import logging
import os
import shutil
from typing import Any, Dict, List, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from fcos_jax import barriers
from fcos_jax.weights.checkpoints import best_weights

RECORD_FILE = 'best.json'


@dataclasses.dataclass
class Standing:
  """Where a run stands after its evaluations so far."""
  best_step: Optional[int]
  best_value: Optional[float]
  without_improvement: int  # evaluations since the last improvement by more than min_delta


def standing(history: List[Tuple[int, float]], min_delta: float) -> Standing:
  """Best value, its step and the patience count of a list of (step, value) evaluations."""
  best_step, best_value, count = None, None, 0
  for step, value in history:
    if best_value is None or value > best_value:
      improved = best_value is None or value > best_value + min_delta
      best_step, best_value = step, value
      count = 0 if improved else count + 1
    else:
      count += 1
  return Standing(best_step, best_value, count)


class BestTracker:
  """Records evaluations, keeps the best weights, says when to stop (process 0 writes)."""

  def __init__(self, config, workdir: str, start_step: int):
    self.metric = config.best_metric
    self.patience = config.early_stopping_patience
    self.min_delta = float(config.early_stopping_min_delta)
    self.workdir = workdir
    self.history: List[Tuple[int, float]] = []
    path = os.path.join(workdir, RECORD_FILE)
    if os.path.exists(path):
      with open(path) as f:
        record = json.load(f)
      if record.get('metric') == self.metric:
        # A resume trains the later steps again: their evaluations are taken again too.
        self.history = [(int(s), float(v)) for s, v in record['history'] if int(s) <= start_step]

  @property
  def standing(self) -> Standing:
    return standing(self.history, self.min_delta)

  def should_stop(self) -> bool:
    return bool(self.patience) and self.standing.without_improvement >= self.patience

  def update(self, step: int, metrics: Dict[str, Any], variables) -> bool:
    """Records `metrics` of `step`; writes `variables` as the best weights when they are;
    returns whether they are. Every process calls it (orbax writes collectively)."""
    value = float(metrics.get(self.metric, float('nan')))  # scored on process 0 only
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      barriers.wait_for_all(f'scored_{step}')  # process 0 may score for minutes
      value = float(multihost_utils.broadcast_one_to_all(np.float32(value)))
    if not np.isfinite(value):
      return False
    before = self.standing.best_value
    self.history.append((step, value))
    best = before is None or value > before
    if best:
      self._write_weights(step, variables)
    if jax.process_index() == 0:
      s = self.standing
      record = {'metric': self.metric, 'best_step': s.best_step, 'best_value': s.best_value,
                'evaluations_without_improvement': s.without_improvement,
                'weights': best_weights(self.workdir), 'history': self.history}
      tmp = os.path.join(self.workdir, RECORD_FILE + '.tmp')
      with open(tmp, 'w') as f:
        json.dump(record, f, indent=1)
      os.replace(tmp, os.path.join(self.workdir, RECORD_FILE))
    return best

  def _write_weights(self, step: int, variables) -> None:
    """The weights into `best/`, replacing the previous best only once the new one is whole."""
    target = os.path.abspath(best_weights(self.workdir))
    partial = f'{target}.step_{step}.partial'
    with ocp.StandardCheckpointer() as ckptr:
      ckptr.save(partial, variables, force=True)
      ckptr.wait_until_finished()
    if jax.process_index() == 0:
      old = f'{target}.previous'
      if os.path.exists(target):
        os.replace(target, old)
      os.replace(partial, target)
      shutil.rmtree(old, ignore_errors=True)
      logging.info('best %s so far at step %d: weights in %s', self.metric, step, target)
    barriers.wait_for_all(f'best_weights_written_{step}')
