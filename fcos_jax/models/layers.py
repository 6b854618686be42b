"""Where a form made for one backend is chosen: per platform at lowering, never by the default
backend at trace time.

The forms in `conv.py`, `conv1x1.py`, `max_pool.py` and `group_norm.py` are for XLA's CPU
backend (docs/performance.md); GPUs and TPUs run XLA's native convolution, reduce-window and
GroupNorm. `per_platform` puts both forms into the traced program with
`jax.lax.platform_dependent`; lowering keeps the branch of the platform it lowers for, so a
`jax.export` for ('cpu', 'cuda', 'tpu') carries the right form in each program and a CPU-only
or GPU-only compilation sees only its own. `per_platform_tpu` does the same for a TPU form
(the postprocess's approximate top-k), and `per_accelerator` for the compute dtype of
`model.dtype='auto'` (bfloat16 on GPUs and TPUs, float32 on CPUs and anywhere else, such as
the ONNX conversion, which takes each choice's default branch).
"""

from typing import Callable

from jax import lax


def per_platform(cpu: Callable, native: Callable, *args):
  """`cpu(*args)` in programs for the CPU, `native(*args)` for every other platform."""
  return lax.platform_dependent(*args, cpu=cpu, default=native)


def per_platform_tpu(tpu: Callable, other: Callable, *args):
  """`tpu(*args)` in programs for TPUs, `other(*args)` for every other platform."""
  return lax.platform_dependent(*args, tpu=tpu, default=other)


def per_accelerator(accelerator: Callable, other: Callable, *args):
  """`accelerator(*args)` in programs for GPUs and TPUs, `other(*args)` for CPUs and as the
  default branch (the one the ONNX conversion evaluates)."""
  return lax.platform_dependent(*args, cuda=accelerator, rocm=accelerator, tpu=accelerator,
                                default=other)
