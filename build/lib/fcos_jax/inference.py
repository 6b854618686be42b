"""Jitted inference: uint8 images -> normalized -> model -> fixed-size detections."""

from typing import Any, Callable

from fcos_jax import postprocess, targets
from fcos_jax.normalize import image_normalizer


def make_predict_fn(config, model, *,
                    oracle_centerness: bool = False) -> Callable[..., postprocess.Detections]:
  """(variables, images uint8 [B,H,W,3], image_sizes int [B,2]) -> `Detections` in the pixels of
  the resized (unpadded) images, boxes clipped to each image's own size.

  With `oracle_centerness` the function also takes the ground truth (boxes [B,M,4] in resized
  pixels, box_valid [B,M]) and replaces the predicted centerness of every location by its
  target centerness from the training assigner (0 where no box is assigned): the paper's
  upper bound on what a perfect centerness branch would give.
  """
  post_kw = postprocess.postprocess_kwargs(config)
  normalize = image_normalizer(config)
  assign_kw = targets.assigner_kwargs(config.model)

  def predict(variables: Any, images, image_sizes) -> postprocess.Detections:
    out = model.apply(variables, normalize(images, image_sizes))
    return postprocess.postprocess(out['cls_logits'], out['bbox_reg'], out['centerness'],
                                   image_size=images.shape[1:3], clip_sizes=image_sizes,
                                   **post_kw)

  def predict_with_oracle(variables: Any, images, image_sizes, boxes,
                          box_valid) -> postprocess.Detections:
    out = model.apply(variables, normalize(images, image_sizes))
    classes = box_valid.astype('int32')  # the centerness target does not depend on the class
    tg = targets.assign_targets_batch(boxes, classes, box_valid, image_size=images.shape[1:3],
                                      **assign_kw)
    return postprocess.postprocess(out['cls_logits'], out['bbox_reg'], tg.centerness,
                                   image_size=images.shape[1:3], clip_sizes=image_sizes,
                                   centerness_from_logits=False, **post_kw)
  return predict_with_oracle if oracle_centerness else predict
