"""FCOS R50-FPN 1x on COCO with the official FCOS settings (tianzhi0549/FCOS, fcos_R_50_FPN_1x).

The config lives in the package (fcos_jax/configs/coco.py); this file is what `--config` takes.
"""

from fcos_jax.configs.coco import get_config  # noqa: F401
