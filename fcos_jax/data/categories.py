"""Categories: dataset label (0..K-1) <-> COCO category id and name, and the model output index
of each (the project's own dataset-label space, or torchvision's category-id space)."""

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional, Tuple

from fcos_jax.errors import ConfigError

# 'dataset': model output k = dataset label k; 'category_id': output k = COCO category id k.
LABEL_SPACES = ('dataset', 'category_id')

# COCO 2017's 80 category ids, in the order of its annotation file (= TFDS coco/2017 labels).
COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27,
    28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53,
    54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80,
    81, 82, 84, 85, 86, 87, 88, 89, 90)
COCO_CATEGORY_NAMES = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat',
    'traffic light', 'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat', 'dog',
    'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella',
    'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball', 'kite',
    'baseball bat', 'baseball glove', 'skateboard', 'surfboard', 'tennis racket', 'bottle',
    'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple', 'sandwich',
    'orange', 'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch',
    'potted plant', 'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote',
    'keyboard', 'cell phone', 'microwave', 'oven', 'toaster', 'sink', 'refrigerator', 'book',
    'clock', 'vase', 'scissors', 'teddy bear', 'hair drier', 'toothbrush')


@dataclasses.dataclass(frozen=True)
class Categories:
  """label (0..K-1) -> COCO category id and name."""
  ids: Tuple[int, ...]
  names: Tuple[str, ...]

  def to_coco(self) -> List[Dict[str, Any]]:
    return [{'id': i, 'name': n} for i, n in zip(self.ids, self.names)]


def coco() -> 'Categories':
  """COCO 2017's 80 categories, built in: running a COCO detector needs no COCO download."""
  return Categories(COCO_CATEGORY_IDS, COCO_CATEGORY_NAMES)


def model_class_ids(model_config, categories: Categories) -> Tuple[int, ...]:
  """The COCO category id of each model output index."""
  if model_config.label_space == 'category_id':
    return tuple(range(model_config.num_classes))
  return categories.ids


def training_label_map(model_config, categories: Categories) -> Optional[Tuple[int, ...]]:
  """Dataset label -> model output index (None: the identity)."""
  if model_config.label_space == 'category_id':
    if max(categories.ids) >= model_config.num_classes:
      raise ConfigError(f'config.model.num_classes = {model_config.num_classes}: category ids '
                        f'go up to {max(categories.ids)}, so it must be > {max(categories.ids)}')
    return categories.ids
  if len(categories.ids) > model_config.num_classes:
    raise ConfigError(f'config.model.num_classes = {model_config.num_classes}: the dataset has '
                      f'{len(categories.ids)} categories')
  return None


def from_builder(builder) -> Categories:
  """Categories of a dataset: `categories.json` written by the converter, else COCO's ids."""
  names = tuple(builder.info.features['objects']['label'].names)
  path = os.path.join(str(builder.data_dir), 'categories.json')
  if os.path.exists(path):
    with open(path) as f:
      cats = json.load(f)
    return Categories(tuple(c['id'] for c in cats), tuple(c['name'] for c in cats))
  if len(names) == len(COCO_CATEGORY_IDS):
    return Categories(COCO_CATEGORY_IDS, names)
  return Categories(tuple(range(1, len(names) + 1)), names)  # no ids known: 1..K
