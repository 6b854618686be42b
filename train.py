"""Train FCOS: `python train.py --config configs/coco.py --workdir DIR [--config.key=value ...]`.

The program lives in the package (fcos_jax/programs/train.py; installed as fcos-train).
"""

from fcos_jax.programs.train import run

if __name__ == '__main__':
  run()
