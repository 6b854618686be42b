"""Drawing detections on images (PIL)."""

from typing import Any, Dict, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212))


GROUND_TRUTH_COLOR = (255, 255, 255)


def draw_detections(image: np.ndarray, detections: Sequence[Dict[str, Any]],
                    scale: int = 1, ground_truth: Sequence[Sequence[float]] = ()) -> Image.Image:
  """RGB image with each detection's box and 'class score' label drawn (the class alone for a
  box without a score, e.g. ground truth); `scale` enlarges small images first so the labels
  stay legible. `ground_truth` boxes (x0, y0, x1, y1) are drawn
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
    text = det['class_name'] + (f' {det["score"]:.2f}' if 'score' in det else '')
    tx0, ty0, tx1, ty1 = draw.textbbox((x0, y0), text, font=font)
    ty = y0 - (ty1 - ty0) - 2 if y0 - (ty1 - ty0) - 2 >= 0 else y0
    draw.rectangle([x0, ty, x0 + (tx1 - tx0) + 4, ty + (ty1 - ty0) + 2], fill=color)
    draw.text((x0 + 2, ty), text, fill=(0, 0, 0), font=font)
  return im


KEY_BACKGROUND = (40, 40, 40)


def add_key(im: Image.Image, entries: Sequence[Tuple[str, Tuple[int, int, int]]]) -> Image.Image:
  """`im` with a key strip underneath (dark grey): per entry an outlined swatch in its colour
  and its text, wrapped onto more rows when the image is narrow."""
  font = ImageFont.load_default()
  probe = ImageDraw.Draw(im)
  line_h = max(probe.textbbox((0, 0), text, font=font)[3] for text, _ in entries) + 8
  rows, x = [[]], 4
  for text, color in entries:
    width = 22 + probe.textlength(text, font=font) + 10
    if x + width > im.width and rows[-1]:
      rows.append([])
      x = 4
    rows[-1].append((x, text, color))
    x += width
  out = Image.new('RGB', (im.width, im.height + line_h * len(rows)), KEY_BACKGROUND)
  out.paste(im, (0, 0))
  draw = ImageDraw.Draw(out)
  for r, row in enumerate(rows):
    y = im.height + r * line_h + line_h // 2
    for x, text, color in row:
      draw.rectangle([x, y - 5, x + 16, y + 5], outline=color, width=2)
      draw.text((x + 22, y), text, fill=(255, 255, 255), font=font, anchor='lm')
  return out
