"""torchvision's `fcos_resnet50_fpn` (COCO_V1 weights, 39.2 AP on val2017), reproduced.

Architecture and inference as torchvision: P6/P7 from P5, centerness on the regression tower,
ReLU regression without per-level scales, outputs in units of the stride, GroupNorm eps 1e-5,
ImageNet mean/std on RGB, 91 outputs whose index is the COCO category id, score threshold 0.2 on
sqrt(cls * centerness), NMS 0.6, 1000 candidates per level, 100 detections. Where torchvision
departs from the official FCOS and it matters for parity:
- location (anchor) centres at i * (padded_size // level_size), no half-stride offset, so P6/P7
  'strides' follow the padded size (`location_mode='torchvision'`);
- open level ranges (0, 64), (64, 128), ..., (512, inf) (`inclusive_ranges=False`);
- GIoU with eps 1e-7 and no +1 smoothing, not weighted by centerness, every loss / num_pos;
- evaluation input as `GeneralizedRCNNTransform` (`data.torchvision_exact`): JPEGs decoded as
  PIL, sizes floored, float resize, each image zero-padded to a multiple of 32 (so the anchors
  follow torchvision's padded size), and the postprocess keeps what torchvision keeps (boxes of
  padding locations clipped to the border included: `postprocess.drop_outside=False`).
"""

from fcos_jax.configs import coco


def get_config():
  config = coco.get_config()
  m = config.model
  m.num_classes = 91
  m.label_space = 'category_id'
  m.p6p7_source = 'p5'
  m.centerness_on_reg = True
  m.regression = 'relu'
  m.use_scale = False
  m.norm_reg_targets = True
  m.center_sampling_radius = 1.5
  m.location_mode = 'torchvision'
  m.inclusive_ranges = False
  m.size_ranges = ((0, 64), (64, 128), (128, 256), (256, 512), (512, float('inf')))
  config.loss.box_loss = 'giou'
  config.loss.iou_smooth = 0.0
  config.loss.box_weighting = 'uniform'
  p = config.postprocess
  p.score_threshold = 0.2
  p.threshold_on_combined = True
  p.sqrt_score = True
  p.nms_threshold = 0.6
  p.pre_nms_top_n = 1000
  p.max_detections = 100
  config.data.size_divisibility = 32
  config.data.eval_padding = 'per_image'
  config.data.torchvision_exact = True
  p.drop_outside = False
  return config
