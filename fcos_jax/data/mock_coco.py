"""A small `coco/2017` prepared by TFDS's own COCO builder from generated images: the registered
builder, its features, splits and label names, without the 25 GB download (tests, benchmarks).

The builder's download is replaced by folders laid out as COCO's zips extract (`train2017/`,
`val2017/`, `test2017/`, `annotations/instances_*2017.json`); the synthetic shapes take the ids
of five COCO categories, and the annotation files list all 80, as COCO's do.

  python -m fcos_jax.data.mock_coco --data_dir /tmp/mock_coco --train 64 --validation 16
"""

import json
import os
import shutil
import tempfile
from typing import Dict, Tuple
from unittest import mock

from fcos_jax.data import categories, synthetic

# COCO category ids the five shapes stand for (person, car, dog, bottle, chair): not 1..5, so
# a label <-> category id slip shows.
SHAPE_CATEGORY_IDS = (1, 3, 18, 44, 62)
# TFDS split -> (COCO's image folder, annotation file name without .json).
_SPLITS = {'train': ('train2017', 'instances_train2017'),
           'validation': ('val2017', 'instances_val2017'),
           'test': ('test2017', 'image_info_test2017')}


def _write_source(root: str, num_images: Dict[str, int], seed: int,
                  image_size: Tuple[int, int]) -> None:
  """COCO's extracted zips under `root`: images/<folder>/*.jpg, annotations/<file>.json."""
  all_categories = [{'id': i, 'name': n, 'supercategory': 'object'}
                    for i, n in zip(categories.COCO_CATEGORY_IDS, categories.COCO_CATEGORY_NAMES)]
  to_coco = {c['id']: SHAPE_CATEGORY_IDS[k] for k, c in enumerate(synthetic.CATEGORIES)}
  for split, (folder, annotation_name) in _SPLITS.items():
    data = synthetic.generate_split(root, folder, num_images.get(split, 1), seed,
                                    image_size=image_size)
    os.remove(os.path.join(root, 'annotations', f'{folder}.json'))
    data['categories'] = all_categories
    for a in data['annotations']:
      a['category_id'] = to_coco[a['category_id']]
    if split == 'test':  # image_info_test2017.json: images only
      data = {'images': data['images'], 'categories': all_categories}
    with open(os.path.join(root, 'annotations', f'{annotation_name}.json'), 'w') as f:
      json.dump(data, f)


def prepare(data_dir: str, num_images: Dict[str, int], seed: int = 0,
            image_size: Tuple[int, int] = (160, 160), file_format: str = 'tfrecord'):
  """Prepares `coco/2017` in `data_dir` (train / validation / test of `num_images` images),
  stored as `file_format` ('tfrecord' or 'array_record'); returns the builder. An existing one
  is refused, never replaced."""
  import tensorflow_datasets as tfds
  builder = tfds.builder('coco/2017', data_dir=data_dir)
  if builder.is_prepared():
    raise FileExistsError(f'coco/2017 is already prepared in {builder.data_dir}')
  os.makedirs(data_dir, exist_ok=True)
  root = tempfile.mkdtemp(prefix='mock_coco_source_', dir=data_dir)
  try:
    _write_source(root, num_images, seed, image_size)
    images, annotations = os.path.join(root, 'images'), root

    def extracted(_, urls):  # the builder's download_and_extract, on the folders above
      return {key: images if key.endswith('_images') else annotations for key in urls}

    with mock.patch.object(tfds.download.DownloadManager, 'download_and_extract', extracted):
      builder.download_and_prepare(
          download_dir=os.path.join(root, 'downloads'),
          download_config=tfds.download.DownloadConfig(try_download_gcs=False),
          file_format=file_format)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  return tfds.builder('coco/2017', data_dir=data_dir)


def main(argv):
  del argv
  from absl import flags
  f = flags.FLAGS
  builder = prepare(os.path.expanduser(f.data_dir),
                    {'train': f.train, 'validation': f.validation, 'test': 2},
                    seed=f.seed, image_size=(f.image_height, f.image_width))
  print(f'coco/2017 prepared in {builder.data_dir}: '
        + ', '.join(f'{k} {v.num_examples}' for k, v in builder.info.splits.items()))


if __name__ == '__main__':
  from absl import flags

  from fcos_jax.programs import cli
  flags.DEFINE_string('data_dir', None, 'TFDS data dir to prepare coco/2017 in.', required=True)
  flags.DEFINE_integer('train', 64, 'Training images.')
  flags.DEFINE_integer('validation', 16, 'Validation images.')
  flags.DEFINE_integer('image_height', 480, 'Image height around which sizes vary.')
  flags.DEFINE_integer('image_width', 640, 'Image width around which sizes vary.')
  flags.DEFINE_integer('seed', 0, 'Seed of the generated images.')
  cli.run(main)
