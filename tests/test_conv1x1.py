"""Conv1x1 (a matrix product) against XLA's convolution: values, gradients, init, param tree."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcos_jax.models.conv1x1 import Conv1x1


def reference_conv(x, kernel, bias, stride):
  y = jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((0, 0), (0, 0)),
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                   precision=jax.lax.Precision.HIGHEST)
  return y + bias


@pytest.mark.parametrize('stride,shape', [(1, (2, 6, 5, 8)), (2, (2, 7, 6, 8)), (2, (1, 8, 9, 4))])
def test_values_and_gradients_match_the_convolution(stride, shape):
  kx, kw, kb, kg = jax.random.split(jax.random.key(0), 4)
  x = jax.random.normal(kx, shape)
  kernel = jax.random.normal(kw, (1, 1, shape[-1], 16))
  bias = jax.random.normal(kb, (16,))
  module = Conv1x1(16, stride)
  ours = lambda x, k, b: module.apply({'params': {'kernel': k, 'bias': b}}, x)  # noqa: E731
  want = reference_conv(x, kernel, bias, stride)
  np.testing.assert_allclose(ours(x, kernel, bias), want, rtol=1e-5, atol=1e-5)
  cotangent = jax.random.normal(kg, want.shape)
  loss = lambda f: lambda *a: jnp.sum(f(*a) * cotangent)  # noqa: E731
  got = jax.grad(loss(ours), argnums=(0, 1, 2))(x, kernel, bias)
  ref = jax.grad(loss(lambda x, k, b: reference_conv(x, k, b, stride)), argnums=(0, 1, 2))(
      x, kernel, bias)
  for g, r in zip(got, ref):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)


def test_parameters_and_init_are_nn_conv_s():
  init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
  x = jnp.zeros((1, 4, 4, 8))
  ours = Conv1x1(16, kernel_init=init).init(jax.random.key(3), x)
  conv = nn.Conv(16, (1, 1), kernel_init=init).init(jax.random.key(3), x)
  jax.tree_util.tree_map(np.testing.assert_array_equal, ours, conv)


def test_bfloat16_compute_keeps_float32_params():
  variables = Conv1x1(4, dtype=jnp.bfloat16).init(jax.random.key(0), jnp.ones((1, 2, 2, 3)))
  assert variables['params']['kernel'].dtype == jnp.float32
  y = Conv1x1(4, dtype=jnp.bfloat16).apply(variables, jnp.ones((1, 2, 2, 3)))
  assert y.dtype == jnp.bfloat16
