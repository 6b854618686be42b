"""Alias: `python -m fcos_jax.tools.assigner_stats` runs fcos_jax/programs/assigner_stats.py."""

if __name__ == '__main__':
  from fcos_jax.programs.assigner_stats import run
  run()
