"""Batch inference on Apache Beam, for more images than one machine detects in time: image files
(local or on any Beam file system: gs://, s3://, hdfs://) or a TFDS split go through an export
of any format in `RunInference`, whose model handler is `Detector` (its preprocessing, batching
by shape and mapping back to original pixels are predict.py's). Writes COCO results shards and
per-image detections as JSON lines, the skipped inputs with their reason, and drawn pictures if
asked. The DirectRunner runs it here; Dataflow, Spark or Flink at scale (docs/inference.md)."""

import json
import logging
import os
import posixpath
import shutil
import tempfile
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.ml.inference import base as inference_base

from fcos_jax import errors, image_io
from fcos_jax.serving import detector as detector_lib
from fcos_jax.serving import inputs as input_files
from fcos_jax.serving import outputs
from fcos_jax.video_io import VIDEO_SUFFIXES

NAMESPACE = 'fcos_jax'  # Beam metrics: images, detections, skipped, converted
# Shards a run writes into its output folder (prefix, suffix); the pictures lie beside them.
SHARDS = (('results', '.jsonl'), ('detections', '.jsonl'), ('skipped', '.txt'))


class Settings(NamedTuple):
  """How images are read and detected (predict.py's flags of the same names)."""
  batch_size: int = 8
  exif_orientation: bool = True
  max_pixels: int = image_io.DEFAULT_MAX_PIXELS
  slice: int = 0
  overlap: float = 0.2
  slice_full: bool = False
  min_score: float = 0.3
  draw_scale: int = 0


class Key(NamedTuple):
  """What travels beside an image: its name in the results, COCO image id, picture path
  ('' for none)."""
  name: str
  image_id: int
  picture: str


def is_url(path: str) -> bool:
  return '://' in path


def join(folder: str, name: str) -> str:
  """`name` ('/'-separated) under `folder`, a local path or a URL of any Beam file system."""
  if is_url(folder):
    return folder.rstrip('/') + '/' + name
  return os.path.join(folder, *name.split('/'))


def copy_tree(source: str, target: str) -> int:
  """Copies the files under `source` (any Beam file system) into the local folder `target`;
  returns how many. Workers of a cluster read an export from gs:// and the like this way."""
  root = source.rstrip('/') + '/'
  count = 0
  for meta in FileSystems.match([root + '**'])[0].metadata_list:
    rel = meta.path[len(root):]
    dest = os.path.join(target, *rel.split('/'))
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    with FileSystems.open(meta.path, compression_type=CompressionTypes.UNCOMPRESSED) as src, \
        open(dest, 'wb') as dst:
      shutil.copyfileobj(src, dst)
    count += 1
  return count


def expand_inputs(patterns: Sequence[str], exclude: str = '') -> Tuple[List[str], int]:
  """predict.py's --image expansion (`inputs.expand_inputs`), with URLs of Beam file systems
  too: a glob is matched, a URL ending in '/' is the images under it, any other a file."""
  local = [p for p in patterns if not is_url(p)]
  found, excluded = input_files.expand_inputs(local, exclude) if local else ([], 0)
  for pattern in (p for p in patterns if is_url(p)):
    if pattern.endswith('/') or any(c in pattern for c in '*?['):
      glob = pattern + '**' if pattern.endswith('/') else pattern
      matches = sorted(m.path for m in FileSystems.match([glob])[0].metadata_list
                       if m.path.lower().endswith(input_files.IMAGE_SUFFIXES + VIDEO_SUFFIXES)
                       or not pattern.endswith('/'))
      if not matches:
        raise errors.UserError(f'--image {pattern!r} matches no file')
      found += matches
    else:
      found.append(pattern)
  return list(dict.fromkeys(found)), excluded


def picture_paths(inputs: Sequence[str], out: str) -> Dict[str, str]:
  """Input -> its picture under `out`: predict.py's path (`inputs.output_paths`) for local
  inputs, else the path relative to the inputs' common folder, as a .png."""
  if not any(is_url(p) for p in inputs) and not is_url(out):
    return {p: os.path.splitext(o)[0] + '.png'
            for p, o in input_files.output_paths(inputs, out).items()}
  folders = os.path.commonprefix([p.rsplit('/', 1)[0] + '/' for p in inputs])
  folders = folders[:folders.rfind('/') + 1]
  return {p: join(out, posixpath.splitext(p[len(folders):])[0] + '.png')
          for p in inputs}


