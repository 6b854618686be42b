"""Train from scratch on a small dataset of your own, on a CPU or one GPU (no pretrained weights,
no torch): convert it, then name it and its number of classes on the command line.

  fcos convert --name my_data --annotations train.json --images train/ --split train \\
      --annotations val.json --images val/ --split validation
  fcos train --config custom_small --workdir runs/my_data \\
      --config.data.dataset=my_data --config.model.num_classes=3

A ResNet-18 of half width with trainable GroupNorm (as the demo, which learns from scratch),
images of 320-416 px on the shorter side (at most 640), AdamW; evaluated every 1000 steps, the
best weights kept (`fcos evaluate --workdir runs/my_data --step best`). Scale `num_train_steps`
and `optimizer.decay_steps` with the size of the dataset: these are for a few thousand images.
"""

import ml_collections

from fcos_jax.configs import shapes


def get_config():
  config = shapes.get_config()
  d = config.data
  d.dataset = ml_collections.config_dict.placeholder(str)   # the --name given to fcos convert
  d.data_dir = None                   # TFDS default (~/tensorflow_datasets, convert's default)
  d.synthetic = False
  d.min_sizes = (320, 352, 384, 416)
  d.max_size = 640
  d.eval_min_size = 384
  d.max_boxes = 100
  d.shuffle_buffer = 1000
  d.pixel_mean = (123.675, 116.28, 103.53)  # ImageNet's, in 0..255 RGB
  d.pixel_std = (58.395, 57.12, 57.375)

  m = config.model
  m.num_classes = ml_collections.config_dict.placeholder(int)  # your dataset's categories
  m.backbone_width = 32
  m.fpn_channels = 128
  m.head_num_convs = 3
  m.gn_groups = 32

  config.batch_size = 8
  config.num_train_steps = 6000
  o = config.optimizer
  o.base_batch_size = 8
  o.warmup_steps = 300
  o.decay_steps = (4500, 5500)
  config.eval_every = 1000
  config.checkpoint_every = 1000
  config.eval_batch_size = 8
  return config
