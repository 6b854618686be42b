"""The stem's max pool: values and gradient against JAX's own differentiation of reduce_window."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcos_jax.models.max_pool import max_pool


def plain(x, k, s, p):
  return nn.max_pool(x, (k, k), (s, s), padding=((p, p), (p, p)))


def vjp_pair(x, k, s, p, seed=1):
  g = jax.random.normal(jax.random.key(seed), plain(x, k, s, p).shape)
  ours = jax.vjp(lambda x: max_pool(x, k, s, p), x)[1](g)[0]
  want = jax.vjp(lambda x: plain(x, k, s, p), x)[1](g)[0]
  return ours, want, g


@pytest.mark.parametrize('shape,k,s,p', [((2, 9, 11, 3), 3, 2, 1), ((1, 8, 8, 2), 3, 2, 1),
                                         ((2, 7, 6, 2), 2, 2, 0), ((1, 6, 7, 2), 3, 1, 1)])
def test_values_and_gradient_match_on_tie_free_inputs(shape, k, s, p):
  x = jax.random.normal(jax.random.key(0), shape)  # continuous: no ties
  np.testing.assert_array_equal(max_pool(x, k, s, p), plain(x, k, s, p))
  ours, want, _ = vjp_pair(x, k, s, p)
  np.testing.assert_allclose(ours, want, rtol=1e-6, atol=1e-6)


def test_ties_send_each_window_s_gradient_to_one_maximum():
  x = jax.random.randint(jax.random.key(2), (2, 10, 9, 3), 0, 3).astype(jnp.float32)  # many ties
  ours, want, g = vjp_pair(x, 3, 2, 1)
  # The total is preserved: every window passes on its whole cotangent...
  np.testing.assert_allclose(ours.sum(), g.sum(), rtol=1e-5)
  # ...and, like select-and-scatter (and torch), to its first maximum in row-major order.
  np.testing.assert_allclose(ours, want, rtol=1e-6, atol=1e-6)


def test_jit_and_bfloat16():
  x = jax.random.normal(jax.random.key(0), (1, 8, 8, 2)).astype(jnp.bfloat16)
  g = jax.jit(jax.grad(lambda x: max_pool(x).astype(jnp.float32).sum()))(x)
  assert g.dtype == jnp.bfloat16
  assert float(g.astype(jnp.float32).sum()) == 4 * 4 * 2  # one per window
