"""The COCO-format -> TFDS converter: coco/2017 features, every bad-input kind, no silent loss."""

import json
import os
import re

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from fcos_jax.data import coco_conversion


def feature_signature(features):
  """{path: (class name, dtype, shape)} of a FeaturesDict, label names aside."""
  out = {}
  for key, f in features.items():
    if isinstance(f, tfds.features.Sequence):
      for k, sub in f.feature.items():
        out[f'{key}/{k}'] = (type(sub).__name__, str(sub.dtype), sub.shape)
    else:
      out[key] = (type(f).__name__, str(f.dtype), f.shape)
  return out


def test_features_match_tfds_coco_2017():
  coco = tfds.builder('coco/2017').info.features
  ours = coco_conversion.coco_features([f'c{i}' for i in range(80)])
  assert feature_signature(ours) == feature_signature(coco)
  assert ours['objects']['label'].num_classes == 80


def write_image(path, mode='RGB', size=(40, 30), fmt=None):
  rng = np.random.default_rng(abs(hash(str(path))) % 2**32)
  w, h = size
  if mode == 'L':
    im = Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8), 'L')
  else:
    im = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(mode)
  im.save(path, format=fmt)
  return im


@pytest.fixture
def bad_dataset(tmp_path):
  img = tmp_path / 'images'
  img.mkdir()
  write_image(img / 'ok.jpg')
  gray = write_image(img / 'gray.jpg', 'L')
  cmyk = write_image(img / 'cmyk.jpg', 'CMYK')
  png = write_image(img / 'rgb.png', fmt='PNG')
  rgba = write_image(img / 'rgba.png', 'RGBA', fmt='PNG')
  (img / 'corrupt.jpg').write_bytes(b'\xff\xd8\xff\xe0 this is not a jpeg')
  write_image(img / 'wrong_size.jpg', size=(50, 30))
  write_image(img / 'empty.jpg')
  images = [
      {'id': 1, 'file_name': 'ok.jpg', 'width': 40, 'height': 30},
      {'id': 2, 'file_name': 'gray.jpg', 'width': 40, 'height': 30},
      {'id': 3, 'file_name': 'cmyk.jpg', 'width': 40, 'height': 30},
      {'id': 4, 'file_name': 'rgb.png', 'width': 40, 'height': 30},
      {'id': 5, 'file_name': 'rgba.png', 'width': 40, 'height': 30},
      {'id': 6, 'file_name': 'corrupt.jpg', 'width': 40, 'height': 30},
      {'id': 7, 'file_name': 'missing.jpg', 'width': 40, 'height': 30},
      {'id': 8, 'file_name': 'wrong_size.jpg', 'width': 40, 'height': 30},
      {'id': 9, 'file_name': 'empty.jpg', 'width': 40, 'height': 30},
      {'id': 1, 'file_name': 'dup.jpg', 'width': 40, 'height': 30},       # duplicate id
      {'id': 10, 'file_name': 'no_size.jpg'},                               # malformed
  ]
  def ann(i, image_id, bbox, cat=1, **kw):
    return dict(id=i, image_id=image_id, category_id=cat, bbox=bbox, **kw)
  annotations = [
      ann(1, 1, [2, 3, 10, 8], area=70, iscrowd=0),
      ann(2, 1, [30, 20, 20, 20]),              # partly outside: clipped to (30, 20, 40, 30)
      ann(3, 1, [5, 5, 0, 4]),                  # zero width
      ann(4, 1, [5, 5, 4, -2]),                 # negative height
      ann(5, 1, [45, 5, 4, 4]),                 # fully outside
      ann(6, 99, [1, 1, 4, 4]),                 # unknown image
      ann(7, 1, [1, 1, 4, 4], cat=42),          # unknown category
      ann(8, 2, [1, 1, 4, 4], cat=3, iscrowd=1),
      ann(9, 3, [1, 1, 4, 4]), ann(10, 4, [1, 1, 4, 4]), ann(11, 5, [1, 1, 4, 4]),
      ann(12, 6, [1, 1, 4, 4]),                 # on the corrupt image
      ann(13, 7, [1, 1, 4, 4]),                 # on the missing image
      ann(13, 1, [1, 1, 4, 4]),                 # duplicate annotation id
      {'id': 14, 'image_id': 1, 'bbox': [1, 1, 2]},  # malformed
  ]
  coco = {'images': images, 'annotations': annotations,
          'categories': [{'id': 1, 'name': 'a'}, {'id': 3, 'name': 'b'}]}
  path = tmp_path / 'ann.json'
  path.write_text(json.dumps(coco))
  return tmp_path, str(path), str(img), {'gray': gray, 'cmyk': cmyk, 'png': png, 'rgba': rgba}


