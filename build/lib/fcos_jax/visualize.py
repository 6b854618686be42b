"""Drawing detections on images (PIL)."""

from typing import Any, Dict, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212))


GROUND_TRUTH_COLOR = (255, 255, 255)


def draw_detections(image: np.ndarray, detections: Sequence[Dict[str, Any]],
                    scale: int = 1, ground_truth: Sequence[Sequence[float]] = ()) -> Image.Image:
  """RGB image with each detection's box and 'class score' label drawn; `scale` enlarges small
  images first so the labels stay legible. `ground_truth` boxes (x0, y0, x1, y1) are drawn
  underneath in white, outlined in black so they show on any background."""
  im = Image.fromarray(image)
  if scale > 1:
    im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
  draw = ImageDraw.Draw(im)
  for box in ground_truth:
    x0, y0, x1, y1 = (v * scale for v in box)
    draw.rectangle([x0 - 1, y0 - 1, x1 + 1, y1 + 1], outline=(0, 0, 0), width=1)
    draw.rectangle([x0, y0, x1, y1], outline=GROUND_TRUTH_COLOR, width=1)
  font = ImageFont.load_default()
  for det in detections:
    color = PALETTE[det['label'] % len(PALETTE)]
    x0, y0, x1, y1 = (v * scale for v in det['bbox'])
    draw.rectangle([x0, y0, x1, y1], outline=color, width=2)
    text = f'{det["class_name"]} {det["score"]:.2f}'
    tx0, ty0, tx1, ty1 = draw.textbbox((x0, y0), text, font=font)
    ty = y0 - (ty1 - ty0) - 2 if y0 - (ty1 - ty0) - 2 >= 0 else y0
    draw.rectangle([x0, ty, x0 + (tx1 - tx0) + 4, ty + (ty1 - ty0) + 2], fill=color)
    draw.text((x0 + 2, ty), text, fill=(0, 0, 0), font=font)
  return im
