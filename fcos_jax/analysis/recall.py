"""Best possible recall and ambiguous samples of the target assigner over a dataset (the paper's
Table 1 and its FPN ambiguity figures): FCOS's rule and ATSS's side by side, next to a
RetinaNet-style anchor assigner's recall.

- BPR: a ground-truth box is recalled when at least one location is assigned to it (the paper's
  definition), reported overall, by COCO size (box area in original-image pixels, thresholds
  32^2 and 96^2) and by FPN level (the level whose size range holds half the box's longer side,
  the regression target at its centre).
- Ambiguity: of the locations inside at least one box at any level (no size ranges), the share
  inside more than one; of the config's assigner's positives, the share with more than one
  candidate box (FCOS: on their own level, after FPN level assignment; ATSS: boxes it is positive
  for).

Boxes come from the evaluation pipeline (no flip, `eval_min_size`, crowd boxes dropped, padded
to `max_boxes`), the matching from `targets.match_locations`, the same code as training.
"""

import functools
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

from fcos_jax import points as points_lib
from fcos_jax import targets
from fcos_jax.analysis import anchors as anchors_lib
from fcos_jax.data import input_pipeline, sizes

SIZES = (('small', 0.0, 32.0 ** 2), ('medium', 32.0 ** 2, 96.0 ** 2), ('large', 96.0 ** 2, np.inf))
# The assigner columns run this config's settings with the rule swapped; ambiguity is the
# config's own rule.
ASSIGNER_METHODS = (('fcos', 'FCOS', 'FCOS size ranges'),
                    ('atss', 'ATSS', 'ATSS (top-k, IoU >= mean + std)'))
METHODS = ASSIGNER_METHODS + (
    ('anchor', 'anchors', 'anchors, IoU >= 0.5'),
    ('anchor_low_quality', 'anchors+LQ', 'anchors + low-quality matches (>= 0.4)'))


def image_stats(boxes, valid, *, image_size, match_kw, anchors) -> Dict[str, jnp.ndarray]:
  """Per-box recall (FCOS, ATSS and anchors) and per-level location counts of one image."""
  pts = points_lib.make_points(image_size, match_kw['strides'], match_kw['location_mode'])
  num_levels = len(match_kw['strides'])
  matches = {rule: targets.match_locations(boxes, valid, image_size=image_size,
                                           **dict(match_kw, assigner=rule))
             for rule, _, _ in ASSIGNER_METHODS}
  match = matches[match_kw['assigner']]
  valid = jnp.asarray(valid, bool)
  box_ids = jnp.arange(boxes.shape[0])[None, :]

  def recalled(m):
    return jnp.any(m.box[:, None] == box_ids, axis=0) & valid        # [M]
  on_level = jnp.asarray(pts.level)[:, None] == jnp.arange(num_levels)[None, :]  # [N, L]
  positive = match.box >= 0

  def per_level(mask):
    return jnp.sum(mask[:, None] & on_level, axis=0, dtype=jnp.int32)
  ar = anchors_lib.anchor_recall(anchors, boxes, valid)
  return {**{rule: recalled(m) for rule, m in matches.items()},
          'anchor': ar.recalled, 'anchor_low_quality': ar.recalled_low_quality,
          'inside': per_level(match.num_inside >= 1),
          'inside_ambiguous': per_level(match.num_inside > 1),
          'positive': per_level(positive),
          'positive_ambiguous': per_level(positive & (match.num_candidates > 1))}


def make_batch_stats(config, image_size):
  """Jitted (boxes [B, M, 4], valid [B, M]) -> `image_stats` of every image."""
  match_kw = targets.match_kwargs(config.model)
  anchors = anchors_lib.make_anchors(image_size, match_kw['strides'], match_kw['location_mode'])
  fn = functools.partial(image_stats, image_size=tuple(image_size), match_kw=match_kw,
                         anchors=anchors)
  return jax.jit(jax.vmap(fn))


def nominal_level(boxes: np.ndarray, size_ranges) -> np.ndarray:
  """[K] index of the level whose size range holds max(w, h) / 2 (the first, on a boundary)."""
  half = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / 2
  ranges = np.asarray(size_ranges, np.float64)
  fits = (half[:, None] >= ranges[None, :, 0]) & (half[:, None] <= ranges[None, :, 1])
  return np.where(fits.any(axis=1), np.argmax(fits, axis=1), len(ranges) - 1)


