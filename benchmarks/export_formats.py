"""Each export format against the in-process JAX model: file sizes, latency, largest differences.

  python -m benchmarks.export_formats [--size 800,1216] [--repeats 5] [--out DIR]

The R50-FPN torchvision-layout detector with perturbed weights (`tests/torchvision_model.py`,
imported with the project's tool) is exported per format for the buckets of an image of --size
(HxW, and its transpose); latency is one call on a batch of 1 preprocessed uint8 image of that
size, incl. normalization, decode and NMS, timed after warm-up with the runtimes alternating in
one loop (medians). Differences are against the JAX model on random and synthetic-shapes images
at batch 1 and 3 in both buckets (rows paired one-to-one within image and class).
"""

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

import torch  # noqa: F401,E402  (torch before TensorFlow in one process)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from fcos_jax import serving  # noqa: E402
from fcos_jax.serving import export  # noqa: E402
from fcos_jax.configs import coco_torchvision  # noqa: E402
from fcos_jax.data import categories, synthetic  # noqa: E402
from fcos_jax.models import fcos  # noqa: E402
from fcos_jax.weights import torchvision_import  # noqa: E402
from tests.test_exporters import detection_differences  # noqa: E402
from tests.torchvision_model import randomized_fcos  # noqa: E402

FORMATS = ('stablehlo', 'onnx', 'savedmodel')


def folder_mib(path):
  return sum(os.path.getsize(os.path.join(r, f)) for r, _, files in os.walk(path)
             for f in files) / 2**20


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--size', default='800,1216', help='H,W of the landscape bucket')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--out', default=None, help='keep the exports here (default: a temp dir)')
  args = parser.parse_args()
  h, w = (int(v) for v in args.size.split(','))
  config = coco_torchvision.get_config()
  config.data.torchvision_exact = False
  config.data.eval_min_size, config.data.max_size = min(h, w), max(h, w)
  model = fcos.create_model(config.model)
  like = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  variables = torchvision_import.convert(
      {k: v.numpy() for k, v in randomized_fcos().state_dict().items()}, like, 'fcos')
  cats = categories.coco()
  root = args.out or tempfile.mkdtemp(prefix='fcos_export_formats_')
  detectors = {'jax (in-process)': serving.Detector.from_model(config, model, variables, cats)}
  rows = {}
  for fmt in FORMATS:
    out = os.path.join(root, fmt)
    t = time.perf_counter()
    export.export_detector(config, model, variables, out, cats, fmt)
    seconds = time.perf_counter() - t
    detectors[fmt] = serving.Detector(out)
    rows[fmt] = {'export_s': seconds, 'mib': folder_mib(out)}
  shapes = detectors['jax (in-process)'].shapes
  print(f'R50-FPN exports to {root}; buckets {shapes}; jax {jax.__version__}, '
        f'{os.cpu_count()} CPUs')

  # Largest differences against the in-process model.
  rng = np.random.default_rng(0)
  reference = detectors['jax (in-process)']
  batches = []
  for shape in shapes:
    for batch in (1, 3):
      images = rng.integers(0, 256, (batch,) + shape + (3,), dtype=np.uint8)
      if batch == 3:  # synthetic shapes pictures drawn at the bucket size
        images[0] = synthetic.make_image(rng, *shape, 6, 0.0)[0]
      sizes = np.array([[shape[0] - 16 * i, shape[1] - 8 * i] for i in range(batch)], np.int32)
      batches.append((images, sizes, reference(images, sizes)))
  for fmt in FORMATS:
    worst = [0.0, 0.0, 0, True]
    for images, sizes, want in batches:
      box, score, unmatched, same = detection_differences(detectors[fmt](images, sizes), want)
      worst = [max(worst[0], box), max(worst[1], score), worst[2] + unmatched, worst[3] and same]
    rows[fmt].update(box=worst[0], score=worst[1], unmatched=worst[2], same_counts=worst[3])

  # Latency, batch 1 of the landscape bucket, runtimes alternating.
  images, sizes = batches[0][0], batches[0][1]
  for d in detectors.values():
    d(images, sizes)
    d(images, sizes)
  times = {name: [] for name in detectors}
  for _ in range(args.repeats):
    for name, d in detectors.items():
      t = time.perf_counter()
      d(images, sizes)
      times[name].append(time.perf_counter() - t)
  base = statistics.median(times['jax (in-process)'])
  print(f'\nbatch 1 at {shapes[0][0]}x{shapes[0][1]}, medians of {args.repeats}\n')
  print('| runtime | export time | size | latency | JAX time / this | same counts | labels '
        'paired | largest box diff (px) | largest score diff |')
  print('| --- | --- | --- | --- | --- | --- | --- | --- | --- |')
  for name in detectors:
    t = statistics.median(times[name])
    r = rows.get(name)
    if r is None:
      print(f'| {name} | - | - | {t:.2f} s | 1.00 | - | - | - | - |')
      continue
    print(f'| {name} | {r["export_s"]:.0f} s | {r["mib"]:.0f} MiB | {t:.2f} s | '
          f'{base / t:.2f} | {r["same_counts"]} | {"all" if not r["unmatched"] else r["unmatched"]} '
          f'| {r["box"]:.1e} | {r["score"]:.1e} |')


if __name__ == '__main__':
  main()
