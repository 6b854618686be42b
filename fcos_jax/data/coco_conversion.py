"""Convert a COCO-format detection dataset (JSON + image folder) into a TFDS dataset with the
features of TFDS `coco/2017`, so the input pipeline and `evaluate.py` read it by name.

  fcos-convert-coco --name my_data --data_dir ~/tensorflow_datasets \
      --annotations train.json --images train_images/ --split train \
      --annotations val.json --images val_images/ --split validation

(the program: fcos_jax/programs/convert_coco.py; `python -m fcos_jax.data.convert_coco` is an
alias).

Features: 'image' (RGB), 'image/filename', 'image/id', 'objects' {'bbox' normalized
[ymin, xmin, ymax, xmax], 'label' (index in the category list), 'area', 'id', 'is_crowd'}.
Beside the TFDS files, `categories.json` keeps the label -> (COCO id, name) list and
`conversion_report.json` the images and boxes written per split and the counts and items of
everything repaired or skipped.

Bad input is never dropped silently: every problem is counted per kind and kept in the report
with its image/annotation id and file (the summary shows the first few of each kind, not a log
line per item); `--on_error=fail` stops at the first one instead.
"""

import collections
import contextlib
import dataclasses
import io
import json
import logging
import os
import warnings
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from fcos_jax import errors, image_io

# Problems: the record is skipped (or, with on_error='fail', conversion stops).
ERROR_KINDS = {
    'malformed_record': 'an image/annotation/category record lacks a key or has a bad value',
    'duplicate_id': 'an image or annotation id appears twice',
    'unknown_image': 'annotation refers to an image id not in the file',
    'unknown_category': 'annotation refers to a category id not in the file',
    'degenerate_box': 'bbox width or height <= 0',
    'box_outside_image': 'bbox does not overlap the image at all',
    'missing_file': 'image file not found',
    'corrupt_image': 'image file cannot be decoded',
    'size_mismatch': 'decoded image size differs from the JSON width/height',
    'too_many_pixels': 'image above the pixel limit (--max_pixels; a decompression bomb?)',
}
# Repairs and facts: counted and reported, the data is kept.
INFO_KINDS = {
    'box_clipped': 'bbox partly outside the image, clipped to it',
    'converted_to_rgb': 'grayscale/CMYK/RGBA/palette image converted to RGB',
    'scaled_to_8bit': '16-bit image scaled to 8 bits (and to RGB)',
    'non_jpeg_image': 'PNG image stored as it is',
    'reencoded_as_png': 'BMP/WebP/TIFF/GIF/... image stored losslessly as PNG',
    'iscrowd_parsed': 'iscrowd given as a string "0"/"1", read as the number',
    'image_without_boxes': 'image kept with no objects (as coco/2017 does)',
    'annotation_of_skipped_image': 'annotation dropped because its image was skipped',
    'file_outside_images': 'file_name is absolute or leaves the --images folder (../), read there',
    'exif_orientation_kept': 'EXIF orientation tag ignored: boxes refer to the stored pixels',
    # YOLO and Pascal VOC input (data/label_formats.py)
    'missing_label_file': 'YOLO image without a label file, kept with no objects',
    'segment_as_box': 'YOLO segment line read as the box around its points',
    'difficult_as_crowd': 'VOC difficult object kept as a crowd box (ignored, as VOC does)',
}


class ConversionError(errors.DataError):
  """Bad input with on_error='fail', or input that cannot be converted at all."""


SUMMARY_EXAMPLES = 3  # items of each kind the summary shows; the report file keeps all


