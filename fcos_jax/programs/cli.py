"""The programs' shared preamble: the one-line error rule, `--help`, quiet library logs, and
the flag groups several programs take.

Each program defines the groups it needs at import time (absl flags are process-global), calls
the matching functions from its `main`, and starts with `cli.run(main)`: a user mistake (a
`UserError`, a bad flag or config override) ends as one line `error: ...` on stderr and exit
code 1; `--verbose` (or FCOS_JAX_VERBOSE=1) shows the traceback instead. `--help` / `-h` print
the program's usage and flags and exit 0 (`--helpfull` adds absl's own).
"""

import os
import re
import sys
from typing import Callable, NoReturn

from absl import app, flags

from fcos_jax import errors

FLAGS = flags.FLAGS
flags.DEFINE_bool('verbose', False,
                  'Show the full traceback of an error and the libraries\' INFO logs (also: '
                  'FCOS_JAX_VERBOSE=1).')


def _verbose() -> bool:
  return os.environ.get('FCOS_JAX_VERBOSE', '') not in ('', '0') or (
      FLAGS.is_parsed() and FLAGS.verbose)


def fail(message: str) -> NoReturn:
  """The one line of a user error, and exit code 1."""
  _exit(f'error: {message}', 1)


def _exit(line: str, code: int) -> NoReturn:
  sys.stdout.flush()
  sys.stderr.write(line + '\n')
  sys.stderr.flush()
  if 'orbax.checkpoint' in sys.modules:
    # orbax's background threads print "sys.meta_path is None" tracebacks during a normal
    # shutdown after an error; what must be flushed was closed by `finally` blocks already.
    os._exit(code)
  sys.exit(code)


def _unknown_config_key(e: Exception, argv) -> str:
  """One line for ml_collections' error on an override of a key the config lacks."""
  text = str(e)
  hint = re.search(r'Did you mean "([^"]+)" instead of "([^"]+)"', text)
  words = re.findall(r'\w+', text)
  key = hint.group(2) if hint else (words[0] if words else text)
  flag = next((a.split('=')[0].lstrip('-') for a in argv[1:]
               if a.startswith('--') and a.split('=')[0].endswith('.' + key)), key)
  return (f'unknown config key {flag!r}' +
          (f' (did you mean "{hint.group(1)}"?)' if hint else ''))


def packaged_config(value: str) -> str:
  """`--config coco` (a bare name) -> the path of the shipped fcos_jax/configs/coco.py, so the
  installed programs work from any folder, also one holding a `coco/` or `shapes/` data folder;
  a path, a `.py` name or an existing file is left as given."""
  name, sep, override = value.partition(':')  # ml_collections' `file.py:arg` form
  if os.path.sep in name or name.endswith('.py') or os.path.isfile(name):
    return value
  from fcos_jax import configs
  path = os.path.join(os.path.dirname(os.path.abspath(configs.__file__)), f'{name}.py')
  return path + sep + override if os.path.exists(path) else value


_NOT_CONFIGS = ('__init__', 'validate', 'recorded')


def shipped_configs() -> tuple:
  """Names of the configs shipped in fcos_jax/configs (what `--config NAME` accepts)."""
  from fcos_jax import configs
  folder = os.path.dirname(os.path.abspath(configs.__file__))
  return tuple(sorted(f[:-3] for f in os.listdir(folder)
                      if f.endswith('.py') and f[:-3] not in _NOT_CONFIGS))


def config_help(what: str = 'The config', from_workdir: bool = False) -> str:
  """--config's help: what it is for, the shipped names, the override form."""
  return (f'{what}: a shipped one by name ({", ".join(shipped_configs())}) or a file with '
          'get_config(); change any key with --config.KEY=VALUE' +
          (". Default with --workdir: the run's recorded config." if from_workdir else '.'))


HELP_ARGS = ('-h', '--help', '-help', '--helpshort', '-?')


# The shared flags in the order and groups --help shows them, after the program's own.
HELP_GROUPS = (
    ('inputs and outputs', ('image', 'out', 'overwrite', 'min_score', 'batch_size',
                            'annotations', 'draw_scale', 'exif_orientation', 'max_pixels')),
    ('weights', ('workdir', 'step', 'params', 'raw_weights')),
    ('inference for hard cases', ('tta', 'slice', 'overlap', 'slice_full')),
    ('several processes', ('coordinator_address', 'coordinator_bind_address', 'num_processes',
                           'process_id', 'jax_distributed')),
    ('compiled programs', ('compilation_cache_dir',)),
)


