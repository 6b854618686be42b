"""Train FCOS: `python train.py --config configs/coco.py --workdir DIR [--config.key=value ...]`.

Running the same command again resumes from the latest checkpoint in DIR. Multi-host: pass
--coordinator_address/--num_processes/--process_id (or --jax_distributed on TPU pods and
SLURM, where JAX finds them itself) and run the same command on every host.
"""

import json
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Config file (get_config()).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Checkpoints, logs and results go here.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'host:port of process 0, for a multi-process run.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in a multi-process run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process, 0..num_processes-1.')
_JAX_DISTRIBUTED = flags.DEFINE_bool('jax_distributed', False,
                                     'Call jax.distributed.initialize() with no arguments '
                                     '(TPU pods, SLURM, ...).')
flags.mark_flags_as_required(['config', 'workdir'])


def initialize_distributed():
  import jax
  if _COORDINATOR.value:
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               coordinator_bind_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  elif _JAX_DISTRIBUTED.value:
    jax.distributed.initialize()


def quiet_library_logs():
  """Keep orbax's and TF's per-operation INFO lines out of the training log."""
  import logging as std_logging

  class _Filter(std_logging.Filter):
    def filter(self, record):
      noisy = ('/orbax/' in record.pathname or '/tensorflow' in record.pathname or
               '/jax/' in record.pathname)
      return record.levelno >= std_logging.WARNING or not noisy
  logging.get_absl_handler().addFilter(_Filter())


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  quiet_library_logs()
  initialize_distributed()
  import jax
  from fcos_jax import trainer
  logging.info('JAX %s: process %d of %d, %d local / %d global devices (%s)', jax.__version__,
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count(), jax.devices()[0].platform)
  config = _CONFIG.value
  workdir = _WORKDIR.value
  if jax.process_index() == 0:
    import tensorflow as tf
    tf.io.gfile.makedirs(workdir)
    with tf.io.gfile.GFile(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=1))
  metrics = trainer.train_and_evaluate(config, workdir)
  if jax.process_index() == 0 and 'AP' in metrics:
    print(f'final evaluation ({metrics["num_images"]} images): AP {metrics["AP"]:.4f}  '
          f'AP50 {metrics["AP50"]:.4f}  AP75 {metrics["AP75"]:.4f}')
    print(json.dumps({k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}))


if __name__ == '__main__':
  app.run(main)
