"""The programs' shared preamble, through the real commands: `--help` and `-h` print the
program's own flags first and exit 0; a stray argument is one line and exit code 1."""

import os
import subprocess
import sys

import pytest

from tests.test_trainer import ROOT, env

# Each program and a flag of its own that its help must show.
PROGRAMS = {
    'train': 'workdir', 'evaluate': 'detections', 'export': 'format', 'predict': 'export',
    'batch_predict': 'split',
    'convert_coco': 'annotations', 'import_torchvision': 'download', 'assigner_stats': 'split',
    'synthetic_shapes': 'train', 'curves': 'out', 'browse': 'train_batches',
}


def _run(*args):
  return subprocess.run([sys.executable, *args], cwd=ROOT, env=env(), capture_output=True,
                        text=True, timeout=300)


@pytest.mark.parametrize('program', sorted(PROGRAMS))
def test_help_shows_the_programs_flags_and_exits_0(program):
  out = _run('-m', f'fcos_jax.programs.{program}', '--help')
  assert out.returncode == 0, out.stderr[-2000:]
  own, _, shared = out.stdout.partition('\nflags:\n')[2].partition('\n\n')
  assert f'--{PROGRAMS[program]}' in own, out.stdout
  assert '--[no]verbose' in shared.partition('other:\n')[2]


def test_help_groups_the_shared_flags_after_the_programs_own():
  out = _run('-m', 'fcos_jax.programs.predict', '--help')
  text = out.stdout[out.stdout.index('\nflags:\n'):]  # past the usage lines
  order = [text.index(s) for s in ('\nflags:\n  --config', '\ninputs and outputs:\n  --image',
                                   '--min_score', '\nweights:\n  --workdir', '--tta',
                                   '\ncompiled programs:', '\nother:\n  --[no]verbose')]
  assert order == sorted(order), text
  full = _run('-m', 'fcos_jax.programs.predict', '--helpfull')
  assert full.returncode == 0 and '--min_score' in full.stdout and '--flagfile' in full.stdout
  version = _run('-m', 'fcos_jax.programs.predict', '--version')
  assert version.returncode == 0 and version.stdout.startswith('predict.py (fcos_jax) ')


def test_short_help_from_a_checkout_script_and_a_stray_argument():
  out = _run(os.path.join(ROOT, 'evaluate.py'), '-h')
  assert out.returncode == 0 and '--detections' in out.stdout
  out = _run(os.path.join(ROOT, 'export.py'), '--config=shapes', '--workdir=/nonexistent',
             '--out=/tmp/x', 'stray')
  assert out.returncode == 1
  assert out.stderr.strip().splitlines()[-1].startswith("error: unexpected arguments ['stray']")


def test_packaged_config_name_from_a_folder_holding_a_data_folder_of_that_name(tmp_path):
  (tmp_path / 'shapes').mkdir()  # e.g. the user's own shapes images
  out = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), '--config=shapes',
                        f'--workdir={tmp_path / "w"}', '--config.batch_sise=2'],
                       cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300)
  # The packaged config was read: the error is about its key, not about loading 'shapes'.
  assert out.returncode == 1 and 'Traceback' not in out.stderr, out.stderr[-3000:]
  assert "unknown config key 'config.batch_sise'" in out.stderr.strip().splitlines()[-1]


ONNX_IR_PROGRAM = '''
import numpy as np
import onnx_ir as ir
from absl import logging
from onnx_ir.passes.common import DeduplicateInitializersPass

from fcos_jax.programs import cli


def main(argv):
  cli.no_arguments(argv)
  graph = ir.Graph([], [], nodes=[])
  for name in ('a', 'b'):
    graph.register_initializer(ir.Value(name=name, const_value=ir.tensor(np.ones(4, np.float32))))
  DeduplicateInitializersPass()(ir.Model(graph, ir_version=10))  # logs one INFO line
  logging.info('own line')


cli.run(main)
'''


def test_library_info_logs_are_dropped_unless_verbose(tmp_path):
  """onnx_ir's per-initializer INFO lines (thousands in an ONNX export) are not shown; the
  program's own are; --verbose shows both."""
  program = tmp_path / 'dedup.py'
  program.write_text(ONNX_IR_PROGRAM)
  quiet, verbose = _run(str(program)), _run(str(program), '--verbose')
  assert quiet.returncode == verbose.returncode == 0, quiet.stderr[-2000:]
  assert 'own line' in quiet.stderr and 'Replaced initializer' not in quiet.stderr
  assert 'own line' in verbose.stderr and "Replaced initializer 'b'" in verbose.stderr
