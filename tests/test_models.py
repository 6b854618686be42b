"""Model: shapes, torchvision name mapping, dtypes, frozen stages, and loss gradients through
model + assigner in one jitted step."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcos_jax.configs import coco
from fcos_jax import losses, targets
from fcos_jax.models import fcos, torchvision_names

STRIDES = (8, 16, 32, 64, 128)


def tiny_config(depth=18, **overrides):
  config = coco.get_config()
  m = config.model
  m.backbone_depth, m.backbone_width, m.fpn_channels = depth, 8, 16
  m.head_num_convs, m.gn_groups, m.num_classes = 2, 4, 3
  m.update(overrides)
  return config


def num_locations(h, w):
  return sum(math.ceil(h / s) * math.ceil(w / s) for s in STRIDES)


@pytest.mark.parametrize('depth,size', [(18, (128, 128)), (50, (96, 160)), (18, (64, 224))])
def test_forward_output_shapes(depth, size):
  model = fcos.create_model(tiny_config(depth).model)
  images = jnp.ones((2,) + size + (3,))
  variables = jax.jit(model.init)(jax.random.key(0), images)
  out = jax.jit(lambda v, x: model.apply(v, x, return_features=True))(variables, images)
  n = num_locations(*size)
  assert out['cls_logits'].shape == (2, n, 3)
  assert out['bbox_reg'].shape == (2, n, 4)
  assert out['centerness'].shape == (2, n)
  expansion = 4 if depth >= 50 else 1
  for k, (c, s) in enumerate(zip(out['backbone'], (8, 16, 32))):
    assert c.shape == (2, math.ceil(size[0] / s), math.ceil(size[1] / s), 8 * 2 ** (k + 1) * expansion)
  for p, s in zip(out['fpn'], STRIDES):
    assert p.shape == (2, math.ceil(size[0] / s), math.ceil(size[1] / s), 16)
  # Flattening order: the first P4 location's logits are P4[0, 0, 0].
  assert np.isfinite(np.asarray(out['bbox_reg'])).all()


def test_flatten_order_is_level_then_row_major():
  a = jnp.arange(6).reshape(1, 2, 3)  # P3 2x3
  b = jnp.arange(100, 104).reshape(1, 2, 2)   # P4 2x2
  flat = fcos.flatten_levels([a, b])
  np.testing.assert_array_equal(np.asarray(flat[0]), [0, 1, 2, 3, 4, 5, 100, 101, 102, 103])


@pytest.mark.parametrize('depth,blocks', [(34, (3, 4, 6, 3)), (101, (3, 4, 23, 3))])
def test_deeper_resnets_have_torchvision_block_counts(depth, blocks):
  model = fcos.create_model(tiny_config(depth).model)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 64, 64, 3)))
  body = shapes['params']['backbone']
  assert [len(body[f'layer{k}']) for k in range(1, 5)] == list(blocks)


def expected_torchvision_shapes(num_classes=91):
  """torchvision fcos_resnet50_fpn state-dict keys and shapes (frozen-BN layout), as documented."""
  keys = {'backbone.body.conv1.weight': (64, 3, 7, 7)}

  def bn(prefix, c):
    for leaf in ('weight', 'bias', 'running_mean', 'running_var'):
      keys[f'{prefix}.{leaf}'] = (c,)
  bn('backbone.body.bn1', 64)
  cin = 64
  for layer, (blocks, w) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
    for j in range(blocks):
      p = f'backbone.body.layer{layer}.{j}'
      keys[f'{p}.conv1.weight'] = (w, cin, 1, 1)
      bn(f'{p}.bn1', w)
      keys[f'{p}.conv2.weight'] = (w, w, 3, 3)
      bn(f'{p}.bn2', w)
      keys[f'{p}.conv3.weight'] = (4 * w, w, 1, 1)
      bn(f'{p}.bn3', 4 * w)
      if j == 0:
        keys[f'{p}.downsample.0.weight'] = (4 * w, cin, 1, 1)
        bn(f'{p}.downsample.1', 4 * w)
      cin = 4 * w
  for i, c in enumerate((512, 1024, 2048)):
    keys[f'backbone.fpn.inner_blocks.{i}.0.weight'] = (256, c, 1, 1)
    keys[f'backbone.fpn.inner_blocks.{i}.0.bias'] = (256,)
    keys[f'backbone.fpn.layer_blocks.{i}.0.weight'] = (256, 256, 3, 3)
    keys[f'backbone.fpn.layer_blocks.{i}.0.bias'] = (256,)
  for p in ('p6', 'p7'):
    keys[f'backbone.fpn.extra_blocks.{p}.weight'] = (256, 256, 3, 3)
    keys[f'backbone.fpn.extra_blocks.{p}.bias'] = (256,)
  for head in ('classification_head', 'regression_head'):
    for k in range(4):
      keys[f'head.{head}.conv.{3 * k}.weight'] = (256, 256, 3, 3)
      keys[f'head.{head}.conv.{3 * k}.bias'] = (256,)
      keys[f'head.{head}.conv.{3 * k + 1}.weight'] = (256,)
      keys[f'head.{head}.conv.{3 * k + 1}.bias'] = (256,)
  for name, c in (('classification_head.cls_logits', num_classes),
                  ('regression_head.bbox_reg', 4), ('regression_head.bbox_ctrness', 1)):
    keys[f'head.{name}.weight'] = (c, 256, 3, 3)
    keys[f'head.{name}.bias'] = (c,)
  return keys


def test_torchvision_mapping_is_total_and_one_to_one():
  config = coco.get_config()
  config.model.update(num_classes=91, use_scale=False, regression='relu', centerness_on_reg=True)
  model = fcos.create_model(config.model)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 64, 64, 3)))
  names = torchvision_names.torchvision_names(shapes)
  want = expected_torchvision_shapes()
  assert len(want) == 319 and sum(math.prod(s) for s in want.values()) == 32_375_840
  assert set(names) == set(want)
  for key, (collection, path) in names.items():
    leaf = shapes[collection]
    for p in path:
      leaf = leaf[p]
    torch_shape = want[key]
    flax_shape = torchvision_names.torch_to_flax(np.zeros(torch_shape, np.int8), path[-1]).shape
    assert leaf.shape == flax_shape, key


def test_scale_parameter_has_no_torchvision_name():
  with pytest.raises(KeyError, match='scales'):
    torchvision_names.torchvision_key(('head', 'scales'))


def test_bfloat16_compute_keeps_float32_params_and_outputs():
  config = tiny_config(18, dtype='bfloat16')
  model = fcos.create_model(config.model)
  images = jnp.ones((1, 64, 64, 3))
  variables = jax.jit(model.init)(jax.random.key(0), images)
  dtypes = {x.dtype for x in jax.tree_util.tree_leaves(variables)}
  assert dtypes == {jnp.dtype(jnp.float32)}
  out = jax.jit(lambda v, x: model.apply(v, x, return_features=True))(variables, images)
  assert out['cls_logits'].dtype == jnp.float32 and out['bbox_reg'].dtype == jnp.float32
  assert out['fpn'][0].dtype == jnp.bfloat16
  ref = jax.jit(fcos.create_model(tiny_config(18, dtype='float32').model).apply)(variables,
                                                                                images)
  np.testing.assert_allclose(np.asarray(out['cls_logits']), np.asarray(ref['cls_logits']),
                             atol=0.1)


def test_auto_dtype_is_the_float32_model_on_cpu():
  """'auto' (the configs' default) runs the float32 model in CPU programs: equal outputs and
  float32 gradients; its variables are those of the float32 model."""
  images = jax.random.normal(jax.random.key(1), (1, 64, 64, 3))
  auto = fcos.create_model(tiny_config(18, dtype='auto').model)
  f32 = fcos.create_model(tiny_config(18, dtype='float32').model)
  variables = fcos.init_variables(auto, jax.random.key(0))
  assert jax.tree_util.tree_structure(variables) == jax.tree_util.tree_structure(
      fcos.init_variables(f32, jax.random.key(0)))
  got = jax.jit(lambda v, x: auto.apply(v, x, return_features=True))(variables, images)
  want = jax.jit(lambda v, x: f32.apply(v, x, return_features=True))(variables, images)
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(got))
  for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)

  def loss(model):
    return lambda p, x: jnp.sum(jnp.square(model.apply({**variables, 'params': p}, x)['bbox_reg']))
  g_auto = jax.jit(jax.grad(loss(auto)))(variables['params'], images)
  g_f32 = jax.jit(jax.grad(loss(f32)))(variables['params'], images)
  for a, b in zip(jax.tree_util.tree_leaves(g_auto), jax.tree_util.tree_leaves(g_f32)):
    assert a.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def make_step(config, image_size):
  model = fcos.create_model(config.model)
  assign = dict(targets.assigner_kwargs(config.model), image_size=image_size)

  def loss_fn(params, batch_stats, images, boxes, classes, valid):
    out = model.apply({'params': params, 'batch_stats': batch_stats}, images)
    tg = targets.assign_targets_batch(boxes, classes, valid, **assign)
    terms = losses.fcos_losses(out['cls_logits'], out['bbox_reg'], out['centerness'], tg,
                               **losses.loss_kwargs(config))
    return terms['total'], terms
  return model, jax.jit(jax.value_and_grad(loss_fn, has_aux=True))


@pytest.mark.parametrize('variant', ['coco', 'coco_imprv'])
def test_loss_gradient_through_model_and_assigner(variant):
  config = tiny_config(18)
  if variant == 'coco_imprv':
    from fcos_jax.configs import coco_imprv
    imprv = coco_imprv.get_config()
    config.model.update(center_sampling_radius=1.5, norm_reg_targets=True, regression='relu',
                        centerness_on_reg=True)
    config.loss.box_loss = imprv.loss.box_loss
  size = (128, 128)
  model, step = make_step(config, size)
  variables = jax.jit(model.init)(jax.random.key(0), jnp.ones((1,) + size + (3,)))
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(2,) + size + (3,)), jnp.float32)
  boxes = jnp.array([[[10, 10, 60, 70], [30, 40, 120, 110], [0, 0, 0, 0]],
                     [[5, 5, 40, 30], [0, 0, 0, 0], [0, 0, 0, 0]]], jnp.float32)
  classes = jnp.array([[0, 2, 0], [1, 0, 0]])
  valid = jnp.array([[True, True, False], [True, False, False]])
  (loss, terms), grads = step(variables['params'], variables['batch_stats'], images, boxes,
                              classes, valid)
  assert np.isfinite(float(loss)) and float(terms['num_pos']) > 0
  leaves = jax.tree_util.tree_leaves(grads)
  assert all(np.isfinite(np.asarray(g)).all() for g in leaves)
  # The head and FPN learn; the frozen stem and layer1 (freeze_at=2) get exactly zero gradient.
  assert np.abs(np.asarray(grads['head']['cls_logits']['kernel'])).sum() > 0
  assert np.abs(np.asarray(grads['backbone']['layer2']['0']['conv1']['kernel'])).sum() > 0
  assert np.abs(np.asarray(grads['backbone']['conv1']['kernel'])).sum() == 0
  assert np.abs(np.asarray(grads['backbone']['layer1']['0']['conv1']['kernel'])).sum() == 0
  # No boxes at all: finite loss and gradients.
  (loss0, _), grads0 = step(variables['params'], variables['batch_stats'], images, boxes,
                            classes, jnp.zeros_like(valid))
  assert np.isfinite(float(loss0))
  assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree_util.tree_leaves(grads0))
  # Same shapes, new values: no recompilation.
  step(variables['params'], variables['batch_stats'], images * 2, boxes + 1, classes, valid)
  assert step._cache_size() == 1


def test_trainable_mask_matches_freeze_at():
  model = fcos.create_model(tiny_config(18).model)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 64, 64, 3)))
  for freeze_at, frozen in ((0, set()), (1, {'conv1'}), (2, {'conv1', 'layer1'}),
                            (3, {'conv1', 'layer1', 'layer2'})):
    mask = fcos.trainable_mask(shapes['params'], freeze_at)
    body = mask['backbone']
    for name in ('conv1', 'layer1', 'layer2', 'layer3', 'layer4'):
      assert all(not v for v in jax.tree_util.tree_leaves(body[name])) == (name in frozen)
    assert all(jax.tree_util.tree_leaves(mask['head'])) and all(jax.tree_util.tree_leaves(mask['fpn']))


def test_groupnorm_backbone_for_training_from_scratch():
  model = fcos.create_model(tiny_config(18, backbone_norm='gn', freeze_at=0).model)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 64, 64, 3)))
  assert 'batch_stats' not in shapes
  bn1 = shapes['params']['backbone']['layer1']['0']['bn1']
  assert set(bn1) == {'scale', 'bias'} and bn1['scale'].shape == (8,)
  with pytest.raises(ValueError, match='backbone norm'):
    fcos.create_model(tiny_config(18, backbone_norm='bn').model).init(
        jax.random.key(0), jnp.ones((1, 64, 64, 3)))
