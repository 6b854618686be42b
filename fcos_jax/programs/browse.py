r"""Look at a dataset as the model will see it (fcos browse, fcos-browse).

  fcos browse --config shapes --out browse/                   # validation grid + summary
  fcos browse --config coco --split train --class person --class dog --num 12 --out browse/
  fcos browse --workdir runs/my_data --train_batches 2 --positives --out browse/
  fcos browse --config custom_small --config.data.dataset=my_data \
      --config.model.num_classes=3 --image_id 17 --image_id 42 --out browse/

Writes into --out: `<split>_images.png` (the first --num images of the split passing the
filters, ground truth in class colours, crowd boxes white, a class key underneath),
`summary.png` (per split: boxes per class, box sides against COCO's small / medium / large
limits, aspect ratios) and with --train_batches N `train_batch_<k>.png`: batches exactly as the
train step receives them (resized, flipped, padded; the grey frame is the image inside its
padding), with --positives the assigner's positive locations as dots coloured by FPN level.
Open the PNGs before a long run: a wrong class or box convention shows at a glance.
"""

import os

from absl import flags
from ml_collections import config_flags

from fcos_jax.programs import cli

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, cli.config_help('The config whose data is shown', from_workdir=True),
    lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'A training workdir: its recorded config.')
_OUT = flags.DEFINE_string('out', None, 'Folder for the PNGs.', required=True)
_SPLIT = flags.DEFINE_string('split', None, 'Split of the image grid (default: '
                             'config.data.eval_split); the summary covers the train and eval '
                             'splits.')
_NUM = flags.DEFINE_integer('num', 16, 'Images in the grid.')
_CLASS = flags.DEFINE_multi_string('class', [], 'Only images holding a box of this class '
                                   '(repeatable).')
_IMAGE_ID = flags.DEFINE_multi_integer('image_id', [], 'Only these image ids (repeatable).')
_TRAIN_BATCHES = flags.DEFINE_integer('train_batches', 0, 'Also draw this many training '
                                      'batches as the train step receives them.')
_POSITIVES = flags.DEFINE_bool('positives', False, "With --train_batches: the assigner's "
                               'positive locations, coloured by FPN level.')
_COLUMNS = flags.DEFINE_integer('columns', 4, 'Pictures per row.')
_SUMMARY = flags.DEFINE_bool('summary', True, 'Write summary.png (reads every box of the '
                             'splits, not their pixels).')


def main(argv):
  from fcos_jax import errors
  from fcos_jax.analysis import dataset_browser as browser
  from fcos_jax.data import input_pipeline
  cli.no_arguments(argv)
  if not _CONFIG.value:
    raise errors.UserError('give --config (a shipped name or a file) or --workdir (a run)')
  config = cli.get_config(_CONFIG)
  d = config.data
  if d.synthetic:
    from fcos_jax.data import synthetic
    synthetic.prepare(config)
  names = input_pipeline.dataset_categories(d).names
  split = _SPLIT.value or d.eval_split
  os.makedirs(_OUT.value, exist_ok=True)
  written = []
  examples = []
  for ex in browser.split_examples(d, split, class_names=_CLASS.value,
                                   image_ids=_IMAGE_ID.value):
    examples.append(ex)
    if len(examples) == _NUM.value:
      break
  if not examples:
    raise errors.DataError(f'no image of split {split!r} passes the filters'
                           + (f' --class {_CLASS.value}' if _CLASS.value else '')
                           + (f' --image_id {_IMAGE_ID.value}' if _IMAGE_ID.value else ''))
  path = os.path.join(_OUT.value, f'{split}_images.png')
  browser.split_grid(examples, names, _COLUMNS.value).save(path)
  written.append(f'{path} ({len(examples)} images)')
  if _TRAIN_BATCHES.value:
    dataset = input_pipeline.create_train_dataset(d, max(1, min(config.batch_size, 16)),
                                                  seed=config.seed)
    positives_of = browser.make_positives_fn(config) if _POSITIVES.value else None
    for k, batch in zip(range(_TRAIN_BATCHES.value), dataset.as_numpy_iterator()):
      positives = positives_of(batch) if positives_of else None
      path = os.path.join(_OUT.value, f'train_batch_{k}.png')
      browser.batch_grid(batch, names, positives, _COLUMNS.value).save(path)
      written.append(path)
  if _SUMMARY.value:
    summaries = {s: browser.summarize(browser.split_examples(d, s, decode=False), len(names))
                 for s in dict.fromkeys((d.train_split, d.eval_split, split))}
    path = os.path.join(_OUT.value, 'summary.png')
    browser.plot_summaries(summaries, names, path)
    written.append(path + ' (' + '; '.join(
        f'{s}: {v["images"]} images, {int(v["per_class"].sum())} boxes'
        for s, v in summaries.items()) + ')')
  print('wrote ' + '\n      '.join(written))


def run():
  cli.run(main, workdir_config=True)


if __name__ == '__main__':
  run()
