"""What one bfloat16 GroupNorm keeps for its gradient: bytes of saved residuals per input
element, autodiff's gradient against the custom one (`group_norm._saving_input`), both forms.

  python -m benchmarks.group_norm_residuals [--shape 1,100,168,256] [--groups 32]

Counted from the jaxpr (`jax.ad_checkpoint.print_saved_residuals`), before XLA's fusion: what
the program is asked to keep; the compiled program can only keep less. The default shape is
the P3 level of an 800x1344 image in the FCOS head (256 channels).
"""

import argparse
import contextlib
import io
import os
import re

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax import ad_checkpoint  # noqa: E402

from fcos_jax.models import group_norm as gn  # noqa: E402

BYTES = {'f32': 4, 'bf16': 2, 'bool': 1, 'f16': 2, 'i32': 4}


def residual_bytes(fn, x, groups: int) -> int:
  """Bytes of the residuals `fn`'s gradient saves, the scale and bias arguments aside."""
  scale, bias = jnp.ones(x.shape[-1]), jnp.zeros(x.shape[-1])
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    ad_checkpoint.print_saved_residuals(
        lambda x, s, b: jnp.sum(fn(x, s, b, groups, 1e-5)), x, scale, bias)
  total = 0
  for line in out.getvalue().splitlines():
    m = re.match(r'(\w+)\[([\d,]*)\]', line)
    if m and 'argument s' not in line and 'argument b' not in line:
      dims = [int(v) for v in m.group(2).split(',') if v]
      total += int(np.prod(dims)) * BYTES[m.group(1)]
  return total


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--shape', default='1,100,168,256')
  parser.add_argument('--groups', type=int, default=32)
  args = parser.parse_args()
  shape = tuple(int(v) for v in args.shape.split(','))
  x = jnp.ones(shape, jnp.bfloat16)
  print(f'bfloat16 GroupNorm {shape}, {args.groups} groups: saved residuals')
  print('| form | autodiff B/element | custom B/element | autodiff MB | custom MB |')
  print('| --- | --- | --- | --- | --- |')
  for form, autodiff, custom in (
      ('cpu', gn.group_norm, gn.group_norm_saving_input),
      ('native (GPU/TPU)', gn.group_norm_native, gn.group_norm_native_saving_input)):
    a, c = residual_bytes(autodiff, x, args.groups), residual_bytes(custom, x, args.groups)
    print(f'| {form} | {a / x.size:.2f} | {c / x.size:.2f} | {a / 1e6:.1f} | {c / 1e6:.1f} |')


if __name__ == '__main__':
  main()
