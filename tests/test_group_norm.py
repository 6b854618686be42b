"""GroupNorm against flax's nn.GroupNorm and a float64 numpy reference from the definition."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcos_jax.models.group_norm import GroupNorm


def numpy_reference(x, gamma, beta, groups, cotangent, eps=1e-5):
  """float64 GroupNorm, and the gradients of sum(relu(y) * cotangent), from the definition:
  xhat = (x - mean) / sqrt(var + eps) over each group's positions and channels."""
  x = x.astype(np.float64)
  b, c = x.shape[0], x.shape[-1]
  xg = x.reshape(b, -1, groups, c // groups)
  mean = xg.mean((1, 3), keepdims=True)
  rstd = 1 / np.sqrt(((xg - mean) ** 2).mean((1, 3), keepdims=True) + eps)
  xhat = ((xg - mean) * rstd).reshape(x.shape)
  y = xhat * gamma + beta
  dy = cotangent * (y > 0)
  dxhat = (dy * gamma).reshape(xg.shape)
  xhat_g = xhat.reshape(xg.shape)
  dx = rstd * (dxhat - dxhat.mean((1, 3), keepdims=True) -
               xhat_g * (dxhat * xhat_g).mean((1, 3), keepdims=True))
  axes = tuple(range(x.ndim - 1))
  return y, dx.reshape(x.shape), (dy * xhat).sum(axes), dy.sum(axes)


def inputs(shape, seed=0):
  rng = np.random.default_rng(seed)
  x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
  gamma = rng.standard_normal(shape[-1]).astype(np.float32)
  beta = rng.standard_normal(shape[-1]).astype(np.float32)
  cotangent = rng.standard_normal(shape).astype(np.float32)
  return x, gamma, beta, cotangent


def value_and_grads(module_cls, x, gamma, beta, groups, cotangent):
  module = module_cls(num_groups=groups, epsilon=1e-5)
  params = {'params': {'scale': jnp.asarray(gamma), 'bias': jnp.asarray(beta)}}

  def loss(x, params):
    return jnp.sum(jax.nn.relu(module.apply(params, x)) * cotangent)
  y = jax.jit(module.apply)(params, x)
  dx, dparams = jax.jit(jax.grad(loss, argnums=(0, 1)))(jnp.asarray(x), params)
  return y, dx, dparams['params']['scale'], dparams['params']['bias']


@pytest.mark.parametrize('shape,groups', [((2, 5, 7, 64), 32), ((3, 4, 6, 16), 16),
                                          ((2, 9, 8, 32), 4), ((2, 6, 10), 2)])
def test_values_and_gradients_match_float64_and_flax(shape, groups):
  x, gamma, beta, cotangent = inputs(shape)
  want = numpy_reference(x, gamma, beta, groups, cotangent)
  ours = value_and_grads(GroupNorm, x, gamma, beta, groups, cotangent)
  flax_ = value_and_grads(nn.GroupNorm, x, gamma, beta, groups, cotangent)
  for got, ref, flax_got in zip(ours, want, flax_):
    scale = np.abs(ref).max()
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-5 * scale)
    np.testing.assert_allclose(got, flax_got, rtol=0, atol=2e-5 * scale)


def test_precise_on_a_large_map():
  """The from-scratch R18 stem's map: here flax's input gradient is 11% off (largest error
  relative to the largest value; 1e-7 at batch 2), ours 1e-7."""
  x, gamma, beta, cotangent = inputs((8, 128, 160, 64), seed=1)
  want = numpy_reference(x, gamma, beta, 32, cotangent)
  ours = value_and_grads(GroupNorm, x, gamma, beta, 32, cotangent)
  for got, ref in zip(ours, want):
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * np.abs(ref).max())


def test_parameters_and_init_are_flax_s():
  x = jnp.zeros((1, 4, 4, 32))
  ours = GroupNorm(num_groups=8).init(jax.random.key(0), x)
  flax_ = nn.GroupNorm(num_groups=8).init(jax.random.key(0), x)
  assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(flax_)
  jax.tree_util.tree_map(np.testing.assert_array_equal, ours, flax_)


def test_bfloat16_compute_keeps_float32_parameters():
  x = jnp.ones((1, 4, 4, 8), jnp.bfloat16) * jnp.arange(8, dtype=jnp.bfloat16)
  module = GroupNorm(num_groups=4, dtype=jnp.bfloat16)
  params = module.init(jax.random.key(0), x)
  assert params['params']['scale'].dtype == jnp.float32
  y = module.apply(params, x)
  assert y.dtype == jnp.bfloat16
  grads = jax.grad(lambda p: module.apply(p, x).astype(jnp.float32).sum())(params)
  assert grads['params']['scale'].dtype == jnp.float32


@pytest.mark.parametrize('form', ['cpu', 'native'])
@pytest.mark.parametrize('shape,groups', [((2, 5, 7, 64), 32), ((2, 6, 10), 2)])
def test_bfloat16_input_gradient_matches_float64_and_keeps_x_in_bfloat16(form, shape, groups,
                                                                         capsys):
  """The low-precision path's own gradient (`_saving_input`) against the float64 definition
  on the same bfloat16-rounded x; its residuals hold x in bfloat16, where autodiff would keep a
  float32 copy."""
  from jax import ad_checkpoint
  from fcos_jax.models import group_norm as gn
  x, gamma, beta, cotangent = inputs(shape)
  x16 = jnp.asarray(x, jnp.bfloat16)
  want = numpy_reference(np.asarray(x16.astype(jnp.float32)), gamma, beta, groups, cotangent)
  norm, autodiff = {'cpu': (gn.group_norm_saving_input, gn.group_norm),
                    'native': (gn.group_norm_native_saving_input, gn.group_norm_native)}[form]

  def loss(fn):
    return lambda x, s, b: jnp.sum(jax.nn.relu(fn(x, s, b, groups, 1e-5)) * cotangent)
  args = (x16, jnp.asarray(gamma), jnp.asarray(beta))
  y = jax.jit(lambda *a: norm(*a, groups, 1e-5))(*args)
  dx, dscale, dbias = jax.jit(jax.grad(loss(norm), argnums=(0, 1, 2)))(*args)
  assert dx.dtype == jnp.bfloat16
  for got, ref, atol in ((y, want[0], 2e-5), (dx, want[1], 8e-3), (dscale, want[2], 2e-5),
                         (dbias, want[3], 2e-5)):
    np.testing.assert_allclose(np.asarray(got, np.float64), ref, rtol=0,
                               atol=atol * np.abs(ref).max())

  def residuals_of_x_shape(fn):  # the GroupNorm's own (not the relu's or the constant's)
    capsys.readouterr()
    ad_checkpoint.print_saved_residuals(loss(fn), *args)
    shape_text = ','.join(map(str, shape))
    return sorted(line.split('[')[0] for line in capsys.readouterr().out.splitlines()
                  if f'[{shape_text}]' in line and ('models/group_norm.py' in line or 'argument x'
                                                    in line))
  assert residuals_of_x_shape(norm) == ['bf16']  # x itself
  assert 'f32' in residuals_of_x_shape(autodiff)  # what the custom gradient avoids
