"""A KxK convolution whose weight gradient is K*K matrix products, parameters as `nn.Conv`'s.

Why: on XLA's CPU backend the weight gradient of a 3x3 convolution over a large map (the head's
towers at P3) costs 3-5x the forward; written as one [Cin, B*Ho*Wo] x [B*Ho*Wo, Cout] product per
kernel offset it costs about 2x (docs/performance.md). On small maps and few output channels
XLA's own gradient is faster, so layers choose by size. The forward and the input gradient stay
XLA's convolution, except on the smallest maps, where one product does the whole convolution.
The kernel keeps `nn.Conv`'s name, shape [K, K, Cin, Cout] and initializer call, so
checkpoints, the torchvision mapping and initial values are unchanged. Only programs for the
CPU take these paths (they hold K*K shifted copies of the input), chosen per platform at
lowering (`layers.per_platform`); GPUs and TPUs keep XLA's convolution and its gradients.
"""

import functools
import math
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from fcos_jax.models.layers import per_platform

DIMENSIONS = ('NHWC', 'HWIO', 'NHWC')


def _plain(x, kernel, stride, padding):
  return lax.conv_general_dilated(x, kernel, (stride, stride), ((padding, padding),) * 2,
                                  dimension_numbers=DIMENSIONS)


PRODUCTS_MIN_WORK = 2 ** 26  # multiply-adds per kernel offset, see `products_pay_off`


def _shifted_inputs(x, k, stride, padding, out_hw):
  """The zero-padded input as each of the k*k kernel offsets sees it (row-major offsets), one
  [B, Ho, Wo, Cin] array per offset."""
  (ho, wo), (b, _, _, c) = out_hw, x.shape
  xp = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  return [lax.slice(xp, (0, i, j, 0), (b, i + stride * (ho - 1) + 1, j + stride * (wo - 1) + 1, c),
                    (1, stride, stride, 1)) for i in range(k) for j in range(k)]


def weight_gradient_by_products(x, g, kernel_shape, stride, padding):
  """d(loss)/d(kernel) of `_plain` as one [Cin, B*Ho*Wo] x [B*Ho*Wo, Cout] product per offset."""
  g2 = g.reshape(-1, g.shape[-1])
  rows = [jnp.dot(seen.reshape(-1, x.shape[-1]).T, g2, preferred_element_type=jnp.float32)
          for seen in _shifted_inputs(x, kernel_shape[0], stride, padding, g.shape[1:3])]
  return jnp.stack(rows).reshape(kernel_shape)


def products_pay_off(g_shape, kernel_shape) -> bool:
  """Whether the per-offset products beat XLA's CPU weight gradient for this layer.

  Measured per layer shape on a 2-core x86 CPU (docs/performance.md): they win by 1.3-3.4x
  from about 2^26 multiply-adds per offset (B*Ho*Wo*Cin*Cout; R50 towers at P3-P4, R18 at P3)
  and lose by 1.2-5x below it (small maps, and the 1-5-channel predictors, whose products are
  matrix-vector).
  """
  return math.prod(g_shape[:3]) * kernel_shape[2] * kernel_shape[3] >= PRODUCTS_MIN_WORK


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv2d(x: jax.Array, kernel: jax.Array, stride: int = 1, padding: int = 1,
           products: Optional[bool] = None) -> jax.Array:
  """x [B, H, W, Cin] * kernel [K, K, Cin, Cout], `stride`, zero `padding` on each side.

  `products`: compute the weight gradient by per-offset matrix products (True), by XLA (False),
  or, in programs for the CPU, by `products_pay_off` (None; XLA's on other platforms).
  """
  return _plain(x, kernel, stride, padding)


def _conv2d_fwd(x, kernel, stride, padding, products):
  return _plain(x, kernel, stride, padding), (x, kernel)


def _conv2d_bwd(stride, padding, products, residuals, g):
  x, kernel = residuals

  def native(x, kernel, g):
    return jax.vjp(lambda x, w: _plain(x, w, stride, padding), x, kernel)[1](g)

  def by_products(x, kernel, g):
    dx = jax.vjp(lambda x: _plain(x, kernel, stride, padding), x)[1](g)[0]
    dw = weight_gradient_by_products(x, g, kernel.shape, stride, padding)
    return dx, dw.astype(kernel.dtype)

  if products is None:  # cuDNN / TPU convolution gradients need no help
    if not products_pay_off(g.shape, kernel.shape):
      return native(x, kernel, g)
    return per_platform(by_products, native, x, kernel, g)
  return (by_products if products else native)(x, kernel, g)


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


SMALL_MAP_POSITIONS = 16  # output positions per image, see `conv2d_by_product`


def conv2d_by_product(x: jax.Array, kernel: jax.Array, stride: int = 1,
                      padding: int = 1) -> jax.Array:
  """`conv2d` as one product of the K*K shifted inputs side by side [B*Ho*Wo, K*K*Cin] with the
  kernel [K*K*Cin, Cout]; gradients by JAX's differentiation.

  For small maps (P6/P7, at most `SMALL_MAP_POSITIONS` outputs per image) on CPU: XLA's CPU
  convolution falls back to a slow path there (docs/performance.md), while the copies are tiny.
  """
  k = kernel.shape[0]
  out_hw = tuple((n + 2 * padding - k) // stride + 1 for n in x.shape[1:3])
  shifted = _shifted_inputs(x, k, stride, padding, out_hw)
  return jnp.dot(jnp.concatenate(shifted, -1), kernel.reshape(-1, kernel.shape[-1]))


class Conv(nn.Module):
  """Square KxK convolution with symmetric zero padding K // 2 (as the project's `nn.Conv`s)."""
  features: int
  kernel_size: int = 3
  stride: int = 1
  use_bias: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param('kernel', self.kernel_init, (k, k, x.shape[-1], self.features),
                        self.param_dtype)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    h, w = (-(-n // self.stride) for n in x.shape[1:3])
    if h * w <= SMALL_MAP_POSITIONS:
      y = per_platform(lambda x, w: conv2d_by_product(x, w, self.stride, k // 2),
                       lambda x, w: _plain(x, w, self.stride, k // 2), x, kernel)
    else:
      y = conv2d(x, kernel, self.stride, k // 2)
    if self.use_bias:
      y = y + self.param('bias', self.bias_init, (self.features,), self.param_dtype).astype(
          self.dtype)
    return y
