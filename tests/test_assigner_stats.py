"""Best possible recall, ambiguity and the anchor baseline against independent loops and
hand-made boxes with known answers."""

import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcos_jax.analysis import anchors as anchors_lib
from fcos_jax.analysis import recall
from tests import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRIDES = (8, 16, 32, 64, 128)
RANGES = ((-1, 64), (64, 128), (128, 256), (256, 512), (512, 1e8))
SIZE = (256, 256)


class Model:
  """A stand-in for `config.model`: the assigner fields only."""
  def __init__(self, radius=0.0, ranges=RANGES, assigner='fcos'):
    self.strides, self.size_ranges, self.center_sampling_radius = STRIDES, ranges, radius
    self.norm_reg_targets, self.location_mode, self.inclusive_ranges = False, 'half', True
    self.assigner, self.atss_topk, self.atss_anchor_scale = assigner, 9, 8.0


class Config:
  def __init__(self, **kw):
    self.model = Model(**kw)


def loop_fcos(boxes, radius=0.0, ranges=RANGES):
  """Per box: recalled? Per location (one at a time): boxes holding it, candidates, the winner."""
  taken = set()
  inside = ambiguous_inside = positive = ambiguous_positive = 0
  for s, (lo, hi) in zip(STRIDES, ranges):
    for j in range(math.ceil(SIZE[0] / s)):
      for i in range(math.ceil(SIZE[1] / s)):
        x, y = i * s + s // 2, j * s + s // 2
        holding, cands = [], []
        for m, (x0, y0, x1, y1) in enumerate(boxes):
          l, t, r, b = x - x0, y - y0, x1 - x, y1 - y
          if min(l, t, r, b) <= 0:
            continue
          if radius and not (abs(x - (x0 + x1) / 2) < radius * s and
                             abs(y - (y0 + y1) / 2) < radius * s):
            continue
          holding.append(m)
          if lo <= max(l, t, r, b) <= hi:
            cands.append((( x1 - x0) * (y1 - y0), m))
        inside += len(holding) >= 1
        ambiguous_inside += len(holding) > 1
        if cands:
          positive += 1
          ambiguous_positive += len(cands) > 1
          taken.add(min(cands)[1])
  return ([m in taken for m in range(len(boxes))],
          (inside, ambiguous_inside, positive, ambiguous_positive))


def run_stats(boxes, radius=0.0, ranges=RANGES, pad=2, assigner='fcos'):
  boxes = np.asarray(boxes, np.float32)
  padded = np.concatenate([boxes, np.zeros((pad, 4), np.float32)])[None]
  valid = (np.arange(len(padded[0])) < len(boxes))[None]
  config = Config(radius=radius, ranges=ranges, assigner=assigner)
  out = jax.device_get(recall.make_batch_stats(config, SIZE)(
      jnp.asarray(padded), jnp.asarray(valid)))
  return {k: v[0] for k, v in out.items()}


# A 6x6 box between two P3 locations (x = 100 and 108 fall outside x in (101, 107)): no location.
TOO_SMALL = (101.0, 101.0, 107.0, 107.0)
# Two nested boxes whose locations are all on P3: the big one loses every one it holds.
BIG, SMALL = (36.0, 36.0, 60.0, 60.0), (38.0, 38.0, 58.0, 58.0)
# max(w, h) / 2 = 64: on the P3/P4 boundary (both ranges inclusive).
BOUNDARY = (120.0, 120.0, 248.0, 200.0)


@pytest.mark.parametrize('radius', [0.0, 1.5])
def test_hand_made_boxes(radius):
  boxes = [TOO_SMALL, BIG, SMALL, BOUNDARY]
  got = run_stats(boxes, radius)
  want, counts = loop_fcos(boxes, radius)
  assert want == [False, False, True, True]  # the known answers, whatever the radius
  np.testing.assert_array_equal(got['fcos'][:4], want)
  assert not got['fcos'][4:].any()  # padding rows are never recalled
  assert (got['inside'].sum(), got['inside_ambiguous'].sum(), got['positive'].sum(),
          got['positive_ambiguous'].sum()) == counts
  assert counts[1] > 0 and counts[3] > 0


