"""The command-line programs (installed as fcos-train, fcos-evaluate, fcos-export, fcos-predict,
fcos-convert-coco, fcos-import-torchvision, fcos-assigner-stats; `python train.py ...` in a
checkout runs the same code) and their shared preamble, `cli`."""

import os

# TensorFlow (tf.data only) stays quiet and off oneDNN unless asked: set before any program
# imports it.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
