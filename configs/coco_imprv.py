"""FCOS R50-FPN 1x with the official 'imprv' tricks: center sampling 1.5, GIoU, stride-normalized

The config lives in the package (fcos_jax/configs/coco_imprv.py); this file is what `--config` takes.
"""

from fcos_jax.configs.coco_imprv import get_config  # noqa: F401