def test_every_bad_input_kind_is_counted_and_good_data_kept(bad_dataset):
  tmp, ann_path, img_dir, originals = bad_dataset
  report = coco_conversion.convert('bad', str(tmp / 'tfds'), {'train': (ann_path, img_dir)})
  c = report.counts
  assert c['malformed_record'] == 2 and c['duplicate_id'] == 2
  assert c['degenerate_box'] == 2 and c['box_outside_image'] == 1 and c['box_clipped'] == 1
  assert c['unknown_image'] == 1 and c['unknown_category'] == 1
  assert c['missing_file'] == 1 and c['corrupt_image'] == 1 and c['size_mismatch'] == 1
  assert c['annotation_of_skipped_image'] == 2
  assert c['converted_to_rgb'] == 3 and c['non_jpeg_image'] == 1
  assert c['image_without_boxes'] == 1  # 'empty.jpg'
  # The messages name ids and files.
  assert any('corrupt.jpg' in m and 'image id 6' in m for m in report.examples['corrupt_image'])
  assert any('annotation id 5' in m for m in report.examples['box_outside_image'])
  summary = report.summary()
  assert 'corrupt_image' in summary and 'box_clipped' in summary

  builder = tfds.builder('bad', data_dir=str(tmp / 'tfds'))
  examples = {int(e['image/id']): e for e in tfds.as_numpy(builder.as_dataset(split='train'))}
  # 11 image records: 2 malformed/duplicate, 3 unusable (corrupt, missing, wrong size).
  assert sorted(examples) == [1, 2, 3, 4, 5, 9]
  ok = examples[1]['objects']
  np.testing.assert_array_equal(ok['id'], [1, 2])
  # bbox normalized [ymin, xmin, ymax, xmax]; annotation 2 clipped to the 40x30 image.
  np.testing.assert_allclose(ok['bbox'], [[3 / 30, 2 / 40, 11 / 30, 12 / 40],
                                          [20 / 30, 30 / 40, 1.0, 1.0]], rtol=1e-6)
  np.testing.assert_array_equal(ok['label'], [0, 0])
  np.testing.assert_array_equal(ok['area'], [70, 100])
  assert examples[2]['objects']['is_crowd'].tolist() == [True]
  assert examples[2]['objects']['label'].tolist() == [1]
  for image_id, key in ((2, 'gray'), (3, 'cmyk'), (5, 'rgba')):
    img = examples[image_id]['image']
    assert img.shape == (30, 40, 3)
    # Converted with PIL's RGB conversion of the decoded file and stored losslessly.
    with Image.open(f'{img_dir}/{images_by_id(ann_path)[image_id]}') as im:
      np.testing.assert_array_equal(img, np.asarray(im.convert('RGB')))
  np.testing.assert_array_equal(examples[5]['image'], np.asarray(originals['rgba'].convert('RGB')))
  np.testing.assert_array_equal(examples[4]['image'], np.asarray(originals['png']))
  with open(f'{builder.data_dir}/categories.json') as f:
    assert json.load(f) == [{'id': 1, 'name': 'a'}, {'id': 3, 'name': 'b'}]
  with open(f'{builder.data_dir}/conversion_report.json') as f:
    assert json.load(f)['counts']['corrupt_image'] == 1


def images_by_id(ann_path):
  with open(ann_path) as f:
    return {im['id']: im['file_name'] for im in json.load(f)['images']}


