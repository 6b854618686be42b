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
  # One compute dtype: 'auto' traces both models (float32 and bfloat16), doubling each compile;
  # tests of 'auto' set it themselves.
  m.dtype = 'float32'
  config.batch_size = 4
  config.num_train_steps = 12
  config.log_every = 2
  config.checkpoint_every = 4
  config.eval_batch_size = 4
  config.eval_at_end = False
  config.ema_decay = 0.9  # so the resume and multi-device tests cover the moving average
  o = config.optimizer
  o.scale_schedule_with_batch = False  # 12 steps of 4, not the 3 steps of 16 they would be
  o.base_lr = 2e-3  # the tests' learning rate, whatever the demo's
  o.warmup_steps = 2
  o.decay_steps = (10,)
  return config


def random_detector():
  """(config, model, variables, categories) of a randomly initialized tiny model whose weights
  are perturbed so that detections differ strongly between locations; score threshold 0, so a
  random model still yields plenty of detections."""
  import jax
  import jax.numpy as jnp
  from fcos_jax.data.categories import Categories
  from fcos_jax.models import fcos
  config = get_config()
  config.postprocess.score_threshold = 0.0
  model = fcos.create_model(config.model)
  variables = jax.jit(model.init)(jax.random.key(3), jnp.zeros((1, 64, 96, 3)))
  variables = jax.tree_util.tree_map(
      lambda x: x + 0.05 * jax.random.normal(jax.random.key(1), x.shape), variables)
  cats = Categories((1, 3, 4, 7, 9), ('rectangle', 'ellipse', 'triangle', 'cross', 'ring'))
  return config, model, variables, cats
