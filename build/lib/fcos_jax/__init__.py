"""fcos_jax: FCOS (Fully Convolutional One-Stage object detection) in JAX/Flax."""