def test_on_error_fail_stops_with_the_id(bad_dataset):
  tmp, ann_path, img_dir, _ = bad_dataset
  with pytest.raises(coco_conversion.ConversionError, match='malformed_record|duplicate_id'):
    coco_conversion.convert('bad_fail', str(tmp / 'tfds2'), {'train': (ann_path, img_dir)},
                         on_error='fail')


@pytest.mark.parametrize('content,match', [
    ('{"images": [', 'malformed JSON'),
    ('[1, 2]', 'top level must be a JSON object'),
    ('{"images": [], "annotations": []}', r"missing top-level key\(s\) \['categories'\]"),
    ('{"images": [], "annotations": [], "categories": [{"name": "x"}]}', 'malformed category'),
])
def test_unusable_annotation_files_fail_clearly(tmp_path, content, match):
  path = tmp_path / 'a.json'
  path.write_text(content)
  with pytest.raises(coco_conversion.ConversionError, match=match):
    coco_conversion.convert('x', str(tmp_path / 'tfds'), {'train': (str(path), str(tmp_path))})


def test_command_line(tmp_path, shapes_coco):
  import subprocess
  import sys
  out = subprocess.run(
      [sys.executable, '-m', 'fcos_jax.data.convert_coco', '--name', 'cli_shapes',
       '--data_dir', str(tmp_path), '--annotations', f'{shapes_coco}/annotations/validation.json',
       '--images', f'{shapes_coco}/images/validation', '--split', 'validation'],
      capture_output=True, text=True, check=True)
  assert 'conversion summary' in out.stdout
  builder = tfds.builder('cli_shapes', data_dir=str(tmp_path))
  with open(f'{shapes_coco}/annotations/validation.json') as f:
    assert builder.info.splits['validation'].num_examples == len(json.load(f)['images'])


def test_other_formats_16_bit_and_string_crowd_flags(tmp_path):
  """BMP / WebP / TIFF are stored as PNG (lossless) and read back by the pipeline at their true
  size; a 16-bit PNG is scaled to 8 bits, not clipped; iscrowd "0"/"1" strings are read as
  numbers and counted, other values skipped."""
  from fcos_jax.evaluation import coco_data
  from fcos_jax.data import input_pipeline
  from tests import tiny_config
  img = tmp_path / 'images'
  img.mkdir()
  rng = np.random.default_rng(0)
  pixels = {}
  for i, fmt in enumerate(('BMP', 'WEBP', 'TIFF')):
    pixels[fmt] = rng.integers(0, 255, (64, 80 + 8 * i, 3), dtype=np.uint8)
    Image.fromarray(pixels[fmt]).save(img / f'{fmt.lower()}.img', format=fmt, lossless=True)
  deep = (rng.integers(0, 65536, (48, 56))).astype(np.uint16)
  Image.fromarray(deep).save(img / 'deep.png')
  images = [{'id': i + 1, 'file_name': f'{f.lower()}.img', 'width': p.shape[1],
             'height': p.shape[0]} for i, (f, p) in enumerate(pixels.items())]
  images.append({'id': 4, 'file_name': 'deep.png', 'width': 56, 'height': 48})
  anns = [{'id': k + 1, 'image_id': k + 1, 'category_id': 1, 'bbox': [4, 4, 20, 20],
           'iscrowd': crowd} for k, crowd in enumerate(['0', '1', 'yes', 0])]
  (tmp_path / 'ann.json').write_text(json.dumps(
      {'images': images, 'annotations': anns, 'categories': [{'id': 1, 'name': 'a'}]}))
  data_dir = str(tmp_path / 'tfds')
  report = coco_conversion.convert('formats', data_dir,
                                {'validation': (str(tmp_path / 'ann.json'), str(img))})
  c = report.counts
  assert c['reencoded_as_png'] == 3 and c['scaled_to_8bit'] == 1
  assert c['iscrowd_parsed'] == 2 and c['malformed_record'] == 1
  builder = tfds.builder('formats', data_dir=data_dir)
  examples = {int(e['image/id']): e for e in tfds.as_numpy(builder.as_dataset(split='validation'))}
  for i, fmt in enumerate(pixels):
    np.testing.assert_array_equal(examples[i + 1]['image'], pixels[fmt])
  assert examples[1]['objects']['is_crowd'].tolist() == [False]
  assert examples[2]['objects']['is_crowd'].tolist() == [True]
  assert examples[3]['objects']['is_crowd'].tolist() == []  # 'yes' skipped
  want = np.round(deep.astype(np.float64) * 255 / 65535).astype(np.uint8)
  np.testing.assert_array_equal(examples[4]['image'], np.repeat(want[..., None], 3, -1))
  # The pipeline's header-based sizes (ground truth, buckets) are the true ones.
  config = tiny_config.get_config()
  config.data.update(dataset='formats', data_dir=data_dir, synthetic=False)
  gt = coco_data.load_ground_truth(config, 'validation')
  assert [(im['height'], im['width']) for im in gt['images']] == \
      [(64, 80), (64, 88), (64, 96), (48, 56)]
  batch = next(input_pipeline.create_eval_dataset(config.data, 4).as_numpy_iterator())
  sizes = {int(i): tuple(s) for i, s, m in
           zip(batch['image_id'], batch['orig_size'], batch['mask']) if m}
  assert sizes == {1: (64, 80), 2: (64, 88), 3: (64, 96), 4: (48, 56)}


