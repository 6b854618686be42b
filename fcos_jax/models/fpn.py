"""Feature Pyramid Network producing P3..P7 from C3..C5 (FCOS / RetinaNet variant)."""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fcos_jax.models.conv import Conv
from fcos_jax.models.conv1x1 import Conv1x1

# kaiming_uniform(a=1), the FPN init of the official code and torchvision.
P6P7_SOURCES = ('p5', 'c5')
KAIMING_UNIFORM_A1 = nn.initializers.variance_scaling(1.0, 'fan_in', 'uniform')


def upsample2x_to(x, shape):
  """Nearest 2x upsampling cropped to `shape` (h, w) (only differs for odd-sized inputs)."""
  x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
  return x[:, :shape[0], :shape[1]]


class FPN(nn.Module):
  """Lateral 1x1 convs on C3-C5, top-down nearest 2x upsampling + add, 3x3 output convs; P6 and
  P7 by stride-2 3x3 convs, from P5 (`p6p7_source='p5'`) or C5 ('c5'), with ReLU before P7."""
  channels: int = 256
  p6p7_source: str = 'p5'
  dtype: Any = jnp.float32

  def _conv(self, kernel, stride, name):
    if kernel == 1:
      return Conv1x1(self.channels, stride, dtype=self.dtype, kernel_init=KAIMING_UNIFORM_A1,
                     name=name)
    return Conv(self.channels, kernel, stride, dtype=self.dtype, kernel_init=KAIMING_UNIFORM_A1,
                name=name)

  @nn.compact
  def __call__(self, features: Sequence[jax.Array]):
    if self.p6p7_source not in P6P7_SOURCES:
      raise ValueError(f'p6p7_source must be one of {P6P7_SOURCES}, got {self.p6p7_source!r}')
    laterals = [self._conv(1, 1, f'inner_blocks_{i}')(f) for i, f in enumerate(features)]
    top = laterals[-1]
    outputs = [self._conv(3, 1, f'layer_blocks_{len(features) - 1}')(top)]
    for i in range(len(features) - 2, -1, -1):
      top = laterals[i] + upsample2x_to(top, laterals[i].shape[1:3])
      outputs.insert(0, self._conv(3, 1, f'layer_blocks_{i}')(top))
    p6 = self._conv(3, 2, 'p6')(outputs[-1] if self.p6p7_source == 'p5' else features[-1])
    p7 = self._conv(3, 2, 'p7')(nn.relu(p6))
    return outputs + [p6, p7]
