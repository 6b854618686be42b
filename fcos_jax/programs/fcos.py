"""fcos: every program under one command, as `yolo` and detectron2's tools are used.

  fcos train --config shapes --workdir runs/shapes        # the demo
  fcos evaluate --workdir runs/shapes                     # the run's own config
  fcos predict --workdir runs/shapes --image photos/ --out preds
  fcos config show shapes                                 # a shipped config, or a run's
  fcos SUBCOMMAND --help                                  # its flags

`fcos X ...` is `fcos-X ...` (and `python X.py ...` in a checkout): the same program and flags.
"""

import importlib
import os
import sys

from fcos_jax.programs import cli

# Subcommand -> (module in fcos_jax.programs, what it does).
SUBCOMMANDS = {
    'train': ('train', 'train (or resume) a run in --workdir'),
    'evaluate': ('evaluate', 'COCO metrics of a run, a params checkpoint or a results file'),
    'predict': ('predict', 'detect on images, folders and videos'),
    'batch-predict': ('batch_predict', 'detect on many images with Apache Beam'),
    'export': ('export', 'StableHLO, ONNX or SavedModel for serving'),
    'convert': ('convert_coco', 'a COCO, YOLO or Pascal VOC dataset to TFDS'),
    'import': ('import_torchvision', 'torchvision weights to a params checkpoint'),
    'stats': ('assigner_stats', "best possible recall of a config's assigner on a split"),
    'browse': ('browse', 'PNG grids of a split, training batches and a dataset summary'),
    'curves': ('curves', "plot a run's training curves"),
    'shapes': ('synthetic_shapes', 'write the synthetic shapes dataset'),
    'config': (None, 'config list | config show NAME|FILE|WORKDIR: print a config'),
}


def usage() -> str:
  width = max(map(len, SUBCOMMANDS))
  rows = '\n'.join(f'  {name:<{width}}  {about}' for name, (_, about) in SUBCOMMANDS.items())
  return f'{__doc__.strip()}\n\nsubcommands:\n{rows}'


def load_config(what: str):
  """A shipped config by name, a config file, or a training workdir's recorded config."""
  from fcos_jax import errors
  from fcos_jax.weights import run_config
  if os.path.isdir(what):
    return run_config.recorded_config(what)
  path = cli.packaged_config(what)
  if not os.path.isfile(path):
    raise errors.ConfigError(f'no config {what!r}: a shipped name '
                             f'({", ".join(cli.shipped_configs())}), a .py file or a workdir')
  spec = importlib.util.spec_from_file_location('shown_config', path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
    return module.get_config()
  except Exception as e:  # noqa: BLE001 - the user's file: name it, one line
    raise errors.ConfigError(f'cannot load {path}: {type(e).__name__}: {e}') from None


def config_command(args) -> None:
  from fcos_jax import errors
  if args[:1] == ['list']:
    print('\n'.join(cli.shipped_configs()))
  elif args[:1] == ['show'] and len(args) == 2:
    print(load_config(args[1]), end='')
  else:
    raise errors.UserError('usage: fcos config list | fcos config show NAME|FILE|WORKDIR')


def main(argv=None) -> None:
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in cli.HELP_ARGS:
    print(usage())
    sys.exit(0)
  if argv[1] == '--version':
    print(f'fcos (fcos_jax) {cli.version()}')
    sys.exit(0)
  name, rest = argv[1], argv[2:]
  if name not in SUBCOMMANDS:
    import difflib
    close = difflib.get_close_matches(name, SUBCOMMANDS, n=1)
    cli.fail(f'unknown subcommand {name!r}' + (f' (did you mean {close[0]!r}?)' if close else '')
             + '; fcos --help lists them')
  module = SUBCOMMANDS[name][0]
  if module is None:
    from fcos_jax import errors
    try:
      config_command(rest)
    except errors.UserError as e:
      cli.fail(str(e))
    return
  sys.argv = [f'fcos {name}'] + rest
  importlib.import_module(f'fcos_jax.programs.{module}').run()


if __name__ == '__main__':
  main()
