"""YOLO and Pascal VOC datasets read into COCO-format records, so that they go through the COCO
conversion's validation, repairs, counted report and TFDS output unchanged.

- YOLO (ultralytics' layout): a `data.yaml` with `names` (a list, or {index: name}), `path`
  (optional root) and `train` / `val` / `test` (an image folder or a .txt list of images); each
  image's labels in the matching `labels/` folder (`images/` -> `labels/`, `.txt`), one object
  a line: `class cx cy w h`, normalized to the image size. A segment line (`class x1 y1 x2 y2 ...`,
  3 points or more) becomes the box around its points (counted); other column counts are
  malformed lines (counted, skipped); an image without a label file is kept with no objects
  (counted), as ultralytics reads it.
- Pascal VOC: `Annotations/ID.xml` for every ID of an `ImageSets/Main/SPLIT.txt` list, images in
  `JPEGImages/`. VOC's 1-based pixel corners become 0-based as detectron2 reads them (xmin - 1,
  ymin - 1, xmax, ymax); `difficult` objects are kept as crowd boxes (COCO's ignore semantics:
  neither a positive in training nor a miss in evaluation, as VOC's own metric ignores them);
  `truncated` and `pose` are ignored. The class list is `classes` in that order, else the names
  found, sorted.

Small readers instead of a library: globox / datumaro / supervision would each bring a dependency
tree for what is a file walk, a text split and xml.etree here, and none counts bad input the way
the converter's report does. Image sizes come from the image headers (VOC's <size> is often 0 or
wrong), read without decoding.
"""

import os
import xml.etree.ElementTree as ElementTree
from typing import Any, Dict, List, Optional, Sequence, Tuple

from PIL import Image, UnidentifiedImageError

from fcos_jax.data import coco_conversion

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff', '.gif')
# data.yaml key -> TFDS split name.
YOLO_SPLITS = (('train', 'train'), ('val', 'validation'), ('test', 'test'))

Loaded = Dict[str, Tuple[Dict[str, Any], str, str]]  # split -> (COCO dict, images dir, source)


def _image_size(path: str, report, what: str) -> Optional[Tuple[int, int]]:
  """(width, height) from the header, or None with the problem counted."""
  if not os.path.isfile(path):
    report.add('missing_file', f'{what}: {path}')
    return None
  try:
    with Image.open(path) as im:
      return im.size
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    report.add('corrupt_image', f'{what}: {path}: {e}')
    return None


def _categories(names: Sequence[str], source: str) -> List[Dict[str, Any]]:
  names = [str(n) for n in names]
  if not names:
    raise coco_conversion.ConversionError(f'{source}: no class names')
  if len(set(names)) != len(names):
    raise coco_conversion.ConversionError(f'{source}: class names repeat: {names}')
  return [{'id': i + 1, 'name': n} for i, n in enumerate(names)]


# ---------------------------------------------------------------------------------------------
# YOLO

def _yolo_names(names, path: str) -> List[str]:
  if isinstance(names, dict):
    keys = sorted(names)
    if keys != list(range(len(keys))):
      raise coco_conversion.ConversionError(f'{path}: names must be indexed 0..K-1, got {keys}')
    return [names[k] for k in keys]
  if isinstance(names, list):
    return names
  raise coco_conversion.ConversionError(f'{path}: names must be a list or {{index: name}}')


def _yolo_images(entry: str, root: str, path: str) -> Tuple[List[str], str]:
  """(image paths, their common folder) of a data.yaml split: a folder (searched recursively)
  or a .txt list of image paths (relative to the root)."""
  where = entry if os.path.isabs(entry) else os.path.join(root, entry)
  if os.path.isdir(where):
    found = sorted(os.path.join(d, f) for d, _, files in os.walk(where) for f in files
                   if f.lower().endswith(IMAGE_SUFFIXES))
    return found, where
  if where.endswith('.txt') and os.path.isfile(where):
    with open(where) as f:
      lines = [line.strip() for line in f if line.strip()]
    base = os.path.dirname(where)
    found = [p if os.path.isabs(p) else os.path.normpath(os.path.join(base, p)) for p in lines]
    return found, os.path.commonpath(found) if found else base
  raise coco_conversion.ConversionError(f'{path}: split folder or list {where} not found')


