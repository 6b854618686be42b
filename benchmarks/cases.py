"""The benchmark cases of fcos_jax: config, random data and the compiled step or inference.

Shared by `bench_vs_torchvision` (timing against torchvision) and `profile_step` (per-op profile).
"""

import dataclasses
import time
from typing import Any, Callable

import jax
import numpy as np

from fcos_jax import inference, optim, sharding, train_step
from fcos_jax.configs import coco_torchvision, shapes
from fcos_jax.models import fcos

CASES = {
    'train_r50': dict(train=True, depth=50, size=(512, 512), batch=2),
    'train_r18': dict(train=True, depth=18, size=(256, 320), batch=8),
    'infer_800': dict(train=False, depth=50, size=(800, 1216), batch=1),
    'infer_512': dict(train=False, depth=50, size=(512, 512), batch=1),
    'train_demo': dict(train=True, depth=18, size=(128, 160), batch=16, demo=True),
}
# The cases with a torchvision counterpart (the demo's config has none).
TORCHVISION_CASES = {k: v for k, v in CASES.items() if not v.get('demo')}
TITLES = {
    'train_r50': 'R50-FPN train step, 512x512, batch 2',
    'train_r18': 'R18-FPN(128) from scratch train step, 320x256, batch 8',
    'infer_800': 'R50-FPN inference + postprocess, 800x1216, batch 1',
    'infer_512': 'R50-FPN inference + postprocess, 512x512, batch 1',
    'train_demo': 'the demo (configs/shapes.py) train step, 128x160, batch 16',
}
NUM_BOXES = 5


def jax_config(case, dtype='float32'):
  """configs/coco_torchvision.py (frozen BN, stem + layer1 frozen), or for depth 18 its
  from-scratch variant: GroupNorm backbone, nothing frozen, FPN and head with 128 channels,
  5 classes. The demo case: configs/shapes.py as it is."""
  if case.get('demo'):
    config = shapes.get_config()
    config.batch_size = case['batch']
    config.model.dtype = dtype
    return config
  config = coco_torchvision.get_config()
  config.batch_size = case['batch']
  config.data.max_boxes = 10
  config.model.dtype = dtype
  if case['depth'] == 18:
    m = config.model
    m.num_classes = 5
    m.label_space = 'dataset'
    m.backbone_depth = 18
    m.backbone_norm = 'gn'
    m.freeze_at = 0
    m.fpn_channels = 128
  return config


def random_data(case, num_classes):
  """uint8 images [B, H, W, 3]; per image NUM_BOXES boxes (x1, y1, x2, y2) and labels >= 1."""
  rng = np.random.default_rng(0)
  (h, w), b = case['size'], case['batch']
  images = rng.integers(0, 256, (b, h, w, 3), dtype=np.uint8)
  xy = rng.uniform(0, 0.6, (b, NUM_BOXES, 2)) * (w, h)
  wh = rng.uniform(16, 0.4 * min(h, w), (b, NUM_BOXES, 2))
  boxes = np.concatenate([xy, xy + wh], -1).astype(np.float32)
  labels = rng.integers(1, num_classes, (b, NUM_BOXES)).astype(np.int64)
  return images, boxes, labels


@dataclasses.dataclass
class Built:
  compiled: Any                  # jax.stages.Compiled: cost / memory analysis, HLO text
  run: Callable[[], Any]         # one blocking call (a train step updates the state it holds)

  def gflop(self) -> float:
    """GFLOP of one call, from XLA's cost analysis of the compiled program."""
    cost = self.compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get('flops', 0.0)) / 1e9


def xla_matmul_gflops(n=2048, repeats=7, dtype='float32'):
  """Best [n, n] x [n, n] matmul rate (GFLOP/s) of JAX's default device in `dtype` ('float32' or
  'bfloat16'): the FLOP/s ceiling to compare to."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  dot = jax.jit(lambda a: a @ a)
  dot(a).block_until_ready()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    dot(a).block_until_ready()
    times.append(time.perf_counter() - t)
  return 2 * n ** 3 / min(times) / 1e9


def build_ours(case, dtype='float32') -> Built:
  """The compiled train step (single-device mesh) or inference function of a case."""
  config = jax_config(case, dtype)
  model = fcos.create_model(config.model)
  images, boxes, labels = random_data(case, config.model.num_classes)
  b, m = case['batch'], config.data.max_boxes
  sizes = np.array([case['size']] * b, np.int32)
  if not case['train']:
    variables = jax.jit(lambda: fcos.init_variables(model, jax.random.key(0)))()
    compiled = jax.jit(inference.make_predict_fn(config, model)).lower(
        variables, images, sizes).compile()
    return Built(compiled, lambda: jax.block_until_ready(compiled(variables, images, sizes)))
  mesh = sharding.make_mesh(jax.devices()[:1])
  tx = optim.create_optimizer(config, fcos.abstract_variables(model)['params'])
  state = train_step.create_train_state(config, model, tx, mesh)
  padded = np.zeros((b, m, 4), np.float32)
  padded[:, :NUM_BOXES] = boxes
  classes = np.zeros((b, m), np.int32)
  classes[:, :NUM_BOXES] = labels
  batch = {'image': images, 'image_size': sizes, 'boxes': padded, 'classes': classes,
           'box_valid': np.arange(m)[None].repeat(b, 0) < NUM_BOXES}
  compiled = train_step.make_train_step(config, model, tx, mesh).lower(state, batch).compile()
  holder = [state]

  def run():
    holder[0], metrics = compiled(holder[0], batch)
    return jax.block_until_ready(metrics)
  return Built(compiled, run)
