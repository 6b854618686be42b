"""The moving average of the weights: the train step's update against the formula in numpy, with
and without gradient accumulation."""

import jax
import numpy as np
import pytest

from fcos_jax import ema, optim, sharding, train_step
from fcos_jax.models import fcos
from tests import tiny_config
from tests.test_train_step import put, random_batch


def test_decay_warms_up_then_holds():
  for u in (1, 5, 50, 5000):
    assert float(ema.decay_at(0.99, u)) == pytest.approx(min(0.99, (1 + u) / (10 + u)))


@pytest.mark.parametrize('accum', [1, pytest.param(2, marks=pytest.mark.slow)])
def test_train_step_keeps_the_average_of_the_updated_weights(accum):
  config = tiny_config.get_config()
  config.ema_decay, config.grad_accum_steps = 0.9, accum
  mesh = sharding.make_mesh(jax.devices()[:1])
  model = fcos.create_model(config.model)
  tx = optim.create_optimizer(config, fcos.abstract_variables(model)['params'])
  state = train_step.create_train_state(config, model, tx, mesh)
  step = train_step.make_train_step(config, model, tx, mesh)
  host = lambda tree: [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(tree)]  # noqa
  want = host(state.params)  # the average starts at the initial weights
  for got, w in zip(host(state.ema_params), want):
    np.testing.assert_array_equal(got, w)
  rng = np.random.default_rng(0)
  for t in range(1, 5):
    state, _ = step(state, put(random_batch(rng, 4), mesh))
    params = host(state.params)
    if t % accum == 0:  # an optimizer update: average in the new weights
      d = min(0.9, (1 + t // accum) / (10 + t // accum))
      want = [d * e + (1 - d) * p for e, p in zip(want, params)]
    for got, w in zip(host(state.ema_params), want):
      np.testing.assert_allclose(got, w, rtol=1e-6, atol=1e-7)
  moved = max(float(np.abs(e - p).max()) for e, p in zip(host(state.ema_params), params))
  assert moved > 0  # the average trails the trained weights
