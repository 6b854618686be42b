"""A look at a dataset before training on it: PNG grids of a split's images with their ground
truth and class names, of training batches exactly as the train step receives them (resized,
flipped, padded; the boxes the assigner sees, optionally its positive locations coloured by FPN
level), and a one-page summary per split (class counts, box sizes, aspect ratios).

How a label mistake (a swapped class, boxes in the wrong convention, an empty split) is caught
before a run is spent on it. The program: `fcos browse` (fcos_jax/programs/browse.py).
"""

import math
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fcos_jax import points as points_lib
from fcos_jax import visualize
from fcos_jax.data import input_pipeline

CROWD = 'crowd (ignored)'
# One colour per FPN level for the positive locations (P3 first).
LEVEL_COLORS = ((255, 64, 64), (255, 200, 0), (64, 220, 64), (0, 200, 255), (200, 90, 255))


def split_examples(data_config, split: str, *, class_names: Sequence[str] = (),
                   image_ids: Sequence[int] = (), decode: bool = True
                   ) -> Iterator[Dict[str, Any]]:
  """The split's examples in stored order: 'image' (uint8, if `decode`), 'boxes' [K, 4] in
  pixels (x0, y0, x1, y1), 'labels', 'crowd', 'image_id', 'file_name', 'size' (h, w). Only
  those holding a box of one of `class_names` and with an id in `image_ids`, when given."""
  builder = input_pipeline.get_builder(data_config)
  names = builder.info.features['objects']['label'].names
  unknown = [c for c in class_names if c not in names]
  if unknown:
    from fcos_jax import errors
    raise errors.UserError(f'--class {unknown[0]!r}: not a class of {data_config.dataset} '
                           f'({", ".join(names)})')
  wanted_labels = {names.index(c) for c in class_names}
  wanted_ids = set(image_ids)
  for ex in input_pipeline.read_examples(builder, split, decode_images=decode
                                         ).as_numpy_iterator():
    o = ex['objects']
    if wanted_ids and int(ex['image/id']) not in wanted_ids:
      continue
    if wanted_labels and not wanted_labels & set(o['label'].tolist()):
      continue
    if decode:
      h, w = ex['image'].shape[:2]
    else:
      h, w = _header_size(ex['image'])
    boxes = o['bbox'][:, [1, 0, 3, 2]] * np.array([w, h, w, h], np.float32)
    yield {'image': ex['image'] if decode else None, 'boxes': boxes, 'labels': o['label'],
           'crowd': o['is_crowd'], 'image_id': int(ex['image/id']),
           'file_name': ex['image/filename'].decode(), 'size': (h, w)}


def _header_size(encoded: bytes):
  import io
  with Image.open(io.BytesIO(encoded)) as im:
    return im.height, im.width


def ground_truth_picture(image: np.ndarray, boxes, labels, crowd, names: Sequence[str],
                         scale: int = 1) -> Image.Image:
  """The image with each box in its class colour and name; crowd boxes in white."""
  dets = [{'bbox': [float(v) for v in b], 'label': int(l), 'class_name': names[int(l)]}
          for b, l, c in zip(boxes, labels, crowd) if not c]
  return visualize.draw_detections(image, dets, scale=scale,
                                   ground_truth=[b for b, c in zip(boxes, crowd) if c])


def mark_positives(im: Image.Image, xy: np.ndarray, level: np.ndarray, scale: int = 1
                   ) -> Image.Image:
  """Dots at the positive locations (x, y in input pixels), coloured by FPN level."""
  draw = ImageDraw.Draw(im)
  r = scale + 1
  for (x, y), lv in zip(xy * scale, level):
    draw.ellipse([x - r, y - r, x + r, y + r], fill=LEVEL_COLORS[int(lv) % len(LEVEL_COLORS)])
  return im


