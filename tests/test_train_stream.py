"""The index-sampled training stream (data/train_stream.py) on the synthetic set stored as
ArrayRecord: its batches checked against the COCO files, epochs as permutations, process shards,
and a resume from its few-integer position giving exactly the uninterrupted batches."""

import collections
import json
import logging
import shutil

import numpy as np
import pytest

from fcos_jax import errors
from fcos_jax.data import input_pipeline as ip
from fcos_jax.data import train_stream
from fcos_jax.weights import checkpoints
from tests.test_input_pipeline import check_resize_and_flip, data_config, load_coco, take


def stream(dataset, batch_size, seed=0, process_index=0, process_count=1, **overrides):
  return train_stream.open_train_stream(data_config(*dataset, **overrides), batch_size,
                                        seed=seed, process_index=process_index,
                                        process_count=process_count)


def numpy(batches):
  return [{k: np.asarray(v) for k, v in b.items()} for b in batches]


def pull(it, n):
  return numpy([next(it) for _ in range(n)])


def test_auto_picks_the_index_sampler_for_array_record_only(shapes_array_record, shapes_tfds):
  indexed = stream(shapes_array_record, 4)
  assert isinstance(indexed, train_stream.IndexedBatches)
  indexed.close()
  assert not isinstance(stream(shapes_tfds, 4), train_stream.IndexedBatches)


def test_batches_follow_the_coco_files(shapes_array_record, shapes_coco):
  it = stream(shapes_array_record, 4, seed=1)
  batches = pull(it, 6)
  it.close()
  check_resize_and_flip(batches, shapes_coco)
  for b in batches:  # one bucket per batch, each image in its own orientation's bucket
    h, w = b['image'].shape[1:3]
    assert ((b['image_size'][:, 1] >= b['image_size'][:, 0]) == (w >= h)).all()


