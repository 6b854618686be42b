"""The data-parallel train step: 8 devices == 1 device, non-finite guard, and it learns."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from fcos_jax import optim, sharding, train_step
from fcos_jax.models import fcos
from tests import tiny_config

SHAPE = (64, 96)


def make(config, devices):
  mesh = sharding.make_mesh(devices)
  model = fcos.create_model(config.model)
  abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1,) + SHAPE + (3,)))
  tx = optim.create_optimizer(config, abstract['params'])
  state = train_step.create_train_state(config, model, tx, mesh)
  return mesh, state, train_step.make_train_step(config, model, tx, mesh)


def random_batch(rng, n):
  boxes = np.zeros((n, 6, 4), np.float32)
  valid = np.zeros((n, 6), bool)
  for i in range(n):
    k = rng.integers(0 if i % 5 == 0 else 1, 6)  # a few images without boxes
    xy = rng.uniform(0, [80, 50], (k, 2))
    wh = rng.uniform(6, 40, (k, 2))
    boxes[i, :k] = np.concatenate([xy, xy + wh], 1)
    valid[i, :k] = True
  return {'image': rng.integers(0, 256, (n,) + SHAPE + (3,), dtype=np.uint8),
          'image_size': np.tile(np.array([[60, 90]], np.int32), (n, 1)),
          'boxes': boxes, 'classes': rng.integers(0, 5, (n, 6)).astype(np.int32),
          'box_valid': valid}


def put(batch, mesh):
  sharding = NamedSharding(mesh, P('data'))
  return {k: jax.device_put(v, sharding) for k, v in batch.items()}


def host(tree):
  return jax.tree_util.tree_map(lambda x: np.asarray(x), tree)


# AdamW behind the slow marker (40 s): the device count meets the optimizer only through the
# averaged gradients, which SGD checks.
@pytest.mark.parametrize('optimizer', ['sgd', pytest.param('adamw', marks=pytest.mark.slow)])
def test_one_step_on_8_devices_equals_one_device(optimizer):
  assert jax.device_count() >= 8
  config = tiny_config.get_config()
  config.optimizer.name = optimizer
  config.optimizer.base_lr = 0.01
  batch = random_batch(np.random.default_rng(0), 16)
  results = []
  for devices in (jax.devices()[:1], jax.devices()[:8]):
    mesh, state, step = make(config, devices)
    before = host(state.params)
    state, metrics = step(state, put(batch, mesh))
    results.append((before, host(state.params), host(metrics), host(state.ema_params)))
  (b1, a1, m1, e1), (b8, a8, m8, e8) = results
  for k in ('loss_total', 'loss_cls', 'loss_box', 'loss_centerness', 'num_pos'):
    assert float(m8[k]) == pytest.approx(float(m1[k]), rel=1e-5), k
  assert float(m1['num_pos']) > 20
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_array_equal(x, y), b1, b8)
  # Parameters after the update agree, and so do the updates themselves. (Adam's first step,
  # ~lr * sign(g), turns 1e-7 gradient noise where g ~ 0 into ~1e-5 parameter noise.)
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=2e-5),
                         a1, a8)
  assert config.ema_decay > 0  # the moving average is updated alike on every device
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=2e-5),
                         e1, e8)
  if optimizer == 'sgd':  # SGD updates are linear in the gradient: compare them closely too
    d1 = jax.tree_util.tree_map(lambda a, b: a - b, a1, b1)
    d8 = jax.tree_util.tree_map(lambda a, b: a - b, a8, b8)
    scale = max(float(np.abs(x).max()) for x in jax.tree_util.tree_leaves(d1))
    assert scale > 0
    jax.tree_util.tree_map(
        lambda x, y: np.testing.assert_allclose(x, y, atol=1e-3 * scale), d1, d8)


def test_non_finite_loss_freezes_state_and_records_the_step():
  config = tiny_config.get_config()
  config.model.regression = 'exp'
  config.model.norm_reg_targets = False
  mesh, state, step = make(config, jax.devices()[:1])
  # exp(1e4) overflows at every positive location: the loss is inf.
  params = state.params
  head = dict(params['head'])
  head['bbox_reg'] = dict(head['bbox_reg'], bias=jnp.full((4,), 1e4))
  state = state.replace(params=dict(params, head=head))
  before = host(state.params)
  batch = put(random_batch(np.random.default_rng(1), 4), mesh)
  state, metrics = step(state, batch)
  assert not np.isfinite(float(metrics['loss_total']))
  assert int(state.bad_step) == 0 and int(state.step) == 1
  jax.tree_util.tree_map(np.testing.assert_array_equal, before, host(state.params))
  # Later finite-looking steps do not unfreeze it.
  state, _ = step(state, batch)
  assert int(state.bad_step) == 0
  jax.tree_util.tree_map(np.testing.assert_array_equal, before, host(state.params))


def test_loss_falls_within_a_bounded_number_of_steps(shapes_tfds):
  from fcos_jax.data import input_pipeline
  config = tiny_config.get_config()
  name, data_dir = shapes_tfds
  config.data.update(dataset=name, data_dir=data_dir, min_sizes=(64,), max_size=96,
                     aspect_buckets=False)
  config.batch_size = 8
  config.optimizer.update(base_lr=3e-3, base_batch_size=8, warmup_steps=5, decay_steps=())
  mesh, state, step = make(config, jax.devices()[:1])
  ds = input_pipeline.create_train_dataset(config.data, 8, seed=0)
  batches = [put(train_step.train_batch(b), mesh) for b in ds.take(4).as_numpy_iterator()]
  losses = []
  for i in range(60):
    state, metrics = step(state, batches[i % 4])
    losses.append(float(metrics['loss_total']))
  first, last = np.mean(losses[:4]), np.mean(losses[-4:])
  assert np.isfinite(losses).all()
  assert last < 0.6 * first, (first, last)


def test_batch_spec_is_what_the_pipeline_delivers(shapes_tfds):
  """The trainer compiles the step ahead from `batch_spec`: it must match the pipeline's global
  batches of every bucket in shape, dtype and sharding, or the ahead programs would not run."""
  from fcos_jax.data import input_pipeline, sizes
  config = tiny_config.get_config()
  config.data.dataset, config.data.data_dir = shapes_tfds
  config.data.synthetic = False
  config.batch_size = 8
  batch_sharding = NamedSharding(sharding.make_mesh(jax.devices()), P('data'))
  dataset = input_pipeline.create_train_dataset(config.data, config.batch_size, seed=0)
  seen = set()
  for host_batch in dataset.take(8).as_numpy_iterator():
    batch = input_pipeline.to_global_arrays(train_step.train_batch(host_batch), batch_sharding)
    shape = batch['image'].shape[1:3]
    seen.add(shape)
    spec = train_step.batch_spec(config, shape, batch_sharding)
    assert sorted(spec) == sorted(batch)
    for k, v in batch.items():
      assert (v.shape, v.dtype, v.sharding) == (spec[k].shape, spec[k].dtype, spec[k].sharding), k
  assert seen == set(map(tuple, sizes.train_shapes(config.data)))


def test_non_finite_optimizer_state_is_caught_although_loss_and_gradient_are_finite():
  """Corrupted optimizer bytes (a NaN momentum) leave loss and gradient finite but would poison
  the parameters: the step must be refused the same way."""
  config = tiny_config.get_config()
  mesh, state, step = make(config, jax.devices()[:1])
  leaves, treedef = jax.tree_util.tree_flatten(state.opt_state)
  floating = [i for i, x in enumerate(leaves) if jnp.issubdtype(x.dtype, jnp.floating)
              and x.size > 1]
  assert floating, 'the optimizer keeps no floating-point state to corrupt'
  i = floating[0]
  leaves[i] = leaves[i].at[(0,) * leaves[i].ndim].set(jnp.nan)
  state = state.replace(opt_state=jax.tree_util.tree_unflatten(treedef, leaves))
  before = host(state.params)
  batch = put(random_batch(np.random.default_rng(2), 4), mesh)
  state, metrics = step(state, batch)
  assert np.isfinite(float(metrics['loss_total']))
  assert int(state.bad_step) == 0
  jax.tree_util.tree_map(np.testing.assert_array_equal, before, host(state.params))