def _flag_help(flag) -> str:
  """One flag as absl's help writes it: --[no]name for booleans, its help, its default."""
  name = f'--[no]{flag.name}' if flag.boolean else f'--{flag.name}'
  text = f'{name}: {flag.help}'
  if flag.default is not None and flag.default != []:
    text += f' (default: {flag.default_as_str})'
  return flags.text_wrap(text, length=80, indent='    ', firstline_indent='  ')


def print_help(program_module: str) -> None:
  """The program's docstring (its usage), its own flags, then the shared ones in groups."""
  module = sys.modules.get(program_module)
  doc = (module.__doc__ or '').strip() if module else ''
  print(doc)
  own = FLAGS.get_flags_for_module(program_module)
  shared = {f.name: f for f in FLAGS.get_flags_for_module(__name__)}
  sections = [('flags', sorted(own, key=lambda f: f.name))]
  for title, names in HELP_GROUPS:
    sections.append((title, [shared.pop(n) for n in names if n in shared]))
  sections.append(('other', [shared[n] for n in sorted(shared)]))
  for title, group in sections:
    if group:
      print(f'\n{title}:\n' + '\n'.join(_flag_help(f) for f in group))
  print("\n--helpfull lists every flag, absl's own included.")


def no_arguments(argv) -> None:
  """Programs take flags only: a stray word is a user error naming it."""
  if len(argv) > 1:
    raise errors.UserError(f'unexpected arguments {argv[1:]} (flags are written --name=value; '
                           'see --help)')


def _flag_value(argv, name: str):
  """The value of `--name=V` / `--name V` on a command line (the last one), else None."""
  value = None
  for i, arg in enumerate(argv):
    if arg.startswith(f'--{name}='):
      value = arg[len(name) + 3:]
    elif arg == f'--{name}' and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def config_from_workdir(argv):
  """A command line without --config but with --workdir gets the run's recorded config
  (`configs/recorded.py:WORKDIR`), put first so that overrides still apply on top."""
  has_config = any(a == '--config' or a.startswith('--config=') for a in argv[1:])
  workdir = _flag_value(argv, 'workdir')
  if has_config or not workdir:
    return argv
  from fcos_jax import configs
  from fcos_jax.weights import run_config
  if run_config.recorded_config_path(workdir) is None:
    fail(f'--workdir {workdir} has no recorded config ({run_config.CONFIG_FILE}; '
         'not a training workdir?): give --config')
  path = os.path.join(os.path.dirname(os.path.abspath(configs.__file__)), 'recorded.py')
  return argv[:1] + [f'--config={path}:{workdir}'] + argv[1:]


def parse_flags(argv, program_module: str = '__main__', workdir_config: bool = False):
  """absl's parser, with bad flags and config overrides reported as one line and `--help`
  answered with the program's flags and exit code 0; with `workdir_config`, --workdir alone
  brings the run's config (`config_from_workdir`)."""
  argv = list(argv)
  if any(a in HELP_ARGS for a in argv[1:]):
    print_help(program_module)
    sys.exit(0)
  if any(a in ('--helpfull', '-helpfull') for a in argv[1:]):  # absl's own exits 1
    print(FLAGS.get_help())
    sys.exit(0)
  if any(a == '--version' for a in argv[1:]):
    print(f'{os.path.basename(argv[0])} (fcos_jax) {version()}')
    sys.exit(0)
  if workdir_config:
    argv = config_from_workdir(argv)
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      argv[i] = '--config=' + packaged_config(arg[len('--config='):])
    elif arg == '--config' and i + 1 < len(argv):
      argv[i + 1] = packaged_config(argv[i + 1])
  try:
    return FLAGS(argv)
  except flags.Error as e:
    fail(f'{e} (see --help)')
  except errors.UserError as e:  # e.g. a workdir's unreadable recorded config
    if _verbose():
      raise
    fail(str(e))
  except (AttributeError, KeyError) as e:
    if _verbose():
      raise
    fail(_unknown_config_key(e, argv))
  except (OSError, SyntaxError, ImportError, TypeError, ValueError) as e:
    if _verbose():
      raise
    fail(f'cannot read the command line: {type(e).__name__}: {e}')


def version() -> str:
  import fcos_jax
  return fcos_jax.__version__


def run(main: Callable, workdir_config: bool = False) -> None:
  """`app.run(main)` with the one-line error rule, `--help`, `--version` and quiet library
  logs; `workdir_config`: see `parse_flags`."""
  def wrapped(argv):
    quiet_library_logs()
    try:
      return main(argv)
    except (errors.UserError, app.UsageError) as e:
      if _verbose():
        raise
      fail(str(e))
    except KeyboardInterrupt:  # Ctrl-C: `finally` blocks have run (staging folders removed)
      if _verbose():
        raise
      _exit('interrupted (Ctrl-C)', 130)
  app.run(wrapped, flags_parser=lambda argv: parse_flags(argv, main.__module__, workdir_config))


