"""Benchmarks (accelerator.py, bench_vs_torchvision.py and others) at tiny sizes on this CPU, so
that they never rot."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_accelerator_report_runs_and_keeps_an_earlier_report(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=ROOT)
  args = [sys.executable, '-m', 'benchmarks.accelerator', '--size=64,64', '--batch=2',
          '--infer_batches=1', '--dtypes=float32', '--steps=1', '--depth=18', '--width=8',
          '--matmul_n=128', f'--out={tmp_path}']
  out = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  report = json.load(open(tmp_path / 'accelerator.json'))
  assert report['device']['platform'] == 'cpu'
  forms = report['layer_forms']
  # This CPU's program: the CPU forms (products) and float32 under 'auto'.
  assert forms['matrix_products'] > 0 and forms['max_pool_gradient'] == 'CPU form'
  assert forms['auto_compute_dtype'] == 'float32'
  train, infer = report['rows']
  assert train['what'] == 'train step float32' and train['batch'] == 2
  assert infer['what'] == 'inference float32' and infer['batch'] == 1
  for row in (train, infer):
    assert row['images_per_s'] > 0 and row['tflop_per_step'] > 0
    assert 0 < row['mfu_matmul'] and row['xla_memory_gib'] > 0
  assert train['tflop_per_step'] > infer['tflop_per_step']  # backward + 2 images
  assert '| train step float32 | 2 |' in (tmp_path / 'accelerator.md').read_text()
  before = (tmp_path / 'accelerator.json').read_text()
  again = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert again.returncode != 0 and 'already holds a report' in again.stderr
  assert len(again.stderr.strip().splitlines()) == 1
  assert (tmp_path / 'accelerator.json').read_text() == before


def test_group_norm_residuals_table():
  out = subprocess.run([sys.executable, '-m', 'benchmarks.group_norm_residuals',
                        '--shape=2,8,12,32', '--groups=4'], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  assert out.returncode == 0, out.stderr[-3000:]
  rows = {line.split('|')[1].strip(): line.split('|')[2:4] for line in out.stdout.splitlines()
          if line.startswith('| cpu') or line.startswith('| native')}
  for form in ('cpu', 'native (GPU/TPU)'):
    autodiff, custom = (float(v) for v in rows[form])
    assert 2.0 <= custom < 2.1 and autodiff >= 8.0  # bf16 x (+ statistics), against f32 copies


def test_checkpoint_stall_measures_a_state_that_resumes_exactly(tmp_path):
  """benchmarks/checkpoint_stall.py on a tiny mock coco/2017, per sampler: a data position is
  written and read back, and the restored stream yields the batch the original one would have."""
  from benchmarks import checkpoint_stall
  r = {s: checkpoint_stall.measure(str(tmp_path), images=24, batch=2, batches=2, settle_s=0.5,
                                   sampler=s, image_size=(96, 128), shuffle_buffer=8,
                                   min_size=96, max_size=160) for s in ('buffer', 'index')}
  assert r['buffer']['same_next_batch'] is True and r['index']['same_next_batch'] is True
  # The shuffle buffers hold encoded JPEGs: the state is at least a few of them; the index
  # sampler's position is a small JSON file.
  assert r['buffer']['state_kb'] > 4 * 1024 * r['buffer']['image_mb']
  assert 0 < r['index']['state_kb'] < 1
  assert all(x['write_s'] > 0 and x['restore_s'] > 0 for x in r.values())


def test_onnx_precision_times_exports_side_by_side(tmp_path):
  """benchmarks/onnx_precision.py on one tiny export given twice: a row each, the second's
  ratio to the first printed, the sizes equal."""
  from fcos_jax.serving import export
  from tests import tiny_config
  config, model, variables, cats = tiny_config.random_detector()
  export.export_detector(config, model, variables, str(tmp_path / 'e'), cats, 'onnx')
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=ROOT)
  out = subprocess.run([sys.executable, '-m', 'benchmarks.onnx_precision', str(tmp_path / 'e'),
                        str(tmp_path / 'e'), '--batches=1,2', '--rounds=2'], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  rows = [line for line in out.stdout.splitlines() if line.startswith(f'| {tmp_path}')]
  assert len(rows) == 2 and all('| float32 |' in r for r in rows)
  assert rows[0].split('|')[3] == rows[1].split('|')[3]  # MiB
  assert '(1.00x)' in rows[0] and rows[1].count('x)') == 2


def test_video_predict_frames_and_comparison(tmp_path):
  """benchmarks/video_predict.py's parts: the first --frames of a video (as PyAV decodes them),
  and its detections column: equal, the largest difference, or different detections."""
  import argparse
  import av
  import numpy as np
  from benchmarks import video_predict
  from fcos_jax import video_io
  writer = video_io.VideoWriter(str(tmp_path / 'v.mp4'), 5)
  for i in range(5):
    writer.write(np.full((32, 48, 3), 40 * i, np.uint8))
  writer.close()
  args = argparse.Namespace(video=str(tmp_path / 'v.mp4'), frames=3)
  frames = video_predict.frames_of(args)
  with av.open(str(tmp_path / 'v.mp4')) as container:
    want = [f.to_ndarray(format='rgb24') for f in container.decode(video=0)][:3]
  assert len(frames) == 3 and all((f == w).all() for f, w in zip(frames, want))
  d = {'bbox': [1.0, 2.0, 3.0, 4.0], 'score': 0.5, 'label': 1}
  moved = dict(d, bbox=[1.0, 2.0, 3.0, 4.25])
  assert video_predict.compare([[d], []], [[dict(d)], []]) == 'equal'
  assert video_predict.compare([[d]], [[moved]]) == 'max diff 2.5e-01'
  assert video_predict.compare([[d]], [[dict(d, label=2)]]) == 'different detections'


def test_bench_vs_torchvision_float32_and_bfloat16():
  """benchmarks/bench_vs_torchvision.py at 64x64 (one R50 inference case, both precisions, both
  frameworks), and the peak-RSS child of torchvision's bfloat16 train step (autocast forward and
  loss, backward outside)."""
  import numpy as np
  from benchmarks import bench_vs_torchvision as bench
  rows, peaks = bench.main(['--cases=infer_512', '--size=64,64', '--batch=1', '--repeats=1',
                            '--warmup=0', '--no_memory', '--matmul_n=64'])
  assert [(r['name'], r['precision']) for r in rows] == [('infer_512', 'float32'),
                                                         ('infer_512', 'bfloat16')]
  for r in rows:
    times = [r['ours'], r['tv'], r['cpu_ours'], r['cpu_tv'], r['gflop']]
    assert np.isfinite(times).all() and min(times) > 0
  assert set(peaks) == {'float32', 'bfloat16'}
  assert all(q['xla'] > 0 and q['torch'] > 0 for q in peaks.values())
  table = bench.tables(rows, peaks)
  assert '| R50-FPN inference + postprocess, 64x64, batch 1 | float32 |' in table
  assert '| R50-FPN inference + postprocess, 64x64, batch 1 | bfloat16 |' in table
  assert 'bfloat16 speedup' in table and 'bfloat16: XLA' in table
  gb = bench.peak_rss_gb('tv', 'train_r18', 'bfloat16', ['--size=64,64', '--batch=2'])
  assert 0.1 < gb < 50


@pytest.mark.slow  # two conversions through the real program, one on two Beam workers
def test_conversion_rate_times_both_modes(tmp_path):
  pytest.importorskip('apache_beam')
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=ROOT)
  out = subprocess.run([sys.executable, '-m', 'benchmarks.conversion_rate', '--images=4',
                        '--rounds=1', f'--data_dir={tmp_path}'], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  rows = [line for line in out.stdout.splitlines() if line.startswith(('single', 'Beam'))]
  assert len(rows) == 2 and all(float(r.split()[-3]) > 0 for r in rows), out.stdout
