"""The compiled train step of each bucket shape: compiled ahead in a background thread on a fresh
run, so that XLA's compilation overlaps data preparation and the pipeline's start instead of
holding up the loop when a bucket first appears; compiled on first sight otherwise (a resume
loads its programs from the compilation cache). Compile times: docs/performance.md."""

import concurrent.futures
import logging
import time
from typing import Any, Dict, Optional, Tuple

from fcos_jax import barriers, train_step
from fcos_jax.data import sizes
from fcos_jax.weights import shapes


def _compile(step_fn, abstract_state, batch_spec) -> Tuple[Any, float]:
  t = time.perf_counter()
  return step_fn.lower(abstract_state, batch_spec).compile(), time.perf_counter() - t


class StepPrograms:
  """`get(state, batch)`: the train step compiled for the batch's image shape. With `ahead`,
  every bucket of `config.data` starts compiling at once, from the state's and the pipeline's
  shapes, dtypes and shardings: the same programs the loop would compile."""

  def __init__(self, step_fn, state, config, batch_sharding, ahead: bool):
    self._step_fn = step_fn
    self.compiled: Dict[Tuple[int, ...], Any] = {}
    self._futures: Dict[Tuple[int, ...], concurrent.futures.Future] = {}
    self._executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
    if ahead:
      abstract_state = shapes.abstract_like(state)
      self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='compile')
      self._futures = {
          shape: self._executor.submit(_compile, step_fn, abstract_state,
                                       train_step.batch_spec(config, shape, batch_sharding))
          for shape in map(tuple, sizes.train_shapes(config.data))}

  def get(self, state, batch):
    shape = tuple(batch['image'].shape[1:3])
    if shape not in self.compiled:
      t = time.perf_counter()
      future = self._futures.get(shape)
      program, seconds = (future.result() if future is not None
                          else _compile(self._step_fn, state, batch))
      self.compiled[shape] = program
      # Every process has its program before any runs it: the step's collectives would
      # otherwise wait on a process still compiling (gloo on CPUs gives up after 30 s).
      barriers.wait_for_all(f'train_step_compiled_{shape[0]}x{shape[1]}')
      logging.info('compiled the train step for image shape %s in %.1f s (%d program(s) so '
                   'far); the loop waited %.1f s for it', shape, seconds, len(self.compiled),
                   time.perf_counter() - t)
    return self.compiled[shape]

  def close(self):
    """Drops the compilations not started yet (an error, or nothing left to train)."""
    if self._executor is not None:
      self._executor.shutdown(wait=False, cancel_futures=True)
