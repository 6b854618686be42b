"""Exponential moving average of the weights, kept in the train state and updated inside the
jitted step after each optimizer update. The decay warms up as min(decay, (1 + u) / (10 + u))
over the u-th update (TensorFlow's `ExponentialMovingAverage(num_updates=...)`, timm's ModelEmaV2
warm-up), so the average is not dominated by the random init early on."""

import jax
import jax.numpy as jnp
import optax


def decay_at(decay: float, num_updates) -> jax.Array:
  """The decay applied at the `num_updates`-th update (1-based)."""
  u = jnp.asarray(num_updates, jnp.float32)
  return jnp.minimum(jnp.float32(decay), (1.0 + u) / (10.0 + u))


def update(ema_params, params, decay: float, num_updates):
  """ema <- d * ema + (1 - d) * params, with d = `decay_at(decay, num_updates)`."""
  d = decay_at(decay, num_updates)
  return optax.incremental_update(params, ema_params, 1.0 - d)
