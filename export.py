"""Export a trained checkpoint as a self-contained inference artifact.

The program lives in the package (fcos_jax/programs/export.py; installed as fcos-export).
"""

from fcos_jax.programs.export import run

if __name__ == '__main__':
  run()
