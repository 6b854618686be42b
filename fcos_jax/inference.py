"""Inference: uint8 images -> normalized -> model -> fixed-size detections (postprocess), with
test-time augmentation (`fcos_jax.tta`) merged inside the same program when asked."""

from typing import Any, Callable, Optional

from fcos_jax import postprocess, tta as tta_lib
from fcos_jax.normalize import image_normalizer


def make_predict_fn(config, model,
                    tta: Optional[tta_lib.Spec] = None) -> Callable[..., postprocess.Detections]:
  """(variables, images uint8 [B,H,W,3], image_sizes int [B,2]) -> `Detections` in the pixels of
  the resized (unpadded) images, boxes clipped to each image's own size. With a `tta` spec of
  several views, each view is detected and mapped back, and `postprocess.merge_detections`
  makes one set of them."""
  post_kw = postprocess.postprocess_kwargs(config)
  normalize = image_normalizer(config)
  divisibility = int(config.data.size_divisibility)

  def plain(variables: Any, images, image_sizes) -> postprocess.Detections:
    out = model.apply(variables, normalize(images, image_sizes))
    return postprocess.postprocess(out['cls_logits'], out['bbox_reg'], out['centerness'],
                                   image_size=images.shape[1:3], clip_sizes=image_sizes,
                                   **post_kw)

  if tta is None or len(tta.views) == 1:
    def predict(variables: Any, images, image_sizes) -> postprocess.Detections:
      return plain(variables, images, image_sizes)
    return predict  # named 'predict': the compiled program's name in logs and the cache

  def view(variables, images, image_sizes, scale, flipped):
    factors = None
    if scale != 1.0:
      images, image_sizes, factors = tta_lib.rescale_images(images, image_sizes, scale,
                                                            divisibility)
    if flipped:
      images = tta_lib.flip_images(images, image_sizes)
    det = plain(variables, images, image_sizes)
    boxes = det.boxes
    if flipped:
      boxes = tta_lib.unflip_boxes(boxes, image_sizes)
    if factors is not None:
      boxes = tta_lib.unscale_boxes(boxes, factors)
    return det._replace(boxes=boxes)

  def predict(variables: Any, images, image_sizes) -> postprocess.Detections:
    parts = [view(variables, images, image_sizes, s, f) for s, f in tta.views]
    return postprocess.merge_detections(parts, clip_sizes=image_sizes, **post_kw)
  return predict


def make_dense_fn(config, model) -> Callable[..., Any]:
  """(variables, images, image_sizes) -> (boxes [B, N, 4], scores [B, N, C]) of every location
  (`postprocess.dense_detections`): the NMS-free export's function."""
  post_kw = postprocess.postprocess_kwargs(config)
  normalize = image_normalizer(config)

  def dense(variables: Any, images, image_sizes):
    out = model.apply(variables, normalize(images, image_sizes))
    return postprocess.dense_detections(out['cls_logits'], out['bbox_reg'], out['centerness'],
                                        image_size=images.shape[1:3], clip_sizes=image_sizes,
                                        **post_kw)
  return dense