def small_dataset(tmp_path, sizes, name='ann.json', file_names=None, exif=()):
  """JPEGs of the given (width, height) with one box each; `exif`: indices tagged with EXIF
  orientation 6."""
  img = tmp_path / 'images'
  img.mkdir(exist_ok=True)
  images, anns = [], []
  for i, (w, h) in enumerate(sizes):
    file_name = file_names[i] if file_names else f'{i}.jpg'
    im = Image.fromarray(np.full((h, w, 3), 40 * i % 255, np.uint8))
    kw = {}
    if i in exif:
      tags = Image.Exif()
      tags[0x0112] = 6
      kw['exif'] = tags.tobytes()
    im.save(img / file_name, format='JPEG', **kw)
    images.append({'id': i + 1, 'file_name': file_name, 'width': w, 'height': h})
    anns.append({'id': i + 1, 'image_id': i + 1, 'category_id': 1, 'bbox': [1, 1, 5, 5]})
  path = tmp_path / name
  path.write_text(json.dumps({'images': images, 'annotations': anns,
                              'categories': [{'id': 1, 'name': 'a'}]}))
  return str(path), str(img)


def convert_command(data_dir, ann, images, *extra):
  import subprocess
  import sys
  return subprocess.run(
      [sys.executable, '-m', 'fcos_jax.data.convert_coco', '--name', 'atomic', '--data_dir',
       data_dir, '--annotations', ann, '--images', images, '--split', 'train', *extra],
      capture_output=True, text=True)


def ids_of(data_dir):
  builder = tfds.builder('atomic', data_dir=data_dir)
  return sorted(int(e['image/id']) for e in tfds.as_numpy(builder.as_dataset(split='train')))


def test_overwrite_swaps_in_only_a_complete_conversion(tmp_path):
  data_dir = str(tmp_path / 'tfds')
  ann, images = small_dataset(tmp_path, [(40, 30), (40, 30)])
  assert convert_command(data_dir, ann, images).returncode == 0
  assert ids_of(data_dir) == [1, 2]
  # A split whose every image is unusable: one line, the earlier conversion untouched.
  missing = tmp_path / 'missing.json'
  data = json.loads(open(ann).read())
  for im in data['images']:
    im['file_name'] = 'gone_' + im['file_name']
  missing.write_text(json.dumps(data))
  out = convert_command(data_dir, str(missing), images, '--overwrite')
  assert out.returncode == 1, out.stderr[-2000:]
  assert "split 'train'" in out.stderr and 'no image could be converted (missing_file 2' \
      in out.stderr and 'Traceback' not in out.stderr
  assert ids_of(data_dir) == [1, 2]
  assert sorted(os.listdir(data_dir)) == ['atomic']  # no staging folder left
  # A good overwrite replaces it, leaving nothing beside it.
  ann3, _ = small_dataset(tmp_path, [(40, 30)] * 3, name='three.json')
  out = convert_command(data_dir, ann3, images, '--overwrite')
  assert out.returncode == 0, out.stderr[-2000:]
  assert ids_of(data_dir) == [1, 2, 3]
  assert sorted(os.listdir(data_dir)) == ['atomic']
  assert sorted(os.listdir(os.path.join(data_dir, 'atomic'))) == ['1.0.0']


