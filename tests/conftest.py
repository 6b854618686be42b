"""Test setup: 8 virtual CPU devices (for the multi-device tests), quiet TensorFlow, and one
compilation cache for the session, which the programs run as subprocesses share (the same tiny
programs are compiled by many tests)."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='fcos_jax_test_xla_cache_')
  atexit.register(shutil.rmtree, os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)

try:  # torch must load before TensorFlow: the other order segfaults (clashing native libraries)
  import torch  # noqa: F401
  import torchvision  # noqa: F401
except ImportError:
  pass
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

import json  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402


@pytest.fixture(scope='session')
def shapes_coco(tmp_path_factory):
  """A small synthetic shapes dataset in COCO format (JSON + JPEGs)."""
  from fcos_jax.data import synthetic
  root = str(tmp_path_factory.mktemp('shapes_coco'))
  synthetic.generate(root, {'train': 24, 'validation': 11}, seed=0, image_size=(96, 128))
  return root


@pytest.fixture(scope='session')
def shapes_tfds(shapes_coco, tmp_path_factory):
  """`shapes_coco` converted to TFDS by the project's converter: (name, data_dir)."""
  from fcos_jax.data import coco_conversion
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  coco_conversion.convert('shapes', data_dir, {
      split: (f'{shapes_coco}/annotations/{split}.json', f'{shapes_coco}/images/{split}')
      for split in ('train', 'validation')})
  return 'shapes', data_dir


@pytest.fixture(scope='session')
def shapes_array_record(shapes_coco, tmp_path_factory):
  """`shapes_coco` converted to TFDS as ArrayRecord (random access): (name, data_dir)."""
  from fcos_jax.data import coco_conversion
  data_dir = str(tmp_path_factory.mktemp('tfds_array_record'))
  coco_conversion.convert('shapes', data_dir, {
      split: (f'{shapes_coco}/annotations/{split}.json', f'{shapes_coco}/images/{split}')
      for split in ('train', 'validation')}, file_format='array_record')
  return 'shapes', data_dir


@pytest.fixture(scope='session')
def edge_tfds(tmp_path_factory):
  """Hand-made COCO dataset with a crowd box, an image without boxes, an image with more boxes
  than max_boxes (5 in the tests) and a portrait image: (name, data_dir, coco dict)."""
  from fcos_jax.data import coco_conversion
  root = tmp_path_factory.mktemp('edge')
  rng = np.random.default_rng(0)
  images, anns = [], []
  specs = {1: (60, 80, [(5, 5, 20, 20, 0), (30, 10, 40, 40, 1)]),        # one crowd
           2: (60, 80, []),                                              # no boxes
           3: (64, 96, [(4 * i, 3 * i, 6 + 2 * i, 5 + i, 0) for i in range(8)]),  # 8 boxes
           4: (90, 50, [(10, 20, 30, 50, 0)]),                           # portrait
           5: (50, 70, [(0, 0, 70, 50, 1)])}                             # only a crowd box
  for image_id, (h, w, boxes) in specs.items():
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
        root / f'{image_id}.jpg', quality=95)
    images.append({'id': image_id, 'file_name': f'{image_id}.jpg', 'height': h, 'width': w})
    for x, y, bw, bh, crowd in boxes:
      anns.append({'id': len(anns) + 1, 'image_id': image_id, 'category_id': 2,
                   'bbox': [x, y, bw, bh], 'area': bw * bh, 'iscrowd': crowd})
  coco = {'images': images, 'annotations': anns,
          'categories': [{'id': 2, 'name': 'thing'}, {'id': 5, 'name': 'other'}]}
  with open(root / 'ann.json', 'w') as f:
    json.dump(coco, f)
  data_dir = str(tmp_path_factory.mktemp('edge_tfds'))
  coco_conversion.convert('edge', data_dir, {'train': (str(root / 'ann.json'), str(root))})
  return 'edge', data_dir, coco
