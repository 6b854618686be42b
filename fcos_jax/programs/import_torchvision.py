"""Import torchvision weights into fcos_jax (an orbax params checkpoint).

  fcos-import-torchvision --weights resnet50-11ad3fa6.pth --out DIR
  fcos-import-torchvision --weights fcos_resnet50_fpn_coco-99b0c9b7.pth --out DIR
  fcos-import-torchvision --download fcos_resnet50_fpn --out DIR

An ImageNet ResNet becomes the backbone of configs/coco.py (its `init_checkpoint`); torchvision's
COCO `fcos_resnet50_fpn` the whole detector of configs/coco_torchvision.py (`--params DIR` of
evaluate, export and predict). The conversion itself: `fcos_jax.weights.torchvision_import`.
"""

from absl import flags
from ml_collections import config_flags

from fcos_jax.programs import cli
from fcos_jax.weights import torchvision_import as tv

_WEIGHTS = flags.DEFINE_string('weights', None, 'torchvision .pth or .safetensors file.')
_DOWNLOAD = flags.DEFINE_string('download', None, 'Fetch torchvision weights by name instead: '
                                + ', '.join(sorted(tv.TORCHVISION_WEIGHTS)) + '.')
_CACHE_DIR = flags.DEFINE_string('cache_dir', tv.DEFAULT_CACHE, 'Where --download keeps the '
                                 'files.')
_BASE_URL = flags.DEFINE_string('base_url', tv.BASE_URL, 'Where --download fetches from (a '
                                'mirror, file://).')
_OUT = flags.DEFINE_string('out', None, 'Output directory (orbax checkpoint); must not exist.',
                           required=True)
_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'The config whose model the weights are for (default: coco_torchvision for '
    'a detector, coco for a backbone).', lock_config=True)


def main(argv):
  from fcos_jax import errors
  cli.no_arguments(argv)
  if bool(_WEIGHTS.value) == bool(_DOWNLOAD.value):
    raise errors.UserError('give --weights FILE or --download NAME (one of '
                           f'{", ".join(sorted(tv.TORCHVISION_WEIGHTS))})')
  file_name = _WEIGHTS.value or tv.TORCHVISION_WEIGHTS.get(_DOWNLOAD.value)
  if file_name:  # an unknown --download name is fetch's error
    tv.require_torch(file_name)
  weights = _WEIGHTS.value or tv.fetch(_DOWNLOAD.value, _CACHE_DIR.value, _BASE_URL.value)
  model_config = cli.get_config(_CONFIG).model if _CONFIG.value else None
  kind, n = tv.import_weights(weights, _OUT.value, model_config)
  print(f'imported a torchvision {kind} state dict ({n} tensors) from {weights} into '
        f'{_OUT.value}')


def run():
  cli.run(main)


if __name__ == '__main__':
  run()
