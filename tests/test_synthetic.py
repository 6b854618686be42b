"""The synthetic shapes dataset: deterministic, valid COCO, and not trivial."""

import filecmp
import json
import os


from fcos_jax.data import synthetic


def test_same_seed_same_files_other_seed_other_files(tmp_path):
  a, b, c = (str(tmp_path / n) for n in 'abc')
  for out, seed in ((a, 3), (b, 3), (c, 4)):
    synthetic.generate(out, {'train': 6}, seed=seed, image_size=(64, 80))
  files = sorted(os.listdir(f'{a}/images/train'))
  assert len(files) == 6
  match, mismatch, errors = filecmp.cmpfiles(f'{a}/images/train', f'{b}/images/train', files,
                                             shallow=False)
  assert len(match) == 6 and not mismatch and not errors
  assert filecmp.cmp(f'{a}/annotations/train.json', f'{b}/annotations/train.json', shallow=False)
  assert not filecmp.cmp(f'{a}/annotations/train.json', f'{c}/annotations/train.json',
                         shallow=False)


def test_annotations_are_valid_and_varied(shapes_coco):
  with open(f'{shapes_coco}/annotations/train.json') as f:
    coco = json.load(f)
  sizes = {(im['height'], im['width']) for im in coco['images']}
  assert len(sizes) > 5
  assert any(h > w for h, w in sizes) and any(w > h for h, w in sizes)
  by_id = {im['id']: im for im in coco['images']}
  per_image = {im['id']: 0 for im in coco['images']}
  cats = {c['id'] for c in coco['categories']}
  areas, at_border = [], 0
  for a in coco['annotations']:
    im = by_id[a['image_id']]
    x, y, w, h = a['bbox']
    assert w > 0 and h > 0 and x >= 0 and y >= 0
    assert x + w <= im['width'] and y + h <= im['height']
    assert a['category_id'] in cats
    per_image[a['image_id']] += 1
    areas.append(w * h / (im['width'] * im['height']))
    at_border += x == 0 or y == 0 or x + w == im['width'] or y + h == im['height']
  assert {a['category_id'] for a in coco['annotations']} == cats  # every class occurs
  assert max(per_image.values()) >= 3  # several objects per image
  assert min(areas) < 0.02 and max(areas) > 0.2  # small and large objects
  assert at_border > 0  # objects cut by the border


def test_some_images_have_no_objects(tmp_path):
  coco = synthetic.generate_split(str(tmp_path), 'train', 40, seed=1, image_size=(48, 48),
                                  empty_fraction=0.2)
  with_objects = {a['image_id'] for a in coco['annotations']}
  assert 0 < len(coco['images']) - len(with_objects) < 40



def test_ensure_dataset_generates_and_converts_once(tmp_path):
  import tensorflow_datasets as tfds
  data_dir = str(tmp_path)
  raw = synthetic.ensure_dataset('tiny_shapes', data_dir, {'train': 5, 'validation': 3},
                                 image_size=(40, 48))
  builder = tfds.builder('tiny_shapes', data_dir=data_dir)
  assert builder.info.splits['train'].num_examples == 5
  assert builder.info.splits['validation'].num_examples == 3
  stamp = os.path.getmtime(f'{raw}/annotations/train.json')
  assert synthetic.ensure_dataset('tiny_shapes', data_dir, {'train': 5, 'validation': 3},
                                  image_size=(40, 48)) == raw
  assert os.path.getmtime(f'{raw}/annotations/train.json') == stamp  # not regenerated
  # Another seed is the same dataset; other sizes are refused through train.py, naming both.
  assert synthetic.ensure_dataset('tiny_shapes', data_dir, {'train': 5, 'validation': 3},
                                  seed=7, image_size=(40, 48)) == raw
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run(
      [sys.executable, os.path.join(root, 'train.py'), f'--config={root}/tests/tiny_config.py',
       f'--workdir={tmp_path / "w"}', f'--config.data.data_dir={data_dir}'],
      capture_output=True, text=True, cwd=root, timeout=600,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=root,
               XLA_FLAGS='--xla_force_host_platform_device_count=1'))
  assert out.returncode == 1 and 'Traceback' not in out.stderr, out.stderr[-3000:]
  line = out.stderr.strip().splitlines()[-1]
  assert "made with image_size=[40, 48], splits={'train': 5, 'validation': 3}" in line, line
  assert "asks for image_size=[64, 64], splits={'train': 24, 'validation': 6}" in line, line
  assert '--config.data.data_dir' in line
  assert os.path.getmtime(f'{raw}/annotations/train.json') == stamp  # the data kept as it was
