"""Write the synthetic shapes dataset in COCO format (images + annotations/{split}.json).

  python -m fcos_jax.programs.synthetic_shapes --out DIR [--train 400] [--val 100] [--seed 0]
      [--height 160] [--width 160]

The demo config (`--config shapes`) generates and converts it by itself; this writes the raw
COCO-format files only, e.g. to try `fcos-convert-coco` on them.
"""

from absl import flags

from fcos_jax.programs import cli

_OUT = flags.DEFINE_string('out', None, 'Folder to write.', required=True)
_TRAIN = flags.DEFINE_integer('train', 400, 'Training images.', lower_bound=0)
_VAL = flags.DEFINE_integer('val', 100, 'Validation images.', lower_bound=0)
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed (the same seed writes the same images).')
_HEIGHT = flags.DEFINE_integer('height', 160, 'Image height.', lower_bound=16)
_WIDTH = flags.DEFINE_integer('width', 160, 'Image width.', lower_bound=16)


def main(argv):
  from fcos_jax.data import synthetic
  cli.no_arguments(argv)
  synthetic.generate(_OUT.value, {'train': _TRAIN.value, 'validation': _VAL.value}, _SEED.value,
                     image_size=(_HEIGHT.value, _WIDTH.value))
  print(f'wrote {_TRAIN.value} train and {_VAL.value} validation images to {_OUT.value}')


def run():
  cli.run(main)


if __name__ == '__main__':
  run()
