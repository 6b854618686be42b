"""GroupNorm with statistics taken per channel first, parameters as `nn.GroupNorm`'s.

Why: `nn.GroupNorm` reduces each group over (H, W, C/G) of a [B, H, W, G, C/G] view in one
reduction. On XLA's CPU backend that reduction and its gradient are slow and lose precision on
large maps (the input gradient far off a float64 reference on the from-scratch R18 stem).
Summing over H*W per channel first ([B, H*W, C] -> [B, C], a reduction along the major axis),
then over the channels of a group, is the same formula, close to float64 and faster
(docs/performance.md has the numbers). Same names
('scale', 'bias'), shapes, initial values and float32 statistics as `nn.GroupNorm`, so
checkpoints and the torchvision mapping are unchanged. Programs for other platforms take
flax's form (`group_norm_native`), chosen at lowering (`layers.per_platform`).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fcos_jax.models.layers import per_platform


def group_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, num_groups: int,
               epsilon: float) -> jax.Array:
  """Normalizes x [B, ..., C] over each group of C // num_groups channels and all positions;
  float32 result (statistics, as flax's, from E[x^2] - E[x]^2 clipped at 0)."""
  b, c = x.shape[0], x.shape[-1]
  per_group = c // num_groups
  xf = x.astype(jnp.float32).reshape(b, -1, c)
  count = xf.shape[1] * per_group
  mean = jnp.sum(xf, 1).reshape(b, num_groups, per_group).sum(-1) / count
  mean_sq = jnp.sum(xf * xf, 1).reshape(b, num_groups, per_group).sum(-1) / count
  rstd = jax.lax.rsqrt(jnp.maximum(mean_sq - mean * mean, 0.0) + epsilon)
  shape = (b,) + (1,) * (x.ndim - 2) + (c,)
  mean = jnp.repeat(mean, per_group, -1).reshape(shape)
  mul = (jnp.repeat(rstd, per_group, -1) * scale).reshape(shape)
  return (x.astype(jnp.float32) - mean) * mul + bias


def group_norm_native(x: jax.Array, scale: jax.Array, bias: jax.Array, num_groups: int,
                      epsilon: float) -> jax.Array:
  """`group_norm` as flax's `nn.GroupNorm` computes it: one reduction over each group's
  (positions, channels), the form GPUs and TPUs run well."""
  b, c = x.shape[0], x.shape[-1]
  xf = x.astype(jnp.float32).reshape(b, -1, num_groups, c // num_groups)
  mean = jnp.mean(xf, (1, 3), keepdims=True)
  mean_sq = jnp.mean(xf * xf, (1, 3), keepdims=True)
  rstd = jax.lax.rsqrt(jnp.maximum(mean_sq - mean * mean, 0.0) + epsilon)
  y = ((xf - mean) * rstd).reshape(x.shape)
  return y * scale + bias


class GroupNorm(nn.Module):
  num_groups: int = 32
  epsilon: float = 1e-5
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    if c % self.num_groups:
      raise ValueError(f'{c} channels cannot be split into {self.num_groups} groups')
    scale = self.param('scale', nn.initializers.ones, (c,), self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, (c,), self.param_dtype)
    g, eps = self.num_groups, self.epsilon
    y = per_platform(lambda x, s, b: group_norm(x, s, b, g, eps),
                     lambda x, s, b: group_norm_native(x, s, b, g, eps),
                     x, scale.astype(jnp.float32), bias.astype(jnp.float32))
    return y.astype(self.dtype)
