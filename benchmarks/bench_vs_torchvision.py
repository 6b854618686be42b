"""fcos_jax against torchvision's FCOS, side by side in one process on the same CPU, in float32
and in bfloat16.

  python -m benchmarks.bench_vs_torchvision [--cases train_r50,infer_800] [--repeats 5]
      [--precision float32,bfloat16]

Cases (random weights, identical image sizes and boxes on both sides):
  train_r50   R50-FPN train step (forward, loss, backward, SGD), 512x512, batch 2; frozen BN,
              stem + layer1 frozen (configs/coco_torchvision.py; torchvision: FrozenBatchNorm2d,
              trainable_layers=3)
  train_r18   R18-FPN(128) from scratch (nothing frozen), 320x256, batch 8, 4-conv head with 128
              channels, 5 classes; ours GroupNorm backbone, torchvision BatchNorm2d
  infer_800   R50-FPN inference incl. postprocess, 800x1216, batch 1
  infer_512   R50-FPN inference incl. postprocess, 512x512, batch 1
`--size H,W` / `--batch B` override every case's (for a quick smoke run at a tiny size).

Precisions (`--precision`, comma list; both by default), each case run in each on both sides:
  float32     float32 everywhere
  bfloat16    mixed precision, float32 parameters and optimizer on both sides. Ours:
              `model.dtype='bfloat16'` (bfloat16 compute; params, losses and GroupNorm
              statistics float32). torchvision: forward and loss under
              `torch.autocast('cpu', dtype=torch.bfloat16)`, backward and SGD outside it (torch's
              recommended CPU mixed precision).

Each call is timed after warm-up; ours and torchvision's alternate in one loop (all precisions of
a case in each round) so that load from other processes hits all alike; medians over `--repeats`.
The table gives, per case and precision, the ratio of wall times (torchvision / ours, > 1: ours
is faster) and, as a check on a shared machine, of process CPU times (which waiting for a core
does not inflate); a second table gives each side's bfloat16 speedup (its float32 time / its
bfloat16 time). Both use 2 threads (torch `set_num_threads(2)`; XLA's CPU client uses one thread
per core). Peak memory is the peak RSS of a separate process that runs only that side's case in
that precision (`--no_memory` skips it). A last table puts each case's FLOPs (XLA's cost
analysis) against both sides' time and the `--matmul_n`^3 matmul rate of each framework in the
case's precision, measured in the same run: the rate a 1.5x ratio would need.
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

import torch  # noqa: E402  (torch before TensorFlow / jax in one process)
import torchvision  # noqa: E402
from torchvision.models.detection import fcos as tv_fcos  # noqa: E402
from torchvision.models.detection.backbone_utils import (  # noqa: E402
    BackboneWithFPN, _resnet_fpn_extractor)
from torchvision.ops import misc as tv_misc  # noqa: E402
from torchvision.ops.feature_pyramid_network import LastLevelP6P7  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.cases import (  # noqa: E402
    TITLES, TORCHVISION_CASES as CASES, build_ours, random_data, xla_matmul_gflops)

PRECISIONS = ('float32', 'bfloat16')


def torchvision_model(case):
  if case['depth'] == 50:  # the pretrained layout: FrozenBatchNorm2d, stem + layer1 frozen
    body = torchvision.models.resnet50(norm_layer=tv_misc.FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(body, 3, returned_layers=[2, 3, 4],
                                     extra_blocks=LastLevelP6P7(256, 256))
    num_classes = 91
  else:  # from scratch: BatchNorm2d, everything trainable, FPN with 128 channels
    body = torchvision.models.resnet18(norm_layer=torch.nn.BatchNorm2d)
    backbone = BackboneWithFPN(body, {'layer2': '0', 'layer3': '1', 'layer4': '2'},
                               [128, 256, 512], 128, extra_blocks=LastLevelP6P7(128, 128))
    num_classes = 5
  h, w = case['size']
  return tv_fcos.FCOS(backbone, num_classes, min_size=min(h, w), max_size=max(h, w)), num_classes


def make_torchvision(case, precision='float32'):
  """One blocking call of torchvision's FCOS (no resize: min/max size = the images'); in
  bfloat16 its forward (and loss) under CPU autocast, float32 parameters, backward outside."""
  torch.manual_seed(0)
  if precision == 'bfloat16':
    autocast = lambda: torch.autocast('cpu', dtype=torch.bfloat16)  # noqa: E731
  else:
    autocast = contextlib.nullcontext
  model, num_classes = torchvision_model(case)
  images, boxes, labels = random_data(case, num_classes)
  inputs = [torch.from_numpy(im).permute(2, 0, 1).float() / 255.0 for im in images]
  if not case['train']:
    model.eval()

    def infer():
      with torch.no_grad(), autocast():
        model(inputs)
    return infer
  model.train()
  targets = [{'boxes': torch.from_numpy(bx), 'labels': torch.from_numpy(lb)}
             for bx, lb in zip(boxes, labels)]
  params = [p for p in model.parameters() if p.requires_grad]
  opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)

  def step():
    with autocast():
      loss = sum(model(inputs, targets).values())
    opt.zero_grad()
    loss.backward()
    opt.step()
  return step


def matmul_rates(n=2048, repeats=7, precision='float32'):
  """Best [n, n] x [n, n] GFLOP/s of XLA and of torch in `precision` (bfloat16: both operands
  bfloat16, what autocast hands torch's matmul): the ceiling either side's convolutions can
  approach. One side after the other: torch's OpenMP threads spin after a call."""
  a = torch.randn(n, n, dtype=getattr(torch, precision))
  torch_rate = 2 * n ** 3 / min(timed(lambda: a @ a)[0] for _ in range(repeats + 1)) / 1e9
  return {'xla': xla_matmul_gflops(n, repeats, precision), 'torch': torch_rate}


def timed(fn):
  """(wall seconds, process CPU seconds) of one call."""
  t, c = time.perf_counter(), time.process_time()
  fn()
  return time.perf_counter() - t, time.process_time() - c


def peak_rss_gb(side, name, precision, overrides=()):
  """Peak RSS (GB) of a fresh process that warms up and runs only `side`'s `name` in
  `precision` twice (`overrides`: the --size / --batch arguments of this run)."""
  out = subprocess.run([sys.executable, '-m', 'benchmarks.bench_vs_torchvision', '--_memory_of',
                        f'{side}:{name}:{precision}', *overrides],
                       capture_output=True, text=True, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])['peak_rss_gb']


