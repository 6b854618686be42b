"""Alias: `python -m fcos_jax.data.convert_coco` runs fcos_jax/programs/convert_coco.py (the
conversion itself is `fcos_jax.data.coco_conversion`)."""

if __name__ == '__main__':
  from fcos_jax.programs.convert_coco import run
  run()
