"""ONNX and SavedModel exports give the in-process JAX model's detections and head outputs.

Parity as for the torchvision import: a tiny model and the R50-FPN torchvision-layout model with
perturbed weights (`tests/torchvision_model.py`), random images and synthetic shapes images,
batch 1 and 3 (the batch dimension is dynamic), both aspect buckets. Detections: same count,
labels equal, boxes within 1e-2 px, scores within 1e-4; two detections whose scores differ by
less than float32 rounding may come out in either order (matched one-to-one, not by row).
"""

import json
import os
import subprocess
import sys

import torch  # noqa: F401 - torch before TensorFlow in one process
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fcos_jax import exporters, serving
from fcos_jax.serving import export
from fcos_jax.configs import coco_torchvision
from fcos_jax.data import categories as categories_lib
from fcos_jax.data import sizes as sizes_lib
from fcos_jax.data import synthetic
from fcos_jax.exporters import onnx_model, saved_model
from fcos_jax.models import fcos
from fcos_jax.normalize import image_normalizer
from fcos_jax.weights import torchvision_import
from tests import tiny_config
from tests.torchvision_model import randomized_fcos

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORMATS = ('onnx', 'savedmodel')
BOX_TOL, SCORE_TOL, RAW_RTOL = 1e-2, 1e-4, 1e-4


def detection_differences(got, want):
  """Largest box (px) and score differences between two batches of detections, pairing each
  row one-to-one with a reference row of the same image and class (the closest one): two
  detections whose scores differ by less than float32 rounding may come out in either order.
  Also returns how many rows found no reference row of their class, and whether the counts per
  image are equal."""
  box, score, unmatched = 0.0, 0.0, 0
  for i, n in enumerate(want['num_valid']):
    unused = list(range(n))
    for k in range(min(n, got['num_valid'][i])):
      same = [j for j in unused if got['classes'][i, k] == want['classes'][i, j]]
      if not same:
        unmatched += 1
        continue
      cost = [max(np.abs(got['boxes'][i, k] - want['boxes'][i, j]).max() / BOX_TOL,
                  abs(got['scores'][i, k] - want['scores'][i, j]) / SCORE_TOL) for j in same]
      j = same[int(np.argmin(cost))]
      unused.remove(j)
      box = max(box, float(np.abs(got['boxes'][i, k] - want['boxes'][i, j]).max()))
      score = max(score, float(abs(got['scores'][i, k] - want['scores'][i, j])))
  same_counts = bool(np.array_equal(got['num_valid'], want['num_valid']))
  return box, score, unmatched, same_counts


def assert_same_detections(got, want):
  """Same count per image, labels equal, boxes within BOX_TOL, scores within SCORE_TOL."""
  box, score, unmatched, same_counts = detection_differences(got, want)
  assert same_counts, (got['num_valid'], want['num_valid'])
  np.testing.assert_array_equal(got['valid'], want['valid'])
  assert unmatched == 0 and box <= BOX_TOL and score <= SCORE_TOL, (unmatched, box, score)
  # Beyond near-ties the order is the reference's.
  np.testing.assert_allclose(got['scores'], want['scores'], atol=SCORE_TOL)


def build(kind):
  if kind == 'tiny':
    return tiny_config.random_detector()
  config = coco_torchvision.get_config()
  config.data.torchvision_exact = False
  config.data.eval_min_size, config.data.max_size = 128, 192  # buckets 128x192, 192x128
  model = fcos.create_model(config.model)
  like = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  state_dict = {k: v.numpy() for k, v in randomized_fcos().state_dict().items()}
  variables = torchvision_import.convert(state_dict, like, 'fcos')
  return config, model, variables, categories_lib.coco()


@pytest.fixture(scope='module')
def exports(tmp_path_factory):
  """kind -> (kind, config, model, variables, {format: export dir}, in-process Detector),
  built on first use."""
  built = {}

  def get(kind):
    if kind not in built:
      config, model, variables, cats = build(kind)
      dirs = {}
      for fmt in FORMATS:
        dirs[fmt] = str(tmp_path_factory.mktemp(f'{kind}_{fmt}'))
        export.export_detector(config, model, variables, dirs[fmt], cats, fmt)
      reference = serving.Detector.from_model(config, model, variables, cats)
      built[kind] = (kind, config, model, variables, dirs, reference)
    return built[kind]
  return get


@pytest.fixture(params=['tiny', 'r50'])
def exported(request, exports):
  return exports(request.param)