def grid(tiles: Sequence[Image.Image], titles: Sequence[str], columns: int = 4,
         cell: int = 320) -> Image.Image:
  """Tiles fitted into squares of the largest tile's side, at most `cell` px (aspect kept),
  each under its title, `columns` a row."""
  font = ImageFont.load_default()
  cell = min(cell, max(max(t.size) for t in tiles))
  title_h = 13 * max(t.count('\n') + 1 for t in titles) + 3
  columns = max(1, min(columns, len(tiles)))
  rows = math.ceil(len(tiles) / columns)
  out = Image.new('RGB', (columns * (cell + 8) + 8, rows * (cell + title_h + 8) + 8),
                  (40, 40, 40))
  draw = ImageDraw.Draw(out)
  for i, (tile, title) in enumerate(zip(tiles, titles)):
    tile = tile.copy()
    tile.thumbnail((cell, cell), Image.NEAREST if max(tile.size) < cell else Image.LANCZOS)
    x = 8 + (i % columns) * (cell + 8)
    y = 8 + (i // columns) * (cell + title_h + 8)
    lines = []
    for line in title.split('\n'):  # cut to the cell's width
      while line and draw.textlength(line, font=font) > cell:
        line = line[:-1]
      lines.append(line)
    draw.multiline_text((x, y), '\n'.join(lines), fill=(230, 230, 230), font=font, spacing=2)
    out.paste(tile, (x, y + title_h))
  return out


def class_key(names: Sequence[str], labels, crowd: bool = False) -> List[Any]:
  """Key entries for the classes present (and the crowd box colour, if any)."""
  present = sorted({int(l) for l in labels})
  entries = [(names[l], visualize.PALETTE[l % len(visualize.PALETTE)]) for l in present]
  return entries + ([(CROWD, visualize.GROUND_TRUTH_COLOR)] if crowd else [])


def split_grid(examples: Sequence[Dict[str, Any]], names: Sequence[str], columns: int = 4,
               scale: int = 0) -> Image.Image:
  """Ground-truth pictures of `examples` as one grid, with a class key underneath."""
  tiles, titles, labels, crowd = [], [], [], False
  for ex in examples:
    s = scale or max(1, 256 // max(ex['size']))
    tiles.append(ground_truth_picture(ex['image'], ex['boxes'], ex['labels'], ex['crowd'],
                                      names, s))
    n = int((~ex['crowd']).sum())
    titles.append(f'id {ex["image_id"]}, {n} box{"es" * (n != 1)}\n{ex["file_name"]}')
    labels += ex['labels'][~ex['crowd']].tolist()
    crowd |= bool(ex['crowd'].any())
  return visualize.add_key(grid(tiles, titles, columns), class_key(names, labels, crowd))


def batch_grid(batch: Dict[str, np.ndarray], names: Sequence[str],
               positives: Optional[Dict[str, np.ndarray]] = None,
               columns: int = 4) -> Image.Image:
  """One training batch as the step receives it: padded images, the valid boxes, and with
  `positives` ({'classes' [B, N], 'xy' [N, 2], 'level' [N]}) the positive locations."""
  tiles, titles, labels = [], [], []
  padded = batch['image'].shape[1:3]
  scale = max(1, 256 // max(padded))
  for b in range(batch['image'].shape[0]):
    valid = batch['box_valid'][b]
    boxes, cls = batch['boxes'][b][valid], batch['classes'][b][valid]
    im = ground_truth_picture(batch['image'][b], boxes, cls, np.zeros(len(cls), bool), names,
                              scale)
    h, w = batch['image_size'][b]
    ImageDraw.Draw(im).rectangle([0, 0, w * scale - 1, h * scale - 1], outline=(128, 128, 128))
    title = f'id {batch["image_id"][b]}\n{w}x{h} in {padded[1]}x{padded[0]}'
    if positives is not None:
      pos = positives['classes'][b] >= 0
      mark_positives(im, positives['xy'][pos], positives['level'][pos], scale)
      title += f', {int(pos.sum())} positives'
    tiles.append(im)
    titles.append(title)
    labels += cls.tolist()
  key = class_key(names, labels)
  if positives is not None:
    levels = sorted({int(v) for v in positives['level'][(positives['classes'] >= 0).any(0)]})
    key += [(f'P{lv + 3} positives', LEVEL_COLORS[lv % len(LEVEL_COLORS)]) for lv in levels]
  return visualize.add_key(grid(tiles, titles, columns), key)


def make_positives_fn(config):
  """batch -> the training assigner's positives ({'classes' [B, N], 'xy', 'level'}), by the
  train step's call, compiled once per padded shape."""
  import jax
  from fcos_jax import targets
  kw = targets.assigner_kwargs(config.model)
  compiled = {}

  def positives(batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    shape = tuple(batch['image'].shape[1:3])
    if shape not in compiled:
      compiled[shape] = jax.jit(lambda b, c, v: targets.assign_targets_batch(
          b, c, v, image_size=shape, **kw))
    tg = compiled[shape](batch['boxes'], batch['classes'], batch['box_valid'])
    pts = points_lib.make_points(shape, kw['strides'], kw['location_mode'])
    return {'classes': np.asarray(tg.classes), 'xy': pts.xy, 'level': pts.level}
  return positives


def summarize(examples: Iterator[Dict[str, Any]], num_classes: int) -> Dict[str, Any]:
  """Counts over a split: images, images without boxes, boxes per class (crowd apart), box
  sides sqrt(w * h) and aspect ratios w / h in original pixels."""
  images = empty = crowd = 0
  per_class = np.zeros(num_classes, np.int64)
  sides, aspects = [], []
  for ex in examples:
    images += 1
    keep = ~ex['crowd']
    crowd += int(ex['crowd'].sum())
    empty += int(not keep.any())
    np.add.at(per_class, ex['labels'][keep], 1)
    wh = ex['boxes'][keep, 2:] - ex['boxes'][keep, :2]
    sides.append(np.sqrt(np.maximum(wh[:, 0] * wh[:, 1], 0)))
    aspects.append(wh[:, 0] / np.maximum(wh[:, 1], 1e-6))
  return {'images': images, 'without_boxes': empty, 'crowd': crowd, 'per_class': per_class,
          'sides': np.concatenate(sides) if sides else np.zeros(0),
          'aspects': np.concatenate(aspects) if aspects else np.zeros(0)}


def plot_summaries(summaries: Dict[str, Dict[str, Any]], names: Sequence[str],
                   path: str) -> None:
  """One row per split: boxes per class, box side histogram (COCO's 32 / 96 px lines), aspect
  ratio histogram."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(len(summaries), 3, figsize=(14, 3.4 * len(summaries)), dpi=90,
                           squeeze=False)
  for row, (split, s) in zip(axes, summaries.items()):
    boxes = int(s['per_class'].sum())
    colors = [np.array(visualize.PALETTE[i % len(visualize.PALETTE)]) / 255
              for i in range(len(names))]
    row[0].bar(range(len(names)), s['per_class'], color=colors)
    row[0].set_xticks(range(len(names)), names, rotation=45 if len(names) > 6 else 0,
                      ha='right' if len(names) > 6 else 'center', fontsize=8)
    row[0].set_ylabel('boxes')
    row[0].set_title(f'{split}: {s["images"]} images ({s["without_boxes"]} without boxes), '
                     f'{boxes} boxes, {s["crowd"]} crowd', fontsize=9, loc='left')
    if s['sides'].size:
      top = max(float(s['sides'].max()), 2.0)
      row[1].hist(s['sides'], bins=np.geomspace(1, top * 1.05, 40), color='#4477aa')
      row[1].set_xscale('log')
      for t in (32, 96):
        row[1].axvline(t, color='#cc3311', ls='--', lw=1)
        row[1].text(t, row[1].get_ylim()[1] * 0.97, f' {t}', fontsize=7, color='#cc3311',
                    va='top')
      row[1].set_title('COCO sizes: small < 32 <= medium < 96 <= large', fontsize=8)
      row[1].set_xlabel('box side sqrt(w h), original px')
      ratios = np.clip(s['aspects'], 1 / 16, 16)
      row[2].hist(ratios, bins=np.geomspace(1 / 16, 16, 33), color='#228833')
      row[2].set_xscale('log')
      row[2].set_xlabel('aspect ratio w / h')
    row[1].set_ylabel('boxes')
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
