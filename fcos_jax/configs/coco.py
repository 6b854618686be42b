"""FCOS R50-FPN 1x on COCO with the official FCOS settings (tianzhi0549/FCOS, fcos_R_50_FPN_1x)."""

import ml_collections


def get_model_config() -> ml_collections.ConfigDict:
  m = ml_collections.ConfigDict()
  m.num_classes = 80
  # 'dataset': output k = dataset label k (0..K-1). 'category_id': output k = COCO category id k
  # (torchvision's 91-way layout); labels are mapped to category ids for training.
  m.label_space = 'dataset'
  m.backbone_depth = 50          # 18, 34, 50, 101
  m.backbone_width = 64          # base width of the ResNet (64 = torchvision's ResNets)
  m.freeze_at = 2                # frozen: stem + layer1
  m.backbone_norm = 'frozen_bn'  # or 'gn' (trainable GroupNorm, for training from scratch)
  m.fpn_channels = 256
  m.p6p7_source = 'p5'           # 'p5' or 'c5'
  m.head_num_convs = 4
  m.gn_groups = 32
  m.gn_epsilon = 1e-5
  m.prior_prob = 0.01
  m.regression = 'exp'           # 'exp' (official) or 'relu' (improved / torchvision)
  m.use_scale = True             # learnable per-level scale on the regression output
  m.centerness_on_reg = False
  # Compute dtype (params, losses and GroupNorm statistics stay float32): 'auto' = bfloat16 in
  # GPU and TPU programs, float32 in CPU programs; or 'float32' / 'bfloat16' everywhere.
  m.dtype = 'auto'
  # Geometry shared by the target assigner and the postprocess.
  m.strides = (8, 16, 32, 64, 128)
  m.size_ranges = ((-1, 64), (64, 128), (128, 256), (256, 512), (512, 1e8))
  m.inclusive_ranges = True
  m.center_sampling_radius = 0.0
  m.norm_reg_targets = False
  m.location_mode = 'half'       # 'half' (official) or 'torchvision'
  # 'fcos': the size ranges above pick each location's boxes; 'atss': Zhang et al. 2020's
  # adaptive rule (per level the atss_topk locations nearest a box's centre, IoU of a location's
  # square of side atss_anchor_scale * stride >= mean + std of theirs); ranges then unused.
  m.assigner = 'fcos'
  m.atss_topk = 9
  m.atss_anchor_scale = 8.0
  return m


def get_loss_config() -> ml_collections.ConfigDict:
  loss = ml_collections.ConfigDict()
  loss.focal_alpha = 0.25
  loss.focal_gamma = 2.0
  loss.box_loss = 'iou'          # 'iou' (-log IoU) or 'giou'
  loss.iou_smooth = 1.0          # IoU = (I + smooth) / (U + smooth); 0 = torchvision's I / (U + eps)
  loss.box_weighting = 'centerness'  # or 'uniform' (torchvision)
  return loss


def get_postprocess_config() -> ml_collections.ConfigDict:
  p = ml_collections.ConfigDict()
  p.score_threshold = 0.05
  p.threshold_on_combined = False  # threshold the class probability (official) or the final score
  p.pre_nms_top_n = 1000           # per level
  # TPUs sort slowly: their per-level top-k is lax.approx_max_k at this recall target (1.0 =
  # the exact top-k there too); CPUs and GPUs always take the exact one.
  p.tpu_top_k_recall = 0.99
  p.nms_threshold = 0.6
  # 'greedy' NMS (official, torchvision) or Soft-NMS (Bodla et al. 2017): 'linear' decays the
  # scores of same-class overlaps above nms_threshold by 1 - IoU, 'gaussian' all of them by
  # exp(-IoU^2 / sigma); a box decayed below soft_nms_min_score is dropped.
  p.nms_method = 'greedy'
  p.soft_nms_sigma = 0.5
  p.soft_nms_min_score = 0.001
  p.max_detections = 100
  p.sqrt_score = True              # final score sqrt(cls * centerness)
  # Locations whose centre lies outside the unpadded image, and boxes clipped to zero area,
  # never become candidates (else the padding's clipped boxes take places in the top 100).
  p.drop_outside = True
  return p


