"""Command-line plumbing shared by the programs: flag groups and what they switch on.

Each program defines the groups it needs at import time (absl flags are process-global) and
calls the matching function from its `main`.
"""

from absl import flags

FLAGS = flags.FLAGS


def define_distributed_flags() -> None:
  """--coordinator_address / --num_processes / --process_id, or --jax_distributed."""
  flags.DEFINE_string('coordinator_address', None,
                      'host:port of process 0, for a multi-process run.')
  flags.DEFINE_integer('num_processes', None, 'Processes in a multi-process run.')
  flags.DEFINE_integer('process_id', None, 'This process, 0..num_processes-1.')
  flags.DEFINE_bool('jax_distributed', False, 'Call jax.distributed.initialize() with no '
                    'arguments (TPU pods, SLURM, ...).')


def initialize_distributed() -> None:
  """jax.distributed from the flags of `define_distributed_flags` (nothing for one process)."""
  import jax
  if FLAGS.coordinator_address:
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               coordinator_bind_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
  elif FLAGS.jax_distributed:
    jax.distributed.initialize()


def define_weights_flags() -> None:
  """Where a model's weights come from: --workdir [--step] or --params."""
  flags.DEFINE_string('workdir', None, 'Training workdir with checkpoints.')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: latest).')
  flags.DEFINE_string('params', None, "A params checkpoint instead of --workdir's (e.g. from "
                      'python -m fcos_jax.tools.import_torchvision).')


def load_weights(config):
  """(model, variables, step) named by the flags of `define_weights_flags`."""
  from absl import app
  from fcos_jax import restore
  if not (FLAGS.workdir or FLAGS.params):
    raise app.UsageError('give --workdir (a training run) or --params (a params checkpoint)')
  return restore.load_for_inference(config, workdir=FLAGS.workdir, step=FLAGS.step,
                                    params=FLAGS.params)


def quiet_library_logs() -> None:
  """Keep orbax's, TF's and JAX's per-operation INFO lines out of the program's log."""
  import logging as std_logging
  from absl import logging

  class _Filter(std_logging.Filter):
    def filter(self, record):
      noisy = ('/orbax/' in record.pathname or '/tensorflow' in record.pathname or
               '/jax/' in record.pathname)
      return record.levelno >= std_logging.WARNING or not noisy
  logging.get_absl_handler().addFilter(_Filter())


def user_errors() -> tuple:
  """The project's own errors about its input (data, weights, files, flags): a program reports
  them in one line instead of a traceback."""
  from fcos_jax.data.input_pipeline import DatasetNotPreparedError
  from fcos_jax.evaluation import DetectionsFileError
  return (DatasetNotPreparedError, DetectionsFileError, FileNotFoundError)


def reporting_errors(main):
  """`main` for `app.run` that ends the program on a `user_errors()` error with one line,
  `error: ...`, on stderr and exit status 1."""
  import functools
  import sys

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except Exception as e:  # noqa: BLE001 - only the project's own kinds are caught, see below
      if not isinstance(e, user_errors()):
        raise
      print(f'error: {e}', file=sys.stderr)
      sys.exit(1)
  return wrapped
