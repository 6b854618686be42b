"""AP and inference time of the postprocess and test-time options on one trained run, side by side.

Evaluates the run's weights on its validation split with: greedy NMS (the default), Soft-NMS
linear and Gaussian, and test-time augmentation (flip; flip with two more scales), each in its
own compiled program, and prints a table of AP, AP50, AP75 and model images/s after compilation
(the same run, one after another: compare the ratios).

  python -m benchmarks.inference_options --config configs/shapes.py --workdir /tmp/shapes \
      [--options greedy,linear,gaussian,flip,flip+scales]
"""

import argparse
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from benchmarks.bench_train_step import load_config  # noqa: E402
from fcos_jax import inference, tta as tta_lib  # noqa: E402

OPTIONS = {
    'greedy': ({}, None),
    'linear': ({'nms_method': 'linear'}, None),
    'gaussian': ({'nms_method': 'gaussian'}, None),
    'flip': ({}, 'flip'),
    'flip+scales': ({}, 'flip,scales=0.8:1.2'),
    'gaussian+flip': ({'nms_method': 'gaussian'}, 'flip'),
}


def measure(config_path: str, workdir: str, options, step=None):
  """[(option, AP, AP50, AP75, model images/s)] on the run's eval split."""
  from fcos_jax import evaluation
  from fcos_jax.weights import params
  rows = []
  for name in options:
    post, spec = OPTIONS[name]
    config = load_config(config_path)
    config.postprocess.update(post)
    model, variables, _ = params.load_for_inference(config, workdir=workdir, step=step)
    predict_fn = inference.make_predict_fn(config, model, tta_lib.parse(spec) if spec else None)
    m = evaluation.evaluate(config, model, variables, predict_fn=predict_fn)
    rows.append((name, m['AP'], m['AP50'], m['AP75'], m['model_images_per_second']))
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', required=True)
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--options', default='greedy,linear,gaussian,flip,flip+scales')
  args = parser.parse_args()
  rows = measure(args.config, args.workdir, args.options.split(','))
  base = rows[0]
  print(f'| option | AP | AP50 | AP75 | model images/s | time vs {base[0]} |')
  print('| --- | --- | --- | --- | --- | --- |')
  for name, ap, ap50, ap75, ips in rows:
    print(f'| {name} | {ap:.4f} | {ap50:.4f} | {ap75:.4f} | {ips:.1f} | {base[4] / ips:.2f}x |')


if __name__ == '__main__':
  main()