def memory_child(spec, case):
  side, _, precision = spec.split(':')
  fn = build_ours(case, precision).run if side == 'ours' else make_torchvision(case, precision)
  fn()
  fn()
  # VmHWM, not getrusage's ru_maxrss: Linux carries the parent's high-water mark across exec.
  with open('/proc/self/status') as f:
    kb = next(int(line.split()[1]) for line in f if line.startswith('VmHWM:'))
  print(json.dumps({'peak_rss_gb': kb / 2**20}))


def title(name, case):
  """The case's title; with --size / --batch overrides, its description with the sizes run."""
  if case == CASES[name]:
    return TITLES[name]
  (h, w), desc = case['size'], TITLES[name].split(',')[0]
  return f"{desc}, {w}x{h}, batch {case['batch']}"


def measure(name, case, precisions, repeats, warmup, memory_overrides=None):
  """Rows of one case, one per precision; ours and torchvision's alternate, all precisions
  in each round. `memory_overrides`: None skips the peak-RSS processes."""
  sides = {}
  for p in precisions:
    built = build_ours(case, p)
    sides[p] = (built, built.run, make_torchvision(case, p))
  for _ in range(warmup):
    for _, ours, theirs in sides.values():
      ours()
      theirs()
  times = {p: ([], []) for p in precisions}
  for _ in range(repeats):
    for p, (_, ours, theirs) in sides.items():
      times[p][0].append(timed(ours))
      times[p][1].append(timed(theirs))
  rows = []
  for p in precisions:
    t_ours, t_tv = (np.array(t) for t in times[p])
    row = dict(name=name, title=title(name, case), precision=p, ours=np.median(t_ours[:, 0]),
               tv=np.median(t_tv[:, 0]), cpu_ours=np.median(t_ours[:, 1]),
               cpu_tv=np.median(t_tv[:, 1]), gflop=sides[p][0].gflop(),
               walls_ours=t_ours[:, 0].tolist(), walls_tv=t_tv[:, 0].tolist())
    rows.append(row)
    print(f'  {name} {p} wall s: ours {np.round(t_ours[:, 0], 3).tolist()}, torchvision '
          f'{np.round(t_tv[:, 0], 3).tolist()}', flush=True)
  del sides
  if memory_overrides is not None:
    for row in rows:
      row['mem_ours'], row['mem_tv'] = (peak_rss_gb(side, name, row['precision'],
                                                    memory_overrides) for side in ('ours', 'tv'))
  return rows