def batch_inputs(rng, shape, batch):
  images = rng.integers(0, 256, (batch,) + shape + (3,), dtype=np.uint8)
  sizes = np.array([[shape[0] - 7 * i, shape[1] - 5 * i] for i in range(batch)], np.int32)
  return images, sizes


@pytest.mark.parametrize('fmt', FORMATS)
def test_detections_match_the_jax_model(exported, fmt):
  kind, config, _, _, dirs, reference = exported
  detector = serving.Detector(dirs[fmt])
  assert detector.metadata['runtime'] == fmt
  assert sorted(detector.shapes) == sorted(reference.shapes) and len(detector.shapes) == 2
  rng = np.random.default_rng(7)
  for shape in detector.shapes:
    for batch in (1, 3):
      images, sizes = batch_inputs(rng, shape, batch)
      got, want = detector(images, sizes), reference(images, sizes)
      assert got['boxes'].shape == (batch, config.postprocess.max_detections, 4)
      assert (want['num_valid'] > 0).all()
      assert_same_detections(got, want)
  # Synthetic shapes images of both orientations, from original pixels to original pixels.
  pictures = [synthetic.make_image(rng, h, w, 4, 0.0)[0] for h, w in ((60, 90), (150, 100),
                                                                      (96, 64))]
  for got, want in zip(detector.detect_many(pictures, batch_size=3),
                       reference.detect_many(pictures, batch_size=3)):
    assert len(want) > 0
    assert_same_detections(as_arrays(got), as_arrays(want))


@pytest.mark.parametrize('method,formats', [('linear', ('onnx',)),
                                             ('gaussian', ('stablehlo',) + FORMATS)])
def test_soft_nms_exports_in_every_format(tmp_path, method, formats):
  """Soft-NMS runs in the exported loop of each format: the exports' detections are the in-process
  model's, whose scores are decayed where greedy NMS would have removed the box."""
  config, model, variables, cats = tiny_config.random_detector()
  config.postprocess.nms_threshold = 0.05  # the random model's top boxes seldom overlap more
  greedy = serving.Detector.from_model(config, model, variables, cats)
  config.postprocess.nms_method = method
  reference = serving.Detector.from_model(config, model, variables, cats)
  shape = reference.shapes[0]
  images, sizes = batch_inputs(np.random.default_rng(4), shape, 2)
  want, hard = reference(images, sizes), greedy(images, sizes)
  assert (want['num_valid'] > 0).all()
  assert not np.array_equal(want['classes'], hard['classes'])
  for fmt in formats:
    folder = str(tmp_path / fmt)
    meta = export.export_detector(config, model, variables, folder, cats, fmt)
    assert meta['postprocess']['nms_method'] == method
    assert_same_detections(serving.Detector(folder)(images, sizes), want)


def as_arrays(dets):
  """detect()'s list of one image -> the batched arrays of `assert_same_detections`."""
  return {'num_valid': np.array([len(dets)]), 'valid': np.ones((1, len(dets)), bool),
          'classes': np.array([[d['label'] for d in dets]]),
          'scores': np.array([[d['score'] for d in dets]]),
          'boxes': np.array([[d['bbox'] for d in dets]]).reshape(1, len(dets), 4)}


def raw_outputs_fn(config, model, variables):
  normalize = image_normalizer(config)

  def raw(images, image_sizes):
    out = model.apply(variables, normalize(images, image_sizes))
    return out['cls_logits'], out['bbox_reg'], out['centerness']
  return raw


def rel_err(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))


def test_raw_head_outputs_match(exported):
  """The model part alone through both converters: head outputs within 1e-4 relative."""
  import onnxruntime as ort
  import tensorflow as tf
  from jax.experimental import jax2tf
  kind, config, model, variables, _, _ = exported
  raw = raw_outputs_fn(config, model, variables)
  shape = sizes_lib.eval_shapes(config.data)[1]
  images, sizes = batch_inputs(np.random.default_rng(2), shape, 2)
  want = jax.jit(raw)(images, sizes)
  (b,) = jax.export.symbolic_shape('b')
  proto = onnx_model.to_onnx(raw, [jax.ShapeDtypeStruct((b,) + shape + (3,), jnp.uint8),
                                   jax.ShapeDtypeStruct((b, 2), jnp.int32)],
                             ('cls_logits', 'bbox_reg', 'centerness'), 'raw')
  session = ort.InferenceSession(proto.SerializeToString(), providers=['CPUExecutionProvider'])
  got_onnx = session.run(None, {'images': images, 'image_sizes': sizes})
  with saved_model._stablehlo_for_tensorflow():
    got_tf = tf.function(jax2tf.convert(raw, with_gradient=False), autograph=False)(
        tf.constant(images), tf.constant(sizes))
  for name, w, o, t in zip(('cls_logits', 'bbox_reg', 'centerness'), want, got_onnx, got_tf):
    assert o.shape == w.shape == tuple(t.shape), name
    assert rel_err(o, w) < RAW_RTOL, (kind, name, 'onnx', rel_err(o, w))
    assert rel_err(t.numpy(), w) < RAW_RTOL, (kind, name, 'tf', rel_err(t.numpy(), w))


