"""Conv (custom weight gradient) against JAX's own differentiation of XLA's convolution."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcos_jax.models.conv import Conv, conv2d, conv2d_by_product, products_pay_off


def plain(x, kernel, stride, padding):
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((padding, padding),) * 2,
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                      precision=jax.lax.Precision.HIGHEST)


@pytest.mark.parametrize('products', [True, False, None])
@pytest.mark.parametrize('shape,k,stride', [((2, 9, 7, 5), 3, 1), ((2, 9, 7, 5), 3, 2),
                                            ((1, 8, 8, 4), 3, 2), ((1, 11, 10, 3), 7, 2)])
def test_values_and_gradients_match_the_plain_convolution(shape, k, stride, products):
  kx, kw, kg = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, shape)
  kernel = jax.random.normal(kw, (k, k, shape[-1], 6))
  want = plain(x, kernel, stride, k // 2)
  np.testing.assert_allclose(conv2d(x, kernel, stride, k // 2), want, rtol=1e-5, atol=1e-4)
  cotangent = jax.random.normal(kg, want.shape)
  ours = lambda x, w: jnp.sum(conv2d(x, w, stride, k // 2, products) * cotangent)  # noqa: E731
  ref = lambda x, w: jnp.sum(plain(x, w, stride, k // 2) * cotangent)  # noqa: E731
  got = jax.jit(jax.grad(ours, argnums=(0, 1)))(x, kernel)
  ref = jax.grad(ref, argnums=(0, 1))(x, kernel)
  for g, r in zip(got, ref):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-3)


def test_a_layer_above_the_size_rule_takes_the_products_and_matches():
  x = jax.random.normal(jax.random.key(1), (1, 64, 64, 128))
  kernel = jax.random.normal(jax.random.key(2), (3, 3, 128, 128)) * 0.05
  assert products_pay_off((1, 64, 64, 128), kernel.shape)
  ours = jax.jit(jax.grad(lambda w: jnp.sum(jnp.sin(conv2d(x, w)))))(kernel)
  hlo = jax.jit(jax.grad(lambda w: jnp.sum(jnp.sin(conv2d(x, w))))).lower(kernel).as_text()
  assert hlo.count('dot_general') >= 9  # the per-offset products, not XLA's gradient
  ref = jax.grad(lambda w: jnp.sum(jnp.sin(plain(x, w, 1, 1))))(kernel)
  np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-2)


def test_products_only_for_large_layers():
  assert products_pay_off((2, 64, 64, 256), (3, 3, 256, 256))     # R50 tower at P3
  assert not products_pay_off((2, 64, 64, 256), (3, 3, 256, 1))   # centerness predictor
  assert not products_pay_off((16, 16, 20, 64), (3, 3, 64, 64))   # the demo's P3 tower


@pytest.mark.parametrize('shape,k,stride', [((3, 2, 3, 8), 3, 1), ((2, 1, 2, 8), 3, 1),
                                            ((2, 4, 5, 6), 3, 2), ((1, 4, 4, 5), 5, 1)])
def test_small_maps_as_one_product_match_the_plain_convolution(shape, k, stride):
  kx, kw, kg = jax.random.split(jax.random.key(4), 3)
  x = jax.random.normal(kx, shape)
  kernel = jax.random.normal(kw, (k, k, shape[-1], 7))
  want = plain(x, kernel, stride, k // 2)
  np.testing.assert_allclose(conv2d_by_product(x, kernel, stride, k // 2), want, rtol=1e-5,
                             atol=1e-4)
  cotangent = jax.random.normal(kg, want.shape)
  grads = [jax.grad(lambda x, w: jnp.sum(f(x, w, stride, k // 2) * cotangent), argnums=(0, 1))(
      x, kernel) for f in (conv2d_by_product, plain)]
  for g, r in zip(*grads):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-3)


def test_the_module_takes_the_product_on_small_maps_only():
  def hlo(shape):
    x = jnp.ones(shape)
    variables = Conv(8, 3).init(jax.random.key(0), x)
    return jax.jit(Conv(8, 3).apply).lower(variables, x).as_text()
  assert 'convolution' not in hlo((2, 4, 4, 3))   # 16 positions: P7 of a 512x512 image
  assert 'convolution' in hlo((2, 4, 5, 3))


def test_parameters_and_init_are_nn_conv_s():
  x = jnp.zeros((1, 6, 6, 4))
  ours = Conv(8, 3, bias_init=nn.initializers.constant(0.5)).init(jax.random.key(3), x)
  conv = nn.Conv(8, (3, 3), padding=((1, 1), (1, 1)),
                 bias_init=nn.initializers.constant(0.5)).init(jax.random.key(3), x)
  jax.tree_util.tree_map(np.testing.assert_array_equal, ours, conv)


def test_bfloat16_gradient_keeps_the_kernel_dtype():
  x = jnp.ones((1, 5, 5, 3), jnp.bfloat16)
  kernel = jnp.ones((3, 3, 3, 2), jnp.bfloat16)
  dk = jax.grad(lambda k: conv2d(x, k).astype(jnp.float32).sum())(kernel)
  assert dk.dtype == jnp.bfloat16
