"""The command-line programs (installed as fcos-train, fcos-evaluate, fcos-export,
fcos-predict; `python train.py ...` in a checkout runs the same code)."""