@dataclasses.dataclass
class Report:
  """Counts and messages per kind, and the images and boxes written per split.

  Items are only collected, never logged one by one (a repaired dataset can have thousands):
  `summary()` shows the non-zero kinds with their first few items, `to_json()` keeps every
  item for `conversion_report.json`."""
  on_error: str = 'skip'
  counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  examples: Dict[str, List[str]] = dataclasses.field(  # every message of each kind
      default_factory=lambda: collections.defaultdict(list))
  written: Dict[str, Dict[str, int]] = dataclasses.field(default_factory=dict)
  path: Optional[str] = None  # the conversion_report.json written, once it is

  def add(self, kind: str, message: str) -> None:
    if kind not in ERROR_KINDS and kind not in INFO_KINDS:
      raise KeyError(kind)
    if kind in ERROR_KINDS and self.on_error == 'fail':
      raise ConversionError(f'{kind}: {message}')
    self.counts[kind] += 1
    self.examples[kind].append(message)
    logging.debug('%s: %s', kind, message)

  def wrote(self, split: str, num_boxes: int) -> None:
    """One example of `split` written, with `num_boxes` objects."""
    counts = self.written.setdefault(split, {'images': 0, 'boxes': 0})
    counts['images'] += 1
    counts['boxes'] += num_boxes

  def summary(self) -> str:
    lines = ['conversion summary:']
    for split, c in self.written.items():
      lines.append(f'  {split}: {c["images"]} images, {c["boxes"]} boxes written')
    for kinds, title in ((ERROR_KINDS, 'skipped'), (INFO_KINDS, 'kept / repaired')):
      found = [k for k in kinds if self.counts.get(k)]
      if not found:
        lines.append(f'  {title}: none')
        continue
      lines.append(f'  {title}:')
      for kind in found:
        lines.append(f'    {kind:<30}{self.counts[kind]:>8}   {kinds[kind]}')
        lines += [f'      {m}' for m in self.examples[kind][:SUMMARY_EXAMPLES]]
        if self.counts[kind] > SUMMARY_EXAMPLES:
          lines.append(f'      ... {self.counts[kind] - SUMMARY_EXAMPLES} more')
    if self.path and self.counts:
      lines.append(f'  every item: {self.path}')
    return '\n'.join(lines)

  def to_json(self) -> Dict[str, Any]:
    """'counts' of every kind (0 included), 'examples': every message of each kind found,
    'splits': images and boxes written per split."""
    kinds = list(ERROR_KINDS) + list(INFO_KINDS)
    return {'counts': {k: self.counts.get(k, 0) for k in kinds},
            'examples': {k: self.examples[k] for k in kinds if self.examples.get(k)},
            'splits': self.written}


def coco_features(category_names: Sequence[str]):
  """The TFDS `coco/2017` feature spec with `category_names` as the label names."""
  import tensorflow_datasets as tfds
  return tfds.features.FeaturesDict({
      'image': tfds.features.Image(shape=(None, None, 3), dtype=np.uint8),
      'image/filename': tfds.features.Text(),
      'image/id': np.int64,
      'objects': tfds.features.Sequence({
          'area': np.int64,
          'bbox': tfds.features.BBoxFeature(),
          'id': np.int64,
          'is_crowd': np.bool_,
          'label': tfds.features.ClassLabel(names=list(category_names)),
      }),
  })


def load_annotation_file(path: str) -> Dict[str, Any]:
  try:
    # A byte-order mark is read, not refused.
    data = json.loads(_read_bytes(path).decode('utf-8-sig'))
  except FileNotFoundError:
    raise ConversionError(f'{path}: annotation file not found') from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ConversionError(f'{path}: malformed JSON: {e}') from None
  if not isinstance(data, dict):
    raise ConversionError(f'{path}: top level must be a JSON object')
  missing = [k for k in ('images', 'annotations', 'categories') if k not in data]
  if missing:
    raise ConversionError(f'{path}: missing top-level key(s) {missing}')
  for k in ('images', 'annotations', 'categories'):
    if not isinstance(data[k], list):
      raise ConversionError(f'{path}: "{k}" must be a list')
  return data