def get_data_config() -> ml_collections.ConfigDict:
  d = ml_collections.ConfigDict()
  d.dataset = 'coco/2017'        # any TFDS dataset with the coco/2017 features
  d.data_dir = ml_collections.config_dict.placeholder(str)  # None: TFDS default
  d.train_split = 'train'
  d.eval_split = 'validation'
  d.min_sizes = (800,)           # shorter side for training; one drawn per image
  d.max_size = 1333
  d.eval_min_size = 800
  # Padded shapes are multiples of this: 32 as in the official FCOS and torchvision (buckets
  # 800x1344 / 1344x800; P6 and P7 take ceil sizes). 128 would make every level exact at 30%
  # of the padded pixels wasted instead of 18% (docs/performance.md#padding).
  d.size_divisibility = 32
  d.aspect_buckets = True        # landscape + portrait bucket; False: one square shape
  # Evaluation padding: 'bucket' (the fixed shapes above: at most two programs) or 'per_image'
  # (each image to its next multiple of size_divisibility, batches grouped by exact shape: one
  # program per shape that occurs).
  d.eval_padding = 'bucket'
  # Evaluation input exactly as torchvision's GeneralizedRCNNTransform: JPEGs decoded as PIL,
  # sizes floored, float resize without 8-bit rounding (needs eval_padding='per_image', /32).
  d.torchvision_exact = False
  d.max_boxes = 100
  d.random_flip = True
  d.keep_empty_images = False    # train on images without (non-crowd) boxes as negatives
  # How training reads the records: 'index' (a seeded permutation per epoch; the checkpointed
  # position is a few integers; needs ArrayRecord: `fcos convert --file_format array_record`),
  # 'buffer' (tf.data shuffle buffers of shuffle_buffer images per bucket; the iterator state,
  # hundreds of MB at this config, is checkpointed), 'auto' ('index' where the records allow).
  d.sampler = 'auto'
  d.shuffle_buffer = 1000        # the 'buffer' sampler's, per aspect bucket
  # The built-in synthetic dataset (configs/shapes.py): generated and converted when missing.
  d.synthetic = False
  d.synthetic_train_images = 0
  d.synthetic_eval_images = 0
  d.synthetic_image_size = (128, 128)
  # torchvision's ImageNet statistics, RGB in 0..255 (the ImageNet ResNet-50 weights expect them).
  d.pixel_mean = (123.675, 116.28, 103.53)
  d.pixel_std = (58.395, 57.12, 57.375)
  return d


def get_optimizer_config() -> ml_collections.ConfigDict:
  o = ml_collections.ConfigDict()
  o.name = 'sgd'                 # 'sgd' (momentum) or 'adamw'
  o.base_lr = 0.01               # at base_batch_size; scaled linearly with the global batch
  o.base_batch_size = 16
  # The step counts (num_train_steps, warmup_steps, decay_steps, checkpoint_every, eval_every)
  # are stated for batches of base_batch_size images and scaled by base_batch_size / global
  # batch, as the lr is by the inverse: --config.batch_size=256 trains the same schedule in 1/16
  # of the steps. False: step counts as written (the lr still scales).
  o.scale_schedule_with_batch = True
  o.momentum = 0.9
  o.weight_decay = 1e-4          # conv kernels only (no biases, no norm parameters)
  o.bias_lr_factor = 2.0
  o.warmup_steps = 500
  o.warmup_factor = 1.0 / 3
  o.warmup_method = 'constant'   # 'constant' (official FCOS) or 'linear'
  o.decay_steps = (60000, 80000)
  o.decay_factor = 0.1
  o.grad_clip_norm = 0.0         # 0 = off
  return o


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.batch_size = 16               # global, over all devices of all processes
  # Gradients of this many steps are averaged into one update (optax.MultiSteps): a batch of 16
  # on devices that fit 2 is batch_size=2, grad_accum_steps=8. The lr scales with the product;
  # num_train_steps counts steps (batches), the schedule counts updates.
  config.grad_accum_steps = 1
  config.num_train_steps = 90000
  # An orbax params checkpoint to start from (e.g. ImageNet ResNet-50 from
  # `python -m fcos_jax.tools.import_torchvision`); '' = train from scratch.
  config.init_checkpoint = ''
  # Fill what fits from init_checkpoint and keep the fresh init of tensors of another shape
  # (e.g. the class head when fine-tuning a COCO detector on other classes), listing them.
  config.init_skip_mismatched = False
  # A frozen-BN backbone needs pretrained weights; True trains it from scratch anyway (its
  # batch norm is then the identity).
  config.train_from_scratch = False
  config.log_every = 20
  config.checkpoint_every = 2500
  config.keep_checkpoints = 3
  config.eval_every = 0                # 0 = evaluate only at the end
  config.eval_at_end = True
  config.eval_batch_size = 8           # per process
  config.eval_pictures = 4             # validation images drawn to TensorBoard at each evaluation
  # Moving average of the weights (0 = off): evaluated, exported and predicted with when on
  # (--raw_weights takes the trained ones); the decay warms up as min(d, (1 + u) / (10 + u)).
  config.ema_decay = 0.0
  # The evaluated weights scoring best in this metric are kept in workdir/best (--step best).
  config.best_metric = 'AP'
  # Stop after this many evaluations (eval_every) without an improvement of more than
  # early_stopping_min_delta in best_metric (0 = never).
  config.early_stopping_patience = 0
  config.early_stopping_min_delta = 0.0
  # Where scalars go besides workdir/metrics.csv and metrics.jsonl (always written):
  # 'tensorboard', 'wandb' (pip install "fcos_jax[wandb]"), 'mlflow' ("fcos_jax[mlflow]").
  config.trackers = ('tensorboard',)
  config.wandb_project = 'fcos_jax'
  config.mlflow_tracking_uri = ''      # '' = a file store in workdir/mlruns
  config.mlflow_experiment = 'fcos_jax'
  config.data = get_data_config()
  config.model = get_model_config()
  config.loss = get_loss_config()
  config.postprocess = get_postprocess_config()
  config.optimizer = get_optimizer_config()
  return config