def read_bytes(path: str) -> bytes:
  """A file's bytes from any Beam file system, `DataError` naming it if it cannot be read."""
  try:
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
      return f.read()
  except (OSError, beam.io.filesystem.BeamIOError) as e:
    missing = isinstance(e, FileNotFoundError) or 'No such file' in str(e) or 'Not found' in str(e)
    raise errors.DataError(f'{path}: no such file' if missing else
                           f'{path}: cannot be read ({type(e).__name__})') from None


def check_export(export_dir: str) -> Dict[str, Any]:
  """The metadata of an export `Detector` can run, read before any worker starts."""
  path = join(export_dir, 'metadata.json')
  try:
    metadata = json.loads(read_bytes(path))
  except errors.DataError:
    raise errors.DataError(f'{export_dir}: no export there ({path} missing; write one with '
                           'export.py)') from None
  except ValueError as e:
    raise errors.DataError(f'{path}: damaged export file ({e})') from None
  detector_lib.check_metadata(metadata, path)
  return metadata


class DetectorHandler(inference_base.ModelHandler):
  """RunInference's model handler: loads `Detector(export_dir)` once per worker process and
  detects batches of original uint8 RGB images (tile by tile with `settings.slice`)."""

  def __init__(self, export_dir: str, settings: Settings):
    # Full batches (the last of a bundle may be smaller), as predict.py runs them.
    super().__init__(min_batch_size=settings.batch_size, max_batch_size=settings.batch_size)
    self._export_dir = export_dir
    self._settings = settings

  def load_model(self) -> detector_lib.Detector:
    export_dir = self._export_dir
    if is_url(export_dir):
      export_dir = tempfile.mkdtemp(prefix='fcos_jax_export_')
      copy_tree(self._export_dir, export_dir)
    return detector_lib.Detector(export_dir)

  def run_inference(self, batch: Sequence[np.ndarray], model: detector_lib.Detector,
                    inference_args: Optional[Dict[str, Any]] = None
                    ) -> Iterable[inference_base.PredictionResult]:
    s = self._settings
    images = list(batch)
    if s.slice:
      found = [model.detect_sliced(im, s.slice, s.overlap, full=s.slice_full,
                                   batch_size=s.batch_size) for im in images]
    else:
      found = model.detect_many(images, s.batch_size)
    return [inference_base.PredictionResult(im, outputs.kept(dets, s.min_score))
            for im, dets in zip(images, found)]

  def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
    return sum(im.nbytes for im in batch)

  def get_metrics_namespace(self) -> str:
    return NAMESPACE


def _skipped(reason: str):
  """An input left out, counted, with its reason for skipped-*.txt."""
  beam.metrics.Metrics.counter(NAMESPACE, 'skipped').inc()
  return beam.pvalue.TaggedOutput('skipped', reason)


def _decoded(key: Key, data: Optional[bytes], exif: bool):
  """(key, image) of one input, or its `_skipped` reason; a conversion is counted."""
  try:
    image, change = image_io.read_rgb8(key.name, exif, data=data)
  except errors.DataError as e:
    return _skipped(str(e))
  if change:
    beam.metrics.Metrics.counter(NAMESPACE, 'converted').inc()
    logging.info('%s: %s', key.name, change)
  return tuple(key), image


class ReadFile(beam.DoFn):
  """(path, image id, picture path) -> (Key, uint8 RGB image), or the reason it was skipped."""

  def __init__(self, settings: Settings):
    self._settings = settings

  def setup(self):
    image_io.set_pixel_limit(self._settings.max_pixels)

  def process(self, element: Tuple[str, int, str]):
    key = Key(*element)
    if key.name.lower().endswith(VIDEO_SUFFIXES):
      yield _skipped(f'{key.name}: a video (predict.py detects videos frame by frame)')
      return
    try:
      data = read_bytes(key.name)
    except errors.DataError as e:
      yield _skipped(str(e))
      return
    yield _decoded(key, data, self._settings.exif_orientation)


