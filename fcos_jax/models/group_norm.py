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

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fcos_jax.models.layers import per_platform


def _stats_cpu(x: jax.Array, num_groups: int, epsilon: float):
  """(mean, rstd) [B, G] of each group, summed over positions per channel first."""
  b, c = x.shape[0], x.shape[-1]
  per_group = c // num_groups
  xf = x.astype(jnp.float32).reshape(b, -1, c)
  count = xf.shape[1] * per_group
  mean = jnp.sum(xf, 1).reshape(b, num_groups, per_group).sum(-1) / count
  mean_sq = jnp.sum(xf * xf, 1).reshape(b, num_groups, per_group).sum(-1) / count
  return mean, jax.lax.rsqrt(jnp.maximum(mean_sq - mean * mean, 0.0) + epsilon)


def _stats_native(x: jax.Array, num_groups: int, epsilon: float):
  """(mean, rstd) [B, G] of each group in one reduction over its (positions, channels)."""
  b, c = x.shape[0], x.shape[-1]
  xf = x.astype(jnp.float32).reshape(b, -1, num_groups, c // num_groups)
  mean = jnp.mean(xf, (1, 3))
  mean_sq = jnp.mean(xf * xf, (1, 3))
  return mean, jax.lax.rsqrt(jnp.maximum(mean_sq - mean * mean, 0.0) + epsilon)


def _per_channel(v: jax.Array, x: jax.Array) -> jax.Array:
  """[B, G] -> [B, 1, ..., 1, C], each group's value on its channels."""
  shape = (x.shape[0],) + (1,) * (x.ndim - 2) + (x.shape[-1],)
  return jnp.repeat(v, x.shape[-1] // v.shape[-1], -1).reshape(shape)


def _apply_cpu(x, mean, rstd, scale, bias):
  return (x.astype(jnp.float32) - _per_channel(mean, x)) * (_per_channel(rstd, x) *
                                                            scale) + bias


def _apply_native(x, mean, rstd, scale, bias):
  g = mean.shape[-1]
  b, c = x.shape[0], x.shape[-1]
  xf = x.astype(jnp.float32).reshape(b, -1, g, c // g)
  y = ((xf - mean[:, None, :, None]) * rstd[:, None, :, None]).reshape(x.shape)
  return y * scale + bias


def group_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, num_groups: int,
               epsilon: float) -> jax.Array:
  """Normalizes x [B, ..., C] over each group of C // num_groups channels and all positions;
  float32 result (statistics, as flax's, from E[x^2] - E[x]^2 clipped at 0)."""
  return _apply_cpu(x, *_stats_cpu(x, num_groups, epsilon), scale, bias)


def group_norm_native(x: jax.Array, scale: jax.Array, bias: jax.Array, num_groups: int,
                      epsilon: float) -> jax.Array:
  """`group_norm` as flax's `nn.GroupNorm` computes it: one reduction over each group's
  (positions, channels), the form GPUs and TPUs run well."""
  return _apply_native(x, *_stats_native(x, num_groups, epsilon), scale, bias)


def _saving_input(stats, apply):
  """The GroupNorm of `stats` and `apply` with a gradient that keeps x in its own dtype (with
  the [B, G] statistics) instead of autodiff's float32 copy of it: half the memory per
  bfloat16 GroupNorm in training, and the same gradient, since a bfloat16 x is exact in
  float32. The backward pass is the GroupNorm gradient in float32."""

  @functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
  def norm(x, scale, bias, num_groups, epsilon):
    return apply(x, *stats(x, num_groups, epsilon), scale, bias)

  def forward(x, scale, bias, num_groups, epsilon):
    mean, rstd = stats(x, num_groups, epsilon)
    return apply(x, mean, rstd, scale, bias), (x, mean, rstd, scale)

  def backward(num_groups, epsilon, residuals, dy):
    del epsilon
    x, mean, rstd, scale = residuals
    axes = tuple(range(x.ndim - 1))
    xhat = apply(x, mean, rstd, jnp.ones_like(scale), jnp.zeros_like(scale))
    gy = dy * scale
    # Group means of gy and gy * xhat: the mean term of `stats`' form, then its rstd unused.
    m1, _ = stats(gy, num_groups, 0.0)
    m2, _ = stats(gy * xhat, num_groups, 0.0)
    dx = _per_channel(rstd, x) * (gy - _per_channel(m1, x) - xhat * _per_channel(m2, x))
    return dx.astype(x.dtype), jnp.sum(dy * xhat, axes), jnp.sum(dy, axes)

  norm.defvjp(forward, backward)
  return norm


group_norm_saving_input = _saving_input(_stats_cpu, _apply_cpu)
group_norm_native_saving_input = _saving_input(_stats_native, _apply_native)


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
    # A low-precision input keeps its own dtype as the gradient's residual (`_saving_input`);
    # a float32 one takes autodiff's gradient, which saves the same x.
    low = x.dtype != jnp.float32
    cpu = group_norm_saving_input if low else group_norm
    native = group_norm_native_saving_input if low else group_norm_native
    y = per_platform(lambda x, s, b: cpu(x, s, b, g, eps),
                     lambda x, s, b: native(x, s, b, g, eps),
                     x, scale.astype(jnp.float32), bias.astype(jnp.float32))
    return y.astype(self.dtype)
