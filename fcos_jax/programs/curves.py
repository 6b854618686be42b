"""Draw a run's curves (losses, learning rate, AP / AP50 / AR100 over the steps) from its
workdir, as training redraws them at each evaluation.

  python -m fcos_jax.programs.curves --workdir DIR [--out curves.png]
"""

from absl import flags

from fcos_jax.programs import cli

_WORKDIR = flags.DEFINE_string('workdir', None, 'A training workdir (with metrics.csv).',
                               required=True)
_OUT = flags.DEFINE_string('out', None, 'PNG to write (default: WORKDIR/curves.png).')


def main(argv):
  import os
  from fcos_jax import errors, trackers
  from fcos_jax.analysis import curves
  cli.no_arguments(argv)
  rows = trackers.read_rows(_WORKDIR.value)
  if not rows:
    raise errors.UserError(f'{os.path.join(_WORKDIR.value, trackers.CSV_FILE)}: no metrics '
                           '(not a training workdir, or nothing logged yet)')
  out = _OUT.value or os.path.join(_WORKDIR.value, curves.CURVES_FILE)
  curves.plot_curves(rows, out, title=os.path.basename(os.path.abspath(_WORKDIR.value)))
  print(f'drew {len(rows)} logged steps of {_WORKDIR.value} to {out}')


def run():
  cli.run(main)


if __name__ == '__main__':
  run()
