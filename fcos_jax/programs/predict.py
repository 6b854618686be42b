"""Detect objects in images and draw them.

  python predict.py --export EXPORT_DIR --image a.jpg --image photos/ --image 'shots/*.png'
      --out OUT_DIR [--min_score 0.3] [--batch_size 8] [--annotations instances.json]
  python predict.py --workdir DIR [--step N|best] --image ... --out OUT_DIR   # the run's config
  python predict.py --config configs/coco_torchvision.py --params weights/fcos_tv --image ...
  python predict.py --config configs/shapes.py --workdir /tmp/shapes --image ...
      [--tta flip,scales=0.8:1.2]      # test-time augmentation (an export has its own: export.py)
  python predict.py --export EXPORT_DIR --image big.jpg --out OUT --slice 640 --overlap 0.2
      [--slice_full]                   # large images: tiles merged across borders

Inputs are image or video files, folders (searched recursively) and globs; a video's frames
are detected and drawn into OUT_DIR/<name>.mp4, its detections keyed '<path>#<frame>'. The
model is an export (StableHLO, ONNX or SavedModel), or a training workdir / params checkpoint
with its config. Writes one picture per input under
OUT_DIR at the input's path relative to the inputs' common folder (two inputs never share an
output), OUT_DIR/detections.json ({input path: detections in original pixels}) and
OUT_DIR/results.json in the COCO results format with each image's file name; with
--annotations (a COCO file whose images are the inputs), image ids come from it, so
`evaluate.py --detections OUT_DIR/results.json --annotations ...` scores the run. An
unreadable input (or one above --max_pixels) is skipped with a message; the others are
still written, and the exit code is 1 if nothing could be read. Outputs never replace an
input; a non-empty OUT_DIR is written into only with --overwrite; files under OUT_DIR are not
read as inputs (earlier drawings).
"""

import json
import os
import time

from absl import flags
from ml_collections import config_flags

from fcos_jax import image_io
from fcos_jax.programs import cli
from fcos_jax.video_io import VIDEO_SUFFIXES

_EXPORT = flags.DEFINE_string('export', None, 'Directory written by export.py.')
_CONFIG = config_flags.DEFINE_config_file(
    'config', None, cli.config_help('The config of --workdir / --params', from_workdir=True),
    lock_config=True)
cli.define_weights_flags()
cli.define_compilation_cache_flag()
cli.define_prediction_flags()
cli.define_tta_flag()
FLAGS = flags.FLAGS


def load_detector():
  from fcos_jax import errors, serving
  tta = cli.tta_spec()
  if _EXPORT.value:
    if tta:
      raise errors.UserError(f'--tta with --export {_EXPORT.value}: an export runs the TTA it was '
                             'exported with (export.py --tta); or predict from --workdir/--params')
    return serving.Detector(_EXPORT.value)
  if not _CONFIG.value or not (FLAGS.workdir or FLAGS.params):
    raise errors.UserError('give --export EXPORT_DIR, or --config with --workdir or --params')
  from absl import logging
  from fcos_jax.data import categories, input_pipeline
  from fcos_jax.weights import run_config
  config = cli.get_config(_CONFIG)
  model, variables, _ = cli.load_weights(config)
  cats = FLAGS.workdir and run_config.read_categories(FLAGS.workdir)
  try:
    cats = cats or input_pipeline.dataset_categories(config.data, coco_fallback=True)
  except input_pipeline.DatasetNotPreparedError:
    k = config.model.num_classes
    cats = categories.Categories(tuple(range(1, k + 1)), tuple(f'class_{i}' for i in range(k)))
    logging.warning('dataset %r is not here: classes are named class_0..class_%d, category ids '
                    '1..%d', config.data.dataset, k - 1, k)
  return serving.Detector.from_model(config, model, variables, cats, tta)


def draw(image, dets):
  from fcos_jax.serving import outputs
  return outputs.picture(image, dets, FLAGS.min_score, FLAGS.draw_scale)


def detect_images(detector, images):
  """Detections of each image scoring at least --min_score: in batches, or tile by tile with
  --slice."""
  from fcos_jax.serving import outputs
  if not FLAGS.slice:
    found = detector.detect_many(images, FLAGS.batch_size)
  else:
    found = [detector.detect_sliced(image, FLAGS.slice, FLAGS.overlap, full=FLAGS.slice_full,
                                    batch_size=FLAGS.batch_size) for image in images]
  return [outputs.kept(dets, FLAGS.min_score) for dets in found]


