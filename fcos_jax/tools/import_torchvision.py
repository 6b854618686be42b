"""Alias: `python -m fcos_jax.tools.import_torchvision` runs fcos_jax/programs/import_torchvision.py."""

if __name__ == '__main__':
  from fcos_jax.programs.import_torchvision import run
  run()
