"""Inference: uint8 images -> normalized -> model -> fixed-size detections (postprocess)."""

from typing import Any, Callable

from fcos_jax import postprocess
from fcos_jax.normalize import image_normalizer


def make_predict_fn(config, model) -> Callable[..., postprocess.Detections]:
  """(variables, images uint8 [B,H,W,3], image_sizes int [B,2]) -> `Detections` in the pixels of
  the resized (unpadded) images, boxes clipped to each image's own size."""
  post_kw = postprocess.postprocess_kwargs(config)
  normalize = image_normalizer(config)

  def predict(variables: Any, images, image_sizes) -> postprocess.Detections:
    out = model.apply(variables, normalize(images, image_sizes))
    return postprocess.postprocess(out['cls_logits'], out['bbox_reg'], out['centerness'],
                                   image_size=images.shape[1:3], clip_sizes=image_sizes,
                                   **post_kw)
  return predict
