"""FCOS training losses: sigmoid focal loss, IoU/GIoU box loss and centerness BCE.

The normalizers (number of positives, sum of centerness targets) can be made global over a
device axis: given `axis_name`, each is the mean over devices of the per-device count, as the
official code does, so that the device-mean of the loss (and of its gradient) equals the loss of
the whole global batch on one device.
"""

from typing import Dict, Optional

import jax
import jax.numpy as jnp

from fcos_jax.targets import Targets

BOX_LOSSES = ('iou', 'giou')
BOX_WEIGHTINGS = ('centerness', 'uniform')


def sigmoid_focal_loss(logits, targets, alpha: float = 0.25, gamma: float = 2.0):
  """Elementwise focal loss (Lin et al. 2017) of logits against {0,1} targets."""
  logits = logits.astype(jnp.float32)
  p = jax.nn.sigmoid(logits)
  ce = jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))
  p_t = p * targets + (1 - p) * (1 - targets)
  loss = ce * (1 - p_t) ** gamma
  if alpha >= 0:
    loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
  return loss


def bce_with_logits(logits, targets):
  logits = logits.astype(jnp.float32)
  return jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def iou_loss(pred, target, kind: str = 'iou', smooth: float = 1.0, eps: float = 1e-7):
  """Box loss between ltrb distances measured from the same location; [..., 4] -> [...].

  kind 'iou': -log(IoU); 'giou': 1 - GIoU. IoU = (I + smooth) / (U + smooth) as in the official
  code (smooth=1); smooth=0 gives torchvision's I / (U + eps).
  """
  pred = pred.astype(jnp.float32)
  target = target.astype(jnp.float32)
  pl, pt, pr, pb = jnp.moveaxis(pred, -1, 0)
  tl, tt, tr, tb = jnp.moveaxis(target, -1, 0)
  pred_area = (pl + pr) * (pt + pb)
  target_area = (tl + tr) * (tt + tb)
  w_inter = jnp.maximum(jnp.minimum(pl, tl) + jnp.minimum(pr, tr), 0)
  h_inter = jnp.maximum(jnp.minimum(pt, tt) + jnp.minimum(pb, tb), 0)
  inter = w_inter * h_inter
  union = pred_area + target_area - inter
  if smooth > 0:
    iou = (inter + smooth) / (union + smooth)
  else:
    iou = inter / (union + eps)
  if kind == 'iou':
    return -jnp.log(jnp.maximum(iou, eps))
  if kind == 'giou':
    enclose = ((jnp.maximum(pl, tl) + jnp.maximum(pr, tr)) *
               (jnp.maximum(pt, tt) + jnp.maximum(pb, tb)))
    giou = iou - (enclose - union) / (enclose + eps)
    return 1 - giou
  raise ValueError(f'box loss must be one of {BOX_LOSSES}, got {kind!r}')


def _global_mean(x, axis_name):
  return x if axis_name is None else jax.lax.pmean(x, axis_name)


def fcos_losses(cls_logits, bbox_reg, centerness, targets: Targets, *,
                num_classes: int,
                box_loss: str = 'iou',
                iou_smooth: float = 1.0,
                box_weighting: str = 'centerness',
                focal_alpha: float = 0.25,
                focal_gamma: float = 2.0,
                axis_name: Optional[str] = None) -> Dict[str, jnp.ndarray]:
  """The three FCOS losses of a batch and their sum.

  Args:
    cls_logits [B, N, C], bbox_reg [B, N, 4] (in the targets' units), centerness [B, N]: model
      outputs. targets: `Targets` with [B, N] leading axes.
    box_weighting: 'centerness' (official: box loss weighted by the centerness target and divided
      by its sum) or 'uniform' (torchvision: divided by the number of positives).
    axis_name: device axis (or axes) to average the normalizers over, or None.
  Returns:
    dict with 'cls', 'box', 'centerness', 'total' losses and 'num_pos' (global per-device mean).
  """
  pos = targets.classes >= 0                                              # [B, N]
  posf = pos.astype(jnp.float32)
  onehot = jax.nn.one_hot(targets.classes, num_classes, dtype=jnp.float32)  # -1 -> all zeros
  num_pos = _global_mean(jnp.sum(posf), axis_name)
  pos_norm = jnp.maximum(num_pos, 1.0)

  cls = jnp.sum(sigmoid_focal_loss(cls_logits, onehot, focal_alpha, focal_gamma)) / pos_norm

  # Background rows get a harmless dummy pair, so no inf/NaN there can reach the sum or gradient.
  per_loc_box = iou_loss(jnp.where(pos[..., None], bbox_reg, 1.0),
                         jnp.where(pos[..., None], targets.ltrb, 1.0), box_loss, iou_smooth)
  if box_weighting == 'centerness':
    weight = targets.centerness * posf
    norm = _global_mean(jnp.sum(weight), axis_name)
    box = jnp.sum(per_loc_box * weight) / jnp.maximum(norm, 1e-6)
  elif box_weighting == 'uniform':
    box = jnp.sum(per_loc_box * posf) / pos_norm
  else:
    raise ValueError(f'box_weighting must be one of {BOX_WEIGHTINGS}, got {box_weighting!r}')

  ctr = jnp.sum(bce_with_logits(centerness, targets.centerness) * posf) / pos_norm
  return dict(cls=cls, box=box, centerness=ctr, total=cls + box + ctr, num_pos=num_pos)


def loss_kwargs(config) -> dict:
  """Loss settings of a config (`config.model.num_classes` and `config.loss`)."""
  return dict(num_classes=config.model.num_classes, box_loss=config.loss.box_loss,
              iou_smooth=float(config.loss.iou_smooth), box_weighting=config.loss.box_weighting,
              focal_alpha=float(config.loss.focal_alpha),
              focal_gamma=float(config.loss.focal_gamma))
