"""The converter's per-image work (decode, check, repair, build the example) as an Apache Beam
pipeline, for datasets that outgrow one machine: TFDS's own Beam path writes the shards
(`store_as_tfds_dataset` takes a PTransform per split), on Beam's in-process runner here, on
Dataflow, Spark or Flink with their pipeline options.

The record-level checks (ids, categories, malformed records) stay on the launching machine;
each worker counts what it repairs or skips into its own report, whose items travel back as
JSON lines and are merged in image order, so the report and the examples are those of the
single-process conversion (tested).
"""

import json
import os
from typing import Any, Dict, List, Optional, Sequence

import apache_beam as beam
import tensorflow as tf

from fcos_jax.data import coco_conversion

ITEMS = 'items'


class _ImageExamples(beam.DoFn):
  """task -> (key, example); the report items of the image to the ITEMS output."""

  def __init__(self, split: str, images_dir: str):
    self._split, self._images_dir = split, images_dir

  def process(self, task):
    report = coco_conversion.Report()
    example = coco_conversion.image_example(task, self._images_dir, report)
    image_id = task[0]['id']
    for kind, messages in report.examples.items():
      for message in messages:
        yield beam.pvalue.TaggedOutput(ITEMS, json.dumps(
            {'split': self._split, 'image_id': image_id, 'kind': kind, 'message': message}))
    if example is not None:
      yield beam.pvalue.TaggedOutput(ITEMS, json.dumps(
          {'split': self._split, 'image_id': image_id,
           'boxes': int(len(example[1]['objects']['id']))}))
      yield example


class _Split(beam.PTransform):
  """One split's tasks through `_ImageExamples`; its items written under `items_dir`."""

  def __init__(self, split: str, tasks: List[Any], images_dir: str, items_dir: str):
    super().__init__()
    self._split, self._tasks, self._images_dir = split, tasks, images_dir
    self._items = os.path.join(items_dir, split)

  def expand(self, pbegin):
    out = (pbegin
           | 'tasks' >> beam.Create(self._tasks, reshuffle=True)
           | 'examples' >> beam.ParDo(_ImageExamples(self._split, self._images_dir))
           .with_outputs(ITEMS, main='examples'))
    _ = out[ITEMS] | 'report' >> beam.io.WriteToText(self._items, file_name_suffix='.jsonl')
    return out.examples


class BeamConversion:
  """What `coco_conversion.convert_records(pipeline=...)` asks of a Beam run."""

  def __init__(self, options: Sequence[str] = ()):
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    self.options = PipelineOptions(list(options))
    standard = self.options.view_as(StandardOptions)
    # Beam's DirectRunner would first fetch the Prism runner from the network: run in-process.
    standard.runner = standard.runner or 'FnApiRunner'
    self._items_dir: Optional[str] = None
    self._splits: List[str] = []

  def split_data(self, loaded: Dict[str, Any], categories, report, items_dir: str
                 ) -> Dict[str, beam.PTransform]:
    if report.on_error == 'fail':
      raise coco_conversion.ConversionError(
          "--on_error=fail stops at the first problem, which a Beam run's workers cannot: "
          'convert without --beam_pipeline_options, or skip and read the report')
    self._items_dir, self._splits = items_dir, list(loaded)
    return {split: _Split(split, coco_conversion.image_tasks(data, images_dir, categories,
                                                              report), images_dir, items_dir)
            for split, (data, images_dir, _) in loaded.items()}

  def download_config(self):
    import tensorflow_datasets as tfds
    return tfds.download.DownloadConfig(beam_options=self.options)

  def finish(self, report) -> None:
    """The workers' items into `report`, in the single-process order (split, image id)."""
    rows = []
    for path in tf.io.gfile.glob(os.path.join(self._items_dir, '*.jsonl')):
      with tf.io.gfile.GFile(path) as f:
        rows += [json.loads(line) for line in f if line.strip()]
    order = {s: i for i, s in enumerate(self._splits)}
    for n, row in sorted(enumerate(rows), key=lambda r: (order[r[1]['split']],
                                                          r[1]['image_id'], r[0])):
      if 'boxes' in row:
        report.wrote(row['split'], row['boxes'])
      else:
        report.add(row['kind'], row['message'])
