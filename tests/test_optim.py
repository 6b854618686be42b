"""Optimizer: gradient accumulation (optax.MultiSteps) against the full-batch update; the
schedule scaled to the global batch."""

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


def _coco(batch_size, grad_accum_steps=1):
  from fcos_jax.configs import coco
  config = coco.get_config()
  config.batch_size, config.grad_accum_steps = batch_size, grad_accum_steps
  return config


def test_the_coco_schedule_is_unchanged_at_its_base_batch_of_16():
  from fcos_jax import optim
  config = _coco(16)
  scaled, summary = optim.scale_schedule_to_batch(config)
  assert scaled.to_dict() == config.to_dict()
  assert summary.startswith('global batch 16: lr 0.01 ')


def test_the_coco_schedule_at_a_global_batch_of_256_sees_the_same_images():
  """The 1x schedule (90k steps of 16, warmup 500, decays at 60k / 80k) at 256: 1/16 of the
  steps, 16x the lr, the same learning rate per image at every point of the run."""
  from fcos_jax import optim
  for batch, accum in ((256, 1), (32, 8)):  # 256 per update, with and without accumulation
    base = _coco(16)
    config = _coco(batch, accum)
    scaled, summary = optim.scale_schedule_to_batch(config)
    assert config.num_train_steps == 90000  # the input is not modified
    assert scaled.num_train_steps == 90000 * 16 // batch  # 5625 steps of 256 = 90k of 16
    assert scaled.num_train_steps * batch == 90000 * 16
    assert scaled.optimizer.warmup_steps == round(500 / 16) == 31
    assert scaled.optimizer.decay_steps == (3750, 5000)
    assert scaled.checkpoint_every == round(2500 * 16 / batch)
    assert 'global batch 256 = 16 x base_batch_size 16' in summary and 'lr 0.16' in summary
    lr_base = optim.learning_rate_schedule(base.optimizer, 16)
    lr_scaled = optim.learning_rate_schedule(scaled.optimizer, 256)
    # per image (lr / batch) at the same image count; warmup ends at 31 x 256 vs 500 x 16 images
    for update in (0, 30, 32, 3749, 3750, 4999, 5000, 5624):
      at_base = float(lr_base(update * 16)) / 16
      np.testing.assert_allclose(float(lr_scaled(update)) / 256, at_base, rtol=1e-6,
                                 err_msg=str(update))


def test_scaling_off_keeps_the_step_counts_and_still_scales_the_lr():
  from fcos_jax import optim
  config = _coco(256)
  config.optimizer.scale_schedule_with_batch = False
  scaled, summary = optim.scale_schedule_to_batch(config)
  assert scaled.num_train_steps == 90000 and scaled.optimizer.decay_steps == (60000, 80000)
  assert 'lr 0.16' in summary and 'step counts as configured' in summary