def test_interrupted_conversion_leaves_the_earlier_one(tmp_path, monkeypatch):
  data_dir = str(tmp_path / 'tfds')
  ann, images = small_dataset(tmp_path, [(40, 30)] * 3)
  coco_conversion.convert('atomic', data_dir, {'train': (ann, images)})
  calls = []
  load = coco_conversion._load_image

  def interrupted(*args):
    calls.append(args)
    if len(calls) == 2:
      raise KeyboardInterrupt  # Ctrl-C in the middle of the images
    return load(*args)
  monkeypatch.setattr(coco_conversion, '_load_image', interrupted)
  with pytest.raises(KeyboardInterrupt):
    coco_conversion.convert('atomic', data_dir, {'train': (ann, images)}, overwrite=True)
  assert ids_of(data_dir) == [1, 2, 3]
  assert sorted(os.listdir(data_dir)) == ['atomic']


def test_pixel_limit_skips_and_counts_images_from_their_header(tmp_path):
  data_dir = str(tmp_path / 'tfds')
  # 700 pixels at most: 20x20 kept; 40x30 (1200, below PIL's 2x error) and 60x40 (2400, which
  # PIL itself refuses) skipped.
  ann, images = small_dataset(tmp_path, [(20, 20), (40, 30), (60, 40)])
  out = convert_command(data_dir, ann, images, '--max_pixels=700')
  assert out.returncode == 0, out.stderr[-2000:]
  assert re.search(r'too_many_pixels\s+2\b', out.stdout), out.stdout
  assert ids_of(data_dir) == [1]


def test_outside_file_names_and_exif_orientation_are_reported(tmp_path):
  inner = tmp_path / 'in'
  inner.mkdir()
  ann, _ = small_dataset(tmp_path, [(40, 30), (40, 30)], file_names=['a.jpg', 'b.jpg'],
                         exif=(1,))
  data = json.loads(open(ann).read())
  data['images'][0]['file_name'] = '../images/a.jpg'
  data['images'][1]['file_name'] = str(tmp_path / 'images' / 'b.jpg')  # absolute
  (tmp_path / 'ann.json').write_text(json.dumps(data))
  report = coco_conversion.convert('atomic', str(tmp_path / 'tfds'), {'train': (ann, str(inner))})
  assert report.counts['file_outside_images'] == 2
  assert report.counts['exif_orientation_kept'] == 1
  assert any('orientation 6' in m for m in report.examples['exif_orientation_kept'])
  assert ids_of(str(tmp_path / 'tfds')) == [1, 2]  # read, with a note


