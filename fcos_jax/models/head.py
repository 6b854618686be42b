"""The FCOS head, shared across FPN levels: classification and regression towers."""

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from fcos_jax.models.conv import Conv
from fcos_jax.models.group_norm import GroupNorm

NORMAL_001 = nn.initializers.normal(0.01)
REGRESSION_ACTIVATIONS = ('exp', 'relu')


class Tower(nn.Module):
  """num_convs x [3x3 conv, GroupNorm, ReLU]."""
  channels: int
  num_convs: int
  gn_groups: int = 32
  gn_epsilon: float = 1e-5
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    for i in range(self.num_convs):
      x = Conv(self.channels, 3, dtype=self.dtype, kernel_init=NORMAL_001, name=f'conv_{i}')(x)
      x = GroupNorm(num_groups=self.gn_groups, epsilon=self.gn_epsilon, dtype=self.dtype,
                    name=f'gn_{i}')(x)
      x = nn.relu(x)
    return x


class FCOSHead(nn.Module):
  """Per location: `num_classes` logits, 4 regression outputs (l, t, r, b) and 1 centerness logit.

  regression 'exp': exp(scale_l * x) (official FCOS, pixel units). 'relu': relu(scale_l * x),
  in stride units when targets are normalized by the stride (improved FCOS). `use_scale=False`
  drops the learnable per-level scale (torchvision). Centerness hangs off the classification
  tower (paper) or the regression tower (`centerness_on_reg`).

  Returns per-level lists of [B, H, W, C], [B, H, W, 4], [B, H, W] in float32.
  """
  num_classes: int
  channels: int = 256
  num_convs: int = 4
  gn_groups: int = 32
  gn_epsilon: float = 1e-5
  prior_prob: float = 0.01
  regression: str = 'exp'
  use_scale: bool = True
  centerness_on_reg: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: Sequence[jax.Array]):
    if self.regression not in REGRESSION_ACTIVATIONS:
      raise ValueError(f'regression must be one of {REGRESSION_ACTIVATIONS}, '
                       f'got {self.regression!r}')
    tower = dict(channels=self.channels, num_convs=self.num_convs, gn_groups=self.gn_groups,
                 gn_epsilon=self.gn_epsilon, dtype=self.dtype)
    cls_tower = Tower(**tower, name='cls_tower')
    reg_tower = Tower(**tower, name='reg_tower')

    def out_conv(features, name, bias_init=nn.initializers.zeros):
      return Conv(features, 3, dtype=self.dtype, kernel_init=NORMAL_001, bias_init=bias_init,
                  name=name)

    prior_bias = -math.log((1 - self.prior_prob) / self.prior_prob)
    cls_logits = out_conv(self.num_classes, 'cls_logits', nn.initializers.constant(prior_bias))
    bbox_reg = out_conv(4, 'bbox_reg')
    bbox_ctrness = out_conv(1, 'bbox_ctrness')
    scales = (self.param('scales', nn.initializers.ones, (len(features),), jnp.float32)
              if self.use_scale else jnp.ones((len(features),), jnp.float32))

    all_cls, all_reg, all_ctr = [], [], []
    for level, x in enumerate(features):
      c = cls_tower(x)
      r = reg_tower(x)
      all_cls.append(cls_logits(c).astype(jnp.float32))
      reg = bbox_reg(r).astype(jnp.float32) * scales[level]
      all_reg.append(jnp.exp(reg) if self.regression == 'exp' else nn.relu(reg))
      all_ctr.append(bbox_ctrness(r if self.centerness_on_reg else c)[..., 0].astype(jnp.float32))
    return all_cls, all_reg, all_ctr