def parse_categories(data: Dict[str, Any], path: str) -> List[Dict[str, Any]]:
  """The category list in file order (label = index), validated."""
  cats, seen = [], set()
  for c in data['categories']:
    if not isinstance(c, dict) or not isinstance(c.get('id'), int) or 'name' not in c:
      raise ConversionError(f'{path}: malformed category record {c!r} (needs int "id", "name")')
    if c['id'] in seen:
      raise ConversionError(f'{path}: duplicate category id {c["id"]}')
    seen.add(c['id'])
    cats.append({'id': c['id'], 'name': str(c['name'])})
  if not cats:
    raise ConversionError(f'{path}: no categories')
  names = [c['name'] for c in cats]
  if len(set(names)) != len(names):
    raise ConversionError(f'{path}: category names must be unique, got {names}')
  return cats


def _is_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def is_url(path: str) -> bool:
  """A path of a filesystem TensorFlow reads (gs://, s3://, hdfs://, ram://), not a local one."""
  return '://' in path


def _read_bytes(path: str) -> bytes:
  """A file's bytes, local or elsewhere (FileNotFoundError if there is none; other failures
  as OSError, like a local file's)."""
  import tensorflow as tf
  try:
    with tf.io.gfile.GFile(path, 'rb') as f:
      return f.read()
  except tf.errors.NotFoundError:
    raise FileNotFoundError(path) from None
  except tf.errors.OpError as e:
    raise OSError(f'{path}: {e.message}') from None


def _is_file(path: str) -> bool:
  import tensorflow as tf
  return tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path)


def is_folder(path: str) -> bool:
  import tensorflow as tf
  return tf.io.gfile.isdir(path)


def _join(folder: str, name: str) -> str:
  """`folder`/`name`; on other filesystems with '..' resolved here (object stores take names
  literally)."""
  if not is_url(folder):
    return os.path.join(folder, name)
  import posixpath
  scheme, _, rest = folder.partition('://')
  return f'{scheme}://{posixpath.normpath(posixpath.join(rest, name))}'


def _inside(path: str, folder: str) -> bool:
  """Whether `path` lies in `folder` (after '..' and symlink-free normalization)."""
  if is_url(path) or is_url(folder):
    import posixpath
    scheme, _, p = path.partition('://')
    folder_scheme, _, f = folder.partition('://')
    p, f = posixpath.normpath(p), posixpath.normpath(f)
    return scheme == folder_scheme and (p == f or p.startswith(f.rstrip('/') + '/'))
  inside = os.path.abspath(folder)
  return os.path.commonpath([inside, os.path.abspath(path)]) == inside


def _load_image(path: str, image_id, report: Report) -> Optional[Tuple[Any, int, int]]:
  """(TFDS image value, height, width), or None if unusable (reported). Local files are
  passed on by path; files on other filesystems (gs://...) as the bytes read here."""
  if not _is_file(path):
    report.add('missing_file', f'image id {image_id}: {path}')
    return None
  try:
    encoded = _read_bytes(path) if is_url(path) else None
    with warnings.catch_warnings():  # PIL warns between 1x and 2x its limit: refused below
      warnings.simplefilter('ignore', Image.DecompressionBombWarning)
      im = Image.open(path if encoded is None else io.BytesIO(encoded))
    with im:
      limit = Image.MAX_IMAGE_PIXELS
      if limit and im.size[0] * im.size[1] > limit:  # from the header: nothing decoded
        report.add('too_many_pixels', f'image id {image_id}: {path} is '
                   f'{im.size[0]}x{im.size[1]}, above {limit} pixels')
        return None
      im.load()
      fmt, mode = im.format, im.mode
      width, height = im.size
      if image_io.exif_orientation(im) != 1:
        report.add('exif_orientation_kept', f'image id {image_id}: {path} (orientation '
                   f'{image_io.exif_orientation(im)})')
      if fmt in ('JPEG', 'PNG') and mode == 'RGB':  # the input pipeline reads these headers
        if fmt == 'PNG':
          report.add('non_jpeg_image', f'image id {image_id}: {path}')
        return (path if encoded is None else encoded), height, width
      # Anything else is stored as decoded pixels, which TFDS encodes as PNG (lossless).
      pixels, change = image_io.to_rgb8(im)
  except Image.DecompressionBombError as e:
    report.add('too_many_pixels', f'image id {image_id}: {path}: {e}')
    return None
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    report.add('corrupt_image', f'image id {image_id}: {path}: {e}')
    return None
  if mode in image_io.SIXTEEN_BIT_MODES:
    report.add('scaled_to_8bit', f'image id {image_id}: {path} ({change})')
  elif change:
    report.add('converted_to_rgb', f'image id {image_id}: {path} ({change})')
  if fmt not in ('JPEG', 'PNG'):
    report.add('reencoded_as_png', f'image id {image_id}: {path} ({fmt})')
  return pixels, height, width