def test_metadata_travels_inside_each_format(exported):
  _, _, _, _, dirs, reference = exported
  for fmt, folder in dirs.items():
    with open(os.path.join(folder, 'metadata.json')) as f:
      meta = json.load(f)
    assert meta['runtime'] == fmt
    assert meta['class_names'] == reference.class_names
    assert meta['category_ids'] == reference.category_ids
    assert {'min_size', 'max_size', 'pixel_mean', 'pixel_std', 'resize', 'bucket'} <= set(
        meta['preprocessing'])
    if fmt == 'onnx':
      import onnx
      for m in meta['models']:
        props = {p.key: p.value for p in onnx.load(os.path.join(folder, m['file'])).metadata_props}
        assert json.loads(props['fcos_jax'])['category_ids'] == meta['category_ids']
    else:
      with open(os.path.join(folder, 'saved_model', 'assets.extra', 'metadata.json')) as f:
        inside = json.load(f)
      assert inside['class_names'] == meta['class_names']
      assert inside['preprocessing'] == meta['preprocessing']


def test_onnx_of_an_auto_dtype_model_is_float32(exports):
  """model.dtype 'auto' (the COCO configs') exports one float32 ONNX graph: no bfloat16 tensor
  or cast in it (its detections match the float32 JAX model above)."""
  import onnx
  _, config, _, _, dirs, _ = exports('r50')
  assert config.model.dtype == 'auto'
  meta = json.load(open(os.path.join(dirs['onnx'], 'metadata.json')))
  for m in meta['models']:
    graph = onnx.load(os.path.join(dirs['onnx'], m['file'])).graph
    types = {t.data_type for t in graph.initializer}
    types |= {v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.output]}
    casts = {a.i for n in graph.node if n.op_type == 'Cast' for a in n.attribute
             if a.name == 'to'}
    assert onnx.TensorProto.FLOAT in types
    assert onnx.TensorProto.BFLOAT16 not in types | casts, m['file']


CONSUMER = r'''
import sys, json, numpy as np
sys.modules['jax'] = None  # neither JAX nor this package's model code can be imported
sys.modules['fcos_jax'] = None
folder, fmt, inputs = sys.argv[1:4]
meta = json.load(open(folder + '/metadata.json'))
z = np.load(inputs)
m = meta['models'][0]
if fmt == 'onnx':
    import onnxruntime as ort
    s = ort.InferenceSession(folder + '/' + m['file'], providers=['CPUExecutionProvider'])
    out = dict(zip([o.name for o in s.get_outputs()],
                   s.run(None, {'images': z['images'], 'image_sizes': z['image_sizes']})))
else:
    import tensorflow as tf
    f = tf.saved_model.load(folder + '/saved_model').signatures[m['signature']]
    out = {k: v.numpy() for k, v in f(images=tf.constant(z['images']),
                                        image_sizes=tf.constant(z['image_sizes'])).items()}
np.savez(inputs + '.out.npz', **out)
'''


