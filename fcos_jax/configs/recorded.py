"""The config a training run recorded (`WORKDIR/config.json`), for `--config recorded:WORKDIR`.

evaluate.py, predict.py and export.py use it when given --workdir without --config; overrides
(`--config.x=y`) apply on top as with any config file.
"""

from fcos_jax.weights import run_config


def get_config(workdir: str):
  return run_config.recorded_config(workdir)
