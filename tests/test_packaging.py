"""The package installs from a wheel and its programs and shipped configs work from any folder;
pyproject declares every runtime requirement."""

import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def names(requirements):
  return {re.split(r'[<>=\[ ;]', r.strip(), maxsplit=1)[0].lower().replace('_', '-')
          for r in requirements if r.strip() and not r.strip().startswith(('#', '-r'))}


def test_pyproject_declares_the_runtime_requirements():
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    project = tomllib.load(f)['project']
  with open(os.path.join(ROOT, 'requirements.txt')) as f:
    pinned = names(f)
  assert names(project['dependencies']) == pinned
  assert {'torch', 'torchvision'} <= names(project['optional-dependencies']['torch'])
  assert project['requires-python'] == '>=3.11'


@pytest.mark.slow  # 3 min: builds a wheel into a fresh venv
def test_wheel_installs_and_trains_and_evaluates_from_another_folder(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', TF_ENABLE_ONEDNN_OPTS='0',
             XLA_FLAGS='--xla_force_host_platform_device_count=1')
  # Build from a copy of what the wheel is made of: an in-tree build leaves build/ behind.
  source = tmp_path / 'source'
  source.mkdir()
  for name in ('pyproject.toml', 'README.md', 'LICENSE'):
    shutil.copy(os.path.join(ROOT, name), source / name)
  shutil.copytree(os.path.join(ROOT, 'fcos_jax'), source / 'fcos_jax',
                  ignore=shutil.ignore_patterns('__pycache__'))
  dist = tmp_path / 'dist'
  out = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation',
                        '-q', '-w', str(dist), str(source)], capture_output=True, text=True,
                       env=env, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  (wheel,) = dist.glob('fcos_jax-*.whl')
  site = tmp_path / 'site'
  out = subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '-q', '--target',
                        str(site), str(wheel)], capture_output=True, text=True, env=env,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert (site / 'bin' / 'fcos-train').exists() and (site / 'fcos_jax' / 'configs' /
                                                      'shapes.py').exists()
  elsewhere = tmp_path / 'elsewhere'
  elsewhere.mkdir()
  env['PYTHONPATH'] = str(site)  # the dependencies come from this interpreter's environment
  located = subprocess.run([sys.executable, '-c', 'import fcos_jax; print(fcos_jax.__file__)'],
                           capture_output=True, text=True, env=env, cwd=elsewhere)
  assert located.stdout.strip().startswith(str(site)), located.stdout + located.stderr
  tiny = ['--config=shapes', '--workdir=run', f'--config.data.data_dir={tmp_path / "data"}',
          '--config.data.dataset=pkg_shapes', '--config.data.synthetic_train_images=12',
          '--config.data.synthetic_eval_images=4', '--config.data.synthetic_image_size=(64, 64)',
          '--config.data.min_sizes=(64,)', '--config.data.max_size=96',
          '--config.data.eval_min_size=64', '--config.data.shuffle_buffer=12',
          '--config.model.backbone_width=8', '--config.model.fpn_channels=16',
          '--config.model.head_num_convs=1', '--config.model.gn_groups=4',
          '--config.batch_size=4', '--config.eval_batch_size=4', '--config.eval_pictures=0']
  out = subprocess.run([sys.executable, '-m', 'fcos_jax.programs.train', *tiny,
                        '--config.num_train_steps=2', '--config.checkpoint_every=2',
                        '--config.log_every=1', '--config.optimizer.warmup_steps=1',
                        '--config.optimizer.decay_steps=()', '--config.eval_at_end=False'],
                       capture_output=True, text=True, env=env, cwd=elsewhere, timeout=900)
  assert out.returncode == 0, out.stderr[-4000:]
  assert (elsewhere / 'run' / 'checkpoints' / '2').exists()
  # The installed `fcos` command; --workdir alone brings the run's recorded config.
  out = subprocess.run([str(site / 'bin' / 'fcos'), 'evaluate', '--workdir=run'],
                       capture_output=True, text=True, env=env, cwd=elsewhere, timeout=900)
  assert out.returncode == 0, out.stderr[-4000:]
  assert 'checkpoint step 2' in out.stdout and re.search(r'AP\s+[0-9.]+', out.stdout)
