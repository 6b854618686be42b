"""The `fcos` command: subcommands run the same programs as the fcos-* names, `fcos config`
prints configs, and mistakes are one line."""

import subprocess
import sys

import fcos_jax
from fcos_jax.configs import shapes
from tests.test_trainer import ROOT, env
from tests.test_user_errors import assert_one_line_error


def fcos(*args, cwd=ROOT):
  return subprocess.run([sys.executable, '-m', 'fcos_jax.programs.fcos', *args], cwd=cwd,
                        env=env(), capture_output=True, text=True, timeout=300)


def test_help_lists_subcommands_and_they_run_the_programs(tmp_path):
  out = fcos('--help')
  assert out.returncode == 0
  for name in ('train', 'evaluate', 'predict', 'export', 'convert', 'import', 'stats', 'config'):
    assert f'\n  {name} ' in out.stdout, name
  out = fcos('export', '--help')
  assert out.returncode == 0 and '--format' in out.stdout
  out = fcos('predict', '--version')
  assert out.returncode == 0
  assert out.stdout.strip() == f'fcos predict (fcos_jax) {fcos_jax.__version__}'
  assert_one_line_error(fcos('trian'), "unknown subcommand 'trian'", "did you mean 'train'")
  # A program's own mistakes keep its one-line rule under `fcos`.
  assert_one_line_error(fcos('evaluate', f'--workdir={tmp_path}'), 'has no recorded config')


def test_config_show_prints_a_shipped_config_and_a_runs(tmp_path):
  out = fcos('config', 'show', 'shapes', cwd=tmp_path)
  assert out.returncode == 0 and out.stdout == str(shapes.get_config())
  assert 'shapes' in fcos('config', 'list').stdout.split()
  config = shapes.get_config()
  config.model.num_classes = 2
  (tmp_path / 'config.json').write_text(config.to_json_best_effort())
  out = fcos('config', 'show', str(tmp_path))
  assert out.returncode == 0 and 'num_classes: 2' in out.stdout
  assert_one_line_error(fcos('config', 'show', 'nope'), "no config 'nope'", 'shapes')
  assert_one_line_error(fcos('config'), 'usage: fcos config')
