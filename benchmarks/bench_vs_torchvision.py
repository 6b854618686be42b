"""fcos_jax against torchvision's FCOS, side by side in one process on the same CPU.

  python -m benchmarks.bench_vs_torchvision [--cases train_r50,infer_800] [--repeats 5]

Cases (random weights, float32, identical image sizes and boxes on both sides):
  train_r50   R50-FPN train step (forward, loss, backward, SGD), 512x512, batch 2; frozen BN,
              stem + layer1 frozen (configs/coco_torchvision.py; torchvision: FrozenBatchNorm2d,
              trainable_layers=3)
  train_r18   R18-FPN(128) from scratch (nothing frozen), 320x256, batch 8, 4-conv head with 128
              channels, 5 classes; ours GroupNorm backbone, torchvision BatchNorm2d
  infer_800   R50-FPN inference incl. postprocess, 800x1216, batch 1
  infer_512   R50-FPN inference incl. postprocess, 512x512, batch 1

Each call is timed after warm-up; ours and torchvision's alternate in one loop so that load from
other processes hits both alike; medians over `--repeats`. The table gives the ratio of wall
times and, as a check on a shared machine, of process CPU times (which waiting for a core does not
inflate). Both use 2 threads (torch
`set_num_threads(2)`; XLA's CPU client uses one thread per core). Peak memory is the peak RSS of a
separate process that runs only that side's case (`--no_memory` skips it). A second table
puts each case's FLOPs (XLA's cost analysis) against both sides' time and the float32 matmul
rate of each framework, measured in the same run: the rate a 1.5x ratio would need.
"""

import argparse
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


def make_torchvision(case):
  """One blocking call of torchvision's FCOS (no resize: min/max size = the images')."""
  torch.manual_seed(0)
  model, num_classes = torchvision_model(case)
  images, boxes, labels = random_data(case, num_classes)
  inputs = [torch.from_numpy(im).permute(2, 0, 1).float() / 255.0 for im in images]
  if not case['train']:
    model.eval()

    def infer():
      with torch.no_grad():
        model(inputs)
    return infer
  model.train()
  targets = [{'boxes': torch.from_numpy(bx), 'labels': torch.from_numpy(lb)}
             for bx, lb in zip(boxes, labels)]
  params = [p for p in model.parameters() if p.requires_grad]
  opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)

  def step():
    loss = sum(model(inputs, targets).values())
    opt.zero_grad()
    loss.backward()
    opt.step()
  return step


def matmul_rates(n=2048, repeats=7):
  """Best float32 [n, n] x [n, n] GFLOP/s of XLA and of torch: the ceiling either side's
  convolutions can approach. One side after the other: torch's OpenMP threads spin after a call."""
  a = torch.randn(n, n)
  torch_rate = 2 * n ** 3 / min(timed(lambda: a @ a)[0] for _ in range(repeats + 1)) / 1e9
  return {'xla': xla_matmul_gflops(n, repeats), 'torch': torch_rate}


def timed(fn):
  """(wall seconds, process CPU seconds) of one call."""
  t, c = time.perf_counter(), time.process_time()
  fn()
  return time.perf_counter() - t, time.process_time() - c


def peak_rss_gb(side, name):
  """Peak RSS (GB) of a fresh process that warms up and runs only `side`'s `name` twice."""
  out = subprocess.run([sys.executable, '-m', 'benchmarks.bench_vs_torchvision', '--_memory_of',
                        f'{side}:{name}'], capture_output=True, text=True, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])['peak_rss_gb']


def memory_child(spec):
  side, name = spec.split(':')
  fn = build_ours(CASES[name]).run if side == 'ours' else make_torchvision(CASES[name])
  fn()
  fn()
  # VmHWM, not getrusage's ru_maxrss: Linux carries the parent's high-water mark across exec.
  with open('/proc/self/status') as f:
    kb = next(int(line.split()[1]) for line in f if line.startswith('VmHWM:'))
  print(json.dumps({'peak_rss_gb': kb / 2**20}))


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--cases', default=','.join(CASES), help=f'comma-separated, of {list(CASES)}')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--no_memory', action='store_true', help='skip the peak-RSS processes')
  parser.add_argument('--_memory_of', default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  torch.set_num_threads(2)
  if args._memory_of:
    return memory_child(args._memory_of)
  names = args.cases.split(',')
  unknown = set(names) - set(CASES)
  if unknown:
    parser.error(f'unknown cases {sorted(unknown)}; choose from {list(CASES)}')
  print(f'jax {jax.__version__} ({jax.devices()[0].device_kind}), torch {torch.__version__}, '
        f'torchvision {torchvision.__version__}, {os.cpu_count()} CPUs, torch threads '
        f'{torch.get_num_threads()}; medians of {args.repeats} after {args.warmup} warm-up')
  rows = []
  for name in names:
    built = build_ours(CASES[name])
    ours, theirs = built.run, make_torchvision(CASES[name])
    for _ in range(args.warmup):
      ours()
      theirs()
    t_ours, t_tv = [], []
    for _ in range(args.repeats):
      t_ours.append(timed(ours))
      t_tv.append(timed(theirs))
    del ours, theirs
    t_ours, t_tv = np.array(t_ours), np.array(t_tv)
    row = dict(name=name, ours=np.median(t_ours[:, 0]), tv=np.median(t_tv[:, 0]),
               cpu_ours=np.median(t_ours[:, 1]), cpu_tv=np.median(t_tv[:, 1]),
               gflop=built.gflop())
    if not args.no_memory:
      row['mem_ours'], row['mem_tv'] = peak_rss_gb('ours', name), peak_rss_gb('tv', name)
    rows.append(row)
    print(f'  {name} wall s: ours {np.round(t_ours[:, 0], 3).tolist()}, torchvision '
          f'{np.round(t_tv[:, 0], 3).tolist()}', flush=True)
  print()
  print('| work | fcos_jax s | torchvision s | ratio (torchvision / ours) | CPU-time ratio | '
        'peak RSS fcos_jax / torchvision GB |')
  print('| --- | --- | --- | --- | --- | --- |')
  for r in rows:
    mem = f"{r['mem_ours']:.2f} / {r['mem_tv']:.2f}" if 'mem_ours' in r else '-'
    print(f"| {TITLES[r['name']]} | {r['ours']:.3f} | {r['tv']:.3f} | {r['tv'] / r['ours']:.2f} | "
          f"{r['cpu_tv'] / r['cpu_ours']:.2f} | {mem} |")
  peaks = matmul_rates()
  print()
  print(f"float32 2048^3 matmul rate of this CPU: XLA {peaks['xla']:.0f} GFLOP/s, torch "
        f"{peaks['torch']:.0f} GFLOP/s. GFLOP per call from XLA's cost analysis of our program "
        '(torchvision computes the same convolutions):')
  print()
  print('| work | GFLOP per call | fcos_jax GFLOP/s | torchvision GFLOP/s | needed for 1.5x | '
        "of torch's matmul rate |")
  print('| --- | --- | --- | --- | --- | --- |')
  for r in rows:
    needed = 1.5 * r['gflop'] / r['tv']
    print(f"| {TITLES[r['name']]} | {r['gflop']:.0f} | {r['gflop'] / r['ours']:.0f} | "
          f"{r['gflop'] / r['tv']:.0f} | {needed:.0f} | {100 * needed / peaks['torch']:.0f}% |")


if __name__ == '__main__':
  main()
