"""Detect objects in images and draw them.

The program lives in the package (fcos_jax/programs/predict.py; installed as fcos-predict).
"""

from fcos_jax.programs.predict import run

if __name__ == '__main__':
  run()
