"""Export a trained checkpoint as a self-contained inference artifact.

  python export.py --workdir DIR [--step N|best] --out EXPORT_DIR    # the run's own config
  python export.py --config configs/coco.py --workdir DIR --out EXPORT_DIR
  python export.py --config configs/coco_torchvision.py --params DIR --out EXPORT_DIR
      [--format stablehlo|onnx|savedmodel] [--overwrite] [--tta flip,scales=0.8:1.2]
      [--format onnx --precision float16 | int8 --calibration_images 64] [--format onnx --nonms]

Writes, per padded input shape (aspect bucket), the preprocessed-image -> detections function
(normalization, model, decode, top-k, NMS; static output shapes; dynamic batch) in the chosen
format: `jax.export` StableHLO + params.npz (default; runs with JAX), ONNX (onnxruntime,
TensorRT) or a TensorFlow SavedModel (TensorFlow / TF Serving), and metadata.json with the
preprocessing settings and class names. Run any of them with `fcos_jax.serving.Detector` or
`predict.py --export EXPORT_DIR`.
"""

import os

from absl import flags
from ml_collections import config_flags

from fcos_jax import exporters
from fcos_jax.exporters import onnx_quantize
from fcos_jax.programs import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, cli.config_help(from_workdir=True),
                                          lock_config=True)
cli.define_weights_flags()
_OUT = flags.DEFINE_string('out', None, 'Export directory to write.')
_FORMAT = flags.DEFINE_enum('format', 'stablehlo', list(exporters.FORMATS),
                            'stablehlo: jax.export (needs JAX); onnx: jax2onnx (onnxruntime, '
                            'TensorRT); savedmodel: jax2tf (TensorFlow, TF Serving).')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Write into a non-empty --out directory.')
cli.define_tta_flag()
_PRECISION = flags.DEFINE_enum('precision', 'float32', list(onnx_quantize.PRECISIONS),
                               'With --format onnx: float16 (the model computes and stores its '
                               'weights in float16; decode and NMS stay float32) or int8 '
                               '(convolutions quantized by onnxruntime, calibrated on '
                               '--calibration_images of the training split).')
_NMS = flags.DEFINE_bool('nms', True, '--nonms (with --format onnx): boxes and scores of every '
                         "location for a runtime's own NMS (TensorRT's EfficientNMS), no "
                         'detections.')
_CALIBRATION = flags.DEFINE_integer('calibration_images', 64, 'Images that calibrate an int8 '
                                    'export.')
flags.mark_flags_as_required(['config', 'out'])


def main(argv):
  cli.no_arguments(argv)
  from fcos_jax import errors
  from fcos_jax.serving import export
  from fcos_jax.data import input_pipeline
  config = cli.get_config(_CONFIG)
  out = _OUT.value
  if os.path.isdir(out) and os.listdir(out) and not _OVERWRITE.value:
    raise errors.UserError(f'{out} is not empty: give another --out, or --overwrite to write '
                           'into it')
  if os.path.exists(out) and not os.path.isdir(out):
    raise errors.UserError(f'--out {out} is a file, not a directory')
  exporters.require(_FORMAT.value)
  tta = cli.tta_spec()
  calibration = None
  if not _NMS.value and (_FORMAT.value != 'onnx' or tta):
    raise errors.UserError('--nonms is an ONNX export without --tta: add --format onnx')
  if _PRECISION.value != 'float32' and _FORMAT.value != 'onnx':
    raise errors.UserError(f'--precision {_PRECISION.value} is an ONNX export: add '
                           '--format onnx')
  if _PRECISION.value == 'int8':
    if _CALIBRATION.value < 1:
      raise errors.UserError(f'--calibration_images {_CALIBRATION.value}: at least 1')
    input_pipeline.get_builder(config.data)  # a missing dataset is one line before the export
    calibration = export.calibration_feeds(config, _CALIBRATION.value)
  model, variables, step = cli.load_weights(config)
  categories = input_pipeline.dataset_categories(config.data, coco_fallback=True)
  meta = export.export_detector(config, model, variables, out, categories, _FORMAT.value, tta,
                                _PRECISION.value, calibration, _NMS.value)
  size = sum(os.path.getsize(os.path.join(root, f))
             for root, _, files in os.walk(out) for f in files)
  print(f'exported checkpoint step {step} to {out} ({_FORMAT.value}, {_PRECISION.value}): '
        f'{", ".join(sorted({m["file"] for m in meta["models"]}))}; {size / 2**20:.1f} MiB in all')


def run():
  cli.run(main, workdir_config=True)


if __name__ == '__main__':
  run()
