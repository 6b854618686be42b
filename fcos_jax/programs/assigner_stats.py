"""Best possible recall and ambiguous samples of a config's assigner on a dataset split.

  fcos-assigner-stats --config configs/coco.py [--split validation]
      [--out DIR]

Prints the BPR of FCOS's and ATSS's assignment (overall, by COCO size, by FPN level) next to a
RetinaNet anchor assigner's (9 anchors, IoU >= 0.5, with and without low-quality matches) and
the share of ambiguous locations of the config's assigner; writes DIR/assigner_stats.json and
DIR/assigner_bpr.png (default DIR: the current folder).
"""

import os

from absl import flags
from ml_collections import config_flags

from fcos_jax.programs import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, cli.config_help(),
                                          lock_config=True)
_SPLIT = flags.DEFINE_string('split', None, 'TFDS split (default: config.data.eval_split).')
_OUT = flags.DEFINE_string('out', '.', 'Folder for assigner_stats.json and assigner_bpr.png.')
_BATCH = flags.DEFINE_integer('batch_size', None, 'Images per batch (default: '
                              'config.eval_batch_size).')
flags.mark_flag_as_required('config')


def main(argv):
  cli.no_arguments(argv)
  import json
  from fcos_jax.analysis import recall
  from fcos_jax.data import synthetic
  config = cli.get_config(_CONFIG)
  synthetic.prepare(config)
  collected = recall.collect(config, split=_SPLIT.value, batch_size=_BATCH.value, progress=True)
  summary = recall.summarize(collected, len(config.model.strides))
  print(recall.format_summary(summary))
  os.makedirs(_OUT.value, exist_ok=True)
  with open(os.path.join(_OUT.value, 'assigner_stats.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  png = os.path.join(_OUT.value, 'assigner_bpr.png')
  recall.plot_summary(summary, png)
  print(f'wrote {png} and assigner_stats.json')


def run():
  cli.run(main)


if __name__ == '__main__':
  run()
