"""The paper's centerness upper bound: evaluation with every location's ground-truth centerness
(from the training assigner) in place of the predicted one (36.6 -> 42.1 AP on COCO in the
paper), i.e. what a perfect centerness branch would give."""

from typing import Any, Callable, Dict

from fcos_jax import postprocess, targets
from fcos_jax.evaluation import run
from fcos_jax.normalize import image_normalizer


def make_oracle_predict_fn(config, model) -> Callable[..., postprocess.Detections]:
  """(variables, images uint8 [B,H,W,3], image_sizes [B,2], boxes [B,M,4] in resized pixels,
  box_valid [B,M]) -> `Detections` with the target centerness of each location (0 where no box
  is assigned) instead of the predicted one."""
  post_kw = postprocess.postprocess_kwargs(config)
  normalize = image_normalizer(config)
  assign_kw = targets.assigner_kwargs(config.model)

  def predict(variables: Any, images, image_sizes, boxes, box_valid) -> postprocess.Detections:
    out = model.apply(variables, normalize(images, image_sizes))
    classes = box_valid.astype('int32')  # the centerness target does not depend on the class
    tg = targets.assign_targets_batch(boxes, classes, box_valid, image_size=images.shape[1:3],
                                      **assign_kw)
    return postprocess.postprocess(out['cls_logits'], out['bbox_reg'], tg.centerness,
                                   image_size=images.shape[1:3], clip_sizes=image_sizes,
                                   centerness_from_logits=False, **post_kw)
  return predict


def evaluate(config, model, variables, **kwargs) -> Dict[str, Any]:
  """`evaluation.evaluate` with the ground-truth centerness (same arguments)."""
  return run.evaluate(config, model, variables, predict_fn=make_oracle_predict_fn(config, model),
                      with_boxes=True, **kwargs)