def test_ctrl_c_during_conversion_exits_130_and_keeps_the_earlier_dataset(tmp_path):
  import signal
  import subprocess
  import sys
  data_dir = str(tmp_path / 'tfds')
  ann, images = small_dataset(tmp_path, [(40, 30)])
  assert convert_command(data_dir, ann, images).returncode == 0
  # Enough images (re-encoded BMPs) that the conversion is still running when Ctrl-C comes.
  many = []
  for i in range(2000):
    Image.fromarray(np.full((64, 64, 3), i % 255, np.uint8)).save(tmp_path / 'images' / f'{i}.bmp')
    many.append({'id': i + 1, 'file_name': f'{i}.bmp', 'width': 64, 'height': 64})
  big = tmp_path / 'big.json'
  big.write_text(json.dumps({'images': many, 'annotations': [],
                             'categories': [{'id': 1, 'name': 'a'}]}))
  proc = subprocess.Popen(
      [sys.executable, '-m', 'fcos_jax.data.convert_coco', '--name', 'atomic', '--data_dir',
       data_dir, '--annotations', str(big), '--images', images, '--split', 'train',
       '--overwrite'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=dict(os.environ, PYTHONUNBUFFERED='1', TF_CPP_MIN_LOG_LEVEL='3'),
      # A suite started in the background inherits SIGINT ignored; the child must not.
      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  seen = ''
  while 'converting train' not in seen:  # the bar: TFDS has started writing
    chunk = os.read(proc.stderr.fileno(), 4096).decode()
    if not chunk:
      break
    seen += chunk
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=120)
  err = seen + err
  assert proc.returncode == 130, err[-3000:]
  assert err.strip().splitlines()[-1] == 'interrupted (Ctrl-C)' and 'Traceback' not in err
  assert ids_of(data_dir) == [1]
  assert sorted(os.listdir(data_dir)) == ['atomic']


def test_annotation_file_with_a_byte_order_mark(tmp_path):
  ann, images = small_dataset(tmp_path, [(40, 30)])
  with open(ann, 'rb') as f:
    data = f.read()
  with open(ann, 'wb') as f:
    f.write(b'\xef\xbb\xbf' + data)  # as Windows editors save UTF-8
  coco_conversion.convert('atomic', str(tmp_path / 'tfds'), {'train': (ann, images)})
  assert ids_of(str(tmp_path / 'tfds')) == [1]


def test_clean_report_has_every_kind_and_the_split_counts():
  report = coco_conversion.Report()
  report.wrote('train', 2)
  report.wrote('train', 0)
  data = report.to_json()
  assert data['splits'] == {'train': {'images': 2, 'boxes': 2}} and data['examples'] == {}
  assert set(data['counts']) == set(coco_conversion.ERROR_KINDS) | set(coco_conversion.INFO_KINDS)
  assert not any(data['counts'].values())
  assert report.summary().splitlines()[1:] == ['  train: 2 images, 2 boxes written',
                                               '  skipped: none', '  kept / repaired: none']


def test_command_is_quiet_and_summarizes_per_split(tmp_path):
  """No line per repaired item, no TFDS banner or bars: per-split counts, the kinds found with
  their first items, and every item in conversion_report.json."""
  import subprocess
  import sys
  ann, images = small_dataset(tmp_path, [(20, 20)] * 6)
  data = json.loads(open(ann).read())
  (tmp_path / 'train.json').write_text(json.dumps(dict(data, annotations=data['annotations'][:1])))
  data_dir = str(tmp_path / 'tfds')
  out = subprocess.run(
      [sys.executable, '-m', 'fcos_jax.data.convert_coco', '--name', 'atomic', '--data_dir',
       data_dir, '--annotations', str(tmp_path / 'train.json'), '--images', images, '--split',
       'train', '--annotations', ann, '--images', images, '--split', 'validation'],
      capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  assert 'Downloading and preparing' not in out.stdout and 'Generating' not in out.stderr
  assert 'image_without_boxes' not in out.stderr, out.stderr  # no log line per item
  assert 'converting train: 100%' in out.stderr
  assert '  train: 6 images, 1 boxes written\n  validation: 6 images, 6 boxes written' in out.stdout
  assert re.search(r'image_without_boxes\s+5\b', out.stdout) and 'corrupt_image' not in out.stdout
  assert len(re.findall(r'^      image id \d+', out.stdout, re.M)) == 3, out.stdout
  assert '... 2 more' in out.stdout
  with open(f'{data_dir}/atomic/1.0.0/conversion_report.json') as f:
    report = json.load(f)
  assert report['counts']['image_without_boxes'] == 5 and report['counts']['corrupt_image'] == 0
  assert len(report['examples']['image_without_boxes']) == 5
  assert report['splits'] == {'train': {'images': 6, 'boxes': 1},
                              'validation': {'images': 6, 'boxes': 6}}
  assert f'every item: {data_dir}/atomic/1.0.0/conversion_report.json' in out.stdout


def test_images_and_annotations_on_another_filesystem(tmp_path, shapes_coco, shapes_tfds):
  """gs:// and the like go through tf.io.gfile (here TensorFlow's in-memory ram:// filesystem):
  the same examples as the local conversion of the same files, a missing image counted, a file
  name leaving the folder reported."""
  import tensorflow as tf
  from fcos_jax.data import input_pipeline
  remote = f'ram://{tmp_path.name}'
  for split in ('train', 'validation'):
    tf.io.gfile.makedirs(f'{remote}/images/{split}')
    for name in os.listdir(f'{shapes_coco}/images/{split}'):
      tf.io.gfile.copy(f'{shapes_coco}/images/{split}/{name}', f'{remote}/images/{split}/{name}')
    tf.io.gfile.copy(f'{shapes_coco}/annotations/{split}.json',
                     f'{remote}/annotations/{split}.json')
  splits = {split: (f'{remote}/annotations/{split}.json', f'{remote}/images/{split}')
            for split in ('train', 'validation')}
  report = coco_conversion.convert('shapes', str(tmp_path / 'tfds'), splits)
  assert set(report.counts) <= {'image_without_boxes'}, report.counts  # as the local files
  for split in ('train', 'validation'):
    got, want = ([(ex['image/id'], ex['image'], ex['objects']['bbox'].tolist(),
                   ex['objects']['label'].tolist()) for ex in input_pipeline.read_examples(
                       tfds.builder(name, data_dir=data_dir), split).as_numpy_iterator()]
                 for name, data_dir in (('shapes', str(tmp_path / 'tfds')), shapes_tfds))
    assert got == want and len(got) > 0

  data = json.loads(tf.io.gfile.GFile(f'{remote}/annotations/train.json').read())
  tf.io.gfile.copy(f'{remote}/images/train/' + data['images'][0]['file_name'],
                   f'{remote}/images/outside.jpg')
  data['images'][0]['file_name'] = '../outside.jpg'
  data['images'][1]['file_name'] = 'gone.jpg'
  with tf.io.gfile.GFile(f'{remote}/bad.json', 'w') as f:
    f.write(json.dumps(data))
  report = coco_conversion.convert('bad', str(tmp_path / 'tfds'), {
      'train': (f'{remote}/bad.json', f'{remote}/images/train')})
  assert report.counts['missing_file'] == 1
  assert report.counts['file_outside_images'] == 1
  with pytest.raises(coco_conversion.ConversionError, match='annotation file not found'):
    coco_conversion.convert('none', str(tmp_path / 'tfds'), {
        'train': (f'{remote}/nothing.json', f'{remote}/images/train')})


def test_output_folder_on_another_filesystem_is_swapped_in_by_copies():
  """A data_dir on gs:// and the like: the finished staging folder is copied into place (object
  stores have no folder rename), an earlier conversion removed only after that, and an existing
  one refused without --overwrite (TensorFlow's ram:// filesystem; TFDS itself writes there
  through etils.epath, which knows gs:// but not ram://, so the whole conversion is not run)."""
  import tensorflow as tf
  root = 'ram://swap_test'
  for folder, text in (('old', 'earlier'), ('staging', 'new')):
    tf.io.gfile.makedirs(f'{root}/{folder}/sub')
    for name in ('a.json', 'sub/b.tfrecord'):
      with tf.io.gfile.GFile(f'{root}/{folder}/{name}', 'w') as f:
        f.write(f'{text} {name}')
  out = coco_conversion._check_output('d', root, '1.0.0', overwrite=False)
  tf.io.gfile.makedirs(f'{root}/d')
  coco_conversion._swap_in(f'{root}/old', out)  # a first conversion
  with pytest.raises(coco_conversion.ConversionError, match='already holds a converted'):
    coco_conversion._check_output('d', root, '1.0.0', overwrite=False)
  coco_conversion._swap_in(f'{root}/staging', out)  # --overwrite
  assert tf.io.gfile.GFile(f'{out}/sub/b.tfrecord').read() == 'new sub/b.tfrecord'
  assert tf.io.gfile.GFile(f'{out}/a.json').read() == 'new a.json'
  # The staging folder and the earlier conversion are gone.
  assert [p.rstrip('/') for p in tf.io.gfile.listdir(root)] == ['d']
  assert [p.rstrip('/') for p in tf.io.gfile.listdir(f'{root}/d')] == ['1.0.0']
