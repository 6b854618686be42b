"""Export a trained checkpoint as a self-contained inference artifact.

  python export.py --config configs/coco.py --workdir DIR [--step N] --out EXPORT_DIR
  python export.py --config configs/coco_torchvision.py --params DIR --out EXPORT_DIR

Writes, per padded input shape (aspect bucket), the preprocessed-image -> detections function
(model + decode + NMS, static output shapes) serialized with `jax.export` (StableHLO, symbolic
batch dimension), the inference parameters (no optimizer state) and metadata.json with the
preprocessing settings and class names. Run it with `fcos_jax.serving.Detector` (JAX + numpy
only) or `predict.py --export EXPORT_DIR`.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from fcos_jax import cli  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (get_config()).',
                                          lock_config=True)
cli.define_weights_flags()
_OUT = flags.DEFINE_string('out', None, 'Export directory to write.')
flags.mark_flags_as_required(['config', 'out'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.quiet_library_logs()
  from fcos_jax import serving
  from fcos_jax.data import input_pipeline
  config = cli.get_config(_CONFIG)
  model, variables, step = cli.load_weights(config)
  categories = input_pipeline.dataset_categories(config.data, coco_fallback=True)
  meta = serving.export_detector(config, model, variables, _OUT.value, categories)
  size = sum(os.path.getsize(os.path.join(_OUT.value, f)) for f in os.listdir(_OUT.value))
  print(f'exported checkpoint step {step} to {_OUT.value}: '
        f'{", ".join(m["file"] for m in meta["models"])}; {size / 2**20:.1f} MiB in all')


def run():
  cli.run(main)


if __name__ == '__main__':
  run()