class DecodeExample(beam.DoFn):
  """A TFDS example (image left encoded) -> (Key, image), decoded by PIL as predict.py decodes
  files, so the two give the same pixels. Stored pixels, as the dataset's boxes are: no EXIF
  orientation is applied."""

  def __init__(self, settings: Settings, picture_dir: str):
    self._settings = settings
    self._picture_dir = picture_dir

  def setup(self):
    image_io.set_pixel_limit(self._settings.max_pixels)

  def process(self, example: Dict[str, Any]):
    name = example['image/filename']
    name = name.decode('utf-8') if isinstance(name, bytes) else str(name)
    picture = (join(self._picture_dir, posixpath.splitext(name)[0] + '.png')
               if self._picture_dir else '')
    yield _decoded(Key(name, int(example['image/id']), picture), example['image'], False)


def result_lines(element) -> List[str]:
  """A detected image's COCO results rows, one JSON line each (predict.py's results.json rows)."""
  (name, image_id, _), result = element  # keys travel as plain tuples
  beam.metrics.Metrics.counter(NAMESPACE, 'images').inc()
  beam.metrics.Metrics.counter(NAMESPACE, 'detections').inc(len(result.inference))
  return [json.dumps(row) for row in outputs.coco_rows(name, image_id, result.inference)]


def detection_line(element) -> str:
  """{"path": input, "detections": [...]}: one entry of predict.py's detections.json."""
  (name, _, _), result = element
  return json.dumps({'path': name, 'detections': result.inference})


class DrawPicture(beam.DoFn):
  """Writes the image with its detections drawn (predict.py's picture) to its Key's path."""

  def __init__(self, settings: Settings):
    self._settings = settings

  def process(self, element):
    (_, _, picture), result = element
    if not picture:
      return
    im = outputs.picture(result.example, result.inference, self._settings.min_score,
                         self._settings.draw_scale)
    with FileSystems.create(picture) as f:
      im.save(f, format='PNG')


def existing_shards(out: str) -> List[str]:
  """The shard files of an earlier run in `out` (what --overwrite replaces)."""
  patterns = [join(out, name) + '-*-of-*' + suffix for name, suffix in SHARDS]
  return [m.path for r in FileSystems.match(patterns) for m in r.metadata_list]


def detect(pipeline: beam.Pipeline, export_dir: str, out: str, settings: Settings, *,
           files: Sequence[Tuple[str, int, str]] = (), tfds_builder=None,
           split: str = '', picture_dir: str = '') -> None:
  """Adds the detection of `files` ((path, image id, picture path or '')) or of the TFDS
  `split` of `tfds_builder` to `pipeline`, writing the shards under `out`."""
  if tfds_builder is not None:
    import tensorflow_datasets as tfds
    examples = (pipeline
                | 'ReadTFDS' >> tfds.beam.ReadFromTFDS(
                    tfds_builder, split, decoders={'image': tfds.decode.SkipDecoding()})
                | 'AsNumpy' >> beam.Map(tfds.as_numpy))
    read = examples | 'Decode' >> beam.ParDo(DecodeExample(settings, picture_dir)).with_outputs(
        'skipped', main='images')
  else:
    read = (pipeline
            | 'Inputs' >> beam.Create([tuple(f) for f in files])
            | 'Read' >> beam.ParDo(ReadFile(settings)).with_outputs('skipped', main='images'))
  handler = inference_base.KeyedModelHandler(DetectorHandler(export_dir, settings))
  detected = read.images | 'Detect' >> inference_base.RunInference(handler)
  (detected | 'ResultRows' >> beam.FlatMap(result_lines)
   | 'WriteResults' >> beam.io.WriteToText(join(out, 'results'), '.jsonl'))
  (detected | 'DetectionRows' >> beam.Map(detection_line)
   | 'WriteDetections' >> beam.io.WriteToText(join(out, 'detections'), '.jsonl'))
  (read.skipped
   | 'WriteSkipped' >> beam.io.WriteToText(join(out, 'skipped'), '.txt'))
  if picture_dir or any(f[2] for f in files):
    _ = detected | 'Draw' >> beam.ParDo(DrawPicture(settings))


def counters(result) -> Dict[str, int]:
  """The run's counts (images, detections, skipped, converted) from its Beam metrics."""
  filt = beam.metrics.MetricsFilter().with_namespace(NAMESPACE)
  found = {name: 0 for name in ('images', 'detections', 'skipped', 'converted')}
  for c in result.metrics().query(filt)['counters']:
    if c.key.metric.name in found:
      found[c.key.metric.name] += c.committed if c.committed is not None else c.attempted
  return found
