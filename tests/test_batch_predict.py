"""batch_predict.py (`serving.batch_inference`) on Beam's in-process runner: the same results,
detections and pictures as predict.py on the same images, from files and from a TFDS split;
skipped inputs counted; OUT never written over unasked; shards scored by evaluate.py."""

import glob
import json
import os

import numpy as np
import pytest
from PIL import Image

from tests.test_user_errors import assert_one_line_error, run

beam = pytest.importorskip('apache_beam')
from fcos_jax.serving import batch_inference  # noqa: E402


@pytest.fixture(scope='module')
def export_dir(tmp_path_factory):
  """A StableHLO export of `tiny_config.random_detector` (plenty of detections)."""
  from fcos_jax.serving import export
  from tests import tiny_config
  config, model, variables, cats = tiny_config.random_detector()
  out = str(tmp_path_factory.mktemp('export'))
  export.export_detector(config, model, variables, out, cats)
  return out


def _lines(pattern):
  return [json.loads(line) for f in sorted(glob.glob(pattern)) for line in open(f)
          if line.strip()]


def _key(row):
  return (row['file_name'], row['image_id'], row['category_id'], row['score'], row['bbox'])


def _images(root):
  """Two shapes of RGB image, a grayscale one (converted on reading) and a broken file."""
  rng = np.random.default_rng(0)
  (root / 'sub').mkdir(parents=True)
  for name, hw in (('a.png', (40, 60)), ('sub/b.png', (60, 40)), ('c.jpg', (48, 64))):
    Image.fromarray(rng.integers(0, 255, hw + (3,), dtype=np.uint8)).save(root / name)
  Image.fromarray(rng.integers(0, 255, (50, 50), dtype=np.uint8)).save(root / 'gray.png')
  (root / 'broken.jpg').write_bytes(b'not an image')


def test_beam_detects_files_as_predict_does(export_dir, tmp_path):
  _images(tmp_path / 'in')
  common = [f'--export={export_dir}', f'--image={tmp_path / "in"}', '--batch_size=1',
            '--draw_scale=1', '--min_score=0.09']  # about half the random detector's boxes
  pred = run('predict.py', *common, f'--out={tmp_path / "pred"}')
  assert pred.returncode == 0, pred.stderr[-3000:]
  out = tmp_path / 'beam'
  res = run('batch_predict.py', *common, f'--out={out}', '--draw')
  assert res.returncode == 0, res.stderr[-3000:]
  assert '4 images detected' in res.stdout and '1 skipped' in res.stdout, res.stdout
  assert '1 converted on reading' in res.stdout, res.stdout

  expected = json.load(open(tmp_path / 'pred' / 'results.json'))
  rows = _lines(f'{out}/results-*.jsonl')
  assert expected and sorted(rows, key=_key) == sorted(expected, key=_key)
  dets = {d['path']: d['detections'] for d in _lines(f'{out}/detections-*.jsonl')}
  assert dets == json.load(open(tmp_path / 'pred' / 'detections.json'))
  # --min_score holds for every file written, not only the pictures.
  assert min(r['score'] for r in expected) >= 0.09
  assert min(d['score'] for found in dets.values() for d in found) >= 0.09
  assert max(len(found) for found in dets.values()) < 100  # some of the 100 were left out
  skipped = open(glob.glob(f'{out}/skipped-*.txt')[0]).read()
  assert 'broken.jpg: not a readable image' in skipped
  for name in ('a.png', 'sub/b.png', 'c.png', 'gray.png'):  # predict.py's picture, byte for byte
    assert open(out / name, 'rb').read() == open(tmp_path / 'pred' / name, 'rb').read(), name

  # OUT is not written over unasked; --overwrite replaces the earlier shards (and only them).
  again = run('batch_predict.py', *common, f'--out={out}')
  assert_one_line_error(again, f'{out} is not empty', '--overwrite')
  (out / 'notes.txt').write_text('mine')
  again = run('batch_predict.py', *common, f'--out={out}', '--overwrite',
              '--', '--direct_num_workers=1')
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'removed 3 shard(s) of an earlier run' in again.stdout, again.stdout
  assert sorted(_lines(f'{out}/results-*.jsonl'), key=_key) == sorted(expected, key=_key)
  assert (out / 'notes.txt').read_text() == 'mine' and (out / 'a.png').exists()


