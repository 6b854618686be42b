"""What a prediction run writes for each image, one home for predict.py and the Beam pipeline:
its COCO results rows and its drawn picture."""

from typing import Any, Dict, List, Sequence

import numpy as np

from fcos_jax import visualize
from fcos_jax.evaluation import coco_data


def kept(detections: Sequence[Dict[str, Any]], min_score: float) -> List[Dict[str, Any]]:
  """The detections scoring at least `min_score`: what a prediction run writes, every file
  alike (--min_score 0 keeps all, as a COCO evaluation of the results wants)."""
  return [d for d in detections if d['score'] >= min_score]


def coco_rows(file_name: str, image_id: int, detections: Sequence[Dict[str, Any]]
              ) -> List[Dict[str, Any]]:
  """COCO results rows of one image's detections (`Detector.detect`), with its file name.
  COCO scores boxes of positive size only, so a box clipped flat at the border is left out."""
  return [dict(coco_data.coco_result(image_id, d['category_id'], d['bbox'], d['score']),
               file_name=file_name)
          for d in detections if d['bbox'][2] > d['bbox'][0] and d['bbox'][3] > d['bbox'][1]]


def picture(image: np.ndarray, detections: Sequence[Dict[str, Any]], min_score: float,
            scale: int = 0):
  """The image with its detections scoring at least `min_score` drawn; `scale` 0 enlarges it
  enough for a longer side of at least 512 px, so the labels stay legible."""
  shown = kept(detections, min_score)
  scale = scale or max(1, -(-512 // max(image.shape[:2])))
  return visualize.draw_detections(image, shown, scale=scale)
