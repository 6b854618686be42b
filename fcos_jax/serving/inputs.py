"""The files of a prediction run: inputs expanded from files, folders and globs; one output
per input that never lands on an input or on a file the user did not ask to replace; COCO image
ids matched to inputs by the longest path suffix."""

import glob
import json
import os
from typing import Dict, List, Sequence, Tuple

from fcos_jax import errors
from fcos_jax.video_io import VIDEO_SUFFIXES

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff', '.gif')
# What a run writes into its output folder besides the pictures.
RUN_FILES = ('detections.json', 'results.json')


def _inside(path: str, folder: str) -> bool:
  path, folder = os.path.realpath(path), os.path.realpath(folder)
  return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def expand_inputs(patterns: Sequence[str], exclude: str = '') -> Tuple[List[str], int]:
  """(files of the --image arguments, how many were left out): files as given, folders
  recursively, globs expanded. A folder's files inside the output folder `exclude`, when that
  lies strictly within it (the drawings of an earlier run), are left out."""
  found, excluded = [], 0
  for pattern in patterns:
    if os.path.isdir(pattern):
      skip = (exclude if exclude and os.path.isdir(exclude) and _inside(exclude, pattern) and
              os.path.realpath(exclude) != os.path.realpath(pattern) else '')
      for root, dirs, files in os.walk(pattern):
        dirs.sort()
        names = sorted(os.path.join(root, f) for f in files
                       if f.lower().endswith(IMAGE_SUFFIXES + VIDEO_SUFFIXES))
        kept = [p for p in names if not (skip and _inside(p, skip))]
        excluded += len(names) - len(kept)
        found += kept
    elif any(c in pattern for c in '*?['):
      matches = sorted(glob.glob(pattern, recursive=True))
      if not matches:
        raise errors.UserError(f'--image {pattern!r} matches no file')
      found += matches
    else:
      found.append(pattern)  # a missing file is reported and skipped like an unreadable one
  return list(dict.fromkeys(found)), excluded


def output_paths(inputs: Sequence[str], out_dir: str) -> Dict[str, str]:
  """Input path -> OUT_DIR/<path relative to the common folder>.png (.mp4 for a video),
  distinct per input."""
  absolute = [os.path.abspath(p) for p in inputs]
  common = os.path.commonpath([os.path.dirname(p) for p in absolute]) if absolute else ''
  out = {}
  for p, a in zip(inputs, absolute):
    stem = os.path.splitext(os.path.relpath(a, common))[0]
    out[p] = os.path.join(out_dir, stem + ('.mp4' if p.lower().endswith(VIDEO_SUFFIXES)
                                           else '.png'))
  return out


def check_outputs(inputs: Sequence[str], outputs: Dict[str, str], out_dir: str,
                  overwrite: bool) -> None:
  """`UserError` unless the run can write without loss: `out_dir` is a folder (or absent),
  no output is an input, and an existing non-empty `out_dir` is replaced only with
  `overwrite` (export's rule)."""
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise errors.UserError(f'--out {out_dir} is a file, not a folder: give a folder to write '
                           'the pictures, detections.json and results.json into')
  real_inputs = {os.path.realpath(p): p for p in inputs}
  for path, out in outputs.items():
    clash = real_inputs.get(os.path.realpath(out))
    if clash:
      raise errors.UserError(f'the picture of {path} would be written over the input {clash}: '
                             'give an --out folder outside the inputs')
  for name in RUN_FILES:
    clash = real_inputs.get(os.path.realpath(os.path.join(out_dir, name)))
    if clash:
      raise errors.UserError(f'{os.path.join(out_dir, name)} is an input: give another --out')
  if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
    raise errors.UserError(f'{out_dir} is not empty: give another --out, or --overwrite to '
                           'write into it (its detections.json, results.json and pictures of '
                           'the same names are replaced)')


def _parts(path: str) -> Tuple[str, ...]:
  return tuple(p for p in os.path.normpath(path.replace('\\', '/')).split('/')
               if p not in ('', '.'))


def read_json(path: str, what: str):
  """A JSON file (a UTF-8 byte-order mark allowed), `DataError` naming it if missing or bad."""
  try:
    with open(path, encoding='utf-8-sig') as f:
      return json.load(f)
  except FileNotFoundError:
    raise errors.DataError(f'{what} {path}: no such file') from None
  except IsADirectoryError:
    raise errors.DataError(f'{what} {path} is a folder, not a JSON file') from None
  except (ValueError, UnicodeDecodeError) as e:
    raise errors.DataError(f'{what} {path} is not valid JSON ({e})') from None


def image_ids(inputs: Sequence[str], annotations: str) -> Dict[str, int]:
  """Input path -> COCO image id of the `annotations` image whose file_name is the longest
  suffix (in whole path components) of the input path; else 1, 2, ... without a file.
  An input that no file name ends, or that two images of different ids match equally well,
  is a `DataError` naming both."""
  if not annotations:
    return {p: i + 1 for i, p in enumerate(inputs)}
  data = read_json(annotations, '--annotations')
  images = data.get('images') if isinstance(data, dict) else None
  if not isinstance(images, list):
    raise errors.DataError(f'{annotations}: no "images" list (is it a COCO annotation file?)')
  by_base: Dict[str, List[Tuple[Tuple[str, ...], int, str]]] = {}
  for i, im in enumerate(images):
    if not isinstance(im, dict) or 'file_name' not in im or 'id' not in im:
      raise errors.DataError(f'{annotations}: images[{i}] lacks "file_name" or "id"')
    parts = _parts(str(im['file_name']))
    if parts:
      by_base.setdefault(parts[-1], []).append((parts, im['id'], str(im['file_name'])))
  ids = {}
  for p in inputs:
    path = _parts(os.path.abspath(p))
    matches = [(len(parts), i, name) for parts, i, name in by_base.get(path[-1], ())
               if path[-len(parts):] == parts]
    if not matches:
      raise errors.DataError(f'{annotations}: no image whose file_name ends the path {p}')
    longest = max(m[0] for m in matches)
    best = {(i, name) for n, i, name in matches if n == longest}
    if len({i for i, _ in best}) > 1:
      raise errors.DataError(
          f'{annotations}: {p} matches images ' +
          ', '.join(f'{name!r} (id {i})' for i, name in sorted(best, key=str)) +
          ' equally well: give file names that tell them apart')
    ids[p] = best.pop()[0]
  return ids
