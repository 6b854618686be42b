"""torchvision weights -> an fcos_jax params checkpoint (orbax); the program is
`fcos-import-torchvision` (fcos_jax/programs/import_torchvision.py).

- A `resnet50` ImageNet state dict -> backbone parameters + frozen-BN statistics (the classifier
  `fc.*` is dropped), the `init_checkpoint` of configs/coco.py.
- A `fcos_resnet50_fpn` COCO state dict -> the whole detector of configs/coco_torchvision.py,
  usable by evaluate.py / export.py with `--params DIR`.

The file is read without executing pickled code (`torch.load(..., weights_only=True)`, or a
`.safetensors` file). Every tensor is checked: a missing, unexpected or mis-shaped key is an
error naming it.
"""

import logging
import os
from typing import Any, Dict, Mapping, Tuple

import numpy as np

from fcos_jax import errors
from fcos_jax.models import torchvision_names

# torchvision's weight files (the URLs of its weight enums; the 8 hex digits are the start of
# the file's sha256, which `fetch` checks as torch.hub does). tests/ checks them against the enums.
BASE_URL = 'https://download.pytorch.org/models/'
TORCHVISION_WEIGHTS = {
    'resnet18': 'resnet18-f37072fd.pth',             # ResNet18_Weights.IMAGENET1K_V1
    'resnet34': 'resnet34-b627a593.pth',             # ResNet34_Weights.IMAGENET1K_V1
    'resnet50': 'resnet50-0676ba61.pth',             # ResNet50_Weights.IMAGENET1K_V1 (FCOS's)
    'resnet50_v2': 'resnet50-11ad3fa6.pth',          # ResNet50_Weights.IMAGENET1K_V2
    'resnet101': 'resnet101-63fe2227.pth',           # ResNet101_Weights.IMAGENET1K_V1
    'fcos_resnet50_fpn': 'fcos_resnet50_fpn_coco-99b0c9b7.pth',  # FCOS_..._Weights.COCO_V1
}
DEFAULT_CACHE = os.path.join('~', '.cache', 'fcos_jax', 'weights')

IGNORED_SUFFIXES = ('num_batches_tracked',)   # BatchNorm2d's counter: not a weight
RESNET_CLASSIFIER = ('fc.weight', 'fc.bias')  # ImageNet head: not part of a detection backbone


class WeightImportError(errors.DataError):
  """A weights file that cannot be read or does not fit the model."""


def _sha256_prefix_ok(path: str, prefix: str) -> bool:
  import hashlib
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest().startswith(prefix)


def require_torch(path: str) -> None:
  """A .pth file is read with torch: when it is not installed, one line naming the extra, before
  any download or work (a .safetensors file needs no torch)."""
  import importlib.util
  if path.endswith('.safetensors') or importlib.util.find_spec('torch') is not None:
    return
  raise WeightImportError(f'{os.path.basename(path)} is a torch file and reading it needs torch: '
                          'pip install "fcos_jax[torch]" (or give a .safetensors file)')


def fetch(name: str, cache_dir: str = DEFAULT_CACHE, base_url: str = BASE_URL) -> str:
  """Local path of torchvision weights `name` (a key of TORCHVISION_WEIGHTS): from the cache,
  else downloaded from `base_url`, hash-checked, then cached."""
  import re
  import shutil
  import urllib.request
  if name not in TORCHVISION_WEIGHTS:
    raise WeightImportError(f'--download {name!r}: known weights are '
                            f'{", ".join(sorted(TORCHVISION_WEIGHTS))}')
  filename = TORCHVISION_WEIGHTS[name]
  prefix = re.search(r'-([0-9a-f]{8})\.', filename).group(1)
  cache_dir = os.path.expanduser(cache_dir)
  path = os.path.join(cache_dir, filename)
  if os.path.exists(path) and _sha256_prefix_ok(path, prefix):
    return path
  os.makedirs(cache_dir, exist_ok=True)
  url = base_url.rstrip('/') + '/' + filename
  partial = f'{path}.partial'
  try:
    with urllib.request.urlopen(url) as response, open(partial, 'wb') as f:
      shutil.copyfileobj(response, f)
  except OSError as e:
    raise WeightImportError(f'{url}: cannot be downloaded ({e})') from None
  if not _sha256_prefix_ok(partial, prefix):
    os.remove(partial)
    raise WeightImportError(f'{url}: sha256 does not start with {prefix}: a damaged download')
  os.replace(partial, path)
  return path