def test_center_sampling_can_lose_a_box():
  """A 200x20 box of level P4 centred at (128, 112), halfway between P4 locations (x = 120, 136;
  y = 104, 120): recalled without center sampling and with radius 1.5, lost with radius 0.5 (no
  P4 location within 0.5 x 16 = 8 px of the centre, strictly)."""
  box = (28.0, 102.0, 228.0, 122.0)
  answers = {0.0: [True], 0.5: [False], 1.5: [True]}
  for radius, answer in answers.items():
    assert loop_fcos([box], radius)[0] == answer
    np.testing.assert_array_equal(run_stats([box], radius)['fcos'][:1], answer)


def test_random_boxes_match_the_loop():
  rng = np.random.default_rng(3)
  for radius in (0.0, 1.5):
    wh = rng.choice([5, 12, 30, 70, 150], (12, 2)) * rng.uniform(0.6, 1.4, (12, 2))
    c = rng.uniform(0, 256, (12, 2))
    boxes = np.round(np.concatenate([c - wh / 2, c + wh / 2], 1) * 4) / 4
    got = run_stats(boxes, radius)
    want, counts = loop_fcos([tuple(b) for b in boxes], radius)
    np.testing.assert_array_equal(got['fcos'][:12], want)
    assert (got['inside'].sum(), got['inside_ambiguous'].sum(), got['positive'].sum(),
            got['positive_ambiguous'].sum()) == counts


def loop_anchor_recall(anchors, boxes, pos=0.5, low=0.4):
  """maskrcnn-benchmark's Matcher, one anchor and one box at a time."""
  def iou(a, b):
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0)
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
  table = [[iou(a, b) for b in boxes] for a in anchors]
  best_of_box = [max(row[m] for row in table) for m in range(len(boxes))]
  plain, low_q = set(), set()
  for row in table:
    m = int(np.argmax(row))
    if row[m] >= pos:
      plain.add(m)
      low_q.add(m)
    # "Best anchor(s)": ties within float32 precision (the code under test works in float32).
    elif any(row[k] >= best_of_box[k] - 1e-6 and best_of_box[k] >= low
             for k in range(len(boxes))):
      low_q.add(m)
  return ([m in plain for m in range(len(boxes))], [m in low_q for m in range(len(boxes))])


def test_atss_column_and_ambiguity_follow_algorithm_1():
  """The ATSS column recalls the boxes the ATSS reference gives a location; with the config's
  assigner set to ATSS, the positives and their ambiguity are ATSS's."""
  from tests.test_targets import reference_atss
  rng = np.random.default_rng(11)
  c = rng.uniform(0, 256, (10, 2))
  wh = rng.choice([4.0, 12.0, 40.0, 120.0], (10, 1)) * rng.uniform(0.5, 1.5, (10, 2))
  boxes = np.round(np.concatenate([c - wh / 2, c + wh / 2], axis=1) * 4) / 4
  box, num_positive_for = reference_atss(boxes, np.ones(10, bool), SIZE)
  want = [m in set(box) for m in range(10)]
  assert 0 < sum(want) < 10, 'the case should lose some tiny box'
  for assigner in ('fcos', 'atss'):
    got = run_stats(boxes, assigner=assigner)
    np.testing.assert_array_equal(got['atss'][:10], want)
    fcos_recalled, _ = loop_fcos(boxes)
    np.testing.assert_array_equal(got['fcos'][:10], fcos_recalled)
  assert got['positive'].sum() == (box >= 0).sum()
  assert got['positive_ambiguous'].sum() == (num_positive_for > 1).sum()


def test_anchor_shapes():
  a = anchors_lib.make_anchors((64, 64), (8, 16), 'half')
  assert a.shape == ((8 * 8 + 4 * 4) * 9, 4)
  # First location (4, 4) of P3, first anchor: ratio 0.5 (h / w), scale 1: w = 32 / sqrt(.5).
  w, h = 32 / math.sqrt(0.5), 32 * math.sqrt(0.5)
  np.testing.assert_allclose(a[0], [4 - w / 2, 4 - h / 2, 4 + w / 2, 4 + h / 2], rtol=1e-6)
  sides = np.sqrt((a[:9, 2] - a[:9, 0]) * (a[:9, 3] - a[:9, 1]))
  np.testing.assert_allclose(sorted(set(np.round(sides, 3))),
                             np.round([32, 32 * 2 ** (1 / 3), 32 * 2 ** (2 / 3)], 3), rtol=1e-4)


