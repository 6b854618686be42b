"""Detect objects in many images with Apache Beam.

The program lives in the package (fcos_jax/programs/batch_predict.py; installed as
fcos-batch-predict).
"""

from fcos_jax.programs.batch_predict import run

if __name__ == '__main__':
  run()