def _objects(anns, height, width, image_id, report) -> Dict[str, np.ndarray]:
  import tensorflow_datasets as tfds
  bboxes, labels, areas, ids, crowd = [], [], [], [], []
  for ann, label in anns:
    x, y, w, h = (float(v) for v in ann['bbox'])
    if w <= 0 or h <= 0:
      report.add('degenerate_box', f'annotation id {ann["id"]} (image id {image_id}): '
                 f'bbox {ann["bbox"]}')
      continue
    x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)
    if x1 <= x0 or y1 <= y0:
      report.add('box_outside_image', f'annotation id {ann["id"]} (image id {image_id}, '
                 f'{width}x{height}): bbox {ann["bbox"]}')
      continue
    if (x0, y0, x1, y1) != (x, y, x + w, y + h):
      report.add('box_clipped', f'annotation id {ann["id"]} (image id {image_id}, '
                 f'{width}x{height}): bbox {ann["bbox"]}')
    bboxes.append(tfds.features.BBox(ymin=y0 / height, xmin=x0 / width, ymax=y1 / height,
                                     xmax=x1 / width))
    labels.append(label)
    area = ann.get('area')
    areas.append(int(round(area if _is_number(area) else (x1 - x0) * (y1 - y0))))
    ids.append(int(ann['id']))
    crowd.append(bool(ann.get('iscrowd', 0)))
  if not bboxes:
    return {'area': np.zeros([0], np.int64), 'bbox': np.zeros([0, 4], np.float32),
            'id': np.zeros([0], np.int64), 'is_crowd': np.zeros([0], bool),
            'label': np.zeros([0], np.int64)}
  return {'area': areas, 'bbox': bboxes, 'id': ids, 'is_crowd': crowd, 'label': labels}


def _valid_images(data: Dict[str, Any], report: Report) -> Dict[int, Dict[str, Any]]:
  """{image id: record} of the well-formed image records, first of each id."""
  images: Dict[int, Dict[str, Any]] = {}
  for im in data['images']:
    ok = (isinstance(im, dict) and isinstance(im.get('id'), int) and
          isinstance(im.get('file_name'), str) and
          all(isinstance(im.get(k), int) and im[k] > 0 for k in ('width', 'height')))
    if not ok:
      report.add('malformed_record', f'image record {str(im)[:200]} (needs int id, file_name, '
                 'positive int width/height)')
      continue
    if im['id'] in images:
      report.add('duplicate_id', f'image id {im["id"]} ({im["file_name"]})')
      continue
    images[im['id']] = im
  return images