def get_config(holder):
  """The config of a `config_flags` holder, loaded and validated (errors as `ConfigError`)."""
  from fcos_jax.configs import validate
  try:
    config = holder.value
    config.keys()  # ml_collections loads the file lazily: fail here, naming it
  except OSError as e:
    detail = [line.strip() for line in str(e).splitlines() if line.strip()]
    raise errors.ConfigError(f'cannot load --{holder.name}: {detail[-1] if detail else e}') \
        from None
  validate.validate(config)
  return config


def define_distributed_flags() -> None:
  """--coordinator_address / --num_processes / --process_id [--coordinator_bind_address], or
  --jax_distributed (docs/accelerators.md)."""
  flags.DEFINE_string('coordinator_address', None,
                      'host:port of process 0, the same on every process of a multi-process run.')
  flags.DEFINE_string('coordinator_bind_address', None,
                      'Where process 0 listens (default: every interface, [::]:PORT, so that '
                      'the coordinator is reached through a Kubernetes service, NAT or a VIP).')
  flags.DEFINE_integer('num_processes', None, 'Processes in a multi-process run.')
  flags.DEFINE_integer('process_id', None, 'This process, 0..num_processes-1.')
  flags.DEFINE_bool('jax_distributed', False,
                    'Call jax.distributed.initialize() with no arguments: JAX finds the '
                    'processes itself on TPU pods, under SLURM and (with the k8s extra) on GKE.')


def initialize_distributed() -> None:
  """jax.distributed from the flags of `define_distributed_flags` (nothing for one process)."""
  import jax
  if FLAGS.coordinator_address:
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               coordinator_bind_address=FLAGS.coordinator_bind_address,
                               num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
  elif FLAGS.jax_distributed:
    jax.distributed.initialize()


DEFAULT_COMPILATION_CACHE = os.path.join('~', '.cache', 'fcos_jax', 'xla')


def define_compilation_cache_flag() -> None:
  """--compilation_cache_dir: JAX's persistent cache of compiled programs."""
  flags.DEFINE_string(
      'compilation_cache_dir',
      os.environ.get('JAX_COMPILATION_CACHE_DIR', DEFAULT_COMPILATION_CACHE),
      'Folder of compiled XLA programs kept across runs: a rerun, a resume or an evaluation of '
      'the same model and shapes loads its programs instead of compiling them again (seconds on '
      'a CPU, minutes for large models on accelerators). Empty: no cache. Default: '
      '$JAX_COMPILATION_CACHE_DIR, else ' + DEFAULT_COMPILATION_CACHE + '.')


def enable_compilation_cache() -> None:
  """Points JAX's persistent compilation cache at --compilation_cache_dir (before the first
  compilation); an unwritable folder leaves the cache off with a warning."""
  path = os.path.expanduser(FLAGS.compilation_cache_dir)
  if not path:
    return
  try:
    os.makedirs(path, exist_ok=True)
    if not os.access(path, os.W_OK):
      raise PermissionError(f'{path} is not writable')
  except OSError as e:
    from absl import logging
    logging.warning('no compilation cache (--compilation_cache_dir): %s', e)
    return
  import jax
  jax.config.update('jax_compilation_cache_dir', path)


def define_weights_flags() -> None:
  """Where a model's weights come from: --workdir [--step] [--raw_weights] or --params."""
  flags.DEFINE_string('workdir', None, 'Training workdir with checkpoints.')
  flags.DEFINE_string('step', None, "Checkpoint step, or 'best' for the run's best evaluated "
                      'weights (default: the latest).')
  flags.DEFINE_bool('raw_weights', False, 'Take the trained weights of a run that keeps a '
                    'moving average (config.ema_decay), not the average.')
  flags.DEFINE_string('params', None, "A params checkpoint instead of --workdir's (e.g. from "
                      'fcos-import-torchvision).')


def define_tta_flag() -> None:
  """--tta: test-time augmentation views merged inside the compiled program."""
  flags.DEFINE_string('tta', None, 'Test-time augmentation: flip and/or scales=S1:S2 (comma-'
                      'separated, e.g. flip,scales=0.8:1.2; scale 1 always runs); the views '
                      "are merged with the config's NMS (postprocess.nms_method).")


