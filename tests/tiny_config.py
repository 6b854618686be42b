"""A tiny shapes config for the end-to-end training tests (seconds per step on CPU)."""

from fcos_jax.configs import shapes


def get_config():
  config = shapes.get_config()
  d = config.data
  d.dataset = 'tiny_shapes'
  d.synthetic_train_images = 24
  d.synthetic_eval_images = 6
  d.synthetic_image_size = (64, 64)
  d.min_sizes = (64,)
  d.max_size = 96
  d.eval_min_size = 64
  d.max_boxes = 6
  d.shuffle_buffer = 24
  m = config.model
  m.backbone_width = 8
  m.fpn_channels = 16
  m.head_num_convs = 1
  m.gn_groups = 4
  config.batch_size = 4
  config.num_train_steps = 12
  config.log_every = 2
  config.checkpoint_every = 4
  config.eval_batch_size = 4
  config.eval_at_end = False
  o = config.optimizer
  o.warmup_steps = 2
  o.decay_steps = (10,)
  return config
