"""The FCOS detector: ResNet -> FPN (P3..P7) -> shared head, outputs flattened per location."""

import dataclasses
from typing import Any, Dict

import flax.linen as nn
import jax
import jax.numpy as jnp

from fcos_jax.models.fpn import FPN
from fcos_jax.models.head import FCOSHead
from fcos_jax.models.layers import per_accelerator
from fcos_jax.models.resnet import ResNet

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
# model.dtype 'auto': bfloat16 compute in GPU and TPU programs, float32 in CPU programs (where
# XLA's bf16 convolutions are slow) and ONNX graphs, chosen per platform at lowering
# (`FCOS.apply`).
AUTO = 'auto'
COMPUTE_DTYPES = (*DTYPES, AUTO)
# Variable shapes do not depend on the image size: models are initialized on this small input.
INIT_IMAGE_SHAPE = (64, 64)


def flatten_levels(per_level):
  """[B, H_l, W_l, ...] per level -> [B, sum_l H_l*W_l, ...], P3..P7 order, row-major."""
  return jnp.concatenate(
      [x.reshape((x.shape[0], x.shape[1] * x.shape[2]) + x.shape[3:]) for x in per_level], axis=1)


class FCOS(nn.Module):
  """Images [B, H, W, 3] (normalized) -> dict of float32 outputs over all N locations:
  'cls_logits' [B, N, C], 'bbox_reg' [B, N, 4] (l, t, r, b in the targets' units),
  'centerness' [B, N] (logits). With `return_features`, also 'backbone' [C3..C5] and
  'fpn' [P3..P7].

  `dtype` is the compute dtype (parameters, GroupNorm statistics and outputs stay float32), or
  'auto': `apply` then holds the bfloat16 model for GPUs and TPUs and the float32 one for
  everything else (`layers.per_accelerator`), features returned in float32 by both.
  """
  num_classes: int = 80
  backbone_depth: int = 50
  backbone_width: int = 64
  freeze_at: int = 2
  backbone_norm: str = 'frozen_bn'
  fpn_channels: int = 256
  p6p7_source: str = 'p5'
  head_num_convs: int = 4
  gn_groups: int = 32
  gn_epsilon: float = 1e-5
  prior_prob: float = 0.01
  regression: str = 'exp'
  use_scale: bool = True
  centerness_on_reg: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, return_features: bool = False) -> Dict[str, Any]:
    c3_c5 = ResNet(self.backbone_depth, self.backbone_width, self.freeze_at, self.backbone_norm,
                   self.dtype, name='backbone')(images)
    p3_p7 = FPN(self.fpn_channels, self.p6p7_source, self.dtype, name='fpn')(c3_c5)
    cls, reg, ctr = FCOSHead(
        self.num_classes, self.fpn_channels, self.head_num_convs, self.gn_groups,
        self.gn_epsilon, self.prior_prob, self.regression, self.use_scale,
        self.centerness_on_reg, self.dtype, name='head')(p3_p7)
    out = dict(cls_logits=flatten_levels(cls), bbox_reg=flatten_levels(reg),
               centerness=flatten_levels(ctr))
    if return_features:
      out['backbone'] = c3_c5
      out['fpn'] = p3_p7
    return out

  def apply(self, variables, *args, **kwargs):
    if self.dtype != AUTO:
      return super().apply(variables, *args, **kwargs)

    def run(dtype):
      def f(variables, *args):
        out = nn.Module.apply(self.clone(dtype=dtype), variables, *args, **kwargs)
        return jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), out)
      return f
    return per_accelerator(run(jnp.bfloat16), run(jnp.float32), variables, *args)

  def init_with_output(self, rngs, *args, **kwargs):
    model = self.clone(dtype=jnp.float32) if self.dtype == AUTO else self
    return nn.Module.init_with_output(model, rngs, *args, **kwargs)


def create_model(model_config) -> FCOS:
  """The FCOS module described by `config.model`: every field `FCOS` declares is taken from the
  config (`dtype` by name); the config's other fields (geometry, label space) are not the
  module's."""
  if model_config.dtype not in COMPUTE_DTYPES:
    raise ValueError(f'model.dtype must be one of {list(COMPUTE_DTYPES)}, got '
                     f'{model_config.dtype!r}')
  fields = {f.name for f in dataclasses.fields(FCOS) if f.init} - {'parent', 'name'}
  kwargs = {k: model_config[k] for k in fields if k in model_config}
  kwargs['dtype'] = DTYPES.get(model_config.dtype, model_config.dtype)
  return FCOS(**kwargs)


def input_dtype(model_config):
  """The dtype the model's input is normalized to: float32 under 'auto' (cast in `apply`)."""
  return DTYPES.get(model_config.dtype, jnp.float32)


def init_variables(model: FCOS, rng) -> Dict[str, Any]:
  """Fresh {'params', 'batch_stats'} of `model` ('batch_stats': {} without frozen BN)."""
  variables = model.init(rng, jnp.zeros((1, *INIT_IMAGE_SHAPE, 3), jnp.float32))
  return {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}


def abstract_variables(model: FCOS) -> Dict[str, Any]:
  """ShapeDtypeStructs of `init_variables`: what a checkpoint is restored into."""
  return jax.eval_shape(lambda: init_variables(model, jax.random.key(0)))


def trainable_mask(params, freeze_at: int):
  """Pytree of bools over `params`: False for the frozen stem / early ResNet stages.

  Matches `ResNet.freeze_at`; use it to keep the optimizer (weight decay included) off them.
  """
  frozen = set()
  if freeze_at >= 1:
    frozen.update({'conv1', 'bn1'})
  frozen.update(f'layer{k}' for k in range(1, freeze_at))

  def trainable(path, _):
    keys = [getattr(p, 'key', None) for p in path]
    return not (len(keys) > 1 and keys[0] == 'backbone' and keys[1] in frozen)
  return jax.tree_util.tree_map_with_path(trainable, params)