def _annotations_by_image(data: Dict[str, Any], images: Dict[int, Any],
                          label_of: Dict[int, int], report: Report) -> Dict[int, List[Any]]:
  """{image id: [(annotation, label)]} of the well-formed annotations of known images and
  categories (string iscrowd flags read as numbers)."""
  by_image = collections.defaultdict(list)
  ann_ids = set()
  for ann in data['annotations']:
    ok = (isinstance(ann, dict) and isinstance(ann.get('id'), int) and
          isinstance(ann.get('image_id'), int) and isinstance(ann.get('category_id'), int) and
          isinstance(ann.get('bbox'), list) and len(ann['bbox']) == 4 and
          all(_is_number(v) for v in ann['bbox']))
    if not ok:
      report.add('malformed_record', f'annotation record {str(ann)[:200]} (needs int id, '
                 'image_id, category_id and a bbox of 4 finite numbers)')
      continue
    if ann['id'] in ann_ids:
      report.add('duplicate_id', f'annotation id {ann["id"]}')
      continue
    crowd = ann.get('iscrowd', 0)
    if crowd in ('0', '1'):
      report.add('iscrowd_parsed', f'annotation id {ann["id"]}: iscrowd {crowd!r}')
      ann = dict(ann, iscrowd=int(crowd))
    elif not (crowd in (0, 1) and not isinstance(crowd, float)):
      report.add('malformed_record', f'annotation id {ann["id"]}: iscrowd {crowd!r} (needs 0 '
                 'or 1)')
      continue
    ann_ids.add(ann['id'])
    if ann['image_id'] not in images:
      report.add('unknown_image', f'annotation id {ann["id"]}: image id {ann["image_id"]}')
      continue
    if ann['category_id'] not in label_of:
      report.add('unknown_category',
                 f'annotation id {ann["id"]}: category id {ann["category_id"]}')
      continue
    by_image[ann['image_id']].append((ann, label_of[ann['category_id']]))
  return by_image


def image_tasks(data: Dict[str, Any], images_dir: str, categories: List[Dict[str, Any]],
                report: Report) -> List[Tuple[Dict[str, Any], str, List[Any]]]:
  """The record-level checks of one split: (image record, its path, [(annotation, label)]) per
  valid image in id order, the per-image work (`image_example`) still to do."""
  images = _valid_images(data, report)
  by_image = _annotations_by_image(data, images, {c['id']: i for i, c in enumerate(categories)},
                                   report)
  return [(images[i], _join(images_dir, images[i]['file_name']), by_image.get(i, []))
          for i in sorted(images)]


def image_example(task, images_dir: str, report: Report
                  ) -> Optional[Tuple[int, Dict[str, Any]]]:
  """(key, example) of one image task, or None if the image is unusable (reported)."""
  im, path, anns = task
  image_id = im['id']
  if not _inside(path, images_dir):
    report.add('file_outside_images', f'image id {image_id}: {im["file_name"]!r} read from '
               f'{path if is_url(path) else os.path.normpath(path)}')
  loaded = _load_image(path, image_id, report)
  if loaded is not None:
    value, height, width = loaded
    if (height, width) != (im['height'], im['width']):
      report.add('size_mismatch', f'image id {image_id}: {path} is {width}x{height}, JSON '
                 f'says {im["width"]}x{im["height"]}')
      loaded = None
  if loaded is None:
    for ann, _ in anns:
      report.add('annotation_of_skipped_image', f'annotation id {ann["id"]} (image id '
                 f'{image_id})')
    return None
  objects = _objects(anns, height, width, image_id, report)
  if len(objects['id']) == 0:
    report.add('image_without_boxes', f'image id {image_id}: {path}')
  return image_id, {'image': value, 'image/filename': im['file_name'], 'image/id': image_id,
                    'objects': objects}


def split_examples(data: Dict[str, Any], images_dir: str, categories: List[Dict[str, Any]],
                   report: Report, progress: Optional[str] = None
                   ) -> Iterator[Tuple[int, Dict[str, Any]]]:
  """(key, example) pairs of one split, validating as it goes; `progress`: the label of a
  progress bar over its images (none if empty)."""
  tasks = image_tasks(data, images_dir, categories, report)
  if progress:
    from tqdm import tqdm
    tasks = tqdm(tasks, desc=progress, unit='images')
  for task in tasks:
    example = image_example(task, images_dir, report)
    if example is not None:
      yield example


