"""torchvision's `fcos_resnet50_fpn` (COCO_V1 weights, 39.2 AP on val2017), reproduced.

The config lives in the package (fcos_jax/configs/coco_torchvision.py); this file is what `--config` takes.
"""

from fcos_jax.configs.coco_torchvision import get_config  # noqa: F401
