"""YOLO and Pascal VOC input: the synthetic set written in each format by a writer here (from
the COCO JSON, by each format's own definition, not by the code under test) converts through the
real program to the same TFDS examples as its COCO JSON; bad input is counted, never dropped
silently."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fcos_jax.data import coco_conversion, label_formats
from tests.test_user_errors import assert_one_line_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLITS = (('train', 'train'), ('validation', 'val'))


def convert(*args):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.run([sys.executable, '-m', 'fcos_jax.programs.convert_coco', *map(str, args)],
                        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


def write_yolo(coco_root, out):
  """ultralytics' layout: images/<split>/, labels/<split>/<stem>.txt with `class cx cy w h`
  normalized; crowd boxes have no YOLO form and are left out."""
  names = None
  for split, key in SPLITS:
    data = json.load(open(f'{coco_root}/annotations/{split}.json'))
    names = [c['name'] for c in data['categories']]
    label = {c['id']: i for i, c in enumerate(data['categories'])}
    shutil.copytree(f'{coco_root}/images/{split}', out / 'images' / key)
    (out / 'labels' / key).mkdir(parents=True)
    for im in data['images']:
      lines = []
      for a in data['annotations']:
        if a['image_id'] == im['id'] and not a['iscrowd']:
          x, y, w, h = a['bbox']
          lines.append(f'{label[a["category_id"]]} {(x + w / 2) / im["width"]:.9f} '
                       f'{(y + h / 2) / im["height"]:.9f} {w / im["width"]:.9f} '
                       f'{h / im["height"]:.9f}')
      stem = os.path.splitext(im['file_name'])[0]
      (out / 'labels' / key / f'{stem}.txt').write_text('\n'.join(lines))
  (out / 'data.yaml').write_text(f'path: {out}\ntrain: images/train\nval: images/val\n'
                                 f'names: {json.dumps(names)}\n')
  return names


def write_voc(coco_root, out):
  """VOC's layout: JPEGImages/, Annotations/<id>.xml with 1-based corners, crowd as difficult,
  ImageSets/Main/<split>.txt."""
  (out / 'JPEGImages').mkdir(parents=True)
  (out / 'Annotations').mkdir()
  (out / 'ImageSets' / 'Main').mkdir(parents=True)
  for split, _ in SPLITS:
    data = json.load(open(f'{coco_root}/annotations/{split}.json'))
    name = {c['id']: c['name'] for c in data['categories']}
    ids = []
    for im in data['images']:
      shutil.copy(f'{coco_root}/images/{split}/{im["file_name"]}', out / 'JPEGImages')
      voc_id = os.path.splitext(im['file_name'])[0]
      ids.append(voc_id)
      objects = ''.join(
          f'<object><name>{name[a["category_id"]]}</name><truncated>1</truncated>'
          f'<difficult>{a["iscrowd"]}</difficult><bndbox><xmin>{a["bbox"][0] + 1}</xmin>'
          f'<ymin>{a["bbox"][1] + 1}</ymin><xmax>{a["bbox"][0] + a["bbox"][2]}</xmax>'
          f'<ymax>{a["bbox"][1] + a["bbox"][3]}</ymax></bndbox></object>'
          for a in data['annotations'] if a['image_id'] == im['id'])
      (out / 'Annotations' / f'{voc_id}.xml').write_text(
          f'<annotation><filename>{im["file_name"]}</filename><size><width>0</width>'
          f'<height>0</height><depth>3</depth></size>{objects}</annotation>')
    (out / 'ImageSets' / 'Main' / f'{split}.txt').write_text('\n'.join(ids) + '\n')
  classes = out / 'classes.txt'
  classes.write_text('\n'.join(c['name'] for c in data['categories']))
  return classes


def examples(name, data_dir, split):
  """{file name: (labels, crowd flags, boxes in pixels [ymin, xmin, ymax, xmax])}."""
  import tensorflow_datasets as tfds
  out = {}
  for ex in tfds.as_numpy(tfds.builder(name, data_dir=data_dir).as_dataset(split)):
    h, w = ex['image'].shape[:2]
    o = ex['objects']
    out[ex['image/filename'].decode()] = (o['label'], o['is_crowd'],
                                          o['bbox'] * np.array([h, w, h, w]))
  return out


def assert_same_examples(got, want, crowd=True):
  assert sorted(got) == sorted(want) and len(got) > 5
  boxes = 0
  for file_name, (labels, is_crowd, bbox) in want.items():
    keep = np.ones(len(labels), bool) if crowd else ~is_crowd
    g_labels, g_crowd, g_bbox = got[file_name]
    np.testing.assert_array_equal(g_labels, labels[keep], err_msg=file_name)
    np.testing.assert_array_equal(g_crowd, is_crowd[keep], err_msg=file_name)
    np.testing.assert_allclose(g_bbox, bbox[keep], atol=1e-3, err_msg=file_name)
    boxes += keep.sum()
  assert boxes > 20


def test_yolo_and_voc_convert_to_the_coco_jsons_examples(shapes_coco, shapes_tfds, tmp_path):
  names = write_yolo(shapes_coco, tmp_path / 'yolo')
  out = convert('--format=yolo', '--name=shapes_yolo', f'--data_dir={tmp_path / "tfds"}',
                f'--annotations={tmp_path / "yolo" / "data.yaml"}')
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'train: 24 images' in out.stdout and 'validation: 11 images' in out.stdout, out.stdout
  classes = write_voc(shapes_coco, tmp_path / 'voc')
  voc = tmp_path / 'voc'
  out = convert('--format=voc', '--name=shapes_voc', f'--data_dir={tmp_path / "tfds"}',
                f'--classes={classes}',
                f'--annotations={voc}/ImageSets/Main/train.txt', f'--images={voc}',
                '--split=train', f'--annotations={voc}/ImageSets/Main/validation.txt',
                f'--images={voc}', '--split=validation')
  assert out.returncode == 0, out.stderr[-3000:]
  for split, _ in SPLITS:
    want = examples(*shapes_tfds, split)
    assert_same_examples(examples('shapes_yolo', str(tmp_path / 'tfds'), split), want,
                         crowd=False)
    assert_same_examples(examples('shapes_voc', str(tmp_path / 'tfds'), split), want)
  cats = json.load(open(tmp_path / 'tfds' / 'shapes_yolo' / '1.0.0' / 'categories.json'))
  assert [c['name'] for c in cats] == names


def test_bad_yolo_and_voc_input_is_counted(tmp_path):
  root = tmp_path / 'yolo'
  (root / 'images' / 'train').mkdir(parents=True)
  (root / 'labels' / 'train').mkdir(parents=True)
  for stem in ('a', 'b', 'c'):
    Image.new('RGB', (100, 50)).save(root / 'images' / 'train' / f'{stem}.jpg')
  (root / 'labels' / 'train' / 'a.txt').write_text(
      '0 0.5 0.5 0.2 0.2\n'            # fine: 20x10 px at the centre
      '3 0.5 0.5 0.2 0.2\n'            # class index past names
      '0 0.5 0.5 0.2\n'                # 4 columns
      '1 0.1 0.1 0.3 0.1 0.3 0.4\n'    # a segment: box (10, 5)-(30, 20)
      '0 x 0.5 0.2 0.2\n'              # not numbers
      '1 1.5 1.5 0.2 0.2\n')           # entirely outside the image
  (root / 'labels' / 'train' / 'b.txt').write_text('')  # a negative image
  (root / 'data.yaml').write_text('train: images/train\nnames: {0: cat, 1: dog}\n')
  report = coco_conversion.new_report()
  cats, loaded = label_formats.read_yolo(str(root / 'data.yaml'), report)
  assert [c['name'] for c in cats] == ['cat', 'dog'] and list(loaded) == ['train']
  data = loaded['train'][0]
  assert [im['file_name'] for im in data['images']] == ['a.jpg', 'b.jpg', 'c.jpg']
  assert dict(report.counts) == {'unknown_category': 1, 'malformed_record': 2,
                                 'segment_as_box': 1, 'missing_label_file': 1}
  np.testing.assert_allclose([a['bbox'] for a in data['annotations']],
                             [[40, 20, 20, 10], [10, 5, 20, 15], [140, 70, 20, 10]], atol=1e-9)
  assert 'c.jpg' in report.examples['missing_label_file'][0]

  voc = tmp_path / 'voc'
  for d in ('JPEGImages', 'Annotations', 'ImageSets/Main'):
    (voc / d).mkdir(parents=True)
  Image.new('RGB', (60, 40)).save(voc / 'JPEGImages' / 'x.jpg')
  (voc / 'Annotations' / 'x.xml').write_text(
      '<annotation><filename>x.jpg</filename><object><name>cat</name><difficult>1</difficult>'
      '<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>20</ymax></bndbox></object>'
      '<object><name>cow</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax>'
      '</bndbox></object><object><name>cat</name></object></annotation>')
  (voc / 'Annotations' / 'broken.xml').write_text('<annotation><object>')
  (voc / 'ImageSets' / 'Main' / 'train.txt').write_text('x\nbroken\nabsent\n')
  report = coco_conversion.new_report()
  cats, loaded = label_formats.read_voc({'train': (str(voc / 'ImageSets/Main/train.txt'),
                                                   str(voc))}, report, classes=['cat', 'dog'])
  data = loaded['train'][0]
  assert dict(report.counts) == {'difficult_as_crowd': 1, 'unknown_category': 1,
                                 'malformed_record': 2, 'missing_file': 1}
  assert data['annotations'] == [{'id': 1, 'image_id': 1, 'category_id': 1,
                                  'bbox': [0.0, 0.0, 10.0, 20.0], 'iscrowd': 1}]
  assert data['images'] == [{'id': 1, 'file_name': 'x.jpg', 'width': 60, 'height': 40}]


def test_format_mistakes_are_one_line(tmp_path):
  assert_one_line_error(convert('--format=yolo', '--name=x', f'--annotations={tmp_path}/d.yaml'),
                        'd.yaml: file not found')
  assert_one_line_error(convert('--format=yolo', '--name=x', '--annotations=a.yaml',
                                '--images=i', '--split=train'), 'one --annotations data.yaml')
  assert_one_line_error(convert('--format=coco', '--name=x', '--classes=c.txt',
                                '--annotations=a.json', '--images=i', '--split=train'),
                        '--classes is for --format voc')
  (tmp_path / 'd.yaml').write_text('train: images\n')
  assert_one_line_error(convert('--format=yolo', '--name=x', f'--annotations={tmp_path}/d.yaml'),
                        'needs a mapping with names')
  assert not os.path.exists(os.path.expanduser('~/tensorflow_datasets/x'))


@pytest.mark.parametrize('path,label', [('/d/images/train/a.jpg', '/d/labels/train/a.txt'),
                                        ('/images/x/images/b.png', '/images/x/labels/b.txt')])
def test_label_path_follows_ultralytics(path, label):
  assert label_formats.yolo_label_path(path) == label
