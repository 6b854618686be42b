"""The ground-truth-centerness oracle: probabilities enter the postprocess as they are, and on a
trained synthetic model the oracle never scores below the model's own centerness."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcos_jax import evaluation, postprocess, sharding, train_step
from fcos_jax.analysis import oracle_centerness
from fcos_jax.data import input_pipeline
from tests import tiny_config

STRIDES = (8, 16, 32, 64, 128)
STEPS = 120


def test_centerness_probabilities_equal_their_logits():
  rng = np.random.default_rng(0)
  n = sum(math.ceil(64 / s) * math.ceil(96 / s) for s in STRIDES)
  cls_logits = rng.normal(-2, 1.5, (1, n, 3)).astype(np.float32)
  reg = rng.uniform(1, 20, (1, n, 4)).astype(np.float32)
  p = rng.uniform(0.05, 0.95, (1, n)).astype(np.float64)
  kw = dict(image_size=(64, 96), strides=STRIDES, max_detections=20, sqrt_score=False)
  from_probs = postprocess.postprocess(cls_logits, reg, p.astype(np.float32),
                                       centerness_from_logits=False, **kw)
  from_logits = postprocess.postprocess(cls_logits, reg, np.log(p / (1 - p)).astype(np.float32),
                                        **kw)
  assert int(from_probs.num_valid[0]) == 20
  np.testing.assert_allclose(from_probs.scores, from_logits.scores, rtol=1e-5)
  np.testing.assert_allclose(from_probs.boxes, from_logits.boxes, rtol=1e-5)
  # A centerness of 1 leaves the class probability: score == class_probs == sigmoid(logit).
  ones = postprocess.postprocess(cls_logits, reg, np.ones((1, n), np.float32),
                                 centerness_from_logits=False, **kw)
  np.testing.assert_allclose(ones.class_probs, ones.scores, rtol=1e-6)
  best = 1 / (1 + np.exp(-cls_logits.max()))
  assert float(ones.class_probs[0, 0]) == pytest.approx(best, rel=1e-5)


@pytest.fixture(scope='module')
def trained(shapes_tfds):
  """A tiny model fitted for a few seconds to the 11 synthetic validation images (quick to learn
  well enough for a clear AP): (config, model, variables)."""
  c = tiny_config.get_config()
  c.data.update(dataset=shapes_tfds[0], data_dir=shapes_tfds[1], synthetic=False,
                min_sizes=(96,), max_size=128, eval_min_size=96, max_boxes=10,
                train_split='validation', random_flip=False)
  c.batch_size = 8
  c.optimizer.update(base_lr=4e-3, warmup_steps=5, decay_steps=(100,))
  mesh = sharding.make_mesh(jax.devices()[:1])
  model, tx, state = train_step.build_training(c, mesh)
  step = train_step.make_train_step(c, model, tx, mesh)
  ds = input_pipeline.create_train_dataset(c.data, c.batch_size, seed=0, bucket_weights=[1, 0])
  for _, batch in zip(range(STEPS), ds.as_numpy_iterator()):
    state, _ = step(state, {k: jnp.asarray(v) for k, v in train_step.train_batch(batch).items()})
  return c, model, {'params': state.params, 'batch_stats': state.batch_stats}


def test_oracle_centerness_scores_at_least_the_model(trained):
  config, model, variables = trained
  normal = evaluation.evaluate(config, model, variables, tag='normal')
  oracle = oracle_centerness.evaluate(config, model, variables, tag='oracle')
  assert normal['num_images'] == oracle['num_images'] == 11
  assert normal['AP50'] > 0.02, 'the model should have learned something'
  assert oracle['AP'] >= normal['AP'] and oracle['AP50'] >= normal['AP50']


def test_evaluate_program_with_oracle_and_analysis(trained, shapes_tfds, tmp_path):
  """evaluate.py --oracle_centerness --analysis on the trained model's params: both evaluations,
  the analysis table and its pictures."""
  import os
  import subprocess
  import sys
  from fcos_jax.weights import torchvision_import
  config, _, variables = trained
  params = str(tmp_path / 'params')
  torchvision_import.save(jax.device_get(variables), params)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = dict(os.environ, PYTHONPATH=root, TF_CPP_MIN_LOG_LEVEL='3')
  d = config.data
  out = subprocess.run(
      [sys.executable, os.path.join(root, 'evaluate.py'), f'--config={root}/tests/tiny_config.py',
       f'--params={params}', f'--config.data.dataset={d.dataset}',
       f'--config.data.data_dir={d.data_dir}', '--config.data.synthetic=False',
       '--config.data.min_sizes=(96,)', '--config.data.max_size=128',
       '--config.data.eval_min_size=96', '--config.data.max_boxes=10', '--oracle_centerness',
       f'--analysis={tmp_path / "analysis"}', f'--out={tmp_path}'],
      capture_output=True, text=True, env=env, cwd=root, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'with the ground-truth centerness (oracle):' in out.stdout
  assert 'Pearson r' in out.stdout and 'background' in out.stdout
  assert (tmp_path / 'offline_eval_0_oracle_centerness_metrics.json').exists()
  for name in ('score_vs_iou.png', 'pr_curves.png', 'confusion_matrix.png', 'analysis.json'):
    assert (tmp_path / 'analysis' / name).exists(), name
