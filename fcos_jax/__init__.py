"""fcos_jax: FCOS (Fully Convolutional One-Stage object detection) in JAX/Flax."""

__version__ = '0.2.0'
