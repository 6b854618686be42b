"""Per-op profile of the compiled train step or inference: where the time goes.

  python -m benchmarks.profile_step --case train_r50 [--steps 3 --out /tmp/fcos_profile]
  python -m benchmarks.profile_step --case train_r50 --size 800 1344 --batch 4 \
      --dtype bfloat16 --no_run          # FLOPs and memory only (plans for GPUs/TPUs)

Writes into `--out`: a `jax.profiler` trace (open `--out` in TensorBoard's profile plugin, or
`plugins/profile/*/perfetto_trace.json.gz` in ui.perfetto.dev), the optimized HLO (`hlo.txt`) and
`summary.txt`, also printed: XLA's cost analysis (FLOPs, achieved FLOP/s), its memory analysis,
and the top HLO ops by time per step, each with its opcode(s), output shape and the JAX source
op it came from, then the time by op kind. Works on any backend (on GPU the trace's device ops
are kernels, which the summary lists by name).
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.cases import CASES, build_ours, xla_matmul_gflops  # noqa: E402

INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = (.+?) ([\w\-]+)\((.*)$')


def hlo_ops(hlo_text):
  """{instruction name: (opcode, kinds, shape, source)} for every HLO instruction; for a fusion
  `kinds` are the heavy opcodes of its fused computation, and `source` is the JAX op_name."""
  computations, sources, current, ops = {}, {}, None, {}
  for line in hlo_text.splitlines():
    head = re.match(r'^(?:ENTRY )?%?([\w.\-]+) [({].*\{\s*$', line)
    if head and not line.startswith(' '):
      current = computations.setdefault(head.group(1), [])
      sources[head.group(1)] = ''
      computation = head.group(1)
      continue
    m = INSTRUCTION.match(line)
    if not m:
      continue
    name, shape, opcode, rest = m.groups()
    if current is not None:
      current.append(opcode)
    calls = re.search(r'calls=%?([\w.\-]+)', rest)
    source = re.search(r'op_name="([^"]*)"', rest)
    source = source.group(1) if source else ''
    if current is not None and source and not sources[computation]:
      sources[computation] = source
    ops[name] = (opcode, calls.group(1) if calls else None, re.sub(r'\{[^}]*\}', '', shape),
                 source)
  heavy = ('convolution', 'dot', 'reduce-window', 'select-and-scatter', 'scatter', 'gather',
           'reduce', 'sort', 'transpose', 'custom-call', 'while', 'all-reduce')
  out = {}
  for name, (opcode, calls, shape, source) in ops.items():
    kinds = sorted({o for o in computations.get(calls, ()) if o in heavy}) if calls else []
    out[name] = (opcode, kinds, shape, source or sources.get(calls, ''))
  return out


def op_kind(opcode, kinds):
  for k in ('convolution', 'dot', 'select-and-scatter', 'reduce-window', 'scatter', 'gather',
            'sort', 'reduce', 'transpose'):
    if opcode == k or k in kinds:
      return k
  return opcode if opcode != 'fusion' else 'elementwise fusion'


def trace_op_times(trace_dir):
  """{event name: total microseconds} of the complete events of the newest trace in trace_dir."""
  paths = sorted(glob.glob(os.path.join(trace_dir, 'plugins/profile/*/*.trace.json.gz')))
  with gzip.open(paths[-1]) as f:
    data = json.load(f)
  events = data['traceEvents'] if isinstance(data, dict) else data
  totals = collections.Counter()
  for e in events:
    if e.get('ph') == 'X':
      totals[e['name']] += e.get('dur', 0)
  return totals


def shorten(source, width=70):
  source = re.sub(r'^jit\([^)]*\)/', '', source)
  return source if len(source) <= width else '...' + source[-(width - 3):]


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--case', default='train_r50', choices=sorted(CASES))
  parser.add_argument('--size', type=int, nargs=2, default=None, help='H W (default: the case)')
  parser.add_argument('--batch', type=int, default=None)
  parser.add_argument('--dtype', default='float32', help='float32 or bfloat16')
  parser.add_argument('--steps', type=int, default=3, help='profiled calls after one warm-up')
  parser.add_argument('--top', type=int, default=25)
  parser.add_argument('--out', default='/tmp/fcos_profile')
  parser.add_argument('--no_run', action='store_true', help='compile and analyse only')
  args = parser.parse_args()
  case = dict(CASES[args.case])
  if args.size:
    case['size'] = tuple(args.size)
  if args.batch:
    case['batch'] = args.batch
  os.makedirs(args.out, exist_ok=True)
  t = time.perf_counter()
  built = build_ours(case, args.dtype)
  compile_s = time.perf_counter() - t
  hlo = built.compiled.as_text()
  with open(os.path.join(args.out, 'hlo.txt'), 'w') as f:
    f.write(hlo)
  flops = built.gflop() * 1e9
  mem = built.compiled.memory_analysis()
  lines = [f'{args.case}: {case["size"][0]}x{case["size"][1]}, batch {case["batch"]}, '
           f'{args.dtype}, {jax.devices()[0].device_kind}; build + compile {compile_s:.1f} s',
           f'XLA cost analysis: {flops / 1e9:.1f} GFLOP per call, '
           f'{flops / case["batch"] / 1e9:.1f} GFLOP per image']
  if mem is not None:
    gb = 2.0 ** 30
    lines.append(f'XLA memory analysis (GiB): arguments {mem.argument_size_in_bytes / gb:.2f}, '
                 f'outputs {mem.output_size_in_bytes / gb:.2f}, aliased '
                 f'{mem.alias_size_in_bytes / gb:.2f}, temporaries '
                 f'{mem.temp_size_in_bytes / gb:.2f}'
                 f', generated code {mem.generated_code_size_in_bytes / gb:.3f}')
  if not args.no_run:
    built.run()
    times = []
    jax.profiler.start_trace(args.out, create_perfetto_trace=True)
    for _ in range(args.steps):
      t = time.perf_counter()
      built.run()
      times.append(time.perf_counter() - t)
    jax.profiler.stop_trace()
    step_s = float(np.median(times))
    peak = xla_matmul_gflops()
    lines.append(f'median call {step_s:.3f} s under the profiler: {flops / step_s / 1e9:.1f} '
                 f'GFLOP/s achieved, {100 * flops / step_s / 1e9 / peak:.0f}% of this device\'s '
                 f'float32 2048^3 matmul rate ({peak:.0f} GFLOP/s)')
    ops = hlo_ops(hlo)
    totals = trace_op_times(args.out)
    rows = [(us / args.steps / 1e3, name, ops[name]) for name, us in totals.items()
            if name in ops]
    rows.sort(reverse=True)
    all_ms = sum(r[0] for r in rows)
    lines.append(f'HLO ops summed over threads: {all_ms:.0f} ms per call (ops on the two '
                 'threads overlap, so this can exceed the wall time)')
    lines.append(f'{"ms/call":>8} {"%":>5}  {"op":<28} {"kind":<19} {"shape":<28} source')
    for ms, name, (opcode, kinds, shape, source) in rows[:args.top]:
      lines.append(f'{ms:8.1f} {100 * ms / all_ms:5.1f}  {name[:28]:<28} '
                   f'{op_kind(opcode, kinds)[:19]:<19} {shape[:28]:<28} {shorten(source)}')
    by_kind = collections.Counter()
    for ms, _, (opcode, kinds, _, _) in rows:
      by_kind[op_kind(opcode, kinds)] += ms
    lines.append('time by op kind (ms/call): ' + ', '.join(
        f'{k} {v:.0f}' for k, v in by_kind.most_common()))
  summary = '\n'.join(lines)
  with open(os.path.join(args.out, 'summary.txt'), 'w') as f:
    f.write(summary + '\n')
  print(summary)
  print(f'trace, hlo.txt and summary.txt in {args.out}')


if __name__ == '__main__':
  main()