def yolo_label_path(image_path: str) -> str:
  """ultralytics' rule: the last `images` folder of the path becomes `labels`, suffix .txt."""
  head, sep, tail = image_path.rpartition(f'{os.sep}images{os.sep}')
  base = head + f'{os.sep}labels{os.sep}' + tail if sep else image_path
  return os.path.splitext(base)[0] + '.txt'


def _yolo_boxes(label_path: str, width: int, height: int, num_classes: int, report
                ) -> List[Tuple[int, List[float]]]:
  """(class index, COCO bbox in pixels) of each readable line; bad lines counted."""
  out = []
  with open(label_path) as f:
    lines = f.read().splitlines()
  for n, line in enumerate(lines, 1):
    parts = line.split()
    if not parts:
      continue
    where = f'{label_path}:{n}'
    try:
      values = [float(v) for v in parts]
    except ValueError:
      report.add('malformed_record', f'{where}: {line[:80]!r} (not numbers)')
      continue
    cls = values[0]
    if cls != int(cls) or not 0 <= cls < num_classes:
      report.add('unknown_category', f'{where}: class index {parts[0]} (names has '
                 f'{num_classes})')
      continue
    coords = values[1:]
    if len(coords) == 4:
      cx, cy, w, h = coords
      x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    elif len(coords) >= 6 and len(coords) % 2 == 0:
      xs, ys = coords[0::2], coords[1::2]
      x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
      report.add('segment_as_box', f'{where}: {len(xs)} points')
    else:
      report.add('malformed_record', f'{where}: {len(parts)} columns (needs class cx cy w h, '
                 'or class and 3 or more x y points)')
      continue
    out.append((int(cls), [x0 * width, y0 * height, (x1 - x0) * width, (y1 - y0) * height]))
  return out


def read_yolo(data_yaml: str, report) -> Tuple[List[Dict[str, Any]], Loaded]:
  """(categories, {split: (COCO dict, images dir, source)}) of a YOLO dataset."""
  import yaml
  try:
    with open(data_yaml) as f:
      spec = yaml.safe_load(f)
  except FileNotFoundError:
    raise coco_conversion.ConversionError(f'{data_yaml}: file not found') from None
  except yaml.YAMLError as e:
    raise coco_conversion.ConversionError(f'{data_yaml}: malformed YAML: {e}') from None
  if not isinstance(spec, dict) or 'names' not in spec:
    raise coco_conversion.ConversionError(f'{data_yaml}: needs a mapping with names and splits')
  categories = _categories(_yolo_names(spec['names'], data_yaml), data_yaml)
  root = spec.get('path') or ''
  root = root if os.path.isabs(root) else os.path.join(os.path.dirname(data_yaml), root)
  loaded: Loaded = {}
  for key, split in YOLO_SPLITS:
    if not spec.get(key):
      continue
    paths, images_dir = _yolo_images(str(spec[key]), root, data_yaml)
    images, annotations = [], []
    for image_id, path in enumerate(paths, 1):
      size = _image_size(path, report, f'image id {image_id}')
      if size is None:
        continue
      width, height = size
      images.append({'id': image_id, 'file_name': os.path.relpath(path, images_dir),
                     'width': width, 'height': height})
      label = yolo_label_path(path)
      if not os.path.isfile(label):
        report.add('missing_label_file', f'image id {image_id}: {path} (no {label})')
        continue
      for cls, bbox in _yolo_boxes(label, width, height, len(categories), report):
        annotations.append({'id': len(annotations) + 1, 'image_id': image_id,
                            'category_id': cls + 1, 'bbox': bbox, 'iscrowd': 0})
    loaded[split] = ({'images': images, 'annotations': annotations,
                      'categories': categories}, images_dir, f'{data_yaml} ({key})')
  if not loaded:
    raise coco_conversion.ConversionError(f'{data_yaml}: no train, val or test split')
  return categories, loaded