def predict_video(detector, path: str, out: str, detections):
  """Detect and draw every frame of a video into `out` (.mp4); returns the frame count and
  the codec written, e.g. 'H.264, libx264'."""
  import numpy as np
  from fcos_jax import video_io
  os.makedirs(os.path.dirname(out), exist_ok=True)
  writer = video_io.VideoWriter(out, video_io.frame_rate(path))
  count, frames = 0, []

  def flush():
    nonlocal count
    for frame, dets in zip(frames, detect_images(detector, frames)):
      detections[f'{path}#{count}'] = dets
      writer.write(np.asarray(draw(frame, dets)))
      count += 1
    frames.clear()
  try:
    for frame in video_io.read_frames(path):
      frames.append(frame)
      if len(frames) == FLAGS.batch_size:
        flush()
    flush()
  finally:
    writer.close()
  return count, writer.codec_description


def main(argv):
  from fcos_jax import errors
  from fcos_jax.serving import inputs as input_files
  cli.no_arguments(argv)
  image_io.set_pixel_limit(FLAGS.max_pixels)
  inputs, excluded = input_files.expand_inputs(FLAGS.image, exclude=FLAGS.out)
  if excluded:
    print(f'{excluded} file(s) under --out {FLAGS.out} not read as inputs (earlier outputs)')
  if not inputs:
    raise errors.UserError('give at least one --image (a file, folder or glob)')
  outputs = input_files.output_paths(inputs, FLAGS.out)
  input_files.check_outputs(inputs, outputs, FLAGS.out, FLAGS.overwrite)
  ids = input_files.image_ids(inputs, FLAGS.annotations)
  if FLAGS.slice:
    from fcos_jax.serving import slicing
    slicing.check_settings(FLAGS.slice, FLAGS.overlap)
  from tqdm import tqdm
  from fcos_jax.serving import outputs as run_outputs
  cli.enable_compilation_cache()
  detector = load_detector()
  detections, results, skipped, changed = {}, [], [], 0
  bar = tqdm(total=len(inputs), unit='images', desc='detecting')
  start = time.perf_counter()
  for first in range(0, len(inputs), FLAGS.batch_size):
    chunk, images = [], []
    for path in inputs[first:first + FLAGS.batch_size]:
      try:
        if path.lower().endswith(VIDEO_SUFFIXES):
          frames, codec = predict_video(detector, path, outputs[path], detections)
          bar.write(f'{path}: {frames} frames -> {outputs[path]} ({codec})')
          continue
        image, change = image_io.read_rgb8(path, apply_exif_orientation=FLAGS.exif_orientation)
        if change:
          bar.write(f'{path}: {change}')
          changed += 1
        images.append(image)
        chunk.append(path)
      except errors.DataError as e:
        bar.write(f'skipped: {e}')
        skipped.append(path)
    for path, image, dets in zip(chunk, images, detect_images(detector, images)):
      detections[path] = dets
      results += run_outputs.coco_rows(path, ids[path], dets)
      os.makedirs(os.path.dirname(outputs[path]), exist_ok=True)
      draw(image, dets).save(outputs[path])
    bar.update(len(inputs[first:first + FLAGS.batch_size]))
  bar.close()
  os.makedirs(FLAGS.out, exist_ok=True)
  with open(os.path.join(FLAGS.out, 'detections.json'), 'w') as f:
    json.dump(detections, f, indent=1)
  with open(os.path.join(FLAGS.out, 'results.json'), 'w') as f:
    json.dump(results, f)
  seconds = time.perf_counter() - start
  done = len(inputs) - len(skipped)
  print(f'{done} of {len(inputs)} inputs done in {seconds:.1f} s '
        f'({len(detections) / max(seconds, 1e-9):.1f} images/s, compiling included) -> '
        f'{FLAGS.out}' + (f'; {changed} converted on reading (listed above)' if changed else '')
        + (f'; {len(skipped)} skipped: {", ".join(skipped)}' if skipped else ''))
  if not done:
    raise errors.DataError(f'none of the {len(inputs)} inputs could be read (listed above)')


def run():
  cli.run(main, workdir_config=True)


if __name__ == '__main__':
  run()
