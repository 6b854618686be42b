"""Detect objects in many images with Apache Beam (fcos_jax[beam]).

  python batch_predict.py --export EXPORT_DIR --image photos/ --image 'gs://b/shots/*.jpg'
      --out OUT [--draw] [--annotations instances.json] [--batch_size 8] [--slice 640]
  python batch_predict.py --export EXPORT_DIR --config configs/coco.py --split validation
      --out OUT                       # every image of the config's TFDS split
  ... -- --runner=DataflowRunner --project=P --region=R --temp_location=gs://b/tmp
                                      # Beam pipeline options after `--` (default: in-process)

Each image is detected as predict.py detects it (the same `Detector`, preprocessing and
batching by shape), in Beam's RunInference. Writes under OUT (a local folder or gs://...):
results-*.jsonl (COCO results rows, one per line, each with its image's file name; score them
with `evaluate.py --detections 'OUT/results-*.jsonl'`), detections-*.jsonl ({"path",
"detections"} per image, predict.py's detections.json), skipped-*.txt (each input that could
not be read, with why) and, with --draw, one picture per image at predict.py's path. An
unreadable input is skipped and counted; the exit code is 1 if none could be read. A TFDS
split's images are read in stored pixels (no EXIF orientation), like its boxes, and keep the
dataset's image ids. A non-empty OUT is written into only with --overwrite, which replaces an
earlier run's shards.
"""

import time

from absl import flags
from ml_collections import config_flags

from fcos_jax.programs import cli

_EXPORT = flags.DEFINE_string('export', None, 'Directory written by export.py (local or a Beam '
                              'file system: gs://...).')
_CONFIG = config_flags.DEFINE_config_file('config', None, 'With --split: the config whose '
                                          'dataset (config.data) is read.', lock_config=True)
_SPLIT = flags.DEFINE_string('split', None, "With --config: the TFDS split to detect (e.g. "
                             "'validation', 'train[:1000]').")
_DRAW = flags.DEFINE_bool('draw', False, 'Also write each image with its detections drawn.')
cli.define_prediction_flags()
flags.mark_flags_as_required(['export'])
FLAGS = flags.FLAGS


def settings():
  from fcos_jax.serving import batch_inference
  return batch_inference.Settings(
      batch_size=FLAGS.batch_size, exif_orientation=FLAGS.exif_orientation,
      max_pixels=FLAGS.max_pixels, slice=FLAGS.slice, overlap=FLAGS.overlap,
      slice_full=FLAGS.slice_full, min_score=FLAGS.min_score, draw_scale=FLAGS.draw_scale)


def check_out(out: str, inputs, pictures) -> None:
  """predict.py's rule for OUT, on any file system; --overwrite removes an earlier run's
  shards (else a shard count that changed would leave old shards beside the new)."""
  from apache_beam.io.filesystems import FileSystems
  from fcos_jax import errors
  from fcos_jax.serving import batch_inference
  from fcos_jax.serving import inputs as input_files
  if batch_inference.is_url(out):
    if FileSystems.match([batch_inference.join(out, '*')])[0].metadata_list and not FLAGS.overwrite:
      raise errors.UserError(f'{out} is not empty: give another --out, or --overwrite to write '
                             'into it (its shards are replaced)')
  else:
    input_files.check_outputs(inputs, pictures, out, FLAGS.overwrite)
  old = batch_inference.existing_shards(out)
  if old:
    FileSystems.delete(old)
    print(f'--overwrite: removed {len(old)} shard(s) of an earlier run in {out}')


def main(argv):
  import importlib.util
  from fcos_jax import errors, image_io
  if importlib.util.find_spec('apache_beam') is None:
    raise errors.UserError('batch_predict.py needs Apache Beam: pip install "fcos_jax[beam]"')
  from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
  import apache_beam as beam
  from fcos_jax.serving import batch_inference
  from fcos_jax.serving import inputs as input_files
  image_io.set_pixel_limit(FLAGS.max_pixels)
  out, s = FLAGS.out, settings()
  if s.batch_size < 1:
    raise errors.UserError(f'--batch_size {s.batch_size}: must be at least 1')
  if s.slice:
    from fcos_jax.serving import slicing
    slicing.check_settings(s.slice, s.overlap)
  batch_inference.check_export(_EXPORT.value)
  files, builder, picture_dir, inputs = [], None, '', []
  if _SPLIT.value or _CONFIG.value:
    if FLAGS.image or not (_SPLIT.value and _CONFIG.value):
      raise errors.UserError('give --image, or --config with --split (a TFDS split), not both')
    from fcos_jax.data import input_pipeline
    builder = input_pipeline.get_builder(cli.get_config(_CONFIG).data)
    picture_dir = out if _DRAW.value else ''
    check_out(out, [], {})
  else:
    inputs, excluded = batch_inference.expand_inputs(FLAGS.image, exclude=out)
    if excluded:
      print(f'{excluded} file(s) under --out {out} not read as inputs (earlier outputs)')
    if not inputs:
      raise errors.UserError('give at least one --image (a file, folder or glob), or --config '
                             'with --split')
    pictures = batch_inference.picture_paths(inputs, out) if _DRAW.value else {}
    check_out(out, inputs, pictures)
    ids = input_files.image_ids(inputs, FLAGS.annotations)
    files = [(p, ids[p], pictures.get(p, '')) for p in inputs]
  options = PipelineOptions(argv[1:])
  standard = options.view_as(StandardOptions)
  # Beam's DirectRunner would first fetch the Prism runner from the network: run in-process.
  standard.runner = standard.runner or 'FnApiRunner'
  start = time.perf_counter()
  with beam.Pipeline(options=options) as pipeline:
    batch_inference.detect(pipeline, _EXPORT.value, out, s, files=files, tfds_builder=builder,
                           split=_SPLIT.value or '', picture_dir=picture_dir)
  counts = batch_inference.counters(pipeline.result)
  seconds = time.perf_counter() - start
  print(f'{counts["images"]} images detected ({counts["detections"]} detections) in '
        f'{seconds:.1f} s -> {out}'
        + (f'; {counts["converted"]} converted on reading' if counts['converted'] else '')
        + (f'; {counts["skipped"]} skipped (listed in {out}/skipped-*.txt)'
           if counts['skipped'] else ''))
  if not counts['images']:
    raise errors.DataError('none of the inputs could be read (see skipped-*.txt)')


def run():
  cli.run(main)


if __name__ == '__main__':
  run()
