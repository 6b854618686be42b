"""Convert a COCO-format detection dataset (JSON + image folder per split) into a TFDS dataset
with the features of TFDS `coco/2017`.

  fcos-convert-coco --name my_data --data_dir ~/tensorflow_datasets \
      --annotations train.json --images train_images/ --split train \
      --annotations val.json --images val_images/ --split validation

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
  if len(annotations) != len(images) or len(annotations) != len(splits):
    raise errors.UserError('give one --annotations, --images and --split per split (got '
                           f'{len(annotations)}, {len(images)}, {len(splits)})')
  if len(set(splits)) != len(splits):
    raise errors.UserError(f'--split names repeat: {splits}')
  report = coco_conversion.convert(
      _NAME.value, os.path.expanduser(_DATA_DIR.value),
      {s: (a, i) for s, a, i in zip(splits, annotations, images)},
      on_error=_ON_ERROR.value, overwrite=_OVERWRITE.value, progress=True)
  print(report.summary())


def run():
  cli.run(main)


if __name__ == '__main__':
  run()
