"""A seeded torchvision `fcos_resnet50_fpn` whose every tensor matters, shared by the parity tests.

Built with weights=None (BatchNorm2d layout), then batch-norm statistics, GroupNorm affine and
biases are perturbed and the head convs enlarged, so that a wrong mapping cannot hide behind
identity-like values and the detections depend on every input pixel.
"""

import torch
import torchvision
from torch import nn


def randomized_fcos() -> torchvision.models.detection.FCOS:
  torch.manual_seed(0)
  torch.set_num_threads(2)
  tv = torchvision.models.detection.fcos_resnet50_fpn(weights=None, weights_backbone=None)
  g = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for m in tv.modules():
      if isinstance(m, nn.BatchNorm2d):
        m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
        m.running_var.copy_(torch.rand(m.num_features, generator=g) * 1.5 + 0.5)
        m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.5)
        m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
      elif isinstance(m, nn.GroupNorm):
        m.weight.copy_(torch.rand(m.num_channels, generator=g) + 0.5)
        m.bias.copy_(torch.randn(m.num_channels, generator=g) * 0.2)
      elif isinstance(m, nn.Conv2d) and m.bias is not None:
        m.bias.add_(torch.randn(m.out_channels, generator=g) * 0.1)
    # Head convs: std 0.01 from init gives near-constant outputs; make them informative.
    for name, p in tv.head.named_parameters():
      if name.endswith('weight') and p.dim() == 4:
        p.mul_(5.0)
  return tv.eval()
