"""Matrix-product throughput of XLA:CPU against torch, in the forms a train step uses.

  python -m benchmarks.bench_gemm [--repeats 25]

A convolution's forward and input gradient are products with the contraction over channels
(`[M, Cin] x [Cin, Cout]`, `[M, Cout] x [Cout, Cin]^T`); its weight gradient contracts over the
M = batch x positions rows of both operands (`[M, Cin]^T x [M, Cout]`, a small output from a
long contraction). The rows are shapes of the benchmark cases: 1x1 convolutions of the R50
step (layer2 conv3, layer3 conv3), the per-offset products of the head's 3x3 weight gradient at
P3 (R50 at 512x512; the demo's 64-channel head at 128x160, batch 16), and the square 2048^3
product that `profile_step` takes as the peak. Both sides use 2 threads and take turns in one
process (blocks of all forms per side), float32; GFLOP/s from medians. Variants of the weight-gradient form that were tried in
XLA (physical transposes first, a split contraction) are printed too: none beats the plain one.
"""

import argparse
import os
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import torch  # noqa: E402  (torch before jax/TensorFlow in one process)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import lax  # noqa: E402

SHAPES = [  # (what, M, Cin, Cout)
    ('square 2048^3 (peak)', 2048, 2048, 2048),
    ('R50 layer2 conv3 1x1, 512x512 b2', 8192, 128, 512),
    ('R50 layer3 conv3 1x1, 512x512 b2', 2048, 256, 1024),
    ('R50 head 3x3 offset at P3, 512x512 b2', 8192, 256, 256),
    ('demo head 3x3 offset at P3, b16', 5120, 64, 64),
]

XLA_FORMS = {
    'forward': jax.jit(lambda x, w, g: x @ w),
    'input grad': jax.jit(lambda x, w, g: g @ w.T),
    'weight grad': jax.jit(lambda x, w, g: x.T @ g),
    # Tried for the weight gradient, did not help:
    'weight grad, x transposed first': jax.jit(lambda x, w, g: lax.optimization_barrier(x.T) @ g),
    'weight grad, split in 2': jax.jit(lambda x, w, g: jnp.einsum(
        'pmk,pmn->pkn', x.reshape(2, -1, x.shape[1]), g.reshape(2, -1, g.shape[1])).sum(0)),
}
TORCH_FORMS = {
    'forward': lambda x, w, g: x @ w,
    'input grad': lambda x, w, g: g @ w.T,
    'weight grad': lambda x, w, g: x.T @ g,
}


def median_seconds(fns, repeats):
  """{(side, form): median seconds} of each blocking call. Each repeat times one side's forms,
  then the other's, each block after one untimed call: torch's OpenMP threads spin-wait for a
  while after its last call and would slow the next XLA call (2 ms products measured at half
  speed right after torch's)."""
  for f in fns.values():
    f()
    f()
  times = {k: [] for k in fns}
  sides = sorted({side for side, _ in fns})
  for _ in range(repeats):
    for side in sides:
      block = [k for k in fns if k[0] == side]
      fns[block[0]]()
      for k in block:
        t = time.perf_counter()
        fns[k]()
        times[k].append(time.perf_counter() - t)
  return {k: float(np.median(v)) for k, v in times.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--repeats', type=int, default=25)
  args = parser.parse_args()
  torch.set_num_threads(2)
  print(f'jax {jax.__version__}, torch {torch.__version__}, {os.cpu_count()} CPUs, torch '
        f'threads {torch.get_num_threads()}; GFLOP/s from medians of {args.repeats}')
  print()
  print('| product | shape (M, Cin, Cout) | form | XLA GFLOP/s | torch GFLOP/s | torch / XLA |')
  print('| --- | --- | --- | --- | --- | --- |')
  rng = np.random.default_rng(0)
  for what, m, cin, cout in SHAPES:
    x, w, g = (rng.standard_normal(s, np.float32) for s in ((m, cin), (cin, cout), (m, cout)))
    jx, jw, jg = (jnp.asarray(a) for a in (x, w, g))
    tx, tw, tg = (torch.from_numpy(a) for a in (x, w, g))
    forms = XLA_FORMS if m != cin else {k: XLA_FORMS[k] for k in TORCH_FORMS}
    fns = {('xla', k): (lambda f=f: f(jx, jw, jg).block_until_ready()) for k, f in forms.items()}
    fns.update({('torch', k): (lambda f=f: f(tx, tw, tg)) for k, f in TORCH_FORMS.items()})
    seconds = median_seconds(fns, args.repeats)
    gflop = 2 * m * cin * cout / 1e9
    for form in forms:
      ours = gflop / seconds[('xla', form)]
      theirs = gflop / seconds[('torch', form)] if form in TORCH_FORMS else None
      print(f'| {what} | {m}, {cin}, {cout} | {form} | {ours:.0f} | '
            + (f'{theirs:.0f} | {theirs / ours:.2f} |' if theirs else '- | - |'), flush=True)


if __name__ == '__main__':
  main()
