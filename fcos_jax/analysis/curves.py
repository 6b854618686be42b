"""Run curves as one picture (as ultralytics' results.png): the loss terms, the learning rate and
AP / AP50 / AR100 over the steps of a run, from its `metrics.csv`."""

from typing import Dict, List, Sequence

import numpy as np

from fcos_jax.analysis.plots import pyplot

PANELS = (('loss_total', 'loss_cls', 'loss_box', 'loss_centerness'), ('learning_rate',),
          ('eval/AP', 'eval/AP50', 'eval/AR100'))
TITLES = ('losses (train)', 'learning rate', 'evaluation')
CURVES_FILE = 'curves.png'  # in the workdir, redrawn at each evaluation


def _series(rows: Sequence[Dict[str, str]], key: str):
  points = [(int(r['step']), float(r[key])) for r in rows if r.get(key) not in (None, '')]
  return (np.array([p[0] for p in points]), np.array([p[1] for p in points]))


def plot_curves(rows: List[Dict[str, str]], path: str, title: str = '') -> None:
  """Three panels side by side; a panel without data says so."""
  plt = pyplot()
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), dpi=100)
  for ax, keys, name in zip(axes, PANELS, TITLES):
    drawn = 0
    for key in keys:
      x, y = _series(rows, key)
      if len(x):
        ax.plot(x, y, marker='o' if key.startswith('eval/') else None, ms=3, lw=1.5,
                label=key.replace('eval/', '').replace('loss_', ''))
        drawn += 1
    ax.set_title(name)
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
    if drawn:
      ax.legend(fontsize=8)
    else:
      ax.text(0.5, 0.5, 'no data yet', ha='center', va='center', transform=ax.transAxes)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
