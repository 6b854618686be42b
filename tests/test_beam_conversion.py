"""The converter on Apache Beam (in-process runner, and two worker processes) writes the same
examples and the same report as the single-process converter; ArrayRecord output reads back the
same examples."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip('apache_beam')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def convert(*args):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.run([sys.executable, '-m', 'fcos_jax.programs.convert_coco', *map(str, args)],
                        capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)


def read_all(name, data_dir):
  """{split: {image id: (file name, labels, crowd, boxes, area, ids, image bytes digest)}}."""
  import hashlib
  import tensorflow_datasets as tfds
  builder = tfds.builder(name, data_dir=data_dir)
  out = {}
  for split in builder.info.splits:
    rows = {}
    if builder.info.file_format.value == 'array_record':  # random access, no tf.data
      source = builder.as_data_source(split)
      examples = (source[i] for i in range(len(source)))
    else:
      examples = tfds.as_numpy(builder.as_dataset(split))
    for ex in examples:
      o = ex['objects']
      name = ex['image/filename']
      rows[int(ex['image/id'])] = (
          name.decode() if isinstance(name, bytes) else name,
          *(np.asarray(o[k]).tolist() for k in ('label', 'is_crowd', 'bbox', 'area', 'id')),
          hashlib.md5(np.asarray(ex['image']).tobytes()).digest())
    out[split] = rows
  return out


def test_beam_output_and_report_equal_the_single_process_ones(shapes_coco, tmp_path):
  # Some repairs and skips for the report: a missing image, a box outside, a clipped box.
  ann = json.load(open(f'{shapes_coco}/annotations/train.json'))
  ann['images'].append(dict(ann['images'][0], id=10**6, file_name='absent.jpg'))
  ann['annotations'].append(dict(ann['annotations'][0], id=10**6, bbox=[-50, -50, 10, 10]))
  ann['annotations'].append(dict(ann['annotations'][1], id=10**6 + 1, bbox=[-5, -5, 30, 30]))
  (tmp_path / 'train.json').write_text(json.dumps(ann))
  splits = [f'--annotations={tmp_path / "train.json"}', f'--images={shapes_coco}/images/train',
            '--split=train', f'--annotations={shapes_coco}/annotations/validation.json',
            f'--images={shapes_coco}/images/validation', '--split=validation']
  runs = {'single': [], 'beam': ['--beam_pipeline_options=direct_num_workers=1'],
          'beam_2': ['--beam_pipeline_options=direct_num_workers=2,'
                     'direct_running_mode=multi_processing'],
          'array_record': ['--file_format=array_record']}
  reports, data = {}, {}
  for name, extra in runs.items():
    out = convert(f'--name=s_{name}', f'--data_dir={tmp_path / "tfds"}', *splits, *extra)
    assert out.returncode == 0, (name, out.stderr[-3000:])
    assert 'train: 24 images' in out.stdout and 'missing_file' in out.stdout, (name, out.stdout)
    reports[name] = json.load(open(tmp_path / 'tfds' / f's_{name}' / '1.0.0' /
                                   'conversion_report.json'))
    data[name] = read_all(f's_{name}', str(tmp_path / 'tfds'))
  want = data['single']
  assert len(want['train']) == 24 and len(want['validation']) == 11
  for name in ('beam', 'beam_2', 'array_record'):
    assert reports[name] == reports['single'], name
    if name == 'array_record':  # its reader decodes the JPEGs with another decoder: no digest
      strip = lambda d: {s: {i: r[:-1] for i, r in v.items()} for s, v in d.items()}  # noqa
      assert strip(data[name]) == strip(want)
    else:
      assert data[name] == want, name
  assert reports['single']['counts']['box_outside_image'] == 1
  assert reports['single']['counts']['box_clipped'] >= 1
  assert np.all([len(v) for v in reports['single']['examples'].values()])


def test_fail_fast_is_refused_on_beam(shapes_coco, tmp_path):
  from tests.test_user_errors import assert_one_line_error
  out = convert('--name=x', f'--data_dir={tmp_path}', '--on_error=fail',
                '--beam_pipeline_options=direct_num_workers=1',
                f'--annotations={shapes_coco}/annotations/validation.json',
                f'--images={shapes_coco}/images/validation', '--split=validation')
  assert_one_line_error(out, '--on_error=fail', 'Beam')
  assert not (tmp_path / 'x').exists()