def read_state_dict(path: str) -> Dict[str, np.ndarray]:
  """{key: numpy array} of a .pth (weights only, no pickled code) or .safetensors file."""
  if not os.path.exists(path):
    raise WeightImportError(f'{path}: no such file')
  if path.endswith('.safetensors'):
    from safetensors.numpy import load_file
    try:
      return _unwrapped(dict(load_file(path)), path)
    except WeightImportError:
      raise
    except Exception as e:  # noqa: BLE001 - name the file, not the parser's internals
      raise WeightImportError(f'{path}: cannot be read as a safetensors file: {e}') from None
  import torch
  try:
    sd = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # noqa: BLE001 - report what the file is, not torch's internals
    first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
    raise WeightImportError(f'{path}: cannot be read as a weights-only torch file ({first})') \
        from None
  for wrapper in ('state_dict', 'model'):  # Lightning's / torchvision references' checkpoints
    if isinstance(sd, Mapping) and isinstance(sd.get(wrapper), Mapping):
      logging.info('%s: reading the weights under its %r key', path, wrapper)
      sd = sd[wrapper]
  if not isinstance(sd, Mapping):
    raise WeightImportError(f'{path}: expected a state dict, got {type(sd).__name__}')
  bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
  if bad:
    raise WeightImportError(f'{path}: {bad[0]!r} is a {type(sd[bad[0]]).__name__}, not a tensor'
                            + (f' (+{len(bad) - 1} more)' if len(bad) > 1 else ''))
  return _unwrapped({k: v.detach().cpu().numpy() for k, v in sd.items()}, path)


# Key prefixes a whole file can carry: DataParallel / DistributedDataParallel ('module.'), a
# LightningModule holding the network as `self.model` ('model.').
WRAPPER_PREFIXES = ('module.', 'model.')


def _unwrapped(sd: Dict[str, np.ndarray], path: str) -> Dict[str, np.ndarray]:
  """`sd` without a prefix that every key carries (said in one line)."""
  for prefix in WRAPPER_PREFIXES:
    if sd and all(k.startswith(prefix) for k in sd):
      logging.warning('%s: every key starts with %r (a DataParallel / Lightning file): '
                      'reading them without it', path, prefix)
      sd = {k[len(prefix):]: v for k, v in sd.items()}
  return sd


def resnet_depth(state_dict: Mapping[str, Any], prefix: str = '') -> int:
  """18/34/50/101/152 from the block counts and block type of a ResNet state dict."""
  blocks = tuple(len({k.split('.')[1] for k in state_dict
                      if k.startswith(f'{prefix}layer{i}.') and k.endswith('conv1.weight')})
                 for i in range(1, 5))
  bottleneck = any(k.startswith(f'{prefix}layer1.') and 'conv3' in k for k in state_dict)
  known = {((2, 2, 2, 2), False): 18, ((3, 4, 6, 3), False): 34, ((3, 4, 6, 3), True): 50,
           ((3, 4, 23, 3), True): 101, ((3, 8, 36, 3), True): 152}
  return known.get((blocks, bottleneck), 0)


def detect_kind(state_dict: Mapping[str, Any]) -> str:
  if any(k.startswith('backbone.body.') for k in state_dict):
    return 'fcos'
  if 'conv1.weight' in state_dict and any(k.startswith('layer4.') for k in state_dict):
    return 'resnet'
  raise WeightImportError('neither a torchvision fcos_resnet50_fpn nor a resnet state dict '
                          f'(first keys: {list(state_dict)[:5]})')