def _check_output(name: str, data_dir: str, version: str, overwrite: bool) -> str:
  """The target folder; refuses to replace an existing conversion unless asked and fails early
  if data_dir cannot be written."""
  out = os.path.join(data_dir, name, version)
  if _exists(out) and not overwrite:
    raise ConversionError(f'{out} already holds a converted dataset; pass --overwrite to '
                          'replace it (or choose another --name / --data_dir)')
  probe = os.path.join(data_dir, f'.fcos_jax_write_test_{os.getpid()}')
  try:
    _write_text(probe, '')
    _remove(probe)
  except OSError as e:
    raise ConversionError(f'{data_dir}: output folder cannot be written '
                          f'({e.strerror or e})') from None
  return out


# The output side, through tf.io.gfile (local disk, gs://, ...); folders are moved by `_move`.
def _exists(path: str) -> bool:
  import tensorflow as tf
  return tf.io.gfile.exists(path)


def _write_text(path: str, text: str) -> None:
  import tensorflow as tf
  try:
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, 'w') as f:
      f.write(text)
  except tf.errors.OpError as e:
    raise OSError(f'{path}: {e.message}') from None


def _remove(path: str) -> None:
  import tensorflow as tf
  tf.io.gfile.remove(path)


def _rmtree(path: str) -> None:
  """Removes a folder if there is one (errors ignored: only staging folders come here)."""
  import tensorflow as tf
  try:
    if tf.io.gfile.exists(path):
      tf.io.gfile.rmtree(path)
  except tf.errors.OpError:
    pass


def _move(src: str, dst: str) -> None:
  """A folder moved: a rename on local disk; elsewhere (object stores have no folder rename)
  every file copied, then the source removed."""
  if not is_url(src):
    os.rename(src, dst)
    return
  import tensorflow as tf
  for folder, _, files in tf.io.gfile.walk(src):
    target = dst + folder[len(src):]
    tf.io.gfile.makedirs(target)
    for name in files:
      tf.io.gfile.copy(os.path.join(folder, name), os.path.join(target, name), overwrite=True)
  tf.io.gfile.rmtree(src)


def _counted(split: str, examples: Iterator, report: Report) -> Iterator:
  try:
    for example in examples:
      report.wrote(split, len(example[1]['objects']['id']))
      yield example
  finally:  # also on an error or Ctrl-C in TFDS: the progress bar ends before the message
    examples.close()


@contextlib.contextmanager
def _quiet_tfds():
  """TFDS's own output while it stores local examples, off: its progress bars (no total, one
  per split and shuffle) and the 'Downloading and preparing dataset Unknown size' lines it
  prints to stdout (kept in the DEBUG log)."""
  from tensorflow_datasets.core.utils import tqdm_utils
  import tensorflow_datasets as tfds
  shown = getattr(tqdm_utils, '_active', True)
  tfds.display_progress_bar(False)
  printed = io.StringIO()
  try:
    with contextlib.redirect_stdout(printed):
      yield
  finally:
    tfds.display_progress_bar(shown)
    if printed.getvalue().strip():
      logging.debug('TFDS: %s', printed.getvalue().strip())


def _swap_in(built: str, out: str) -> None:
  """Moves the finished conversion to `out`; an earlier one there is removed only after the
  new one is in place (renames within one folder on local disk)."""
  if not is_url(out):
    os.makedirs(os.path.dirname(out), exist_ok=True)
  old = None
  if _exists(out):
    # Not '{out}.replaced': a name that `out` is no prefix of (object stores and TF's ram://
    # delete a folder by name prefix).
    old = os.path.join(os.path.dirname(out), f'.replaced-{os.path.basename(out)}-{os.getpid()}')
    _move(out, old)
  _move(built, out)
  if old:
    logging.warning('--overwrite: replaced the earlier conversion in %s', out)
    _rmtree(old)