def test_exports_run_without_jax(exports, tmp_path):
  """Both exports of the tiny model in a process where JAX and this package cannot be imported
  (the R50's would only take longer)."""
  _, _, _, _, dirs, reference = exports('tiny')
  shape = tuple(json.load(open(os.path.join(dirs['onnx'], 'metadata.json')))['models'][0][k]
                for k in ('height', 'width'))
  images, sizes = batch_inputs(np.random.default_rng(5), shape, 2)
  path = str(tmp_path / 'inputs.npz')
  np.savez(path, images=images, image_sizes=sizes)
  want = reference(images, sizes)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  for fmt, folder in dirs.items():
    out = subprocess.run([sys.executable, '-c', CONSUMER, folder, fmt, path], env=env,
                         capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    with np.load(path + '.out.npz') as z:
      assert_same_detections({k: z[k] for k in z.files}, want)


def test_a_missing_converter_names_the_extra(tmp_path):
  """export.py --format onnx where jax2onnx cannot be imported: one line naming the extra,
  before any weights are read or anything is written."""
  from tests.test_user_errors import assert_one_line_error
  script = ("import sys, runpy; sys.modules['jax2onnx'] = None; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='3')
  out = subprocess.run([sys.executable, '-c', script, os.path.join(ROOT, 'export.py'),
                        f'--config={ROOT}/tests/tiny_config.py', f'--params={tmp_path / "none"}',
                        f'--out={tmp_path / "export"}', '--format=onnx'],
                       env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert_one_line_error(out, '--format onnx needs jax2onnx', 'fcos_jax[onnx]')
  assert not (tmp_path / 'export').exists()
  with pytest.raises(ValueError, match='unknown export format'):
    exporters.module('tflite')


@pytest.mark.slow  # 70 s; the R50 ONNX parity tests above cover the converted graph
def test_export_command_from_an_imported_torchvision_detector(tmp_path):
  """import_torchvision -> export.py --params --format onnx -> predict.py --export, as a user
  runs them; a second export into the same --out is refused without --overwrite."""
  from PIL import Image
  from tests.test_user_errors import assert_one_line_error, run
  torch.save(randomized_fcos().state_dict(), tmp_path / 'fcos.pth')
  out = run('fcos_jax.tools.import_torchvision', f'--weights={tmp_path / "fcos.pth"}',
            f'--out={tmp_path / "params"}')
  assert out.returncode == 0, out.stderr[-3000:]
  small = ['--config.data.eval_min_size=128', '--config.data.max_size=192',
           '--config.data.torchvision_exact=False']
  args = ('export.py', f'--config={ROOT}/configs/coco_torchvision.py',
          f'--params={tmp_path / "params"}', f'--out={tmp_path / "export"}', '--format=onnx',
          *small)
  out = run(*args)
  assert out.returncode == 0, out.stderr[-3000:]
  assert '(onnx, float32): detector_128x192.onnx, detector_192x128.onnx' in out.stdout
  assert_one_line_error(run(*args), 'export', 'not empty', '--overwrite')
  image = synthetic.make_image(np.random.default_rng(0), 120, 90, 3, 0.0)[0]
  Image.fromarray(image).save(tmp_path / 'a.jpg')
  out = run('predict.py', f'--export={tmp_path / "export"}', f'--image={tmp_path / "a.jpg"}',
            f'--out={tmp_path / "pred"}', '--min_score=0.0')
  assert out.returncode == 0, out.stderr[-3000:]
  with open(tmp_path / 'pred' / 'detections.json') as f:
    dets = next(iter(json.load(f).values()))
  with open(tmp_path / 'export' / 'metadata.json') as f:
    meta = json.load(f)
  assert len(meta['category_ids']) == 91 and len(dets) == 100
  assert all(d['category_id'] == meta['category_ids'][d['label']]
             and d['class_name'] == meta['class_names'][d['label']] for d in dets)
  assert (tmp_path / 'pred' / 'a.png').exists()


def _random_detector_shapes():
  return sizes_lib.eval_shapes(tiny_config.get_config().data)  # random_detector's data config


def _float32_and(tmp_path, precision, calibration=None):
  """{precision: ONNX export dir} of `tiny_config.random_detector` in float32 and `precision`."""
  config, model, variables, cats = tiny_config.random_detector()
  dirs = {}
  for p in ('float32', precision):
    dirs[p] = str(tmp_path / p)
    meta = export.export_detector(config, model, variables, dirs[p], cats, 'onnx', precision=p,
                                  calibration=calibration if p == 'int8' else None)
    assert meta['precision'] == p
  return dirs


def _assert_scores_close_to_float32(dirs, precision):
  """The random model's scores lie close together, so a small shift reorders its boxes: compare
  the score profile (the demo's AP change is measured in docs/inference.md)."""
  shape = tuple(json.load(open(os.path.join(dirs['float32'], 'metadata.json')))['models'][0][k]
                for k in ('height', 'width'))
  images, image_sizes = batch_inputs(np.random.default_rng(9), shape, 2)
  want = serving.Detector(dirs['float32'])(images, image_sizes)
  got = serving.Detector(dirs[precision])(images, image_sizes)
  np.testing.assert_array_equal(got['num_valid'], want['num_valid'])
  assert (got['num_valid'] > 0).all() and got['scores'].dtype == np.float32
  assert np.abs(got['scores'] - want['scores']).max() < 0.01
  assert not np.array_equal(got['scores'], want['scores'])  # it is another model


def test_int8_onnx_quantizes_the_convolutions_and_keeps_the_detections(tmp_path):
  """int8 export: every Conv takes int8 per-channel weights through QDQ, the NMS loop stays
  float; its scores are the float export's but for quantization's small shifts."""
  import onnx
  rng = np.random.default_rng(8)
  calibration = {tuple(s): [dict(zip(('images', 'image_sizes'), batch_inputs(rng, tuple(s), 4)))
                            for _ in range(2)] for s in _random_detector_shapes()}
  dirs = _float32_and(tmp_path, 'int8', calibration)
  assert sorted(os.listdir(dirs['int8'])) == sorted(os.listdir(dirs['float32']))  # no leftovers
  meta = json.load(open(os.path.join(dirs['int8'], 'metadata.json')))
  for m in meta['models']:
    graph = onnx.load(os.path.join(dirs['int8'], m['file'])).graph
    inits = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    convs = [n for n in graph.node if n.op_type == 'Conv']
    assert convs and any(n.op_type == 'Loop' for n in graph.node)
    for conv in convs:
      weight = producers[conv.input[1]]
      assert weight.op_type == 'DequantizeLinear'
      q = inits[weight.input[0]]
      assert q.data_type == onnx.TensorProto.INT8 and len(q.dims) == 4
      assert onnx.numpy_helper.to_array(inits[weight.input[1]]).size == q.dims[0]  # per channel
    float_size = os.path.getsize(os.path.join(dirs['float32'], m['file']))
    assert os.path.getsize(os.path.join(dirs['int8'], m['file'])) < 0.6 * float_size
  _assert_scores_close_to_float32(dirs, 'int8')


def test_float16_onnx_computes_in_half_precision_and_keeps_the_detections(tmp_path):
  """float16 export: every Conv runs on float16 activations and weights stored in float16, the
  outputs stay float32; the detections are the float32 export's but for float16 rounding."""
  import onnx
  dirs = _float32_and(tmp_path, 'float16')
  half = onnx.TensorProto.FLOAT16
  for m in json.load(open(os.path.join(dirs['float16'], 'metadata.json')))['models']:
    proto = onnx.shape_inference.infer_shapes(
        onnx.load(os.path.join(dirs['float16'], m['file'])))
    graph = proto.graph
    types = {v.name: v.type.tensor_type.elem_type
             for v in list(graph.value_info) + list(graph.input) + list(graph.output)}
    types.update({i.name: i.data_type for i in graph.initializer})
    convs = [n for n in graph.node if n.op_type == 'Conv']
    assert convs and all(types[n.input[0]] == half and types[n.input[1]] == half for n in convs)
    producers = {o: n for n in graph.node for o in n.output}
    for conv in convs:  # weights stored in float16 (directly, or through a Transpose)
      w = conv.input[1]
      while w in producers:
        w = producers[w].input[0]
      assert types[w] == half, w
    plain = onnx.load(os.path.join(dirs['float32'], m['file'])).graph
    assert [(o.name, o.type.tensor_type.elem_type) for o in graph.output] == [
        (o.name, o.type.tensor_type.elem_type) for o in plain.output]  # float32 boxes, scores
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    float_size = os.path.getsize(os.path.join(dirs['float32'], m['file']))
    # Weights take half the bytes; the NMS loop and shapes take what they took.
    assert os.path.getsize(os.path.join(dirs['float16'], m['file'])) < 0.7 * float_size
  _assert_scores_close_to_float32(dirs, 'float16')


def test_int8_and_nms_free_export_mistakes_are_one_line(tmp_path):
  from tests.test_user_errors import assert_one_line_error, run
  base = ('export.py', f'--config={ROOT}/tests/tiny_config.py', f'--params={tmp_path / "none"}',
          '--precision=int8')
  assert_one_line_error(run(*base, f'--out={tmp_path / "a"}'), '--precision int8',
                        '--format onnx')
  assert_one_line_error(run(*base, f'--out={tmp_path / "b"}', '--format=onnx',
                            f'--config.data.data_dir={tmp_path / "nodata"}',
                            '--config.data.synthetic=False'), 'not')
  out = run('export.py', f'--config={ROOT}/tests/tiny_config.py', f'--params={tmp_path / "none"}',
            f'--out={tmp_path / "c"}', '--nonms')
  assert_one_line_error(out, '--nonms is an ONNX export', '--format onnx')
  assert not any((tmp_path / d).exists() for d in 'abc')


def test_nms_free_onnx_gives_every_locations_box_and_scores(tmp_path):
  """--nonms: boxes and per-class scores of every location, against a numpy decode written from
  the definitions (location (i s + s // 2, j s + s // 2), distances x stride, clipped; score
  sqrt(sigmoid(cls) sigmoid(ctr)), 0 outside the unpadded image) on the JAX model's raw head."""
  import onnxruntime as ort
  config, model, variables, cats = tiny_config.random_detector()
  m = config.model
  assert m.location_mode == 'half' and m.norm_reg_targets and config.postprocess.sqrt_score
  folder = str(tmp_path / 'raw')
  meta = export.export_detector(config, model, variables, folder, cats, 'onnx', nms=False)
  assert meta['nms'] is False and list(meta['outputs']) == ['boxes', 'scores']
  shape = tuple(sizes_lib.eval_shapes(config.data)[0])
  images, image_sizes = batch_inputs(np.random.default_rng(6), shape, 2)
  session = ort.InferenceSession(os.path.join(folder, meta['models'][0]['file']),
                                 providers=['CPUExecutionProvider'])
  boxes, scores = session.run(['boxes', 'scores'], {'images': images,
                                                    'image_sizes': image_sizes})
  cls, reg, ctr = (np.asarray(x, np.float64) for x in
                   jax.jit(raw_outputs_fn(config, model, variables))(images, image_sizes))
  want_boxes, want_scores = np.zeros_like(boxes, np.float64), np.zeros_like(scores, np.float64)
  sig = lambda x: 1 / (1 + np.exp(-x))
  for b, (h, w) in enumerate(image_sizes):
    n = 0
    for s in m.strides:
      for j in range(-(-shape[0] // s)):
        for i in range(-(-shape[1] // s)):
          x, y = i * s + s // 2, j * s + s // 2
          d = reg[b, n] * s
          box = np.clip([x - d[0], y - d[1], x + d[2], y + d[3]], 0, [w, h, w, h])
          want_boxes[b, n] = box
          if x < w and y < h and box[2] > box[0] and box[3] > box[1]:
            want_scores[b, n] = np.sqrt(sig(cls[b, n]) * sig(ctr[b, n]))
          n += 1
    assert n == boxes.shape[1]
  np.testing.assert_allclose(boxes, want_boxes, atol=1e-3)
  np.testing.assert_allclose(scores, want_scores, atol=1e-5)
  assert (scores == 0).any() and (scores > 0).mean() > 0.3  # both kinds of location
  with pytest.raises(Exception, match='NMS-free export'):
    serving.Detector(folder)


def test_stablehlo_runner_pads_a_smaller_batch_to_a_compiled_one():
  """`stablehlo.BatchPadded` on a per-row function: a smaller batch runs the smallest compiled
  batch size that the caller's batch size allows (traced once), else its own; each row as
  numpy computes it."""
  from fcos_jax.exporters import stablehlo
  traced = []

  def fn(v, images, image_sizes):
    traced.append(images.shape[0])
    return {'total': images.astype(jnp.int32).sum(axis=(1, 2, 3)) * v['w'],
            'area': image_sizes[:, 0] * image_sizes[:, 1]}
  program = stablehlo.BatchPadded(fn, {'w': jnp.int32(3)})
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (8, 4, 5, 3), dtype=np.uint8)
  sizes = rng.integers(1, 50, (8, 2)).astype(np.int32)
  for part, batch_size, want_traced in (
      (slice(0, 4), 4, [4]), (slice(4, 7), 4, [4]),  # a video's 4 then 3 frames: padded
      (slice(6, 7), None, [4, 1]),                     # no batch size given: as it is
      (slice(0, 2), 2, [4, 1, 2]),                     # 4 is above the caller's batch
      (slice(0, 6), 8, [4, 1, 2, 6]), (slice(2, 7), 8, [4, 1, 2, 6]),  # 5 padded to 6
      (slice(3, 4), 8, [4, 1, 2, 6])):                 # 1 compiled: the smallest
    got = program(images[part], sizes[part], batch_size)
    assert traced == want_traced, (part, batch_size)
    np.testing.assert_array_equal(got['total'], images[part].astype(np.int64).sum((1, 2, 3)) * 3)
    np.testing.assert_array_equal(got['area'], sizes[part, 0] * sizes[part, 1])
  program(images[:2, :2], sizes[:2], 8)  # another shape: its own batch sizes
  assert traced[-1] == 2 and len(traced) == 5
