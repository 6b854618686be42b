"""Config checks run before anything is compiled or written: each failure is a `ConfigError`
naming the key and the allowed values, so a typo costs a second, not a run."""

from fcos_jax.errors import ConfigError


def _check(ok: bool, key: str, value, need: str) -> None:
  if not ok:
    raise ConfigError(f'config.{key} = {value!r}: {need}')


def _positive_int(config, key: str, allow_zero: bool = False) -> None:
  node = config
  *parents, leaf = key.split('.')
  for p in parents:
    node = node[p]
  v = node[leaf]
  ok = isinstance(v, int) and not isinstance(v, bool) and (v >= 0 if allow_zero else v >= 1)
  _check(ok, key, v, 'must be an integer >= 0' if allow_zero else 'must be an integer >= 1')


def validate(config) -> None:
  """Raise `ConfigError` on the first value that cannot work."""
  for key in ('batch_size', 'log_every', 'checkpoint_every', 'keep_checkpoints',
              'eval_batch_size', 'data.max_boxes', 'data.max_size', 'data.eval_min_size',
              'data.size_divisibility', 'model.num_classes', 'data.shuffle_buffer'):
    _positive_int(config, key)
  if 'grad_accum_steps' in config:
    _positive_int(config, 'grad_accum_steps')
  for key in ('num_train_steps', 'eval_every', 'seed'):
    _positive_int(config, key, allow_zero=True)
  d, m, o = config.data, config.model, config.optimizer
  _check(len(d.min_sizes) > 0 and all(isinstance(s, int) and s > 0 for s in d.min_sizes),
         'data.min_sizes', d.min_sizes, 'must be one or more positive integers')
  _check(d.size_divisibility % 32 == 0, 'data.size_divisibility', d.size_divisibility,
         'must be a multiple of 32 (the backbone downsamples by 32)')
  _check(d.get('eval_padding', 'bucket') in ('bucket', 'per_image'), 'data.eval_padding',
         d.get('eval_padding'), "must be 'bucket' or 'per_image'")
  if d.get('torchvision_exact', False):
    _check(d.eval_padding == 'per_image' and d.size_divisibility == 32,
           'data.torchvision_exact', True, "needs data.eval_padding='per_image' and "
           'data.size_divisibility=32 (torchvision pads each image to a multiple of 32)')
  _check(len(d.pixel_mean) == 3 and len(d.pixel_std) == 3 and min(d.pixel_std) > 0,
         'data.pixel_std', d.pixel_std, 'pixel_mean and pixel_std need 3 values, std > 0')
  _check(m.backbone_depth in (18, 34, 50, 101), 'model.backbone_depth', m.backbone_depth,
         'must be 18, 34, 50 or 101')
  _check(m.dtype in ('float32', 'bfloat16'), 'model.dtype', m.dtype,
         "must be 'float32' or 'bfloat16'")
  _check(m.backbone_norm in ('frozen_bn', 'gn'), 'model.backbone_norm', m.backbone_norm,
         "must be 'frozen_bn' or 'gn'")
  _check(m.regression in ('exp', 'relu'), 'model.regression', m.regression,
         "must be 'exp' or 'relu'")
  _check(m.location_mode in ('half', 'torchvision'), 'model.location_mode', m.location_mode,
         "must be 'half' or 'torchvision'")
  _check(m.p6p7_source in ('p5', 'c5'), 'model.p6p7_source', m.p6p7_source,
         "must be 'p5' or 'c5'")
  _check(m.get('label_space', 'dataset') in ('dataset', 'category_id'), 'model.label_space',
         m.get('label_space'), "must be 'dataset' or 'category_id'")
  _check(len(m.size_ranges) == len(m.strides), 'model.size_ranges', m.size_ranges,
         f'needs one (lo, hi) per stride ({len(m.strides)})')
  _check(0 <= m.freeze_at <= 5, 'model.freeze_at', m.freeze_at, 'must be 0..5')
  _check(m.fpn_channels % m.gn_groups == 0, 'model.gn_groups', m.gn_groups,
         f'must divide model.fpn_channels ({m.fpn_channels})')
  _check(config.loss.box_loss in ('iou', 'giou'), 'loss.box_loss', config.loss.box_loss,
         "must be 'iou' or 'giou'")
  _check(config.loss.box_weighting in ('centerness', 'uniform'), 'loss.box_weighting',
         config.loss.box_weighting, "must be 'centerness' or 'uniform'")
  _check(o.name in ('sgd', 'adamw'), 'optimizer.name', o.name, "must be 'sgd' or 'adamw'")
  _check(o.base_lr > 0, 'optimizer.base_lr', o.base_lr, 'must be > 0')
  _check(o.warmup_method in ('constant', 'linear'), 'optimizer.warmup_method',
         o.warmup_method, "must be 'constant' or 'linear'")
  _check(o.grad_clip_norm >= 0, 'optimizer.grad_clip_norm', o.grad_clip_norm,
         'must be >= 0 (0 = off)')
  p = config.postprocess
  _check(0 < p.nms_threshold <= 1, 'postprocess.nms_threshold', p.nms_threshold,
         'must be in (0, 1]')
  _positive_int(config, 'postprocess.max_detections')
  _positive_int(config, 'postprocess.pre_nms_top_n')