# ---------------------------------------------------------------------------------------------
# Pascal VOC

def _voc_objects(xml_path: str, report) -> Optional[Tuple[str, List[Dict[str, Any]]]]:
  """(image file name, [{'name', 'box' (VOC corners), 'difficult'}]) of one annotation file."""
  try:
    root = ElementTree.parse(xml_path).getroot()
  except FileNotFoundError:
    report.add('missing_file', f'{xml_path} (annotation)')
    return None
  except ElementTree.ParseError as e:
    report.add('malformed_record', f'{xml_path}: {e}')
    return None
  objects = []
  for n, obj in enumerate(root.iter('object'), 1):
    name, box = obj.findtext('name'), obj.find('bndbox')
    try:
      corners = [float(box.findtext(k)) for k in ('xmin', 'ymin', 'xmax', 'ymax')]
    except (AttributeError, TypeError, ValueError):
      report.add('malformed_record', f'{xml_path}: object {n} has no readable bndbox')
      continue
    if not name:
      report.add('malformed_record', f'{xml_path}: object {n} has no name')
      continue
    difficult = (obj.findtext('difficult') or '0').strip() not in ('0', '', 'false')
    objects.append({'name': name.strip(), 'box': corners, 'difficult': difficult})
  return root.findtext('filename'), objects


def read_voc(splits: Dict[str, Tuple[str, str]], report,
             classes: Optional[Sequence[str]] = None) -> Tuple[List[Dict[str, Any]], Loaded]:
  """(categories, {split: (COCO dict, images dir, source)}) of {split: (ImageSets list, VOC
  root)}; `classes`: the class list in label order (default: the names found, sorted)."""
  parsed = {}
  for split, (list_path, root) in splits.items():
    if not os.path.isfile(list_path):
      raise coco_conversion.ConversionError(f'{list_path}: image set list not found')
    with open(list_path) as f:
      ids = [line.split()[0] for line in f if line.strip()]
    entries = []
    for voc_id in ids:
      found = _voc_objects(os.path.join(root, 'Annotations', f'{voc_id}.xml'), report)
      if found is not None:
        entries.append((voc_id,) + found)
    parsed[split] = (entries, root, list_path)
  names = list(classes) if classes else sorted(
      {o['name'] for entries, _, _ in parsed.values() for _, _, objs in entries for o in objs})
  categories = _categories(names, 'the VOC class list')
  label = {c['name']: c['id'] for c in categories}
  loaded: Loaded = {}
  for split, (entries, root, list_path) in parsed.items():
    images_dir = os.path.join(root, 'JPEGImages')
    images, annotations = [], []
    for image_id, (voc_id, file_name, objects) in enumerate(entries, 1):
      file_name = file_name or f'{voc_id}.jpg'
      size = _image_size(os.path.join(images_dir, file_name), report, f'image id {image_id}')
      if size is None:
        continue
      images.append({'id': image_id, 'file_name': file_name, 'width': size[0],
                     'height': size[1]})
      for obj in objects:
        if obj['name'] not in label:
          report.add('unknown_category', f'{voc_id}.xml: class {obj["name"]!r}')
          continue
        xmin, ymin, xmax, ymax = obj['box']
        if obj['difficult']:
          report.add('difficult_as_crowd', f'{voc_id}.xml: {obj["name"]} {obj["box"]}')
        annotations.append({'id': len(annotations) + 1, 'image_id': image_id,
                            'category_id': label[obj['name']],
                            'bbox': [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1],
                            'iscrowd': int(obj['difficult'])})
    loaded[split] = ({'images': images, 'annotations': annotations,
                      'categories': categories}, images_dir, list_path)
  return categories, loaded
