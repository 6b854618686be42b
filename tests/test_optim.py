"""Optimizer: gradient accumulation (optax.MultiSteps) against the full-batch update."""

import jax
import jax.numpy as jnp
import numpy as np

from tests import tiny_config
from tests.test_train_step import make, put, random_batch


def host(tree):
  return jax.tree_util.tree_map(np.asarray, tree)


def copy(tree):
  return jax.tree_util.tree_map(jnp.copy, tree)


def test_accumulated_steps_equal_one_step_of_the_whole_batch():
  """Batch [A, A] in one step vs A then A with grad_accum_steps=2: the same update (FCOS
  normalizes each batch by its positives, so equal halves make the two exactly comparable);
  and with halves A, B the accumulated update is the mean of the two halves' gradients."""
  config = tiny_config.get_config()
  config.optimizer.update(name='sgd', base_lr=0.01, momentum=0.0, weight_decay=0.0,
                          grad_clip_norm=0.0, warmup_steps=0)
  a = random_batch(np.random.default_rng(0), 4)
  b = random_batch(np.random.default_rng(1), 4)
  both = {k: np.concatenate([a[k], a[k]]) for k in a}

  config.batch_size = 8
  mesh, state, step = make(config, jax.devices()[:1])
  start = host(state.params)
  full, _ = step(state, put(both, mesh))

  config.batch_size, config.grad_accum_steps = 4, 2
  mesh, initial, accumulate = make(config, jax.devices()[:1])
  state, _ = accumulate(copy(initial), put(a, mesh))
  jax.tree_util.tree_map(np.testing.assert_array_equal, host(state.params), start)  # no update yet
  acc, _ = accumulate(state, put(a, mesh))
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7),
                         host(acc.params), host(full.params))

  # A then B: params move by -lr(8) * mean(g_A, g_B). One-step SGD runs of each half alone move
  # them by -lr(4) * g = -lr(8) / 2 * g (the lr scales with the batch), so the sum of those.
  # The steps donate their state: each run starts from a copy of the initial one.
  config.grad_accum_steps = 1
  _, initial_one, one_step = make(config, jax.devices()[:1])
  deltas = []
  for half in (a, b):
    after, _ = one_step(copy(initial_one), put(half, mesh))
    deltas.append(jax.tree_util.tree_map(lambda x, y: np.asarray(x) - y, after.params, start))
  state, _ = accumulate(copy(initial), put(a, mesh))
  state, _ = accumulate(state, put(b, mesh))
  want = jax.tree_util.tree_map(lambda s, da, db: s + da + db, start, *deltas)
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6),
                         host(state.params), want)
