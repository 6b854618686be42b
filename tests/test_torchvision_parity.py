"""Numerical parity with torchvision's fcos_resnet50_fpn, through the weight-import code.

torchvision's model is built with a fixed seed and its batch-norm statistics, GroupNorm affine
and biases are perturbed (`tests/torchvision_model.py`), so that a wrong mapping cannot hide
behind identity-like values.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from fcos_jax.configs import coco_torchvision
from fcos_jax import inference, losses, targets
from fcos_jax.models import fcos
from fcos_jax.weights import torchvision_import
from tests.torchvision_model import randomized_fcos

SIZES = [(160, 224), (256, 256)]  # a multiple of 32 only, and a multiple of 128
STRIDES = (8, 16, 32, 64, 128)
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def rel_err(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))


@pytest.fixture(scope='module')
def models(tmp_path_factory):
  tv = randomized_fcos()
  state_dict = {k: v.numpy() for k, v in tv.state_dict().items()}
  assert len(state_dict) == 372  # BatchNorm2d layout: 319 + 53 num_batches_tracked

  config = coco_torchvision.get_config()
  model = fcos.create_model(config.model)
  like = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  variables = torchvision_import.convert(state_dict, like, 'fcos')
  # And through the command-line path: save, then load as an init/params checkpoint.
  from fcos_jax.weights import params
  path = str(tmp_path_factory.mktemp('imported') / 'fcos')
  torchvision_import.save(variables, path)
  loaded = params.load_params(path)
  jax.tree_util.tree_map(np.testing.assert_array_equal, loaded['params'], variables['params'])
  return tv, config, model, variables


def random_image(size, seed):
  return np.random.default_rng(seed).integers(0, 256, size + (3,), dtype=np.uint8)


def normalized(image):
  return ((image.astype(np.float32) / 255.0 - MEAN) / STD).astype(np.float32)


def level_slices(size):
  out, start = [], 0
  for s in STRIDES:
    n = math.ceil(size[0] / s) * math.ceil(size[1] / s)
    out.append(slice(start, start + n))
    start += n
  return out


@pytest.mark.parametrize('size', SIZES)
def test_features_and_head_outputs_match(models, size):
  tv, _, model, variables = models
  x = normalized(random_image(size, 0))[None]
  with torch.no_grad():
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    body = tv.backbone.body(xt)
    pyramid = tv.backbone(xt)
    head = tv.head(list(pyramid.values()))
  out = jax.jit(lambda v, x: model.apply(v, x, return_features=True))(variables, x)
  errors = {}
  for k, (name, t) in enumerate(body.items()):
    errors[f'C{k + 3}'] = rel_err(out['backbone'][k], t.permute(0, 2, 3, 1).numpy())
  for k, (name, t) in enumerate(pyramid.items()):
    errors[f'P{k + 3}'] = rel_err(out['fpn'][k], t.permute(0, 2, 3, 1).numpy())
  for k, sl in enumerate(level_slices(size)):
    errors[f'cls P{k + 3}'] = rel_err(out['cls_logits'][:, sl], head['cls_logits'][:, sl])
    errors[f'reg P{k + 3}'] = rel_err(out['bbox_reg'][:, sl], head['bbox_regression'][:, sl])
    errors[f'ctr P{k + 3}'] = rel_err(out['centerness'][:, sl], head['bbox_ctrness'][:, sl, 0])
  print(f'max relative errors at {size}: ' + ', '.join(f'{k} {v:.1e}' for k, v in errors.items()))
  assert max(errors.values()) <= 1e-4, errors


@pytest.mark.parametrize('size', SIZES)
def test_detections_match_as_sets(models, size):
  tv, config, model, variables = models
  image = random_image(size, 1)
  tv.score_thresh = 0.05
  tv.transform.min_size = (min(size),)   # scale 1.0: the network sees the image as is
  tv.transform.max_size = max(size)
  with torch.no_grad():
    want = tv([torch.from_numpy(image).permute(2, 0, 1).float() / 255.0])[0]
  config.postprocess.score_threshold = 0.05
  predict = jax.jit(inference.make_predict_fn(config, model))
  det = jax.device_get(predict(variables, image[None], np.array([size], np.int32))._asdict())
  n = int(det['num_valid'][0])
  wb, ws, wl = (want[k].numpy() for k in ('boxes', 'scores', 'labels'))
  assert len(ws) == n == 100
  gb, gs, gl = det['boxes'][0, :n], det['scores'][0, :n], det['classes'][0, :n]
  cutoff = min(ws.min(), gs.min())
  unmatched = []
  for b, s, l in zip(wb, ws, wl):
    ok = (gl == l) & (np.abs(gb - b).max(1) <= 1e-2) & (np.abs(gs - s) <= 1e-4)
    if not ok.any() and s > cutoff + 1e-5:  # near the 100th score, a tie may swap members
      unmatched.append((b, s, l))
  print(f'{size}: {n} detections, box error '
        f'{max(np.abs(np.sort(gb, 0) - np.sort(wb, 0)).max(), 0):.1e}')
  assert not unmatched, unmatched[:3]


def test_training_losses_match(models):
  tv, config, model, variables = models
  size = SIZES[0]
  images = [random_image(size, 2), random_image(size, 3)]
  boxes = [np.array([[10, 20, 90, 120], [50, 40, 200, 150], [100, 100, 130, 140]], np.float32),
           np.array([[0, 0, 223, 159], [30, 60, 80, 90]], np.float32)]
  labels = [np.array([1, 18, 90]), np.array([3, 44])]
  tv.train()
  for m in tv.modules():  # keep BatchNorm on its stored statistics (FrozenBatchNorm2d's behaviour)
    if isinstance(m, nn.BatchNorm2d):
      m.eval()
  tv.transform.min_size = (min(size),)
  tv.transform.max_size = max(size)
  want = tv([torch.from_numpy(im).permute(2, 0, 1).float() / 255.0 for im in images],
            [{'boxes': torch.from_numpy(b), 'labels': torch.from_numpy(l)}
             for b, l in zip(boxes, labels)])
  tv.eval()

  m = 4
  gt_boxes = np.zeros((2, m, 4), np.float32)
  gt_classes = np.zeros((2, m), np.int32)
  valid = np.zeros((2, m), bool)
  for i, (b, l) in enumerate(zip(boxes, labels)):
    gt_boxes[i, :len(b)], gt_classes[i, :len(l)], valid[i, :len(b)] = b, l, True
  x = np.stack([normalized(im) for im in images])
  out = jax.jit(model.apply)(variables, x)
  tg = targets.assign_targets_batch(gt_boxes, gt_classes, valid, image_size=size,
                                    **targets.assigner_kwargs(config.model))
  got = losses.fcos_losses(out['cls_logits'], out['bbox_reg'], out['centerness'], tg,
                           **losses.loss_kwargs(config))
  assert float(got['num_pos']) > 10
  errors = {
      'classification': rel_err(got['cls'], want['classification'].item()),
      'bbox_regression': rel_err(got['box'], want['bbox_regression'].item()),
      'bbox_ctrness': rel_err(got['centerness'], want['bbox_ctrness'].item()),
  }
  print('loss relative errors: ' + ', '.join(f'{k} {v:.1e}' for k, v in errors.items()))
  assert max(errors.values()) <= 1e-4, (errors, {k: float(v) for k, v in want.items()})


def test_import_errors_name_the_key(models):
  _, _, model, _ = models
  like = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  sd = {k: v.numpy() for k, v in models[0].state_dict().items()}
  bad = dict(sd)
  del bad['head.regression_head.bbox_ctrness.bias']
  with pytest.raises(torchvision_import.WeightImportError,
                     match='missing.*head.regression_head.bbox_ctrness.bias'):
    torchvision_import.convert(bad, like, 'fcos')
  bad = dict(sd, **{'head.extra.weight': np.zeros(3, np.float32)})
  with pytest.raises(torchvision_import.WeightImportError, match='unexpected.*head.extra.weight'):
    torchvision_import.convert(bad, like, 'fcos')
  bad = dict(sd)
  bad['backbone.fpn.extra_blocks.p6.bias'] = np.zeros(128, np.float32)
  with pytest.raises(torchvision_import.WeightImportError,
                     match=r'backbone.fpn.extra_blocks.p6.bias: shape \(128,\)'):
    torchvision_import.convert(bad, like, 'fcos')


def test_imagenet_resnet50_import(models, tmp_path):
  """A torchvision resnet50 state dict (with its fc classifier) -> backbone + frozen BN."""
  torch.manual_seed(0)
  resnet = torchvision.models.resnet50(weights=None)
  path = tmp_path / 'resnet50.pth'
  torch.save(resnet.state_dict(), path)
  out = tmp_path / 'imported'
  kind, n = torchvision_import.import_weights(str(path), str(out))
  assert kind == 'resnet' and n == 265  # 53 convs + 53 x 4 BN tensors
  from fcos_jax.weights import params
  loaded = params.load_params(str(out))
  np.testing.assert_array_equal(
      loaded['params']['backbone']['layer3']['2']['conv2']['kernel'],
      resnet.state_dict()['layer3.2.conv2.weight'].numpy().transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(loaded['batch_stats']['backbone']['layer1']['0']['downsample_bn']
                                ['var'], resnet.state_dict()['layer1.0.downsample.1.running_var'])


def test_imagenet_backbone_initializes_training(tmp_path):
  """An imported ImageNet ResNet becomes `init_checkpoint`: backbone and frozen-BN statistics
  replaced, FPN and head keep their fresh init."""
  from fcos_jax.configs import coco
  from fcos_jax import optim, sharding, train_step
  from fcos_jax.weights import params
  torch.manual_seed(0)
  resnet = torchvision.models.resnet18(weights=None)
  with torch.no_grad():
    for m in resnet.modules():
      if isinstance(m, nn.BatchNorm2d):
        m.running_var.uniform_(0.5, 2.0)
  path = tmp_path / 'resnet18.pth'
  torch.save(resnet.state_dict(), path)
  config = coco.get_config()
  config.model.update(backbone_depth=18, fpn_channels=32, head_num_convs=1, num_classes=3)
  torchvision_import.import_weights(str(path), str(tmp_path / 'r18'), config.model)
  mesh = sharding.make_mesh(jax.devices()[:1])
  model = fcos.create_model(config.model)
  like = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  tx = optim.create_optimizer(config, like['params'])
  state = train_step.create_train_state(config, model, tx, mesh)
  merged = params.merge_init_checkpoint(state, str(tmp_path / 'r18'))
  sd = resnet.state_dict()
  np.testing.assert_array_equal(merged.params['backbone']['layer4']['1']['conv2']['kernel'],
                                sd['layer4.1.conv2.weight'].numpy().transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(merged.batch_stats['backbone']['bn1']['var'],
                                sd['bn1.running_var'].numpy())
  np.testing.assert_array_equal(merged.params['head']['cls_logits']['kernel'],
                                state.params['head']['cls_logits']['kernel'])


def test_download_table_is_torchvisions_and_fetch_checks_the_hash(tmp_path):
  """--download names map to the URLs of torchvision's weight enums; a file:// mirror is fetched,
  hash-checked and cached; a pre-filled cache needs no network; a bad hash is refused."""
  import hashlib
  import torchvision.models as tvm
  from torchvision.models import detection
  enums = {'resnet18': tvm.ResNet18_Weights.IMAGENET1K_V1,
           'resnet34': tvm.ResNet34_Weights.IMAGENET1K_V1,
           'resnet50': tvm.ResNet50_Weights.IMAGENET1K_V1,
           'resnet50_v2': tvm.ResNet50_Weights.IMAGENET1K_V2,
           'resnet101': tvm.ResNet101_Weights.IMAGENET1K_V1,
           'fcos_resnet50_fpn': detection.FCOS_ResNet50_FPN_Weights.COCO_V1}
  assert {k: torchvision_import.BASE_URL + v
          for k, v in torchvision_import.TORCHVISION_WEIGHTS.items()} == \
      {k: e.url for k, e in enums.items()}
  # A mirror holding a file under the expected name whose sha256 does not match.
  mirror = tmp_path / 'mirror'
  mirror.mkdir()
  name = torchvision_import.TORCHVISION_WEIGHTS['resnet18']
  (mirror / name).write_bytes(b'not the weights')
  cache = tmp_path / 'cache'
  with pytest.raises(torchvision_import.WeightImportError, match='sha256'):
    torchvision_import.fetch('resnet18', str(cache), f'file://{mirror}')
  assert not (cache / name).exists()
  # With the real hash prefix (patched to this file's), it is fetched and cached.
  data = b'stand-in weights'
  (mirror / name).write_bytes(data)
  prefix = hashlib.sha256(data).hexdigest()[:8]
  table = dict(torchvision_import.TORCHVISION_WEIGHTS, resnet18=f'resnet18-{prefix}.pth')
  (mirror / f'resnet18-{prefix}.pth').write_bytes(data)
  orig = torchvision_import.TORCHVISION_WEIGHTS
  torchvision_import.TORCHVISION_WEIGHTS = table
  try:
    path = torchvision_import.fetch('resnet18', str(cache), f'file://{mirror}')
    assert open(path, 'rb').read() == data
    # From the cache, with no reachable mirror.
    assert torchvision_import.fetch('resnet18', str(cache), 'file:///nonexistent') == path
  finally:
    torchvision_import.TORCHVISION_WEIGHTS = orig
  with pytest.raises(torchvision_import.WeightImportError, match='known weights'):
    torchvision_import.fetch('resnet9', str(cache))


def test_coco_names_are_torchvisions():
  from torchvision.models.detection import FCOS_ResNet50_FPN_Weights
  from fcos_jax.data import categories
  tv = FCOS_ResNet50_FPN_Weights.COCO_V1.meta['categories']  # 91 slots by category id
  cats = categories.coco()
  assert [tv[i] for i in cats.ids] == list(cats.names)