def _set(tree: Dict[str, Any], path: Tuple[str, ...], value) -> None:
  for p in path[:-1]:
    tree = tree.setdefault(p, {})
  tree[path[-1]] = value


def convert(state_dict: Mapping[str, np.ndarray], variables_like, kind: str) -> Dict[str, Any]:
  """torchvision state dict -> {'params': ..., 'batch_stats': ...} in the layout of
  `variables_like` (the target model's variables or their shapes); checks every tensor."""
  if kind == 'resnet':  # only the backbone has counterparts in an ImageNet ResNet
    variables_like = {c: {'backbone': v['backbone']} for c, v in variables_like.items()
                      if 'backbone' in v}
  names = torchvision_names.torchvision_names(variables_like)  # torch key -> (collection, path)
  if kind == 'resnet':
    names = {k[len('backbone.body.'):]: v for k, v in names.items()
             if k.startswith('backbone.body.')}
    extra_ok = set(RESNET_CLASSIFIER)
  elif kind == 'fcos':
    extra_ok = set()
  else:
    raise WeightImportError(f"kind must be 'resnet' or 'fcos', got {kind!r}")
  keys = {k for k in state_dict if not k.endswith(IGNORED_SUFFIXES)} - extra_ok
  unexpected = sorted(keys - set(names))
  missing = sorted(set(names) - keys)
  if unexpected:
    raise WeightImportError(f'unexpected key(s) with no place in the model: {unexpected[:10]}'
                            + (f' (+{len(unexpected) - 10} more)' if len(unexpected) > 10 else ''))
  if missing:
    raise WeightImportError(f'missing key(s) the model needs: {missing[:10]}'
                            + (f' (+{len(missing) - 10} more)' if len(missing) > 10 else ''))
  out: Dict[str, Any] = {'params': {}, 'batch_stats': {}}
  for key, (collection, path) in names.items():
    value = torchvision_names.torch_to_flax(state_dict[key], path[-1]).astype(np.float32)
    like = variables_like[collection]
    for p in path:
      like = like[p]
    if tuple(value.shape) != tuple(like.shape):
      raise WeightImportError(f'{key}: shape {tuple(state_dict[key].shape)} does not fit '
                              f'{collection}/{"/".join(path)} of shape {tuple(like.shape)}')
    _set(out[collection], path, value)
  return out


def save(variables: Dict[str, Any], out_dir: str) -> None:
  import orbax.checkpoint as ocp
  out_dir = os.path.abspath(out_dir)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(out_dir, variables)


def import_weights(weights: str, out: str, model_config=None) -> Tuple[str, int]:
  """Reads `weights`, converts for `model_config` (default: configs/coco_torchvision.py's model
  for a detector, configs/coco.py's for a backbone) and saves; returns (kind, tensor count)."""
  import jax
  from fcos_jax.models import fcos
  state_dict = read_state_dict(weights)
  kind = detect_kind(state_dict)
  if model_config is None:
    from fcos_jax.configs import coco, coco_torchvision
    model_config = (coco_torchvision if kind == 'fcos' else coco).get_config().model
  model = fcos.create_model(model_config)
  like = fcos.abstract_variables(model)
  prefix = 'backbone.body.' if kind == 'fcos' else ''
  depth = resnet_depth(state_dict, prefix)
  if depth and depth != model_config.backbone_depth:  # unknown depth: convert names the keys
    raise WeightImportError(
        f'{weights}: a ResNet-{depth} '
        f'{"detector" if kind == "fcos" else "backbone"}, but the model config expects '
        f'ResNet-{model_config.backbone_depth} (set model.backbone_depth={depth} in the config '
        'that will use these weights)')
  variables = convert(state_dict, like, kind)
  if os.path.exists(out):
    raise WeightImportError(f'{out} already exists; remove it or choose another --out')
  save(variables, out)
  return kind, sum(len(jax.tree_util.tree_leaves(v)) for v in variables.values())