def test_each_epoch_is_a_new_permutation_of_the_split(shapes_array_record, shapes_coco):
  images, _ = load_coco(shapes_coco, 'train')
  n = len(images)
  assert n % 4 == 0
  it = stream(shapes_array_record, 4, aspect_buckets=False, keep_empty_images=True)
  epochs = [[int(i) for b in pull(it, n // 4) for i in b['image_id']] for _ in range(2)]
  it.close()
  for ids in epochs:
    assert sorted(ids) == sorted(images)  # every image once per epoch
  assert epochs[0] != epochs[1]


def test_resume_from_the_position_gives_the_uninterrupted_batches(shapes_array_record):
  it = stream(shapes_array_record, 3, seed=4)
  pull(it, 5)
  position = json.loads(json.dumps(it.position()))  # as written in a checkpoint
  assert len(json.dumps(position)) < 1000
  want = pull(it, 12)  # across an epoch boundary of each bucket's stream
  it.close()
  resumed = stream(shapes_array_record, 3, seed=4)
  resumed.seek(position)
  got = pull(resumed, 12)
  resumed.close()
  for x, y in zip(want, got):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  other = stream(shapes_array_record, 3, seed=5)
  assert any(not np.array_equal(x['image_id'], y['image_id'])
             for x, y in zip(want, pull(other, 12)))
  other.close()


def test_a_position_of_another_stream_is_refused(shapes_array_record):
  it = stream(shapes_array_record, 3, seed=4)
  position = it.position()
  other = stream(shapes_array_record, 2, seed=4)
  with pytest.raises(ValueError, match='batch_size 3 -> 2'):
    other.seek(position)
  it.close()
  other.close()


def test_two_processes_read_disjoint_shards_in_step(shapes_array_record, shapes_coco):
  images, anns = load_coco(shapes_coco, 'train')
  with_boxes = {i for i in images if anns[i]}
  ids, shapes = [], []
  for p in range(2):
    it = stream(shapes_array_record, 2, seed=5, process_index=p, process_count=2)
    batches = pull(it, 30)
    it.close()
    ids.append({int(i) for b in batches for i in b['image_id']})
    shapes.append([b['image'].shape for b in batches])
  assert not ids[0] & ids[1]
  assert ids[0] | ids[1] == with_boxes
  assert shapes[0] == shapes[1]  # the same bucket at the same step on every process
  assert len(set(shapes[0])) == 2


def test_the_checkpointer_writes_and_restores_the_position(shapes_array_record, tmp_path):
  ckpt = checkpoints.Checkpointer(str(tmp_path))
  it = stream(shapes_array_record, 3, seed=2)
  pull(it, 4)
  state = {'step': np.int32(4), 'w': np.arange(3.0)}
  ckpt.save(4, state, it)
  ckpt.wait()
  files = list((tmp_path / 'data_state' / 'process_0' / 'step_4').iterdir())
  assert [f.name for f in files] == [checkpoints.POSITION_FILE]
  assert files[0].stat().st_size < 1000
  want = pull(it, 3)
  it.close()
  resumed = stream(shapes_array_record, 3, seed=2)
  restored = ckpt.restore_latest(state, resumed)
  ckpt.close()
  assert int(restored['step']) == 4
  for x, y in zip(want, pull(resumed, 3)):
    np.testing.assert_array_equal(x['image'], y['image'])
  resumed.close()


def test_a_lost_position_restarts_the_stream_with_a_warning(shapes_array_record, tmp_path,
                                                            caplog):
  ckpt = checkpoints.Checkpointer(str(tmp_path))
  it = stream(shapes_array_record, 3, seed=2)
  first = pull(it, 1)
  ckpt.save(1, {'w': np.arange(3.0)}, it)
  ckpt.wait()
  (tmp_path / 'data_state' / 'process_0' / 'step_1' / checkpoints.POSITION_FILE).unlink()
  it.close()
  resumed = stream(shapes_array_record, 3, seed=2)
  with caplog.at_level(logging.WARNING):
    assert ckpt.restore_latest({'w': np.arange(3.0)}, resumed) is not None
  ckpt.close()
  assert 'data stream restarts from its beginning' in caplog.text
  np.testing.assert_array_equal(pull(resumed, 1)[0]['image'], first[0]['image'])
  resumed.close()


def test_evaluation_reads_array_record_as_it_reads_tfrecord(shapes_array_record, shapes_tfds):
  for padding in ('bucket', 'per_image'):
    got, want = (take(ip.create_eval_dataset(data_config(*d, eval_padding=padding), 4), 100)
                 for d in (shapes_array_record, shapes_tfds))
    assert len(got) == len(want) > 0
    for x, y in zip(got, want):
      for k in x:
        np.testing.assert_array_equal(x[k], y[k])


@pytest.mark.parametrize('sampler,dataset,message', [
    ('index', 'shapes_tfds', "sampler='index' reads records by index, but shapes in .* is "
                             'stored as .*tfrecord.*--file_format array_record'),
    ('buffer', 'shapes_array_record', "sampler='buffer' checkpoints tf.data's iterator state"),
])
def test_a_sampler_the_records_do_not_allow_is_one_line(sampler, dataset, message, request):
  with pytest.raises(errors.ConfigError, match=message):
    stream(request.getfixturevalue(dataset), 2, sampler=sampler)


def test_bucket_draws_follow_the_bucket_fractions(shapes_array_record, shapes_coco):
  images, _ = load_coco(shapes_coco, 'train')
  landscape = np.mean([im['width'] >= im['height'] for im in images.values()])  # from the JSON
  it = stream(shapes_array_record, 1, seed=3)
  counts = collections.Counter(tuple(b['image'].shape[1:3]) for b in pull(it, 200))
  it.close()
  assert abs(counts[(96, 128)] / 200 - landscape) < 0.12, (counts, landscape)


def test_train_py_resumes_the_index_stream_bit_equal(shapes_array_record, tmp_path):
  """train.py on ArrayRecord, resumed from its step-8 checkpoint (the data position restored
  from its few integers), ends with the parameters of the uninterrupted 12-step run."""
  from tests.test_trainer import checksum, run
  _, data_dir = shapes_array_record
  data = ('--config.data.synthetic=False', '--config.data.dataset=shapes')
  whole = tmp_path / 'whole'
  out = run(str(whole), data_dir, *data)
  assert 'training data: index sampler' in out.stderr
  position = whole / 'data_state' / 'process_0' / 'step_8' / checkpoints.POSITION_FILE
  assert json.loads(position.read_text())['step'] == 8
  part = tmp_path / 'part'
  shutil.copytree(whole, part)
  shutil.rmtree(part / 'checkpoints' / '12')
  shutil.rmtree(part / 'data_state' / 'process_0' / 'step_12')
  resumed = run(str(part), data_dir, *data)
  assert 'resuming at step 8' in resumed.stderr
  assert checksum(resumed.stderr) == checksum(out.stderr)


def test_ground_truth_and_browser_read_array_record_as_tfrecord(shapes_array_record,
                                                                shapes_tfds):
  from fcos_jax.analysis import dataset_browser
  from fcos_jax.evaluation import coco_data
  gts, examples = [], []
  for dataset in (shapes_array_record, shapes_tfds):
    builder = ip.get_builder(data_config(*dataset))
    gts.append(coco_data.ground_truth_from_tfds(builder, 'validation',
                                                ip.dataset_categories(data_config(*dataset))))
    examples.append(list(dataset_browser.split_examples(data_config(*dataset), 'train')))
  assert gts[0] == gts[1] and len(gts[0]['annotations']) > 0
  assert len(examples[0]) == len(examples[1]) == 24
  for x, y in zip(*examples):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