def define_prediction_flags() -> None:
  """What predict.py and batch_predict.py read and write: the inputs, output folder, batch,
  image reading, sliced inference and the drawn pictures."""
  from fcos_jax import image_io
  flags.DEFINE_multi_string('image', [], 'Image file(s), folder(s) or glob(s).')
  flags.DEFINE_string('out', None, 'Output directory.')
  flags.DEFINE_float('min_score', 0.3, 'Keep detections scoring at least this, in the pictures '
                     'and in every file written (0: all, for a COCO evaluation of the results).')
  flags.DEFINE_integer('batch_size', 8, 'Images per model call.')
  flags.DEFINE_string('annotations', None, 'COCO file naming the inputs: image ids for the '
                      'results.')
  flags.DEFINE_integer('draw_scale', 0, 'Enlarge the picture this many times (0: enough for a '
                       'longer side of at least 512 px).')
  flags.DEFINE_bool('overwrite', False, 'Write into a non-empty --out folder (never over an '
                    'input).')
  flags.DEFINE_bool('exif_orientation', True, 'Turn images upright by their EXIF orientation '
                    'before detecting (boxes are then in upright pixels; COCO\'s own boxes are '
                    'in stored pixels: --noexif_orientation to score against them).')
  flags.DEFINE_integer('max_pixels', image_io.DEFAULT_MAX_PIXELS, 'Skip images of more pixels '
                       'than this (decompression bombs).')
  flags.DEFINE_integer('slice', 0, 'Sliced inference for large images: square tiles of this '
                       'many px (0: off), merged across tiles.')
  flags.DEFINE_float('overlap', 0.2, 'With --slice: the fraction of a tile shared with its '
                     'neighbour.')
  flags.DEFINE_bool('slice_full', False, 'With --slice: also detect on the whole image at its '
                    'normal size (large objects), merged with the tiles.')
  flags.mark_flags_as_required(['out'])


def tta_spec():
  """--tta as a `fcos_jax.tta.Spec` (None without it); a spec that cannot work is a UserError."""
  if not FLAGS.tta:
    return None
  from fcos_jax import tta
  return tta.parse(FLAGS.tta)


def weights_step():
  """--step as the loaders take it: None (latest), an int, or 'best'."""
  value = FLAGS.step
  if value in (None, '', 'latest'):
    return None
  if value == 'best':
    return value
  try:
    return int(value)
  except ValueError:
    raise errors.UserError(f"--step {value!r}: a checkpoint step (an integer) or 'best'") \
        from None


def load_weights(config):
  """(model, variables, step) named by the flags of `define_weights_flags`."""
  from fcos_jax.weights import params, run_config
  if not (FLAGS.workdir or FLAGS.params):
    raise errors.UserError('give --workdir (a training run) or --params (a params checkpoint)')
  try:
    return params.load_for_inference(config, workdir=FLAGS.workdir, step=weights_step(),
                                     params=FLAGS.params, raw_weights=FLAGS.raw_weights)
  except errors.CheckpointError as e:
    differing = FLAGS.workdir and not FLAGS.params and run_config.differing_keys(
        FLAGS.workdir, config)
    if not differing:
      raise
    raise errors.CheckpointError(f"{e}; the config differs from the run's recorded one in "
                                 f'{differing} (without --config and overrides, --workdir '
                                 'brings its own)') from None


# Libraries whose INFO lines are per-operation detail (orbax, TF, TFDS, JAX; the ONNX export's
# jax2onnx, onnx_ir, onnxscript, onnxruntime: thousands of "Replaced initializer ..."): dropped
# unless --verbose.
_NOISY_PATHS = ('/orbax/', '/tensorflow', '/jax/', '/jax2onnx/', '/onnx_ir/', '/onnxscript/',
                '/onnxruntime/')
# orbax warns on every partial restore of a step's item folder (its metadata file lives one level
# up) and on opening checkpoints read-only, as evaluate/export do; TFDS on the converter's new
# staging folder: all benign.
_BENIGN_WARNINGS = ('Metadata file does not exist', 'Given directory is read only',
                    'CheckpointManagerOptions.read_only=True', 'Variant folder ')


def quiet_library_logs() -> None:
  """Keep the libraries' per-operation INFO lines and benign warnings out of the program's log;
  `--verbose` (or FCOS_JAX_VERBOSE=1) keeps them."""
  import logging as std_logging
  from absl import logging
  if _verbose():
    return

  class _Filter(std_logging.Filter):
    def filter(self, record):
      if not any(p in record.pathname for p in _NOISY_PATHS):
        return True
      if str(record.msg).startswith(_BENIGN_WARNINGS):
        return False
      return record.levelno >= std_logging.WARNING
  logging.get_absl_handler().addFilter(_Filter())

