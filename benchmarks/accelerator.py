"""What an accelerator gives FCOS: one command, a markdown table and a JSON file.

  python -m benchmarks.accelerator [--out DIR] [--size 800,1344 --batch 8 --steps 10]
  python -m benchmarks.accelerator --memory_table   # + XLA's memory for batch 2/4/8 x dtypes

On one GPU or TPU (after the README's install plus `jax[cuda12]` / `jax[tpu]` at the pinned
version) it reports: device and versions; the measured bf16 and float32 matmul rate; which layer
form the program lowered for this backend holds (XLA convolutions or the CPU forms' matrix
products, select-and-scatter, the compute dtype); the configs/coco.py R50-FPN train step in
bfloat16 and float32 (images/s, XLA cost-analysis FLOPs, MFU over the datasheet peak and over
the measured matmul rate; the batch halves on out-of-memory); inference with the postprocess at
batch 1 and 8; peak device memory. `--size/--depth/--width` shrink it (the test suite runs a
tiny CPU version so it never rots).
"""

import argparse
import json
import os
import platform
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import flax  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from fcos_jax import inference, optim, sharding, train_step  # noqa: E402
from fcos_jax.configs import coco  # noqa: E402
from fcos_jax.models import fcos  # noqa: E402

# Dense bf16 TFLOP/s from the vendors' datasheets, by `device_kind` prefix (MFU's denominator).
PEAK_BF16_TFLOPS = {
    'NVIDIA H200': 989.0, 'NVIDIA H100': 989.0, 'NVIDIA A100': 312.0, 'NVIDIA L4': 121.0,
    'NVIDIA A10': 125.0, 'TPU v6': 918.0, 'TPU v5p': 459.0, 'TPU v5 lite': 197.0,
    'TPU v5e': 197.0, 'TPU v4': 275.0,
}
NUM_BOXES = 5


def peak_tflops(kind: str):
  return next((v for k, v in PEAK_BF16_TFLOPS.items() if kind.startswith(k)), None)


def timed(fn, repeats):
  """Median seconds of `fn()` (blocking) after one warm-up call."""
  fn()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def matmul_tflops(n, dtype, repeats=10):
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  dot = jax.jit(lambda a: a @ a)
  return 2 * n ** 3 / timed(lambda: dot(a).block_until_ready(), repeats) / 1e12


def make_config(args, dtype, batch):
  config = coco.get_config()
  config.batch_size = batch
  m = config.model
  m.dtype, m.backbone_depth = dtype, args.depth
  if args.width:
    m.backbone_width, m.fpn_channels, m.gn_groups = args.width, 2 * args.width, 4
  return config


def random_batch(config, size, batch):
  rng = np.random.default_rng(0)
  (h, w), m = size, config.data.max_boxes
  xy = rng.uniform(0, 0.6, (batch, NUM_BOXES, 2)) * (w, h)
  wh = rng.uniform(8, 0.4 * min(h, w), (batch, NUM_BOXES, 2))
  boxes = np.zeros((batch, m, 4), np.float32)
  boxes[:, :NUM_BOXES] = np.concatenate([xy, xy + wh], -1)
  return {'image': rng.integers(0, 256, (batch, h, w, 3), dtype=np.uint8),
          'image_size': np.array([size] * batch, np.int32), 'boxes': boxes,
          'classes': rng.integers(0, config.model.num_classes, (batch, m)).astype(np.int32),
          'box_valid': np.arange(m)[None].repeat(batch, 0) < NUM_BOXES}


def compile_train(args, dtype, batch):
  config = make_config(args, dtype, batch)
  model = fcos.create_model(config.model)
  mesh = sharding.make_mesh(jax.devices()[:1])
  tx = optim.create_optimizer(config, fcos.abstract_variables(model)['params'])
  state = train_step.create_train_state(config, model, tx, mesh)
  data = random_batch(config, args.size, batch)
  compiled = train_step.make_train_step(config, model, tx, mesh).lower(state, data).compile()
  return compiled, state, data


def flops(compiled):
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get('flops', 0.0))


