"""The built-in demo: a small FCOS trained from scratch on the synthetic shapes dataset, on CPU.

The config lives in the package (fcos_jax/configs/shapes.py); this file is what `--config` takes.
"""

from fcos_jax.configs.shapes import get_config  # noqa: F401