def tables(rows, peaks):
  """The markdown tables of `rows` (from `measure`) and `peaks` ({precision: matmul_rates})."""
  out = ['| work | precision | fcos_jax s | torchvision s | ratio (torchvision / ours) | '
         'CPU-time ratio | peak RSS fcos_jax / torchvision GB |',
         '| --- | --- | --- | --- | --- | --- | --- |']
  for r in rows:
    mem = f"{r['mem_ours']:.2f} / {r['mem_tv']:.2f}" if 'mem_ours' in r else '-'
    out.append(f"| {r['title']} | {r['precision']} | {r['ours']:.3f} | {r['tv']:.3f} | "
               f"{r['tv'] / r['ours']:.2f} | {r['cpu_tv'] / r['cpu_ours']:.2f} | {mem} |")
  by = {(r['name'], r['precision']): r for r in rows}
  pairs = [(by[n, 'float32'], by[n, 'bfloat16']) for n, p in by if p == 'bfloat16'
           and (n, 'float32') in by]
  if pairs:
    out += ['', 'bfloat16 speedup of each framework (its float32 time / its bfloat16 time, '
            '> 1: bfloat16 is faster):', '',
            '| work | fcos_jax | torchvision | fcos_jax CPU time | torchvision CPU time |',
            '| --- | --- | --- | --- | --- |']
    for f, b in pairs:
      out.append(f"| {f['title']} | {f['ours'] / b['ours']:.2f} | {f['tv'] / b['tv']:.2f} | "
                 f"{f['cpu_ours'] / b['cpu_ours']:.2f} | {f['cpu_tv'] / b['cpu_tv']:.2f} |")
  n = next(iter(peaks.values()))['n']
  rates = '; '.join(f"{p}: XLA {q['xla']:.0f} GFLOP/s, torch {q['torch']:.0f} GFLOP/s"
                    for p, q in peaks.items())
  out += ['', f'{n}^3 matmul rate of this CPU, {rates}. GFLOP per call from XLA\'s cost '
          'analysis of our program (torchvision computes the same convolutions):', '',
          '| work | precision | GFLOP per call | fcos_jax GFLOP/s | torchvision GFLOP/s | '
          "needed for 1.5x | of torch's matmul rate |",
          '| --- | --- | --- | --- | --- | --- | --- |']
  for r in rows:
    needed = 1.5 * r['gflop'] / r['tv']
    out.append(f"| {r['title']} | {r['precision']} | {r['gflop']:.0f} | "
               f"{r['gflop'] / r['ours']:.0f} | {r['gflop'] / r['tv']:.0f} | {needed:.0f} | "
               f"{100 * needed / peaks[r['precision']]['torch']:.0f}% |")
  return '\n'.join(out)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--cases', default=','.join(CASES), help=f'comma-separated, of {list(CASES)}')
  parser.add_argument('--precision', default=','.join(PRECISIONS),
                      help=f'comma-separated, of {list(PRECISIONS)}')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--no_memory', action='store_true', help='skip the peak-RSS processes')
  parser.add_argument('--size', default=None, help="H,W of every case instead of the case's")
  parser.add_argument('--batch', type=int, default=None, help="every case's batch size")
  parser.add_argument('--matmul_n', type=int, default=2048, help='size of the matmul-rate probe')
  parser.add_argument('--_memory_of', default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  torch.set_num_threads(2)
  overrides = {}
  if args.size:
    overrides['size'] = tuple(int(v) for v in args.size.split(','))
  if args.batch:
    overrides['batch'] = args.batch
  override_args = ([f'--size={args.size}'] if args.size else []) + (
      [f'--batch={args.batch}'] if args.batch else [])
  if args._memory_of:
    return memory_child(args._memory_of, dict(CASES[args._memory_of.split(':')[1]], **overrides))
  names = args.cases.split(',')
  unknown = set(names) - set(CASES)
  if unknown:
    parser.error(f'unknown cases {sorted(unknown)}; choose from {list(CASES)}')
  precisions = args.precision.split(',')
  if set(precisions) - set(PRECISIONS) or len(set(precisions)) != len(precisions):
    parser.error(f'--precision {args.precision!r}: distinct values of {list(PRECISIONS)}')
  print(f'jax {jax.__version__} ({jax.devices()[0].device_kind}), torch {torch.__version__}, '
        f'torchvision {torchvision.__version__}, {os.cpu_count()} CPUs, torch threads '
        f'{torch.get_num_threads()}; medians of {args.repeats} after {args.warmup} warm-up; '
        f'precisions {precisions}', flush=True)
  rows = []
  for name in names:
    rows += measure(name, dict(CASES[name], **overrides), precisions, args.repeats, args.warmup,
                    None if args.no_memory else override_args)
  peaks = {p: dict(matmul_rates(args.matmul_n, precision=p), n=args.matmul_n)
           for p in precisions}
  print()
  print(tables(rows, peaks))
  return rows, peaks


if __name__ == '__main__':
  main()
