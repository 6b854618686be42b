"""Train-step time of FCOS (default R50-FPN, frozen BN, freeze_at 2) on random data.

  python -m benchmarks.bench_train_step [--size 512 --batch 2 --steps 10 --config configs/coco.py]

Times the compiled data-parallel step (targets + forward + backward + SGD update) on all local
devices; compile time is reported apart.
"""

import argparse
import importlib.util
import os
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import jax  # noqa: E402
import numpy as np  # noqa: E402

from fcos_jax import optim, sharding, train_step  # noqa: E402
from fcos_jax.models import fcos  # noqa: E402


def load_config(path):
  spec = importlib.util.spec_from_file_location('bench_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--config', default='configs/coco.py')
  parser.add_argument('--size', type=int, default=512)
  parser.add_argument('--batch', type=int, default=2)
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--dtype', default=None, help='float32 or bfloat16 (default: config)')
  args = parser.parse_args()
  config = load_config(args.config)
  config.batch_size = args.batch
  if args.dtype:
    config.model.dtype = args.dtype
  shape = (args.size, args.size)
  mesh = sharding.make_mesh()
  model = fcos.create_model(config.model)
  tx = optim.create_optimizer(config, fcos.abstract_variables(model)['params'])
  state = train_step.create_train_state(config, model, tx, mesh)
  step = train_step.make_train_step(config, model, tx, mesh)
  rng = np.random.default_rng(0)
  m = config.data.max_boxes
  boxes = np.zeros((args.batch, m, 4), np.float32)
  xy = rng.uniform(0, args.size * 0.6, (args.batch, 5, 2))
  boxes[:, :5] = np.concatenate([xy, xy + rng.uniform(16, args.size * 0.4, xy.shape)], -1)
  batch = {'image': rng.integers(0, 256, (args.batch,) + shape + (3,), dtype=np.uint8),
           'image_size': np.full((args.batch, 2), args.size, np.int32), 'boxes': boxes,
           'classes': rng.integers(0, config.model.num_classes, (args.batch, m)).astype(np.int32),
           'box_valid': np.arange(m)[None].repeat(args.batch, 0) < 5}
  batch = {k: jax.device_put(v, sharding.batch_sharding(mesh)) for k, v in batch.items()}
  t = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t
  state, metrics = compiled(state, batch)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(args.steps):
    t = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t)
  m_ = config.model
  print(f'{jax.device_count()} x {jax.devices()[0].device_kind}, R{m_.backbone_depth}-FPN '
        f'({m_.dtype}), {args.size}x{args.size}, batch {args.batch}; compile {compile_s:.1f} s')
  print(f'{"step":<20}{"median s":>10}{"min s":>10}{"images/s":>10}')
  med = float(np.median(times))
  print(f'{"train step":<20}{med:>10.3f}{min(times):>10.3f}{args.batch / med:>10.2f}')


if __name__ == '__main__':
  main()