def test_a_tfds_split_keeps_its_ids_and_scores_as_predict(export_dir, shapes_tfds, tmp_path):
  """Every image of a split, as predict.py detects the same bytes written to files; the shards
  score with evaluate.py as predict.py's results.json does."""
  import tensorflow_datasets as tfds
  name, data_dir = shapes_tfds
  builder = tfds.builder(name, data_dir=data_dir)
  files, ann = tmp_path / 'files', {'images': [], 'annotations': [], 'categories': []}
  files.mkdir()
  ds = builder.as_dataset('validation', decoders={'image': tfds.decode.SkipDecoding()})
  for ex in tfds.as_numpy(ds):
    file_name = ex['image/filename'].decode()
    (files / file_name).write_bytes(ex['image'])
    ann['images'].append({'file_name': file_name, 'id': int(ex['image/id'])})
  (tmp_path / 'ann.json').write_text(json.dumps(ann))
  config = [os.path.join('tests', 'tiny_config.py'), f'--config.data.dataset={name}',
            f'--config.data.data_dir={data_dir}']
  pred = run('predict.py', f'--export={export_dir}', f'--image={files}', '--batch_size=1',
             f'--annotations={tmp_path / "ann.json"}', f'--out={tmp_path / "pred"}',
             '--noexif_orientation', '--min_score=0')
  assert pred.returncode == 0, pred.stderr[-3000:]
  res = run('batch_predict.py', f'--export={export_dir}', f'--config={config[0]}', *config[1:],
            '--split=validation', '--batch_size=1', f'--out={tmp_path / "beam"}',
            '--min_score=0')
  assert res.returncode == 0, res.stderr[-3000:]
  assert f'{len(ann["images"])} images detected' in res.stdout, res.stdout

  expected = json.load(open(tmp_path / 'pred' / 'results.json'))
  for row in expected:
    row['file_name'] = os.path.basename(row['file_name'])  # the dataset's own file name
  rows = _lines(f'{tmp_path / "beam"}/results-*.jsonl')
  assert expected and sorted(rows, key=_key) == sorted(expected, key=_key)

  scores = []
  for detections in (f'{tmp_path / "beam"}/results-*.jsonl',
                     str(tmp_path / 'pred' / 'results.json')):
    out = run('evaluate.py', f'--config={config[0]}', *config[1:], f'--detections={detections}',
              '--split=validation')
    assert out.returncode == 0, out.stderr[-3000:]
    scores.append(json.load(open(os.path.join(os.path.dirname(detections),
                                              'results_metrics.json'))))
  for s in scores:
    s.pop('coco_eval_seconds')
  assert scores[0] == scores[1] and scores[0]['num_detections'] == len(rows)


def test_a_missing_export_or_mixed_sources_are_one_line(tmp_path, export_dir):
  out = run('batch_predict.py', f'--export={tmp_path / "nothing"}', f'--image={tmp_path}',
            f'--out={tmp_path / "o"}')
  assert_one_line_error(out, 'nothing', 'no export there')
  out = run('batch_predict.py', f'--export={export_dir}', f'--image={tmp_path}',
            '--split=validation', f'--out={tmp_path / "o"}')
  assert_one_line_error(out, 'give --image, or --config with --split')
  assert not (tmp_path / 'o').exists()


def test_without_apache_beam_it_is_one_line_naming_the_extra(tmp_path):
  import subprocess
  import sys
  from tests.test_user_errors import ROOT
  hide = ('import sys, runpy; sys.modules["apache_beam"] = None; '  # as if not installed
          'sys.argv = ["batch_predict.py"] + sys.argv[1:]; '
          'runpy.run_path("batch_predict.py", run_name="__main__")')
  out = subprocess.run([sys.executable, '-c', hide, f'--export={tmp_path}',
                        f'--image={tmp_path}', f'--out={tmp_path / "o"}'],
                       capture_output=True, text=True, cwd=ROOT, timeout=300,
                       env=dict(os.environ, PYTHONPATH=ROOT))
  assert_one_line_error(out, 'needs Apache Beam', 'fcos_jax[beam]')


def test_an_export_is_copied_from_any_file_system(export_dir, tmp_path):
  """Workers copy an export from a URL through Beam's file systems; the same code on a local
  folder copies every file byte for byte."""
  target = tmp_path / 'copy'
  count = batch_inference.copy_tree(export_dir, str(target))
  names = sorted(os.path.relpath(os.path.join(r, f), export_dir)
                 for r, _, fs in os.walk(export_dir) for f in fs)
  assert count == len(names) > 1
  for n in names:
    assert open(target / n, 'rb').read() == open(os.path.join(export_dir, n), 'rb').read()


def test_pictures_of_urls_keep_their_relative_paths():
  paths = ['gs://b/shots/day1/a.jpg', 'gs://b/shots/day2/a.jpg', 'gs://b/shots/c.png']
  assert batch_inference.picture_paths(paths, 'gs://b/out/') == {
      paths[0]: 'gs://b/out/day1/a.png', paths[1]: 'gs://b/out/day2/a.png',
      paths[2]: 'gs://b/out/c.png'}
  local = batch_inference.picture_paths(['/x/p/a.jpg', '/x/q/a.jpg'], '/o')
  assert local == {'/x/p/a.jpg': '/o/p/a.png', '/x/q/a.jpg': '/o/q/a.png'}
