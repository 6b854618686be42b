"""FCOS R50-FPN 1x with the official 'imprv' tricks: center sampling 1.5, GIoU, stride-normalized
regression targets with ReLU, centerness on the regression tower (fcos_imprv_R_50_FPN_1x)."""

from fcos_jax.configs import coco


def get_config():
  config = coco.get_config()
  config.model.center_sampling_radius = 1.5
  config.model.norm_reg_targets = True
  config.model.regression = 'relu'
  config.model.centerness_on_reg = True
  config.loss.box_loss = 'giou'
  return config