def memory_gib(compiled):
  """XLA's memory analysis of a compiled program: arguments + outputs + temporaries, GiB."""
  m = compiled.memory_analysis()
  if m is None:
    return None
  total = m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
  return (total - m.alias_size_in_bytes) / 2 ** 30


def is_oom(e):
  return 'RESOURCE_EXHAUSTED' in str(e) or 'out of memory' in str(e).lower()


def train_row(args, dtype, peak, matmul):
  batch = args.batch
  while True:
    try:
      compiled, state, data = compile_train(args, dtype, batch)
      holder = [state]

      def run():
        holder[0], metrics = compiled(holder[0], data)
        jax.block_until_ready(metrics)
      seconds = timed(run, args.steps)
      break
    except Exception as e:  # noqa: BLE001  (XlaRuntimeError on OOM; anything else re-raised)
      if not is_oom(e) or batch == 1:
        raise
      batch //= 2
  achieved = flops(compiled) / seconds / 1e12
  return {'what': f'train step {dtype}', 'batch': batch, 'ms': 1e3 * seconds,
          'images_per_s': batch / seconds, 'tflop_per_step': flops(compiled) / 1e12,
          'mfu_datasheet': achieved / peak if peak else None, 'mfu_matmul': achieved / matmul,
          'xla_memory_gib': memory_gib(compiled)}


def inference_row(args, dtype, batch, peak, matmul):
  config = make_config(args, dtype, batch)
  model = fcos.create_model(config.model)
  variables = jax.jit(lambda: fcos.init_variables(model, jax.random.key(0)))()
  data = random_batch(config, args.size, batch)
  compiled = jax.jit(inference.make_predict_fn(config, model)).lower(
      variables, data['image'], data['image_size']).compile()
  seconds = timed(lambda: jax.block_until_ready(
      compiled(variables, data['image'], data['image_size'])), args.steps)
  achieved = flops(compiled) / seconds / 1e12
  return {'what': f'inference {dtype}', 'batch': batch, 'ms': 1e3 * seconds,
          'images_per_s': batch / seconds, 'tflop_per_step': flops(compiled) / 1e12,
          'mfu_datasheet': achieved / peak if peak else None, 'mfu_matmul': achieved / matmul,
          'xla_memory_gib': memory_gib(compiled)}


def layer_forms(args):
  """What the train step lowered for this backend holds, read from its StableHLO."""
  config = make_config(args, 'auto', 2)
  model = fcos.create_model(config.model)
  variables = fcos.abstract_variables(model)
  images = jax.ShapeDtypeStruct((2, 64, 96, 3), jnp.float32)

  def loss(params, batch_stats, x):
    out = model.apply({'params': params, 'batch_stats': batch_stats}, x)
    return sum(jnp.sum(o) for o in jax.tree_util.tree_leaves(out))
  text = jax.jit(jax.grad(loss)).lower(variables['params'], variables['batch_stats'],
                                       images).as_text()
  lines = text.splitlines()
  convs = [l for l in lines if 'stablehlo.convolution' in l]
  return {'backend': jax.default_backend(), 'convolutions': len(convs),
          'matrix_products': sum('dot_general' in l for l in lines),
          'max_pool_gradient': 'select_and_scatter' if any('select_and_scatter' in l
                                                           for l in lines) else 'CPU form',
          'auto_compute_dtype': 'bfloat16' if convs and all('xbf16>' in l for l in convs)
          else 'float32'}


def memory_table(args):
  rows = []
  for dtype in args.dtypes:
    for batch in (2, 4, 8):
      try:
        compiled, _, _ = compile_train(args, dtype, batch)
        rows.append({'dtype': dtype, 'batch': batch, 'xla_memory_gib': memory_gib(compiled)})
      except Exception as e:  # noqa: BLE001
        if not is_oom(e):
          raise
        rows.append({'dtype': dtype, 'batch': batch, 'xla_memory_gib': 'OOM'})
  return rows


def fmt(v):
  if v is None:
    return '-'
  return f'{v:.3g}' if isinstance(v, float) else str(v)


