"""Max pooling whose gradient is elementwise selects instead of XLA's select-and-scatter.

Programs for the CPU only (chosen at lowering); GPUs and TPUs keep select-and-scatter.

Why: on XLA's CPU backend the gradient of a reduce_window max (select-and-scatter) costs many
times the pooling itself (docs/performance.md has the timings). Here the backward visits the k*k window offsets in row-major order, routes
the cotangent to the first input equal to the window's max, and places each offset's share with
a strided pad; everything fuses into elementwise loops.

Ties: the whole gradient of a window goes to its first maximum in row-major order, as torch's
max_pool2d and XLA's select-and-scatter (which keeps the earlier element on >=) do.
"""

import functools

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

from fcos_jax.models.layers import per_platform


def max_pool(x: jax.Array, window: int = 3, stride: int = 2, padding: int = 1) -> jax.Array:
  """[B, H, W, C] -> max over `window`x`window` windows, `stride`, -inf `padding` each side
  (as `flax.linen.max_pool(x, (k, k), (s, s), ((p, p), (p, p)))`); the gradient by selects in
  programs for the CPU, XLA's select-and-scatter elsewhere (`layers.per_platform`)."""
  return per_platform(lambda x: _max_pool_by_selects(x, window, stride, padding),
                      lambda x: _pool(x, window, stride, padding), x)


def _pool(x, window, stride, padding):
  # Explicit -inf padding and flax's max_pool (a reduce_window, as fast as padding inside it):
  # the ONNX converter maps `flax.linen.max_pool` to an NCHW MaxPool, not a raw reduce_window.
  x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)),
              constant_values=-jnp.inf)
  return nn.max_pool(x, window_shape=(window, window), strides=(stride, stride), padding='VALID')


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool_by_selects(x, window, stride, padding):
  return _pool(x, window, stride, padding)


def _max_pool_fwd(x, window, stride, padding):
  y = _pool(x, window, stride, padding)
  return y, (x, y)


def _max_pool_bwd(window, stride, padding, residuals, g):
  x, y = residuals
  _, h, w, _ = x.shape
  _, ho, wo, _ = y.shape
  xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)),
               constant_values=-jnp.inf)
  hp, wp = xp.shape[1:3]
  zero = jnp.zeros((), g.dtype)
  taken = jnp.zeros(y.shape, bool)
  dxp = jnp.zeros(xp.shape, g.dtype)
  for di in range(window):
    for dj in range(window):
      seen = lax.slice(xp, (0, di, dj, 0),
                       (xp.shape[0], di + stride * (ho - 1) + 1, dj + stride * (wo - 1) + 1,
                        xp.shape[3]), (1, stride, stride, 1))
      hit = (seen == y) & ~taken
      taken = taken | hit
      share = jnp.where(hit, g, zero)
      dxp = dxp + lax.pad(share, zero, ((0, 0, 0),
                                        (di, hp - di - stride * (ho - 1) - 1, stride - 1),
                                        (dj, wp - dj - stride * (wo - 1) - 1, stride - 1),
                                        (0, 0, 0)))
  return (dxp[:, padding:padding + h, padding:padding + w],)


_max_pool_by_selects.defvjp(_max_pool_fwd, _max_pool_bwd)
