"""A deterministic synthetic detection dataset ("shapes") in COCO format.

Shapes of several classes (rectangle, ellipse, triangle, cross, ring) in random colours and sizes
on textured, noisy backgrounds, with overlaps, small objects, objects cut by the image border and
some images without objects. Writes `annotations/{split}.json` + `images/{split}/*.jpg`, the layout
`fcos_jax.data.coco_conversion` turns into a TFDS dataset. Same seed, same files.

  python -m fcos_jax.data.synthetic --out /tmp/shapes_coco --train 400 --val 100
"""

import json
import logging
import os
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from fcos_jax import errors

# Non-contiguous ids on purpose: the pipeline must map label <-> category_id.
CATEGORIES = ({'id': 1, 'name': 'rectangle'}, {'id': 3, 'name': 'ellipse'},
              {'id': 4, 'name': 'triangle'}, {'id': 7, 'name': 'cross'},
              {'id': 9, 'name': 'ring'})


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
  """Smooth colour gradient + stripes or blotches + pixel noise."""
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
  c0, c1 = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
  t = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1)) / max(h, w)
  t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
  img = c0 * (1 - t[..., None]) + c1 * t[..., None]
  kind = rng.integers(3)
  if kind == 0:  # stripes
    period = rng.uniform(6, 30)
    angle = rng.uniform(0, np.pi)
    phase = (xx * np.cos(angle) + yy * np.sin(angle)) / period
    img += (np.sin(2 * np.pi * phase) * rng.uniform(10, 35))[..., None]
  elif kind == 1:  # low-frequency blotches
    small = rng.normal(0, 30, (max(h // 16, 2), max(w // 16, 2), 3))
    img += np.asarray(Image.fromarray(np.uint8(np.clip(small + 128, 0, 255))).resize(
        (w, h), Image.BILINEAR), np.float32) - 128
  img += rng.normal(0, rng.uniform(4, 14), img.shape)
  return np.clip(img, 0, 255).astype(np.uint8)


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, box: Sequence[float], color, rng):
  x0, y0, x1, y1 = box
  w, h = x1 - x0, y1 - y0
  if kind == 'rectangle':
    draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=color)
  elif kind == 'ellipse':
    draw.ellipse([x0, y0, x1 - 1, y1 - 1], fill=color)
  elif kind == 'triangle':
    apex = x0 + rng.uniform(0.2, 0.8) * w
    draw.polygon([(apex, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=color)
  elif kind == 'cross':
    tw, th = max(w * 0.3, 1), max(h * 0.3, 1)
    cx, cy = x0 + w / 2, y0 + h / 2
    draw.rectangle([cx - tw / 2, y0, cx + tw / 2 - 1, y1 - 1], fill=color)
    draw.rectangle([x0, cy - th / 2, x1 - 1, cy + th / 2 - 1], fill=color)
  elif kind == 'ring':
    t = max(min(w, h) * 0.22, 1.5)
    draw.ellipse([x0, y0, x1 - 1, y1 - 1], outline=color, width=int(round(t)))
  else:
    raise ValueError(kind)


def _iou(a, b) -> float:
  iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0)
  ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0)
  inter = iw * ih
  return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def make_image(rng: np.random.Generator, h: int, w: int, max_objects: int,
               empty_fraction: float) -> Tuple[np.ndarray, List[Tuple[int, List[float]]]]:
  """One image and its objects as (category index, [x0, y0, x1, y1]) clipped to the image."""
  img = Image.fromarray(_background(rng, h, w))
  draw = ImageDraw.Draw(img)
  objects: List[Tuple[int, List[float]]] = []
  n = 0 if rng.random() < empty_fraction else int(rng.integers(1, max_objects + 1))
  full_boxes = []
  for _ in range(n * 4):  # rejection sampling: limit heavy occlusion
    if len(full_boxes) == n:
      break
    short = min(h, w)
    size = short * float(np.exp(rng.uniform(np.log(0.07), np.log(0.7))))  # small to large
    aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    bw, bh = max(size * np.sqrt(aspect), 6), max(size / np.sqrt(aspect), 6)
    # Centres may fall near the border: some objects are cut by it.
    cx = rng.uniform(-0.15 * bw, w + 0.15 * bw)
    cy = rng.uniform(-0.15 * bh, h + 0.15 * bh)
    box = [round(cx - bw / 2), round(cy - bh / 2), round(cx + bw / 2), round(cy + bh / 2)]
    clipped = [max(box[0], 0), max(box[1], 0), min(box[2], w), min(box[3], h)]
    if clipped[2] - clipped[0] < 4 or clipped[3] - clipped[1] < 4:
      continue
    if any(_iou(clipped, o[1]) > 0.4 for o in objects):
      continue
    cat = int(rng.integers(len(CATEGORIES)))
    color = tuple(int(c) for c in rng.integers(0, 256, 3))
    full_boxes.append((box, color))
    objects.append((cat, [float(v) for v in clipped]))
  # Large shapes first, so a small shape is never hidden under a larger one.
  order = sorted(range(len(objects)), key=lambda i: -(full_boxes[i][0][2] - full_boxes[i][0][0]) *
                 (full_boxes[i][0][3] - full_boxes[i][0][1]))
  for i in order:
    _draw_shape(draw, CATEGORIES[objects[i][0]]['name'], full_boxes[i][0], full_boxes[i][1], rng)
  return np.asarray(img), objects


def generate_split(out_dir: str, split: str, num_images: int, seed: int,
                   image_size: Tuple[int, int] = (160, 160), size_jitter: float = 0.25,
                   max_objects: int = 6, empty_fraction: float = 0.05,
                   progress: bool = False) -> Dict:
  """Writes one split; returns its COCO dict. Image sizes vary around `image_size` (h, w), and
  about a third of the images are portrait, so aspect-ratio buckets get used. `progress`: a
  progress bar (thousands of images take a minute or more)."""
  rng = np.random.default_rng([seed, sum(map(ord, split))])
  img_dir = os.path.join(out_dir, 'images', split)
  os.makedirs(img_dir, exist_ok=True)
  images, annotations = [], []
  ann_id = 1
  steps = range(num_images)
  if progress:
    from tqdm import tqdm
    steps = tqdm(steps, desc=f'generating {split}', unit='images')
  for k in steps:
    base_h, base_w = image_size
    if rng.random() < 0.33:
      base_h, base_w = base_w, base_h
    h = int(base_h * rng.uniform(1 - size_jitter, 1 + size_jitter))
    w = int(base_w * rng.uniform(1 - size_jitter, 1 + size_jitter))
    pixels, objects = make_image(rng, h, w, max_objects, empty_fraction)
    image_id = k + 1
    file_name = f'{split}_{image_id:06d}.jpg'
    Image.fromarray(pixels).save(os.path.join(img_dir, file_name), quality=92)
    images.append({'id': image_id, 'file_name': file_name, 'height': h, 'width': w})
    for cat, (x0, y0, x1, y1) in objects:
      annotations.append({'id': ann_id, 'image_id': image_id,
                          'category_id': CATEGORIES[cat]['id'],
                          'bbox': [x0, y0, x1 - x0, y1 - y0], 'area': (x1 - x0) * (y1 - y0),
                          'iscrowd': 0})
      ann_id += 1
  coco = {'images': images, 'annotations': annotations, 'categories': list(CATEGORIES)}
  os.makedirs(os.path.join(out_dir, 'annotations'), exist_ok=True)
  with open(os.path.join(out_dir, 'annotations', f'{split}.json'), 'w') as f:
    json.dump(coco, f)
  return coco


def generate(out_dir: str, splits: Dict[str, int], seed: int = 0, progress: bool = False,
             **kwargs) -> None:
  for split, n in splits.items():
    generate_split(out_dir, split, n, seed, progress=progress, **kwargs)


SETTINGS_FILE = 'synthetic_settings.json'


def ensure_dataset(name: str, data_dir: str, splits: Dict[str, int], seed: int = 0,
                   progress: bool = True, **kwargs) -> str:
  """Generate the dataset and convert it to TFDS `name` in `data_dir`, unless already there
  with the same settings (a dataset made with other settings is refused, never reused);
  `progress`: progress bars while generating and converting, and the conversion summary.

  Returns the folder of the COCO-format files (annotations/{split}.json, images/{split}/).
  """
  import tensorflow_datasets as tfds
  from fcos_jax.data import coco_conversion
  raw = os.path.join(data_dir, f'{name}_coco')
  # The sizes define the dataset; the seed (the run's) only which shapes are drawn: not compared.
  settings = json.loads(json.dumps({'splits': splits, **kwargs}))
  try:
    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
      _check_settings(os.path.join(str(builder.data_dir), SETTINGS_FILE), settings)
      return raw
  except tfds.core.registered.DatasetNotFoundError:
    pass
  logging.info('generating the synthetic dataset %s in %s (%s)', name, raw,
               ', '.join(f'{split} {n} images' for split, n in splits.items()))
  generate(raw, splits, seed, progress=progress, **kwargs)
  report = coco_conversion.convert(name, data_dir, {
      split: (os.path.join(raw, 'annotations', f'{split}.json'),
              os.path.join(raw, 'images', split)) for split in splits}, overwrite=True,
      progress=progress)
  logging.info('%s', report.summary())
  with open(os.path.join(str(tfds.builder(name, data_dir=data_dir).data_dir), SETTINGS_FILE),
            'w') as f:
    json.dump(dict(settings, seed=seed), f, indent=1)
  return raw


def _check_settings(path: str, settings: Dict) -> None:
  if not os.path.exists(path):  # made before the settings were recorded: cannot tell
    logging.warning('%s: the synthetic dataset there records no settings; reused as it is',
                    os.path.dirname(path))
    return
  with open(path) as f:
    made = json.load(f)
  made.pop('seed', None)
  if made != settings:
    changed = sorted(k for k in set(made) | set(settings) if made.get(k) != settings.get(k))
    raise errors.ConfigError(
        f'{os.path.dirname(path)} holds the synthetic dataset made with '
        + ', '.join(f'{k}={made.get(k)}' for k in changed) + '; this config asks for '
        + ', '.join(f'{k}={settings.get(k)}' for k in changed) + ': pass another '
        '--config.data.data_dir or --config.data.dataset (or delete that folder to remake it)')


def prepare(config) -> None:
  """Generate + convert the synthetic dataset if the config asks for it (process 0 writes, the
  others wait for it)."""
  import jax
  from fcos_jax import barriers
  d = config.data
  if not d.synthetic:
    return
  if jax.process_index() == 0:
    ensure_dataset(d.dataset, d.data_dir,
                   {d.train_split: d.synthetic_train_images,
                    d.eval_split: d.synthetic_eval_images},
                   seed=config.seed, image_size=tuple(d.synthetic_image_size))
  barriers.wait_for_all('synthetic_data_ready')


if __name__ == '__main__':  # alias of the program fcos_jax/programs/synthetic_shapes.py
  from fcos_jax.programs.synthetic_shapes import run
  run()