def test_anchor_recall_matches_the_loop():
  image_size = (64, 96)
  anchors = anchors_lib.make_anchors(image_size, (8, 16, 32), 'half')
  rng = np.random.default_rng(1)
  wh = rng.uniform(6, 70, (10, 2))
  c = rng.uniform(0, [96, 64], (10, 2))
  boxes = np.concatenate([c - wh / 2, c + wh / 2], 1).astype(np.float32)
  got = jax.device_get(anchors_lib.anchor_recall(jnp.asarray(anchors), jnp.asarray(boxes),
                                                 np.ones(10, bool)))
  plain, low_q = loop_anchor_recall(anchors.astype(np.float64), boxes.astype(np.float64))
  np.testing.assert_array_equal(got.recalled, plain)
  np.testing.assert_array_equal(got.recalled_low_quality, low_q)
  assert sum(plain) < sum(low_q) < 10  # the case exercises both rules


def test_summary_groups_by_size_and_level():
  collected = {'recalled': {'fcos': np.array([True, False, True, True]),
                            'atss': np.array([True, True, True, True]),
                            'anchor': np.array([False, False, True, True]),
                            'anchor_low_quality': np.array([True, False, True, True])},
               'area': np.array([100.0, 500.0, 2000.0, 20000.0]),
               'level': recall.nominal_level(np.array([[0, 0, 10, 10], [0, 0, 20, 20],
                                                       [0, 0, 200, 10], [0, 0, 141, 141]],
                                                      np.float32), RANGES),
               'counts': {'inside': np.array([4, 0]), 'inside_ambiguous': np.array([1, 0]),
                          'positive': np.array([3, 1]), 'positive_ambiguous': np.array([0, 1])},
               'num_images': 1, 'num_truncated': 0}
  np.testing.assert_array_equal(collected['level'], [0, 0, 1, 1])
  s = recall.summarize(collected, 2)
  assert s['bpr']['all']['fcos'] == 0.75 and s['bpr']['small']['boxes'] == 2
  assert s['bpr']['small']['fcos'] == 0.5 and s['bpr']['medium']['anchor'] == 1.0
  assert s['bpr']['P4']['boxes'] == 2 and s['bpr']['P3']['anchor'] == 0.0
  assert s['bpr']['all']['atss'] == 1.0
  assert s['ambiguity']['ambiguous_any_level'] == 0.25
  assert s['ambiguity']['ambiguous_after_fpn'] == 0.25
  assert 'P4' in recall.format_summary(s)


def test_tool_on_a_split(shapes_tfds, tmp_path):
  """The program end to end: every validation box counted once, table, JSON and PNG."""
  from fcos_jax.evaluation import coco_data
  c = tiny_config.get_config()
  common = [f'--config={ROOT}/tests/tiny_config.py', f'--config.data.dataset={shapes_tfds[0]}',
            f'--config.data.data_dir={shapes_tfds[1]}', '--config.data.synthetic=False',
            '--config.data.max_boxes=20', f'--out={tmp_path}']
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='3')
  out = subprocess.run([sys.executable, '-m', 'fcos_jax.tools.assigner_stats', *common],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  c.data.update(dataset=shapes_tfds[0], data_dir=shapes_tfds[1])
  gt = coco_data.load_ground_truth(c, 'validation')
  n = sum(1 for a in gt['annotations'] if not a['iscrowd'])
  assert f'11 images, {n} non-crowd boxes (0 more cut' in out.stdout
  assert 'assigning validation: 100%' in out.stderr and '11/11' in out.stderr  # a total
  assert 'after FPN level assignment' in out.stdout
  assert (tmp_path / 'assigner_bpr.png').stat().st_size > 1000
  bad = subprocess.run([sys.executable, '-m', 'fcos_jax.tools.assigner_stats', *common,
                        '--config.data.dataset=no_such_data'],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
  last = bad.stderr.strip().splitlines()[-1]
  assert bad.returncode == 1 and last.startswith('error: TFDS dataset')
  assert 'Traceback' not in bad.stderr
