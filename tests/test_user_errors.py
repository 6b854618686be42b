"""User mistakes, through the real programs: each ends with one line `error: ...` naming the
file / key / id, a non-zero exit and no traceback, and leaves what was on disk as it was."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, 'tests', 'tiny_config.py')


def run(program, *args, devices=1, cwd=ROOT):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='3', TF_ENABLE_ONEDNN_OPTS='0',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  env.pop('FCOS_JAX_VERBOSE', None)
  cmd = [sys.executable, *(['-m', program] if '.' in program and not program.endswith('.py')
                          else [os.path.join(ROOT, program)]), *map(str, args)]
  return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def assert_one_line_error(out, *needles):
  assert out.returncode != 0, out.stdout[-2000:] + out.stderr[-2000:]
  text = out.stdout + out.stderr
  assert 'Traceback' not in text, text[-4000:]
  lines = [line for line in out.stderr.splitlines() if line.startswith('error: ')]
  assert len(lines) == 1, out.stderr[-3000:]
  for needle in needles:
    assert needle in lines[0], (needle, lines[0])
  return lines[0]


@pytest.fixture(scope='module')
def workdir_of_another_config(tmp_path_factory, shapes_tfds):
  """A training workdir (config.json + the train state of step 7) of the tiny config."""
  import jax
  from fcos_jax import sharding, train_step
  from fcos_jax.weights import checkpoints, run_config
  from tests import tiny_config
  config = tiny_config.get_config()
  config.data.update(dataset=shapes_tfds[0], data_dir=shapes_tfds[1], synthetic=False)
  workdir = tmp_path_factory.mktemp('run')
  _, _, state = train_step.build_training(config, sharding.make_mesh(jax.devices()[:1]))
  ckpt = checkpoints.Checkpointer(str(workdir))
  ckpt.save(7, state.replace(step=state.step + 7))
  ckpt.close()
  run_config.write_config(str(workdir), config, 0)
  return str(workdir)


def data_flags(shapes_tfds):
  return [f'--config.data.dataset={shapes_tfds[0]}', f'--config.data.data_dir={shapes_tfds[1]}',
          '--config.data.synthetic=False']


@pytest.mark.parametrize('override,needles', [
    ('--config.batch_sise=4', ['config.batch_sise', 'did you mean "batch_size"']),
    ('--config.batch_size=four', ['config.batch_size']),
    ('--config.keep_checkpoints=0', ['config.keep_checkpoints = 0']),
    ('--config.data.max_boxes=0', ['config.data.max_boxes = 0']),
    ('--config.data.max_boxes=-1', ['config.data.max_boxes = -1']),
    ('--config.data.max_size=50', ['config.data.max_size = 50', 'data.eval_min_size (64)']),
    ('--config.data.min_sizes=(64,128)', ['config.data.max_size = 96', 'data.min_sizes (64, 128)']),
    ('--config.log_every=0', ['config.log_every = 0']),
    ('--config.model.dtype=float16', ['config.model.dtype']),
    ('--config.postprocess.nms_method=soft', ["config.postprocess.nms_method = 'soft'",
                                              "'linear', 'gaussian'"]),
])
def test_train_config_mistakes_stop_before_anything_is_written(tmp_path, override, needles):
  out = run('train.py', f'--config={TINY}', f'--workdir={tmp_path / "w"}', override)
  assert_one_line_error(out, *needles)
  assert not (tmp_path / 'w').exists()


def test_frozen_bn_backbone_without_weights_refuses_to_start(tmp_path):
  out = run('train.py', f'--config={TINY}', f'--workdir={tmp_path / "w"}',
            '--config.model.backbone_norm=frozen_bn')
  assert_one_line_error(out, 'config.init_checkpoint', 'import_torchvision --download resnet50',
                        'train_from_scratch')
  assert not (tmp_path / 'w').exists()
  out = run('train.py', f'--config={TINY}', f'--workdir={tmp_path / "w"}',
            f'--config.init_checkpoint={tmp_path / "no_weights"}')
  assert_one_line_error(out, 'config.init_checkpoint', 'no_weights', 'no such checkpoint')
  assert not (tmp_path / 'w').exists()


def test_custom_small_asks_for_the_dataset_and_its_classes(tmp_path):
  """The shipped config for one's own data leaves two keys to the command line: each missing
  one is one line naming its override; set, the config validates."""
  from fcos_jax.configs import custom_small, validate
  out = run('train.py', '--config=custom_small', f'--workdir={tmp_path / "w"}')
  assert_one_line_error(out, 'config.data.dataset', '--config.data.dataset=')
  out = run('train.py', '--config=custom_small', f'--workdir={tmp_path / "w"}',
            '--config.data.dataset=my_data')
  assert_one_line_error(out, 'config.model.num_classes', '--config.model.num_classes=')
  assert not (tmp_path / 'w').exists()
  config = custom_small.get_config()
  config.data.dataset, config.model.num_classes = 'my_data', 3
  validate.validate(config)
  assert config.model.backbone_norm == 'gn' and not config.init_checkpoint


def test_import_without_torch_names_the_extra_before_downloading(tmp_path):
  """torch cannot be imported: a .pth file, given or to be downloaded, is one line naming the
  extra, and nothing is fetched (the mirror would serve the file)."""
  mirror = tmp_path / 'mirror'
  mirror.mkdir()
  (mirror / 'resnet18-f37072fd.pth').write_bytes(b'not read')
  script = ("import sys, runpy; sys.modules['torch'] = None; sys.argv = sys.argv[1:]; "
            "runpy.run_module('fcos_jax.tools.import_torchvision', run_name='__main__')")
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='3')
  for source in ('--download=resnet18', f'--weights={mirror / "resnet18-f37072fd.pth"}'):
    out = subprocess.run([sys.executable, '-c', script, 'import_torchvision', source,
                          f'--base_url=file://{mirror}', f'--cache_dir={tmp_path / "cache"}',
                          f'--out={tmp_path / "out"}'],
                         env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert_one_line_error(out, 'resnet18-f37072fd.pth', 'needs torch', 'fcos_jax[torch]')
    assert not (tmp_path / 'cache').exists() and not (tmp_path / 'out').exists()


def test_train_missing_config_file_and_dataset(tmp_path):
  out = run('train.py', f'--config={tmp_path}/nope.py', f'--workdir={tmp_path / "w"}')
  assert_one_line_error(out, 'nope.py')
  out = run('train.py', f'--config={TINY}', f'--workdir={tmp_path / "w"}',
            '--config.data.synthetic=False', '--config.data.dataset=no_such_data',
            f'--config.data.data_dir={tmp_path}')
  line = assert_one_line_error(out, 'no_such_data')
  assert len(out.stderr) < 3000  # not TFDS's list of every dataset
  assert 'convert_coco' in line
  assert not (tmp_path / 'w').exists()


def test_train_on_a_dataset_without_boxes_says_so(tmp_path):
  from fcos_jax.data import coco_conversion
  img = tmp_path / 'images'
  img.mkdir()
  images = []
  for i in range(3):
    Image.fromarray(np.full((48, 64, 3), 30 * i, np.uint8)).save(img / f'{i}.jpg')
    images.append({'id': i + 1, 'file_name': f'{i}.jpg', 'width': 64, 'height': 48})
  (tmp_path / 'ann.json').write_text(json.dumps(
      {'images': images, 'annotations': [], 'categories': [{'id': 1, 'name': 'a'}]}))
  coco_conversion.convert('no_boxes', str(tmp_path / 'tfds'),
                          {'train': (str(tmp_path / 'ann.json'), str(img))})
  out = run('train.py', f'--config={TINY}', f'--workdir={tmp_path / "w"}',
            '--config.data.synthetic=False', '--config.data.dataset=no_boxes',
            f'--config.data.data_dir={tmp_path / "tfds"}', '--config.model.num_classes=1',
            '--config.eval_at_end=False')
  assert_one_line_error(out, "no_boxes split 'train'", 'no image has a non-crowd box',
                        'keep_empty_images=True')


def test_train_batch_and_classes_that_cannot_work(tmp_path, shapes_tfds):
  out = run('train.py', f'--config={TINY}', f'--workdir={tmp_path / "w"}',
            '--config.batch_size=4', *data_flags(shapes_tfds), devices=8)
  assert_one_line_error(out, 'config.batch_size = 4', '8 devices')
  out = run('train.py', f'--config={TINY}', f'--workdir={tmp_path / "w"}',
            '--config.model.num_classes=3', *data_flags(shapes_tfds))
  assert_one_line_error(out, 'config.model.num_classes = 3', '5 categories')
  assert not (tmp_path / 'w').exists()


def test_train_in_a_workdir_of_another_config_refuses_and_keeps_it(
    workdir_of_another_config, shapes_tfds):
  workdir = workdir_of_another_config
  before = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
  with open(os.path.join(workdir, 'config.json')) as f:
    config_before = f.read()
  out = run('train.py', f'--config={TINY}', f'--workdir={workdir}',
            '--config.model.fpn_channels=8', *data_flags(shapes_tfds))
  assert_one_line_error(out, workdir, 'step 7', 'fpn', 'model.fpn_channels', '--workdir')
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == before == ['7']
  with open(os.path.join(workdir, 'config.json')) as f:
    assert f.read() == config_before


def test_evaluate_checkpoint_mistakes(workdir_of_another_config, shapes_tfds, tmp_path):
  workdir = workdir_of_another_config
  out = run('evaluate.py', f'--config={TINY}', f'--workdir={workdir}',
            '--config.model.fpn_channels=8', *data_flags(shapes_tfds))
  assert_one_line_error(out, 'step 7', 'fpn')
  assert len(out.stderr.splitlines()) < 20
  out = run('evaluate.py', f'--config={TINY}', f'--workdir={workdir}', '--step=3',
            *data_flags(shapes_tfds))
  assert_one_line_error(out, 'no checkpoint of step 3', '[7]')
  out = run('evaluate.py', f'--config={TINY}', f'--workdir={tmp_path / "none"}',
            *data_flags(shapes_tfds))
  assert_one_line_error(out, 'no checkpoint in')
  assert not (tmp_path / 'none').exists()


def test_evaluate_names_a_corrupted_latest_checkpoint_and_the_step_to_use(
    workdir_of_another_config, shapes_tfds, tmp_path):
  workdir = str(tmp_path / 'run')
  shutil.copytree(workdir_of_another_config, workdir)
  ckpts = os.path.join(workdir, 'checkpoints')
  shutil.copytree(os.path.join(ckpts, '7'), os.path.join(ckpts, '9'))

  def truncate(array_files_only):
    damaged = 0
    for root, _, files in os.walk(os.path.join(ckpts, '9', 'default')):
      for f in files:
        if not array_files_only or not ('metadata' in f.lower() or 'manifest' in f.lower()):
          path = os.path.join(root, f)
          with open(path, 'r+b') as fh:
            fh.truncate(os.path.getsize(path) // 2)
          damaged += 1
    assert damaged
  for array_files_only in (True, False):  # the array data only, then the tree's too
    truncate(array_files_only)
    out = run('evaluate.py', f'--config={TINY}', f'--workdir={workdir}',
              *data_flags(shapes_tfds))
    assert_one_line_error(out, 'checkpoint of step 9', 'corrupted', '--step 7')
    assert sorted(os.listdir(ckpts)) == ['7', '9']  # evaluation changes nothing


def good_result(coco):
  a = coco['annotations'][0]
  return {'image_id': a['image_id'], 'category_id': a['category_id'], 'bbox': a['bbox'],
          'score': 0.9}


@pytest.mark.parametrize('field,value,needle', [
    ('bbox', [float('nan')] * 4, 'result 1: bbox'),
    ('bbox', [1, 2, float('inf'), 3], 'result 1: bbox'),
    ('bbox', [1, 2, -3, 4], 'result 1: bbox width and height'),
    ('score', float('nan'), 'result 1: score'),
    ('score', float('inf'), 'result 1: score'),
    ('score', 'high', 'result 1: score'),
    ('image_id', '1', 'result 1: image_id must be an integer'),
    ('category_id', 1.5, 'result 1: category_id must be an integer'),
])
def test_evaluate_rejects_unscoreable_detections(shapes_coco, shapes_tfds, tmp_path, field,
                                                 value, needle):
  with open(f'{shapes_coco}/annotations/validation.json') as f:
    coco = json.load(f)
  bad = dict(good_result(coco), **{field: value})
  path = tmp_path / 'results.json'
  path.write_text(json.dumps([good_result(coco), bad]))  # json writes NaN / Infinity
  out = run('evaluate.py', f'--config={TINY}', f'--detections={path}', *data_flags(shapes_tfds))
  assert_one_line_error(out, str(path), needle)
  assert not (tmp_path / 'results_metrics.json').exists()


def test_evaluate_file_mistakes(shapes_coco, shapes_tfds, tmp_path):
  with open(f'{shapes_coco}/annotations/validation.json') as f:
    coco = json.load(f)
  results = tmp_path / 'results.json'
  results.write_text(json.dumps([good_result(coco)]))
  gt = tmp_path / 'gt.json'
  gt.write_text(json.dumps({'images': coco['images'], 'annotations': coco['annotations']}))
  out = run('evaluate.py', f'--config={TINY}', f'--detections={results}', f'--annotations={gt}',
            *data_flags(shapes_tfds))
  assert_one_line_error(out, str(gt), 'categories')
  out = run('evaluate.py', f'--config={TINY}', f'--detections={tmp_path}/missing.json',
            *data_flags(shapes_tfds))
  assert_one_line_error(out, 'missing.json')


@pytest.fixture
def coco_folder(tmp_path):
  img = tmp_path / 'images'
  img.mkdir()
  Image.fromarray(np.full((30, 40, 3), 90, np.uint8)).save(img / 'a.jpg')
  ann = {'images': [{'id': 1, 'file_name': 'a.jpg', 'width': 40, 'height': 30}],
         'annotations': [{'id': 1, 'image_id': 1, 'category_id': 1, 'bbox': [2, 3, 10, 8],
                          'area': 80, 'iscrowd': 0}],
         'categories': [{'id': 1, 'name': 'a'}]}
  (tmp_path / 'ann.json').write_text(json.dumps(ann))
  return tmp_path


def convert(root, *extra, name='d', data_dir=None):
  return run('fcos_jax.data.convert_coco', f'--name={name}',
             f'--data_dir={data_dir or root / "tfds"}', f'--annotations={root / "ann.json"}',
             f'--images={root / "images"}', *extra)


def test_convert_mistakes(coco_folder):
  root = coco_folder
  (root / 'broken.json').write_text('{"images": [')
  out = run('fcos_jax.data.convert_coco', '--name=d', f'--data_dir={root / "tfds"}',
            f'--annotations={root / "broken.json"}', f'--images={root / "images"}',
            '--split=train')
  assert_one_line_error(out, 'broken.json', 'malformed JSON')
  (root / 'nokeys.json').write_text('{"images": []}')
  out = run('fcos_jax.data.convert_coco', '--name=d', f'--data_dir={root / "tfds"}',
            f'--annotations={root / "nokeys.json"}', f'--images={root / "images"}',
            '--split=train')
  assert_one_line_error(out, 'nokeys.json', 'annotations')
  out = run('fcos_jax.data.convert_coco', '--name=d', f'--data_dir={root / "tfds"}',
            f'--annotations={root / "ann.json"}', f'--images={root / "nowhere"}',
            '--split=train')
  assert_one_line_error(out, 'nowhere', 'not found')
  assert_one_line_error(convert(root), '--split')
  (root / 'file').write_text('x')
  assert_one_line_error(convert(root, '--split=train', data_dir=root / 'file' / 'tfds'),
                        'cannot be written')
  assert not (root / 'tfds').exists()


def test_convert_twice_needs_overwrite(coco_folder):
  root = coco_folder
  out = convert(root, '--split=train')
  assert out.returncode == 0, out.stderr[-3000:]
  report = root / 'tfds' / 'd' / '1.0.0' / 'conversion_report.json'
  mtime = report.stat().st_mtime_ns
  assert_one_line_error(convert(root, '--split=train'), 'already holds', '--overwrite')
  assert report.stat().st_mtime_ns == mtime
  out = convert(root, '--split=train', '--overwrite')
  assert out.returncode == 0, out.stderr[-3000:]
  assert report.stat().st_mtime_ns != mtime


@pytest.fixture(scope='module')
def resnet_files(tmp_path_factory):
  import torch
  import torchvision
  root = tmp_path_factory.mktemp('weights')
  torch.save(torchvision.models.resnet18(weights=None).state_dict(), root / 'r18.pth')
  sd = torchvision.models.resnet50(weights=None).state_dict()
  torch.save(dict(sd, extra='not a tensor'), root / 'r50_str.pth')
  torch.save({k: v for k, v in sd.items() if k != 'layer2.0.conv1.weight'}, root / 'r50_gap.pth')
  from safetensors.torch import save_file
  save_file({k: v.contiguous() for k, v in sd.items()}, str(root / 'r50.safetensors'))
  (root / 'junk.pth').write_bytes(b'not a torch file')
  # A DistributedDataParallel model saved by a Lightning-style loop.
  torch.save({'state_dict': {f'module.{k}': v for k, v in sd.items()}, 'epoch': 3},
             root / 'r50_wrapped.pth')
  return root


def test_import_torchvision_mistakes(resnet_files, tmp_path):
  tool = 'fcos_jax.tools.import_torchvision'
  r = resnet_files
  assert_one_line_error(run(tool, f'--weights={r / "junk.pth"}', f'--out={tmp_path / "a"}'),
                        'junk.pth', 'weights-only')
  assert_one_line_error(run(tool, f'--weights={r / "none.pth"}', f'--out={tmp_path / "a"}'),
                        'none.pth', 'no such file')
  assert_one_line_error(run(tool, f'--weights={r / "r50_str.pth"}', f'--out={tmp_path / "a"}'),
                        "'extra'", 'not a tensor')
  assert_one_line_error(run(tool, f'--weights={r / "r18.pth"}', f'--out={tmp_path / "a"}'),
                        'ResNet-18', 'ResNet-50')
  assert_one_line_error(run(tool, f'--weights={r / "r50_gap.pth"}', f'--out={tmp_path / "a"}'),
                        'layer2.0.conv1.weight')
  assert not (tmp_path / 'a').exists()
  out = run(tool, f'--weights={r / "r50.safetensors"}', f'--out={tmp_path / "a"}')
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'imported a torchvision resnet state dict' in out.stdout
  assert_one_line_error(run(tool, f'--weights={r / "r50.safetensors"}',
                            f'--out={tmp_path / "a"}'), 'already exists')
  out = run(tool, f'--weights={r / "r50_wrapped.pth"}', f'--out={tmp_path / "b"}')
  assert out.returncode == 0, out.stderr[-3000:]
  assert "every key starts with 'module.'" in out.stderr


def test_wrapped_state_dicts_read_as_the_plain_one(resnet_files):
  from safetensors.numpy import load_file
  from fcos_jax.weights import torchvision_import
  plain = load_file(str(resnet_files / 'r50.safetensors'))  # the same weights, unwrapped
  read = torchvision_import.read_state_dict(str(resnet_files / 'r50_wrapped.pth'))
  assert set(read) == set(plain)
  for k, v in plain.items():
    np.testing.assert_array_equal(read[k], v)


@pytest.fixture(scope='module')
def export_dir(tmp_path_factory):
  import jax
  import jax.numpy as jnp
  from fcos_jax.serving import export
  from fcos_jax.data.categories import Categories
  from fcos_jax.models import fcos
  from tests import tiny_config
  config = tiny_config.get_config()
  model = fcos.create_model(config.model)
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 64, 96, 3)))
  out = str(tmp_path_factory.mktemp('export'))
  export.export_detector(config, model, variables, out,
                          Categories((1, 2, 3, 4, 5), ('a', 'b', 'c', 'd', 'e')))
  return out


def test_predict_skips_bad_images_and_keeps_same_names_apart(export_dir, tmp_path):
  for sub in ('x', 'y'):
    (tmp_path / sub).mkdir()
    Image.fromarray(np.full((40, 60, 3), 100 if sub == 'x' else 200, np.uint8)).save(
        tmp_path / sub / 'same.png')
  (tmp_path / 'bad.jpg').write_bytes(b'not an image')
  out = run('predict.py', f'--export={export_dir}', f'--out={tmp_path / "out"}',
            f'--image={tmp_path / "x" / "same.png"}', f'--image={tmp_path / "y" / "same.png"}',
            f'--image={tmp_path / "bad.jpg"}', '--draw_scale=1')
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'Traceback' not in out.stdout + out.stderr
  assert 'skipped' in out.stdout and 'bad.jpg' in out.stdout
  with open(tmp_path / 'out' / 'detections.json') as f:
    assert len(json.load(f)) == 2
  for sub, value in (('x', 100), ('y', 200)):
    with Image.open(tmp_path / 'out' / sub / 'same.png') as im:
      assert np.median(np.asarray(im)) == value  # each input has its own picture


def test_predict_draws_a_video(export_dir, tmp_path):
  """A video input: every frame detected (keyed path#frame) and drawn into an .mp4 of the same
  frame count and size; a corrupt video is skipped like a bad image."""
  import av
  from fcos_jax import video_io
  video = tmp_path / 'clip.mp4'
  writer = video_io.VideoWriter(str(video), 5)
  for i in range(7):
    writer.write(np.full((48, 64, 3), 30 * i, np.uint8))
  writer.close()
  (tmp_path / 'broken.mp4').write_bytes(b'no video here')
  out = run('predict.py', f'--export={export_dir}', f'--out={tmp_path / "out"}',
            f'--image={video}', f'--image={tmp_path / "broken.mp4"}', '--draw_scale=1',
            '--batch_size=4')
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'skipped' in out.stdout and 'broken.mp4' in out.stdout
  with open(tmp_path / 'out' / 'detections.json') as f:
    assert sorted(json.load(f)) == sorted(f'{video}#{i}' for i in range(7))
  with av.open(str(tmp_path / 'out' / 'clip.mp4')) as container:
    frames = [f.to_ndarray(format='rgb24') for f in container.decode(video=0)]
  assert len(frames) == 7 and frames[0].shape == (48, 64, 3)


def test_predict_export_mistakes(export_dir, tmp_path):
  image = tmp_path / 'a.png'
  Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(image)
  out = run('predict.py', f'--export={tmp_path / "none"}', f'--out={tmp_path / "o"}',
            f'--image={image}')
  assert_one_line_error(out, 'none', 'no such export')
  damaged = tmp_path / 'damaged'
  shutil.copytree(export_dir, damaged)
  name = next(n for n in os.listdir(damaged) if n.endswith('.jax_export'))
  data = (damaged / name).read_bytes()
  (damaged / name).write_bytes(data[:len(data) // 3])
  out = run('predict.py', f'--export={damaged}', f'--out={tmp_path / "o"}', f'--image={image}')
  assert_one_line_error(out, name, 'damaged')
  # metadata.json edited by hand or written by another version: named, with what to do.
  edited = tmp_path / 'edited'
  shutil.copytree(export_dir, edited)
  meta = json.loads((edited / 'metadata.json').read_text())
  for change, needles in (({'class_names': None}, ['metadata.json', 'missing class_names']),
                          ({'format': 'fcos_jax export v9'}, ["'fcos_jax export v9'",
                                                              'export the model again'])):
    bad = {k: v for k, v in dict(meta, **change).items() if v is not None}
    (edited / 'metadata.json').write_text(json.dumps(bad))
    out = run('predict.py', f'--export={edited}', f'--out={tmp_path / "o"}', f'--image={image}')
    assert_one_line_error(out, *needles)
  out = run('predict.py', f'--export={export_dir}', f'--out={tmp_path / "o"}', f'--image={image}',
            '--tta=flip')
  assert_one_line_error(out, '--tta with --export', 'export.py --tta')
  assert not (tmp_path / 'o').exists()


@pytest.mark.parametrize('program', ['evaluate.py', 'predict.py', 'export.py'])
def test_a_tta_that_cannot_work_is_one_line_before_loading(program, tmp_path):
  extra = []
  if program == 'predict.py':
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / 'a.png')
    extra = [f'--image={tmp_path / "a.png"}']
  out = run(program, f'--config={TINY}', f'--workdir={tmp_path / "none"}',
            f'--out={tmp_path / "o"}', '--tta=flip,scales=0.5:12', *extra)
  assert_one_line_error(out, "--tta 'flip,scales=0.5:12'", 'outside')
  assert not (tmp_path / 'o').exists() and not (tmp_path / 'none').exists()
  if program == 'evaluate.py':
    (tmp_path / 'results.json').write_text('[]')
    out = run(program, f'--config={TINY}', f'--detections={tmp_path / "results.json"}',
              '--tta=flip')
    assert_one_line_error(out, '--tta with --detections')
    assert sorted(os.listdir(tmp_path)) == ['results.json']


def test_verbose_shows_the_traceback(tmp_path):
  out = run('train.py', f'--config={TINY}', f'--workdir={tmp_path / "w"}',
            '--config.log_every=0', '--verbose')
  assert out.returncode != 0 and 'Traceback' in out.stderr and 'log_every' in out.stderr


@pytest.mark.slow  # 2 min: trains until the loss diverges
def test_diverging_run_names_the_logged_step_and_accurate_advice(tmp_path, shapes_tfds):
  out = run('train.py', f'--config={TINY}', f'--workdir={tmp_path / "w"}', *data_flags(shapes_tfds),
            '--config.optimizer.base_lr=1e12', '--config.num_train_steps=4',
            '--config.checkpoint_every=100', '--config.model.regression=exp',
            '--config.model.norm_reg_targets=False')
  line = assert_one_line_error(out, 'non-finite loss', 'no checkpoint had been written yet',
                               'gradient clipping at 10.0 is already on')
  assert 'step 0' not in line and 'step None' not in line