def collect(config, *, split: Optional[str] = None, batch_size: Optional[int] = None,
            progress: bool = False) -> Dict[str, Any]:
  """Runs the assigner (and the anchor matcher) over every image of the split: per-box records
  and location counts."""
  batch_size = batch_size or config.eval_batch_size
  ds = input_pipeline.create_eval_dataset(config.data, batch_size, split=split, with_boxes=True)
  fns = {shape: make_batch_stats(config, shape) for shape in sizes.eval_shapes(config.data)}
  boxes_out = {k: [] for k, _, _ in METHODS}
  area, level = [], []
  counts = {}
  num_images = num_truncated = 0
  bar = None
  if progress:
    from tqdm import tqdm
    from fcos_jax.evaluation import prediction
    bar = tqdm(desc=f'assigning {split or config.data.eval_split}', unit='images',
               total=prediction.split_images(config.data, split))
  for batch in ds.as_numpy_iterator():
    shape = batch['image'].shape[1:3]
    stats = jax.device_get(fns[shape](batch['boxes'], batch['box_valid']))
    keep = batch['box_valid'] & batch['mask'][:, None]
    for k, _, _ in METHODS:
      boxes_out[k].append(stats[k][keep])
    # Box area in original-image pixels, for the COCO size classes.
    ratio = batch['orig_size'] / np.maximum(batch['image_size'], 1).astype(np.float64)  # (h, w)
    wh = batch['boxes'][..., 2:] - batch['boxes'][..., :2]                    # [B, M, 2]
    area.append((wh[..., 0] * wh[..., 1] * ratio[:, None, 0] * ratio[:, None, 1])[keep])
    level.append(nominal_level(batch['boxes'][keep], config.model.size_ranges))
    for k in ('inside', 'inside_ambiguous', 'positive', 'positive_ambiguous'):
      counts[k] = counts.get(k, 0) + stats[k][batch['mask']].sum(axis=0)
    num_images += int(batch['mask'].sum())
    num_truncated += int(batch['num_truncated'][batch['mask']].sum())
    if bar is not None:
      bar.update(int(batch['mask'].sum()))
  if bar is not None:
    bar.close()
  return {'recalled': {k: np.concatenate(v) for k, v in boxes_out.items()},
          'area': np.concatenate(area), 'level': np.concatenate(level),
          'counts': {k: np.asarray(v) for k, v in counts.items()},
          'num_images': num_images, 'num_truncated': num_truncated}


def _rate(recalled: np.ndarray) -> float:
  return float(recalled.mean()) if recalled.size else float('nan')


def summarize(collected: Dict[str, Any], num_levels: int) -> Dict[str, Any]:
  """BPR per method overall / by size / by level, and the ambiguity fractions (plain numbers)."""
  rec, area, level = collected['recalled'], collected['area'], collected['level']
  groups = [('all', np.ones_like(area, bool))]
  groups += [(name, (area >= lo) & (area < hi)) for name, lo, hi in SIZES]
  groups += [(f'P{l + 3}', level == l) for l in range(num_levels)]
  bpr = {name: {'boxes': int(mask.sum()), **{k: _rate(rec[k][mask]) for k, _, _ in METHODS}}
         for name, mask in groups}
  c = collected['counts']
  ratio = lambda a, b: float(a / b) if b else float('nan')  # noqa: E731
  ambiguity = {
      'inside_any_level': int(c['inside'].sum()),
      'ambiguous_any_level': ratio(c['inside_ambiguous'].sum(), c['inside'].sum()),
      'positives': int(c['positive'].sum()),
      'ambiguous_after_fpn': ratio(c['positive_ambiguous'].sum(), c['positive'].sum()),
      'positives_per_level': [int(v) for v in c['positive']],
      'ambiguous_after_fpn_per_level': [ratio(a, b) for a, b in
                                        zip(c['positive_ambiguous'], c['positive'])]}
  return {'num_images': collected['num_images'], 'num_boxes': int(area.size),
          'num_truncated': collected['num_truncated'], 'bpr': bpr, 'ambiguity': ambiguity}


def format_summary(summary: Dict[str, Any]) -> str:
  """The summary as plain-text tables."""
  lines = [f'{summary["num_images"]} images, {summary["num_boxes"]} non-crowd boxes '
           f'({summary["num_truncated"]} more cut by max_boxes, not counted)', '',
           'best possible recall (a box is recalled if at least one location / anchor takes it)',
           '  ' + '; '.join(f'{short}: {long}' for _, short, long in METHODS),
           f'  {"boxes":<8}{"count":>7}' + ''.join(f'{short:>12}' for _, short, _ in METHODS)]
  for name, row in summary['bpr'].items():
    if row['boxes']:
      lines.append(f'  {name:<8}{row["boxes"]:>7}' +
                   ''.join(f'{100 * row[k]:>11.2f}%' for k, _, _ in METHODS))
  a = summary['ambiguity']
  lines += ['', 'ambiguous locations (inside more than one box)',
            f'  any level, no size ranges: {100 * a["ambiguous_any_level"]:.2f}% of '
            f'{a["inside_any_level"]} locations inside a box',
            f'  after FPN level assignment: {100 * a["ambiguous_after_fpn"]:.2f}% of '
            f'{a["positives"]} positive locations',
            '  per level: ' + ', '.join(
                f'P{l + 3} {100 * r:.2f}% of {n}' for l, (r, n) in enumerate(
                    zip(a['ambiguous_after_fpn_per_level'], a['positives_per_level'])) if n)]
  return '\n'.join(lines)


def plot_summary(summary: Dict[str, Any], path: str) -> None:
  """Bar chart of the BPR of each method per box group (PNG)."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  names = [n for n, row in summary['bpr'].items() if row['boxes'] > 0]
  x = np.arange(len(names))
  fig, ax = plt.subplots(figsize=(8, 3.6), dpi=100)
  width = 0.8 / len(METHODS)
  for i, (k, _, label) in enumerate(METHODS):
    ax.bar(x + (i - (len(METHODS) - 1) / 2) * width,
           [100 * summary['bpr'][n][k] for n in names], width, label=label)
  ax.set_xticks(x, [f'{n}\n({summary["bpr"][n]["boxes"]})' for n in names])
  ax.set_ylabel('best possible recall (%)')
  ax.set_ylim(0, 125)
  ax.set_yticks(range(0, 101, 20))
  ax.legend(loc='upper center', ncol=2, fontsize=8)
  ax.set_title('Best possible recall by box group (box count below)')
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
