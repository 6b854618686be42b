"""Writers and runners of the export formats, one module each, below nothing but `contract`.

Every format module offers `write(fn, variables, shapes, out_dir, metadata) -> model entries`
and `load(export_dir, metadata) -> {(height, width): program}`, where `fn(variables, images,
image_sizes)` is a JAX function of the contract's inputs (`serving.export.detection_fn`) and a
program maps them to the numpy outputs named in `contract.OUTPUT_KEYS`. Converters are imported
inside the functions: each format's packages are an optional extra.
"""

import importlib.util

from fcos_jax import errors

FORMATS = ('stablehlo', 'onnx', 'savedmodel')
# The packages each format needs to be written, and the extra that installs them.
_NEEDS = {'stablehlo': ((), None),
          'onnx': (('jax2onnx', 'onnx', 'onnxruntime'), 'onnx'),
          'savedmodel': (('tensorflow',), 'tf-export')}


def require(fmt: str) -> None:
  """Raises a one-line UserError when a package that writing `fmt` needs is not installed."""
  packages, extra = _NEEDS[fmt]
  missing = [p for p in packages if importlib.util.find_spec(p) is None]
  if missing:
    raise errors.UserError(f'--format {fmt} needs {", ".join(missing)}: pip install '
                           f'"fcos_jax[{extra}]"')


def module(fmt: str):
  """The writer/runner module of a format name."""
  if fmt == 'stablehlo':
    from fcos_jax.exporters import stablehlo
    return stablehlo
  if fmt == 'onnx':
    from fcos_jax.exporters import onnx_model
    return onnx_model
  if fmt == 'savedmodel':
    from fcos_jax.exporters import saved_model
    return saved_model
  raise ValueError(f'unknown export format {fmt!r}; one of {", ".join(FORMATS)}')
