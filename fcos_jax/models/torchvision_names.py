"""One-to-one names between fcos_jax variables and torchvision's `fcos_resnet50_fpn` state dict.

A Flax variable is addressed by (collection, path), e.g. ('params', ('backbone', 'layer1', '0',
'conv1', 'kernel')) <-> 'backbone.body.layer1.0.conv1.weight'. Conv kernels are HWIO in Flax and
OIHW in torch. The per-level `head/scales` parameter has no torchvision counterpart (torchvision's
FCOS has no Scale); a model that should load torchvision weights uses `use_scale=False`.
"""

import re
from typing import Dict, Tuple

import numpy as np

from fcos_jax import trees

_LEAF = {'kernel': 'weight', 'bias': 'bias', 'scale': 'weight', 'mean': 'running_mean',
         'var': 'running_var'}
_HEAD_OUT = {'cls_logits': 'classification_head.cls_logits',
             'bbox_reg': 'regression_head.bbox_reg',
             'bbox_ctrness': 'regression_head.bbox_ctrness'}
_TOWERS = {'cls_tower': 'classification_head', 'reg_tower': 'regression_head'}


def torchvision_key(path: Tuple[str, ...]) -> str:
  """torchvision state-dict key of a Flax variable path (collection excluded)."""
  *mods, leaf = path
  if leaf not in _LEAF:
    raise KeyError(f'no torchvision counterpart for {"/".join(path)}')
  tleaf = _LEAF[leaf]
  top, rest = mods[0], mods[1:]
  if top == 'backbone':
    rest = ['downsample.0' if m == 'downsample_conv' else
            'downsample.1' if m == 'downsample_bn' else m for m in rest]
    return '.'.join(['backbone.body'] + rest + [tleaf])
  if top == 'fpn':
    (name,) = rest
    m = re.fullmatch(r'(inner_blocks|layer_blocks)_(\d+)', name)
    if m:
      return f'backbone.fpn.{m.group(1)}.{m.group(2)}.0.{tleaf}'
    if name in ('p6', 'p7'):
      return f'backbone.fpn.extra_blocks.{name}.{tleaf}'
  if top == 'head':
    if rest and rest[0] in _TOWERS:
      kind, idx = rest[1].split('_')
      seq = 3 * int(idx) + (0 if kind == 'conv' else 1)
      return f'head.{_TOWERS[rest[0]]}.conv.{seq}.{tleaf}'
    if len(rest) == 1 and rest[0] in _HEAD_OUT:
      return f'head.{_HEAD_OUT[rest[0]]}.{tleaf}'
  raise KeyError(f'no torchvision counterpart for {"/".join(path)}')


def torchvision_names(variables) -> Dict[str, Tuple[str, Tuple[str, ...]]]:
  """{torchvision key: (collection, Flax path)} over all variables of a model."""
  names = {}
  for name in trees.leaves_by_path(variables):
    collection, *path = name.split('/')
    key = torchvision_key(tuple(path))
    if key in names:
      raise ValueError(f'{key} is claimed by {names[key]} and {(collection, tuple(path))}')
    names[key] = (collection, tuple(path))
  return names


def torch_to_flax(array: np.ndarray, leaf: str) -> np.ndarray:
  """A torch tensor (as numpy) in the layout of the Flax leaf `leaf`."""
  array = np.asarray(array)
  if leaf == 'kernel':
    return array.transpose(2, 3, 1, 0)  # OIHW -> HWIO
  return array
