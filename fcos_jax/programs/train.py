r"""Train FCOS (fcos train, fcos-train, python train.py).

  fcos train --config shapes --workdir runs/shapes          # the demo: synthetic data, a CPU
  fcos train --config custom_small --workdir runs/my_data \
      --config.data.dataset=my_data --config.model.num_classes=3   # your data, from scratch
  fcos train --config coco --workdir runs/coco --config.init_checkpoint=weights/r50
  fcos config show coco                                      # every key a --config.KEY=VALUE sets

Running the same command again resumes from the latest checkpoint in DIR. Multi-host: pass
--coordinator_address/--num_processes/--process_id (or --jax_distributed on TPU pods and
SLURM, where JAX finds them itself) and run the same command on every host.
"""

import json
import os
import shlex
import sys

from absl import flags, logging
from ml_collections import config_flags

from fcos_jax.programs import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, cli.config_help('The run\'s config'),
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Checkpoints, logs and results go here.')
cli.define_distributed_flags()
cli.define_compilation_cache_flag()
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  cli.no_arguments(argv)
  cli.initialize_distributed()
  cli.enable_compilation_cache()
  import jax
  from fcos_jax import trainer
  logging.info('JAX %s: process %d of %d, %d local / %d global devices (%s)', jax.__version__,
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count(), jax.devices()[0].platform)
  config = cli.get_config(_CONFIG)
  from fcos_jax import train_log
  metrics = trainer.train_and_evaluate(config, _WORKDIR.value)
  if jax.process_index() != 0 or 'preempted_at' in metrics:
    return
  if 'AP' in metrics:
    print(f'final evaluation ({metrics["num_images"]} images): AP {metrics["AP"]:.4f}  '
          f'AP50 {metrics["AP50"]:.4f}  AP75 {metrics["AP75"]:.4f}')
    print(json.dumps({k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}))
  print(train_log.run_summary(metrics, _WORKDIR.value, _program, _config_args()))


def _program(name: str) -> str:
  """Another program's command, spelled as this one was started."""
  if os.path.basename(sys.argv[0]) == 'train.py':
    return f'python {name}.py'
  return f'fcos-{name}'


def _config_args() -> str:
  """--config and its overrides as given on the command line."""
  holder = flags.FLAGS['config']
  args = ['--config', config_flags.get_config_filename(holder)] + [
      f'--config.{k}={v}' for k, v in config_flags.get_override_values(holder).items()]
  return ' '.join(shlex.quote(a) for a in args)


def run():
  cli.run(main)


if __name__ == '__main__':
  run()
