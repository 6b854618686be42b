"""Shapes of saved and wanted tensors: abstract stand-ins of arrays, and the one comparison that
names every tensor that does not fit."""

from typing import Any, Dict, List, Tuple

import jax

Shapes = Dict[str, Tuple[int, ...]]


def abstract_like(tree: Any) -> Any:
  """ShapeDtypeStructs (with shardings where the leaves have them) of a pytree of arrays: what
  orbax restores into and what a step is compiled for."""
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, 'sharding', None)),
      tree)


def shape_mismatches(saved: Shapes, wanted: Shapes, *, where: str = 'the checkpoint',
                     missing_ok: bool = False) -> List[str]:
  """Human-readable differences between saved and wanted tensor shapes, mismatched first;
  with `missing_ok`, tensors the file lacks are not differences (they keep a fresh init)."""
  out = [f'{k} is {saved[k]} in {where}, {wanted[k]} in the model'
         for k in sorted(set(saved) & set(wanted)) if saved[k] != wanted[k]]
  if not missing_ok:
    out += [f'{k} is missing from {where}' for k in sorted(set(wanted) - set(saved))]
  out += [f'{k} is in {where}, not in the model' for k in sorted(set(saved) - set(wanted))]
  return out


def summarize(mismatches: List[str], limit: int = 3) -> str:
  """The first few mismatches on one line, and how many more there are."""
  more = len(mismatches) - limit
  return '; '.join(mismatches[:limit]) + (f' (+{more} more)' if more > 0 else '')
