"""Offline COCO evaluation.

The program lives in the package (fcos_jax/programs/evaluate.py; installed as fcos-evaluate).
"""

from fcos_jax.programs.evaluate import run

if __name__ == '__main__':
  run()
