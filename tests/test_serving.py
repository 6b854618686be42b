"""Export round trip (jax.export artifact == in-process model) and predict.py's pictures."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from fcos_jax import errors, inference, serving
from fcos_jax.serving import export
from fcos_jax.models import fcos
from tests import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  config, model, variables, cats = tiny_config.random_detector()
  out = str(tmp_path_factory.mktemp('export'))
  meta = export.export_detector(config, model, variables, out, cats)
  return config, model, variables, out, meta


def test_export_matches_the_in_process_model_on_fresh_input(exported):
  config, model, variables, out, meta = exported
  assert {(m['height'], m['width']) for m in meta['models']} == {(64, 96), (96, 64)}
  assert meta['class_names'][3] == 'cross' and meta['category_ids'][3] == 7
  detector = serving.Detector(out)
  predict = jax.jit(inference.make_predict_fn(config, model))
  rng = np.random.default_rng(123)
  for batch, shape in ((3, (64, 96)), (1, (96, 64))):  # the batch dimension is symbolic
    images = rng.integers(0, 256, (batch,) + shape + (3,), dtype=np.uint8)
    sizes = np.array([[shape[0] - 5 * i, shape[1] - 3 * i] for i in range(batch)], np.int32)
    got = detector(images, sizes)
    want = jax.device_get(predict(variables, images, sizes)._asdict())
    assert got['boxes'].shape == (batch, 100, 4)
    assert (got['num_valid'] > 0).all()
    np.testing.assert_array_equal(got['num_valid'], want['num_valid'])
    np.testing.assert_array_equal(got['classes'], want['classes'])
    np.testing.assert_allclose(got['scores'], want['scores'], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got['boxes'], want['boxes'], rtol=1e-5, atol=1e-3)
    if batch == 3:  # a smaller batch after it runs the same program, padded
      part = detector(images[1:], sizes[1:], batch_size=3)
      assert detector.models[shape]._fn._cache_size() == 1
      for k in ('num_valid', 'classes', 'scores', 'boxes'):
        np.testing.assert_allclose(part[k], want[k][1:], rtol=1e-5, atol=1e-3)
  with pytest.raises(ValueError, match='not one of the exported shapes'):
    detector(np.zeros((1, 32, 32, 3), np.uint8), np.array([[32, 32]], np.int32))


def test_artifact_has_no_optimizer_state_and_a_reported_size(exported):
  _, _, variables, out, _ = exported
  with np.load(os.path.join(out, 'params.npz')) as z:
    n = sum(z[k].size for k in z.files)
  assert n == sum(x.size for x in jax.tree_util.tree_leaves(variables))
  assert set(os.listdir(out)) == {'params.npz', 'metadata.json', 'detector_64x96.jax_export',
                                  'detector_96x64.jax_export'}


def test_detect_maps_to_original_pixels(exported):
  _, _, _, out, _ = exported
  detector = serving.Detector(out)
  image = np.random.default_rng(0).integers(0, 256, (50, 80, 3), dtype=np.uint8)
  dets = detector.detect(image)
  assert dets and all(set(d) == {'bbox', 'score', 'label', 'class_name', 'category_id'}
                      for d in dets)
  boxes = np.array([d['bbox'] for d in dets])
  # The 50x80 image is resized to 60x96 (the longer side caps the scale at 96 / 80); boxes come
  # back clipped to the original 80x50 frame.
  assert boxes[:, [0, 2]].max() <= 80 + 1e-3 and boxes[:, [1, 3]].max() <= 50 + 1e-3
  scores = [d['score'] for d in dets]
  assert scores == sorted(scores, reverse=True)
  for empty in ((0, 0, 3), (0, 40, 3), (30, 0, 3)):  # refused by name, not a NaN conversion
    with pytest.raises(errors.DataError, match='empty image'):
      detector.detect(np.zeros(empty, np.uint8))


def test_predict_writes_pictures_and_json(exported, tmp_path):
  _, _, _, out, _ = exported
  image_path = tmp_path / 'in.png'
  Image.fromarray(np.full((48, 72, 3), 128, np.uint8)).save(image_path)
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'predict.py'), f'--export={out}',
       f'--image={image_path}', f'--out={tmp_path / "pred"}', '--min_score=0',
       '--draw_scale=1'],
      capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  with Image.open(tmp_path / 'pred' / 'in.png') as im:
    drawn = np.asarray(im.convert('RGB'))
  assert drawn.shape == (48, 72, 3)
  assert (np.abs(drawn.astype(int) - 128).sum(-1) > 60).any()  # coloured boxes were drawn
  with open(tmp_path / 'pred' / 'detections.json') as f:
    dets = json.load(f)[str(image_path)]
  assert dets and all(0 <= d['bbox'][0] <= d['bbox'][2] <= 72 for d in dets)


def test_predict_a_folder_with_a_params_checkpoint_and_score_its_results(shapes_coco,
                                                                          shapes_tfds, tmp_path):
  """predict.py on a COCO image folder with an in-process model: batched detections equal
  one-by-one ones, and results.json (image ids from the annotations) is scored by evaluate.py."""
  import orbax.checkpoint as ocp
  config = tiny_config.get_config()
  model = fcos.create_model(config.model)
  variables = jax.jit(model.init)(jax.random.key(2), jnp.zeros((1, 64, 96, 3)))
  params = str(tmp_path / 'params')
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(params, jax.device_get(variables))
  ann = f'{shapes_coco}/annotations/validation.json'
  env = dict(os.environ, PYTHONPATH=ROOT)
  common = [f'--config={ROOT}/tests/tiny_config.py', '--config.postprocess.score_threshold=0',
            f'--config.data.dataset={shapes_tfds[0]}', f'--config.data.data_dir={shapes_tfds[1]}',
            '--config.data.synthetic=False']
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'predict.py'), *common, f'--params={params}',
       f'--image={shapes_coco}/images/validation', f'--out={tmp_path / "pred"}',
       f'--annotations={ann}', '--batch_size=4', '--draw_scale=1', '--min_score=0'],
      capture_output=True, text=True, env=env, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(ann) as f:
    coco = json.load(f)
  with open(tmp_path / 'pred' / 'results.json') as f:
    results = json.load(f)
  assert {r['image_id'] for r in results} == {im['id'] for im in coco['images']}
  assert len(os.listdir(tmp_path / 'pred')) == len(coco['images']) + 2
  # Batched equals one at a time, through the same Detector interface.
  from fcos_jax.data.categories import Categories
  config.postprocess.score_threshold = 0.0
  detector = serving.Detector.from_model(config, model, variables,
                                         Categories((1, 2, 3, 4, 5), tuple('abcde')))
  from PIL import Image as PILImage
  images = [np.asarray(PILImage.open(f'{shapes_coco}/images/validation/{im["file_name"]}')
                       .convert('RGB')) for im in coco['images'][:5]]
  many = detector.detect_many(images, batch_size=4)
  for image, dets in zip(images, many):
    one = detector.detect(image)
    assert len(one) == len(dets) > 0
    np.testing.assert_allclose([d['bbox'] for d in one], [d['bbox'] for d in dets], atol=1e-3)
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'evaluate.py'), *common,
       f'--detections={tmp_path / "pred" / "results.json"}', f'--annotations={ann}'],
      capture_output=True, text=True, env=env, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'AP ' in result.stdout


def test_export_of_a_coco_detector_needs_no_coco_download(tmp_path):
  """export.py with a COCO config whose dataset is not prepared here names the classes from the
  built-in COCO list."""
  import orbax.checkpoint as ocp
  config = tiny_config.get_config()
  config.model.num_classes = 80
  model = fcos.create_model(config.model)
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 64, 96, 3)))
  params = str(tmp_path / 'params')
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(params, jax.device_get(variables))
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'export.py'), f'--config={ROOT}/tests/tiny_config.py',
       '--config.model.num_classes=80', '--config.data.dataset=coco/2017',
       f'--config.data.data_dir={tmp_path / "no_data"}', '--config.data.synthetic=False',
       f'--params={params}', f'--out={tmp_path / "export"}'],
      capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp_path / 'export' / 'metadata.json') as f:
    meta = json.load(f)
  assert meta['class_names'][:3] == ['person', 'bicycle', 'car']
  assert meta['category_ids'][-1] == 90
