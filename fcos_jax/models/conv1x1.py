"""A 1x1 convolution computed as one matrix product, parameters as `nn.Conv`'s.

Why: on XLA's CPU backend a 1x1 convolution's weight gradient is lowered as a convolution over
transposed activations and costs 2-4x its forward (docs/performance.md); as a matrix product
[B*H*W, Cin] x [Cin, Cout] both gradients are plain matrix products too. The kernel keeps
`nn.Conv`'s name, shape [1, 1, Cin, Cout] and initializer call, so checkpoints, the torchvision
mapping and initial values are unchanged. A stride subsamples first (a 1x1 window sees only the
pixels it lands on), which equals the strided convolution without padding. Programs for other
platforms keep XLA's 1x1 convolution (chosen at lowering, `layers.per_platform`).
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from fcos_jax.models.layers import per_platform


class Conv1x1(nn.Module):
  features: int
  stride: int = 1
  use_bias: bool = True
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param('kernel', self.kernel_init, (1, 1, x.shape[-1], self.features),
                        self.param_dtype)
    stride = self.stride

    def as_product(x, kernel):
      if stride > 1:
        x = x[:, ::stride, ::stride]
      return jnp.dot(x, kernel[0, 0])

    def native(x, kernel):
      return lax.conv_general_dilated(x, kernel, (stride, stride), 'VALID',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    y = per_platform(as_product, native, x.astype(self.dtype), kernel.astype(self.dtype))
    if self.use_bias:
      y = y + self.param('bias', self.bias_init, (self.features,), self.param_dtype).astype(
          self.dtype)
    return y
