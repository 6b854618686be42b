"""ResNet backbone (torchvision layout) with frozen BatchNorm, returning C3, C4, C5.

Module and parameter names mirror torchvision's `resnet*` so weights map one-to-one
(`fcos_jax.models.torchvision_names`). Padding is explicit and symmetric, as in torch.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fcos_jax.models.conv import Conv
from fcos_jax.models.conv1x1 import Conv1x1
from fcos_jax.models.group_norm import GroupNorm
from fcos_jax.models.max_pool import max_pool

STAGE_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
NORMS = ('frozen_bn', 'gn')


def conv(features, kernel, stride=1, *, name, dtype):
  init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
  if kernel == 1:
    return Conv1x1(features, stride, use_bias=False, dtype=dtype, kernel_init=init, name=name)
  if kernel == 3:
    return Conv(features, 3, stride, use_bias=False, dtype=dtype, kernel_init=init, name=name)
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), (stride, stride), padding=((pad, pad), (pad, pad)),
                 use_bias=False, dtype=dtype, param_dtype=jnp.float32,
                 kernel_init=init, name=name)


class FrozenBatchNorm(nn.Module):
  """BatchNorm with fixed statistics and affine, applied as y = x * scale' + bias'.

  All four tensors live in the 'batch_stats' collection (torchvision keeps them as buffers in
  FrozenBatchNorm2d), so they never receive gradients or optimizer updates.
  """
  epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    scale = self.variable('batch_stats', 'scale', jnp.ones, (c,), jnp.float32).value
    bias = self.variable('batch_stats', 'bias', jnp.zeros, (c,), jnp.float32).value
    mean = self.variable('batch_stats', 'mean', jnp.zeros, (c,), jnp.float32).value
    var = self.variable('batch_stats', 'var', jnp.ones, (c,), jnp.float32).value
    mul = scale * jax.lax.rsqrt(var + self.epsilon)
    add = bias - mean * mul
    return x * mul.astype(self.dtype) + add.astype(self.dtype)


def norm(kind, dtype, name):
  """The backbone's norm layer, its variables directly under `name` (torchvision's layout).

  'frozen_bn': pretrained detection backbones (the default). 'gn': trainable GroupNorm (up to 32
  groups), for training from scratch, where an identity frozen BN would leave the ResNet
  unnormalized.
  """
  if kind == 'frozen_bn':
    return FrozenBatchNorm(dtype=dtype, name=name)
  if kind == 'gn':
    return lambda x: GroupNorm(num_groups=math.gcd(32, x.shape[-1]), epsilon=1e-5,
                               dtype=dtype, name=name)(x)
  raise ValueError(f'backbone norm must be one of {NORMS}, got {kind!r}')


class BasicBlock(nn.Module):
  width: int
  stride: int
  downsample: bool
  norm: str = 'frozen_bn'
  dtype: Any = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x):
    identity = x
    y = conv(self.width, 3, self.stride, name='conv1', dtype=self.dtype)(x)
    y = nn.relu(norm(self.norm, self.dtype, 'bn1')(y))
    y = conv(self.width, 3, name='conv2', dtype=self.dtype)(y)
    y = norm(self.norm, self.dtype, 'bn2')(y)
    if self.downsample:
      identity = conv(self.width, 1, self.stride, name='downsample_conv', dtype=self.dtype)(x)
      identity = norm(self.norm, self.dtype, 'downsample_bn')(identity)
    return nn.relu(y + identity)


class Bottleneck(nn.Module):
  """ResNet v1.5 bottleneck: the stride sits on the 3x3 conv."""
  width: int
  stride: int
  downsample: bool
  norm: str = 'frozen_bn'
  dtype: Any = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x):
    identity = x
    y = conv(self.width, 1, name='conv1', dtype=self.dtype)(x)
    y = nn.relu(norm(self.norm, self.dtype, 'bn1')(y))
    y = conv(self.width, 3, self.stride, name='conv2', dtype=self.dtype)(y)
    y = nn.relu(norm(self.norm, self.dtype, 'bn2')(y))
    y = conv(self.width * 4, 1, name='conv3', dtype=self.dtype)(y)
    y = norm(self.norm, self.dtype, 'bn3')(y)
    if self.downsample:
      identity = conv(self.width * 4, 1, self.stride, name='downsample_conv', dtype=self.dtype)(x)
      identity = norm(self.norm, self.dtype, 'downsample_bn')(identity)
    return nn.relu(y + identity)


class ResNetLayer(nn.Module):
  """One stage (torchvision `layerK`): blocks named '0', '1', ..."""
  block_cls: Any
  width: int
  blocks: int
  stride: int
  norm: str = 'frozen_bn'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    out_ch = self.width * self.block_cls.expansion
    for j in range(self.blocks):
      stride = self.stride if j == 0 else 1
      downsample = j == 0 and (stride != 1 or x.shape[-1] != out_ch)
      x = self.block_cls(self.width, stride, downsample, self.norm, dtype=self.dtype,
                         name=str(j))(x)
    return x


class ResNet(nn.Module):
  """ResNet-{18,34,50,101} body. Returns [C3, C4, C5] (strides 8, 16, 32).

  `freeze_at`: 0 = train everything; 1 = freeze the stem; k >= 2 = also freeze layer1..layer{k-1}
  (the official FCOS FREEZE_CONV_BODY_AT; 2 freezes stem + layer1). Frozen parts get no gradient
  (stop_gradient on their output); the optimizer must also leave them alone
  (`fcos_jax.models.fcos.trainable_mask`).
  """
  depth: int = 50
  width: int = 64
  freeze_at: int = 2
  norm: str = 'frozen_bn'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.depth not in STAGE_BLOCKS:
      raise ValueError(f'ResNet depth must be one of {sorted(STAGE_BLOCKS)}, got {self.depth}')
    block_cls = BasicBlock if self.depth < 50 else Bottleneck
    x = conv(self.width, 7, 2, name='conv1', dtype=self.dtype)(x.astype(self.dtype))
    x = nn.relu(norm(self.norm, self.dtype, 'bn1')(x))
    x = max_pool(x, 3, 2, 1)
    if self.freeze_at >= 1:
      x = jax.lax.stop_gradient(x)
    outputs = []
    for stage, blocks in enumerate(STAGE_BLOCKS[self.depth]):
      x = ResNetLayer(block_cls, self.width * 2 ** stage, blocks, 1 if stage == 0 else 2,
                      self.norm, dtype=self.dtype, name=f'layer{stage + 1}')(x)
      if self.freeze_at >= stage + 2:
        x = jax.lax.stop_gradient(x)
      if stage >= 1:
        outputs.append(x)
    return outputs
