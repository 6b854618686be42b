"""Pytrees addressed by path: the one flattening that checkpoints, weight files, configs and
the torchvision name map share ('params/fpn/p6/kernel')."""

from typing import Any, Callable, Dict, Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np


def _key_name(key) -> str:
  return str(getattr(key, 'key', getattr(key, 'idx', getattr(key, 'name', key))))


def path_name(key_path, sep: str = '/') -> str:
  """'params/fpn/p6/kernel' of a jax key path (dict keys, list indices, attributes alike)."""
  return sep.join(_key_name(k) for k in key_path)


def leaves_by_path(tree: Any, sep: str = '/',
                   is_leaf: Optional[Callable[[Any], bool]] = None) -> Dict[str, Any]:
  """{path name: leaf} of a pytree; dataclasses (a train state) and orbax metadata trees are
  seen through their state dicts, so the same tensor has the same name in all of them."""
  tree = flax.serialization.to_state_dict(tree)
  return {path_name(p, sep): v
          for p, v in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)[0]}


def shapes_by_path(tree: Any) -> Dict[str, tuple]:
  """{path name: shape} of a pytree of arrays, ShapeDtypeStructs or orbax array metadata."""
  return {k: tuple(getattr(v, 'shape', ())) for k, v in leaves_by_path(tree).items()}


def all_finite(tree: Any):
  """On-device bool: every floating-point value of the pytree is finite (integer leaves, e.g.
  optimizer step counts, pass)."""
  flags = [jnp.isfinite(x).all() for x in jax.tree_util.tree_leaves(tree)
           if jnp.issubdtype(jnp.result_type(x), jnp.floating)]
  return jnp.all(jnp.stack(flags)) if flags else jnp.bool_(True)


def non_finite_paths(tree: Any) -> list:
  """Path names of the floating-point leaves holding a NaN or an infinity (read to the host:
  for a restore or a report, not a step)."""
  bad = []
  for name, x in leaves_by_path(tree).items():
    if hasattr(x, 'dtype') and np.issubdtype(x.dtype, np.floating):
      if not bool(jax.device_get(jnp.isfinite(x).all())):
        bad.append(name)
  return bad
