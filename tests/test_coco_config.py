"""configs/coco.py end to end through train.py and export.py, on TFDS's own `coco/2017` builder
(prepared from generated images by `fcos_jax.data.mock_coco`) with tiny sizes and widths."""

import json
import os

import pytest

from fcos_jax.data import categories, mock_coco
from tests.test_user_errors import ROOT, assert_one_line_error, run

TINY = ('--config.data.min_sizes=(96,)', '--config.data.max_size=160',
        '--config.data.eval_min_size=96', '--config.data.shuffle_buffer=16',
        '--config.model.backbone_width=8', '--config.model.fpn_channels=16',
        '--config.model.head_num_convs=1', '--config.model.gn_groups=4',
        '--config.model.dtype=float32', '--config.batch_size=2', '--config.eval_batch_size=2',
        '--config.postprocess.score_threshold=0.0',  # 4 steps from scratch score below 0.05
        '--config.num_train_steps=4', '--config.log_every=2',
        '--config.optimizer.scale_schedule_with_batch=False', '--config.optimizer.warmup_steps=1')


@pytest.fixture(scope='module')
def coco_dir(tmp_path_factory):
  data_dir = str(tmp_path_factory.mktemp('coco_data'))
  mock_coco.prepare(data_dir, {'train': 16, 'validation': 6, 'test': 2}, image_size=(120, 160))
  return data_dir


def test_the_prepared_dataset_is_the_registered_builders(coco_dir):
  import tensorflow_datasets as tfds
  builder = tfds.builder('coco/2017', data_dir=coco_dir)
  assert type(builder).__module__.startswith('tensorflow_datasets.')  # the catalog's class
  assert {k: v.num_examples for k, v in builder.info.splits.items()} == {
      'train': 16, 'validation': 6, 'test': 2}
  assert tuple(builder.info.features['objects']['label'].names) == categories.COCO_CATEGORY_NAMES
  with pytest.raises(FileExistsError):
    mock_coco.prepare(coco_dir, {'train': 1})


def test_coco_config_trains_evaluates_and_exports(coco_dir, tmp_path):
  """The frozen-BN guard first (no pretrained weights: one line); then 4 steps from scratch in
  both aspect buckets, the evaluation scored against the builder's own ground truth, and an
  export whose metadata carries COCO's 80 category ids."""
  workdir = str(tmp_path / 'w')
  common = ('train.py', f'--config={ROOT}/configs/coco.py', f'--workdir={workdir}',
            f'--config.data.data_dir={coco_dir}', *TINY)
  assert_one_line_error(run(*common), 'frozen-BN', 'init_checkpoint')
  assert not os.path.exists(workdir)
  out = run(*common, '--config.train_from_scratch=True', '--alsologtostderr')
  assert out.returncode == 0, out.stderr[-4000:]
  for shape in ('(96, 160)', '(160, 96)'):
    assert f'compiled the train step for image shape {shape}' in out.stderr
  with open(os.path.join(workdir, 'eval_4_metrics.json')) as f:
    metrics = json.load(f)
  assert metrics['num_images'] == 6 and 0.0 <= metrics['AP'] <= 1.0
  with open(os.path.join(workdir, 'eval_4_detections.json')) as f:
    dets = json.load(f)
  assert dets and {d['category_id'] for d in dets} <= set(categories.COCO_CATEGORY_IDS)
  assert {d['image_id'] for d in dets} <= set(range(1, 7))
  export = str(tmp_path / 'export')
  out = run('export.py', f'--config={ROOT}/configs/coco.py', f'--workdir={workdir}',
            f'--out={export}', f'--config.data.data_dir={coco_dir}', *TINY)
  assert out.returncode == 0, out.stderr[-4000:]
  with open(os.path.join(export, 'metadata.json')) as f:
    meta = json.load(f)
  assert tuple(meta['category_ids']) == categories.COCO_CATEGORY_IDS
  assert meta['class_names'][0] == 'person'