def convert(name: str, data_dir: str, splits: Dict[str, Tuple[str, str]],
            on_error: str = 'skip', version: str = '1.0.0', overwrite: bool = False,
            progress: bool = False, file_format: str = 'tfrecord', pipeline=None) -> Report:
  """Build TFDS dataset `name` in `data_dir` from {split: (annotations.json, images_dir)};
  `progress`: a progress bar per split; `file_format`, `pipeline`: see `convert_records`.

  The dataset is built in a temporary folder beside the target and moved there only when
  complete: a failure or Ctrl-C leaves an earlier conversion as it was."""
  if not splits:
    raise ConversionError('no split given: pass --annotations, --images and --split per split')
  report = new_report(on_error)
  loaded, categories = {}, None
  for split, (ann_path, images_dir) in splits.items():
    data = load_annotation_file(ann_path)
    cats = parse_categories(data, ann_path)
    if categories is None:
      categories = cats
    elif cats != categories:
      raise ConversionError(f'{ann_path}: categories differ from the other splits')
    loaded[split] = (data, images_dir, ann_path)
  return convert_records(name, data_dir, loaded, categories, report, version=version,
                         overwrite=overwrite, progress=progress, file_format=file_format,
                         pipeline=pipeline)


def new_report(on_error: str = 'skip') -> Report:
  if on_error not in ('skip', 'fail'):
    raise ValueError(f"on_error must be 'skip' or 'fail', got {on_error!r}")
  return Report(on_error=on_error)


def convert_records(name: str, data_dir: str,
                    loaded: Dict[str, Tuple[Dict[str, Any], str, str]],
                    categories: List[Dict[str, Any]], report: Report, version: str = '1.0.0',
                    overwrite: bool = False, progress: bool = False,
                    file_format: str = 'tfrecord', pipeline=None) -> Report:
  """`convert` of COCO-format records already read: {split: (COCO dict, images dir, the source
  named in errors)} (YOLO and VOC come here through data/label_formats.py). `file_format`:
  TFDS's 'tfrecord' or 'array_record' (random access). `pipeline`: run the per-image work on
  Apache Beam instead (a `beam_conversion.BeamConversion`); the output is the same."""
  import tensorflow_datasets as tfds
  for data, images_dir, _ in loaded.values():
    if not is_folder(images_dir):
      raise ConversionError(f'{images_dir}: image folder not found')
  out = _check_output(name, data_dir, version, overwrite)

  staging = os.path.join(data_dir, f'.{name}-{version}.converting-{os.getpid()}')
  extra = {}
  if pipeline is None:
    split_data = {split: _counted(split, split_examples(
        data, images_dir, categories, report, f'converting {split}' if progress else None),
        report) for split, (data, images_dir, _) in loaded.items()}
  else:
    split_data = pipeline.split_data(loaded, categories, report, staging + '.items')
    extra['download_config'] = pipeline.download_config()
  try:
    try:
      with _quiet_tfds():
        builder = tfds.dataset_builders.store_as_tfds_dataset(
            name=name, version=version, features=coco_features([c['name'] for c in categories]),
            split_datasets=split_data, data_dir=staging, file_format=file_format,
            description=f'COCO-format detection dataset converted by fcos_jax '
                        f'({len(categories)} categories).', **extra)
      if pipeline is not None:
        pipeline.finish(report)
    except errors.UserError:
      raise
    except Exception:  # noqa: BLE001 - an empty split is the user's; anything else a bug
      if pipeline is not None:
        pipeline.finish(report)
      empty = [split for split in loaded if split not in report.written]
      if empty:
        reasons = ', '.join(f'{k} {n}' for k, n in report.counts.most_common()
                            if k in ERROR_KINDS) or 'the file lists no image'
        raise ConversionError(f'split {empty[0]!r} ({loaded[empty[0]][2]}): no image could be '
                              f'converted ({reasons}); nothing was written') from None
      raise
    built = str(builder.data_dir)
    _write_text(os.path.join(built, 'categories.json'), json.dumps(categories, indent=1))
    _write_text(os.path.join(built, 'conversion_report.json'),
                json.dumps(report.to_json(), indent=1))
    _swap_in(built, out)
    report.path = os.path.join(out, 'conversion_report.json')
  finally:  # success, failure or Ctrl-C: the staging folders go
    for examples in split_data.values():
      if hasattr(examples, 'close'):
        examples.close()
    _rmtree(staging)
    _rmtree(staging + '.items')
  return report
