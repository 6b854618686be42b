"""Time one jitted target-assigner call (one image) and a batch, on the default JAX device.

python -m benchmarks.bench_targets [--height 800 --width 1344 --boxes 100 --batch 8]
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from fcos_jax import targets
from fcos_jax.points import num_points


def time_call(fn, *args, repeats=20):
  jax.block_until_ready(fn(*args))  # compile
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return float(np.median(times)), float(np.min(times))


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--height', type=int, default=800)
  parser.add_argument('--width', type=int, default=1344)
  parser.add_argument('--boxes', type=int, default=100)
  parser.add_argument('--batch', type=int, default=8)
  args = parser.parse_args()
  size = (args.height, args.width)
  rng = np.random.default_rng(0)
  m = args.boxes

  def gt(batch):
    xy = rng.uniform(0, [args.width, args.height], (batch, m, 2))
    wh = rng.uniform(8, 600, (batch, m, 2))
    return (jnp.asarray(np.concatenate([xy, xy + wh], -1), jnp.float32),
            jnp.asarray(rng.integers(0, 80, (batch, m)), jnp.int32), jnp.ones((batch, m), bool))

  print(f'device: {jax.devices()[0].device_kind}, image {size[0]}x{size[1]}, '
        f'{num_points(size, targets.DEFAULT_STRIDES)} locations, {m} boxes')
  print(f'{"case":<40}{"median ms":>12}{"min ms":>10}')
  for name, kw in (('official (radius 0)', {}),
                   ('imprv (radius 1.5, normalized)',
                    dict(center_sampling_radius=1.5, norm_reg_targets=True)),
                   ('ATSS (k 9, normalized)', dict(assigner='atss', norm_reg_targets=True))):
    one = jax.jit(lambda b, c, v, kw=kw: targets.assign_targets(b, c, v, image_size=size, **kw))
    b, c, v = gt(1)
    med, best = time_call(one, b[0], c[0], v[0])
    print(f'{name + ", 1 image":<40}{med * 1e3:>12.1f}{best * 1e3:>10.1f}')
    batched = jax.jit(lambda b, c, v, kw=kw: targets.assign_targets_batch(
        b, c, v, image_size=size, **kw))
    med, best = time_call(batched, *gt(args.batch), repeats=5)
    print(f'{name + f", batch {args.batch}":<40}{med * 1e3:>12.1f}{best * 1e3:>10.1f}')


if __name__ == '__main__':
  main()
