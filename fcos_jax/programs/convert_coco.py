r"""Convert a COCO-format, YOLO or Pascal VOC detection dataset into a TFDS dataset with the
features of TFDS `coco/2017` (fcos convert, fcos-convert-coco).

  fcos convert --name my_data --data_dir ~/tensorflow_datasets \
      --annotations train.json --images train_images/ --split train \
      --annotations val.json --images val_images/ --split validation
  fcos convert --format yolo --name my_data --annotations data.yaml    # its train/val/test
  fcos convert --format voc --name voc07 --classes classes.txt \
      --annotations VOC2007/ImageSets/Main/trainval.txt --images VOC2007 --split train \
      --annotations VOC2007/ImageSets/Main/test.txt --images VOC2007 --split validation

YOLO and VOC are read into COCO records first (`fcos_jax.data.label_formats`: box conventions,
`difficult` as crowd, segments), then validated and stored exactly as COCO JSON is.

Bad records are skipped and counted per kind (`--on_error=fail` stops at the first one); the
summary shows the images and boxes written per split and the first few items of each kind found,
the dataset's `conversion_report.json` all of them. An existing conversion is replaced only with
--overwrite, and only once the new one is complete (it is built in a folder beside it); Ctrl-C
leaves the earlier one as it was. The conversion itself: `fcos_jax.data.coco_conversion`.
"""

import os

from absl import flags

from fcos_jax import image_io
from fcos_jax.programs import cli

_NAME = flags.DEFINE_string('name', None, 'TFDS dataset name to create.', required=True)
_DATA_DIR = flags.DEFINE_string('data_dir', '~/tensorflow_datasets', 'TFDS data dir to write '
                                'into.')
_ANNOTATIONS = flags.DEFINE_multi_string('annotations', [], 'COCO-format JSON, one per split.')
_IMAGES = flags.DEFINE_multi_string('images', [], 'Image folder, one per split.')
_SPLIT = flags.DEFINE_multi_string('split', [], 'Split name, one per split (train, validation, '
                                   '...).')
_FORMAT = flags.DEFINE_enum('format', 'coco', ['coco', 'yolo', 'voc'],
                            'coco: --annotations JSON + --images folder per split; yolo: '
                            '--annotations data.yaml (its splits); voc: --annotations '
                            'ImageSets/Main/LIST.txt + --images VOC root per split.')
_CLASSES = flags.DEFINE_string('classes', None, 'VOC: a file of class names, one a line, in '
                               'label order (default: the names found, sorted).')
_BEAM = flags.DEFINE_string(
    'beam_pipeline_options', None, 'Run the per-image work on Apache Beam (the beam extra) with '
    "these comma-separated options, as `tfds build` takes them: e.g. 'direct_num_workers=2,"
    "direct_running_mode=multi_processing' here, 'runner=DataflowRunner,project=P,region=R,"
    "temp_location=gs://B/tmp' at scale. The output is the single-process one.")
_FILE_FORMAT = flags.DEFINE_enum('file_format', 'tfrecord', ['tfrecord', 'array_record'],
                                 'TFDS shard format: array_record gives random access '
                                 '(as_data_source, grain); training reads tfrecord.')
_ON_ERROR = flags.DEFINE_enum('on_error', 'skip', ['skip', 'fail'],
                              'skip (and count) bad records, or stop at the first one.')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace an earlier conversion of the same '
                               'name.')

_MAX_PIXELS = flags.DEFINE_integer(
    'max_pixels', image_io.DEFAULT_MAX_PIXELS, 'Images of more pixels are skipped and counted '
    '(too_many_pixels) from their header, before decoding: the guard against decompression '
    'bombs.')


def main(argv):
  from fcos_jax import errors
  from fcos_jax.data import coco_conversion
  cli.no_arguments(argv)
  image_io.set_pixel_limit(_MAX_PIXELS.value)
  annotations, images, splits = _ANNOTATIONS.value, _IMAGES.value, _SPLIT.value
  if _FORMAT.value == 'yolo':
    if len(annotations) != 1 or images or splits:
      raise errors.UserError('--format yolo takes one --annotations data.yaml (its train, val '
                             'and test become the splits), no --images or --split')
  elif len(annotations) != len(images) or len(annotations) != len(splits):
    raise errors.UserError('give one --annotations, --images and --split per split (got '
                           f'{len(annotations)}, {len(images)}, {len(splits)})')
  if len(set(splits)) != len(splits):
    raise errors.UserError(f'--split names repeat: {splits}')
  if _CLASSES.value and _FORMAT.value != 'voc':
    raise errors.UserError('--classes is for --format voc (COCO and YOLO files name theirs)')
  data_dir = os.path.expanduser(_DATA_DIR.value)
  given = {s: (a, i) for s, a, i in zip(splits, annotations, images)}
  run_on = dict(overwrite=_OVERWRITE.value, progress=True, file_format=_FILE_FORMAT.value,
                pipeline=beam_pipeline())
  if _FORMAT.value == 'coco':
    report = coco_conversion.convert(_NAME.value, data_dir, given, on_error=_ON_ERROR.value,
                                     **run_on)
  else:
    from fcos_jax.data import label_formats
    report = coco_conversion.new_report(_ON_ERROR.value)
    if _FORMAT.value == 'yolo':
      categories, loaded = label_formats.read_yolo(annotations[0], report)
    else:
      categories, loaded = label_formats.read_voc(given, report, _read_classes())
    coco_conversion.convert_records(_NAME.value, data_dir, loaded, categories, report,
                                    **run_on)
  print(report.summary())


def beam_pipeline():
  """A `BeamConversion` from --beam_pipeline_options (None without it)."""
  import importlib.util
  from fcos_jax import errors
  if _BEAM.value is None:
    return None
  if importlib.util.find_spec('apache_beam') is None:
    raise errors.UserError('--beam_pipeline_options needs Apache Beam: pip install '
                           '"fcos_jax[beam]"')
  from fcos_jax.data import beam_conversion
  options = [f'--{kv.strip()}' for kv in _BEAM.value.split(',') if kv.strip()]
  return beam_conversion.BeamConversion(options)


def _read_classes():
  from fcos_jax import errors
  if not _CLASSES.value:
    return None
  try:
    with open(_CLASSES.value) as f:
      return [line.strip() for line in f if line.strip()]
  except OSError as e:
    raise errors.UserError(f'--classes {_CLASSES.value}: {e.strerror}') from None


def run():
  cli.run(main)


if __name__ == '__main__':
  run()
