"""Model input normalization, on device: padded uint8 images -> (x - mean) / std in the compute
dtype, zero in the padding. The one place where the config's pixel statistics meet the model."""

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from fcos_jax.models.fcos import input_dtype


def normalize_images(images: jax.Array, image_sizes: jax.Array, mean: Sequence[float],
                     std: Sequence[float], dtype=jnp.float32) -> jax.Array:
  """uint8 [B, H, W, 3] -> (x - mean) / std, zero outside each image's (h, w)."""
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  x = (images.astype(jnp.float32) - mean) / std
  h = jnp.arange(images.shape[1])[None, :, None]
  w = jnp.arange(images.shape[2])[None, None, :]
  inside = (h < image_sizes[:, 0, None, None]) & (w < image_sizes[:, 1, None, None])
  return jnp.where(inside[..., None], x, 0.0).astype(dtype)


def image_normalizer(config) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """(images uint8 [B, H, W, 3], image_sizes [B, 2]) -> the model input of `config`
  (`data.pixel_mean` / `pixel_std`, `model.dtype`)."""
  mean, std = tuple(config.data.pixel_mean), tuple(config.data.pixel_std)
  dtype = input_dtype(config.model)
  return lambda images, image_sizes: normalize_images(images, image_sizes, mean, std, dtype)