def markdown(report):
  d = report['device']
  out = [f"Device: {d['kind']} x{d['count']} ({d['platform']}), jax {d['jax']}, flax "
         f"{d['flax']}, optax {d['optax']}, python {d['python']}; size "
         f"{report['size'][0]}x{report['size'][1]}, R{report['depth']}",
         '', f"Matmul ({report['matmul_n']}^3): bf16 {report['matmul_tflops']['bfloat16']:.3g} "
         f"TFLOP/s, float32 {report['matmul_tflops']['float32']:.3g} TFLOP/s; datasheet bf16 "
         f"peak {fmt(d['peak_bf16_tflops'])}", '',
         'Layer forms: ' + ', '.join(f'{k} {v}' for k, v in report['layer_forms'].items()), '',
         '| what | batch | ms | images/s | TFLOP/step | MFU (datasheet) | MFU (matmul) | '
         'XLA memory GiB |', '|---|---|---|---|---|---|---|---|']
  for r in report['rows']:
    out.append('| ' + ' | '.join(fmt(r[k]) for k in (
        'what', 'batch', 'ms', 'images_per_s', 'tflop_per_step', 'mfu_datasheet', 'mfu_matmul',
        'xla_memory_gib')) + ' |')
  out.append(f"\nPeak device memory: {fmt(report['peak_memory_gib'])} GiB")
  if report.get('memory_table'):
    out += ['', '| dtype | batch | XLA memory GiB (train step) |', '|---|---|---|']
    out += [f"| {r['dtype']} | {r['batch']} | {fmt(r['xla_memory_gib'])} |"
            for r in report['memory_table']]
  return '\n'.join(out)


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--size', default='800,1344', help='H,W of the padded images')
  parser.add_argument('--batch', type=int, default=8, help='train batch (halves on OOM)')
  parser.add_argument('--infer_batches', default='1,8')
  parser.add_argument('--dtypes', default='bfloat16,float32')
  parser.add_argument('--steps', type=int, default=10, help='timed calls per row (median)')
  parser.add_argument('--depth', type=int, default=50)
  parser.add_argument('--width', type=int, default=0, help='backbone width (0: the config)')
  parser.add_argument('--matmul_n', type=int, default=8192)
  parser.add_argument('--memory_table', action='store_true')
  parser.add_argument('--out', default='accelerator_report')
  parser.add_argument('--overwrite', action='store_true', help='replace a report in --out')
  args = parser.parse_args()
  written = [os.path.join(args.out, f) for f in ('accelerator.json', 'accelerator.md')]
  if not args.overwrite and any(os.path.exists(p) for p in written):
    raise SystemExit(f'error: {args.out} already holds a report; --overwrite replaces it')
  args.size = tuple(int(v) for v in args.size.split(','))
  args.dtypes = args.dtypes.split(',')
  device = jax.devices()[0]
  peak = peak_tflops(device.device_kind)
  report = {'device': {'kind': device.device_kind, 'platform': device.platform,
                       'count': jax.device_count(), 'jax': jax.__version__,
                       'flax': flax.__version__, 'optax': optax.__version__,
                       'python': platform.python_version(), 'peak_bf16_tflops': peak},
            'size': args.size, 'depth': args.depth, 'matmul_n': args.matmul_n,
            'matmul_tflops': {d: matmul_tflops(args.matmul_n, getattr(jnp, d))
                              for d in ('bfloat16', 'float32')},
            'layer_forms': layer_forms(args), 'rows': []}
  for dtype in args.dtypes:
    matmul = report['matmul_tflops'][dtype]
    report['rows'].append(train_row(args, dtype, peak, matmul))
    for b in (int(v) for v in args.infer_batches.split(',')):
      report['rows'].append(inference_row(args, dtype, b, peak, matmul))
  stats = device.memory_stats() or {}
  report['peak_memory_gib'] = (stats['peak_bytes_in_use'] / 2 ** 30
                               if 'peak_bytes_in_use' in stats else None)
  if args.memory_table:
    report['memory_table'] = memory_table(args)
  os.makedirs(args.out, exist_ok=True)
  with open(written[0], 'w') as f:
    json.dump(report, f, indent=1)
  table = markdown(report)
  with open(written[1], 'w') as f:
    f.write(table + '\n')
  print(table)


if __name__ == '__main__':
  main()
