"""Config checks run before anything is compiled or written: each failure is a `ConfigError`
naming the key and the allowed values, so a typo costs a second, not a run."""

from fcos_jax import losses, optim, points, postprocess, targets, trackers
from fcos_jax.data import categories, input_pipeline, train_stream
from fcos_jax.errors import ConfigError
from fcos_jax.evaluation.scoring import STAT_NAMES
from fcos_jax.models import fcos, fpn, head, resnet


def _check(ok: bool, key: str, value, need: str) -> None:
  if not ok:
    raise ConfigError(f'config.{key} = {value!r}: {need}')


def _one_of(value, allowed, key: str) -> None:
  _check(value in allowed, key, value, 'must be one of ' + ', '.join(map(repr, allowed)))


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
  # Keys a config leaves for the command line (configs/custom_small.py).
  for key, what in (('data.dataset', 'the TFDS name of your dataset (the --name given to '
                     'fcos convert)'),
                    ('model.num_classes', "the number of your dataset's categories")):
    section, leaf = key.split('.')
    _check(config[section][leaf] is not None, key, None, f'set it to {what}: --config.{key}=...')
  for key in ('batch_size', 'log_every', 'checkpoint_every', 'keep_checkpoints',
              'eval_batch_size', 'data.max_boxes', 'data.max_size', 'data.eval_min_size',
              'data.size_divisibility', 'model.num_classes', 'data.shuffle_buffer',
              'grad_accum_steps'):
    _positive_int(config, key)
  for key in ('num_train_steps', 'eval_every', 'seed'):
    _positive_int(config, key, allow_zero=True)
  d, m, o = config.data, config.model, config.optimizer
  _check(len(d.min_sizes) > 0 and all(isinstance(s, int) and s > 0 for s in d.min_sizes),
         'data.min_sizes', d.min_sizes, 'must be one or more positive integers')
  _check(d.max_size >= d.eval_min_size, 'data.max_size', d.max_size,
         f'must be at least data.eval_min_size ({d.eval_min_size}): it caps the longer side, '
         'so below it it would override every size (swapped values?)')
  _check(d.size_divisibility % 32 == 0, 'data.size_divisibility', d.size_divisibility,
         'must be a multiple of 32 (the backbone downsamples by 32)')
  _one_of(d.eval_padding, input_pipeline.EVAL_PADDINGS, 'data.eval_padding')
  _one_of(d.sampler, train_stream.SAMPLERS, 'data.sampler')
  if d.torchvision_exact:
    _check(d.eval_padding == 'per_image' and d.size_divisibility == 32,
           'data.torchvision_exact', True, "needs data.eval_padding='per_image' and "
           'data.size_divisibility=32 (torchvision pads each image to a multiple of 32)')
  _check(len(d.pixel_mean) == 3 and len(d.pixel_std) == 3 and min(d.pixel_std) > 0,
         'data.pixel_std', d.pixel_std, 'pixel_mean and pixel_std need 3 values, std > 0')
  _one_of(m.backbone_depth, tuple(resnet.STAGE_BLOCKS), 'model.backbone_depth')
  _one_of(m.dtype, fcos.COMPUTE_DTYPES, 'model.dtype')
  _one_of(m.backbone_norm, resnet.NORMS, 'model.backbone_norm')
  _one_of(m.regression, head.REGRESSION_ACTIVATIONS, 'model.regression')
  _one_of(m.location_mode, points.LOCATION_MODES, 'model.location_mode')
  _one_of(m.assigner, targets.ASSIGNERS, 'model.assigner')
  _positive_int(config, 'model.atss_topk')
  _check(m.atss_anchor_scale > 0, 'model.atss_anchor_scale', m.atss_anchor_scale, 'must be > 0')
  _one_of(m.p6p7_source, fpn.P6P7_SOURCES, 'model.p6p7_source')
  _one_of(m.label_space, categories.LABEL_SPACES, 'model.label_space')
  _check(len(m.size_ranges) == len(m.strides), 'model.size_ranges', m.size_ranges,
         f'needs one (lo, hi) per stride ({len(m.strides)})')
  _check(0 <= m.freeze_at <= 5, 'model.freeze_at', m.freeze_at, 'must be 0..5')
  _check(m.fpn_channels % m.gn_groups == 0, 'model.gn_groups', m.gn_groups,
         f'must divide model.fpn_channels ({m.fpn_channels})')
  _one_of(config.loss.box_loss, losses.BOX_LOSSES, 'loss.box_loss')
  _one_of(config.loss.box_weighting, losses.BOX_WEIGHTINGS, 'loss.box_weighting')
  _one_of(o.name, optim.OPTIMIZERS, 'optimizer.name')
  _check(o.base_lr > 0, 'optimizer.base_lr', o.base_lr, 'must be > 0')
  _one_of(o.warmup_method, optim.WARMUP_METHODS, 'optimizer.warmup_method')
  _check(o.grad_clip_norm >= 0, 'optimizer.grad_clip_norm', o.grad_clip_norm,
         'must be >= 0 (0 = off)')
  _check(0 <= config.ema_decay < 1, 'ema_decay', config.ema_decay, 'must be in [0, 1) (0 = off)')
  _one_of(config.best_metric, STAT_NAMES, 'best_metric')
  _positive_int(config, 'early_stopping_patience', allow_zero=True)
  _check(config.early_stopping_min_delta >= 0, 'early_stopping_min_delta',
         config.early_stopping_min_delta, 'must be >= 0')
  _check(not config.early_stopping_patience or config.eval_every > 0,
         'early_stopping_patience', config.early_stopping_patience,
         'needs evaluations during training: set eval_every > 0')
  for name in config.trackers:
    _one_of(name, trackers.TRACKERS, 'trackers')
  p = config.postprocess
  _check(0 < p.nms_threshold <= 1, 'postprocess.nms_threshold', p.nms_threshold,
         'must be in (0, 1]')
  _positive_int(config, 'postprocess.max_detections')
  _one_of(p.nms_method, postprocess.NMS_METHODS, 'postprocess.nms_method')
  _check(p.soft_nms_sigma > 0, 'postprocess.soft_nms_sigma', p.soft_nms_sigma, 'must be > 0')
  _check(0 <= p.soft_nms_min_score < 1, 'postprocess.soft_nms_min_score', p.soft_nms_min_score,
         'must be in [0, 1)')
  _positive_int(config, 'postprocess.pre_nms_top_n')
  _check(0 < p.tpu_top_k_recall <= 1, 'postprocess.tpu_top_k_recall', p.tpu_top_k_recall,
         'must be in (0, 1] (1 = the exact top-k)')
