"""Charts of the error analysis (matplotlib, Agg backend, PNG): precision-recall curves and the
confusion matrix."""

from typing import Any, Dict, Sequence

import numpy as np


def pyplot():
  """matplotlib's pyplot on the Agg backend (PNG files, no display)."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  return plt


def plot_pr_curves(curves: Sequence[Dict[str, Any]], path: str, iou_threshold: float) -> None:
  """One precision-recall curve per category, AP in the legend."""
  plt = pyplot()
  fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
  for c in curves:
    ax.plot(c['recall'], c['precision'], lw=1.5, label=f'{c["name"]} (AP {c["ap"]:.3f})')
  ax.set_xlim(0, 1)
  ax.set_ylim(0, 1.02)
  ax.set_xlabel('recall')
  ax.set_ylabel('precision')
  ax.set_title(f'Precision-recall per category, IoU {iou_threshold:g} (COCOeval)')
  ax.grid(alpha=0.3)
  ax.legend(loc='lower left', fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def plot_confusion(cm: Dict[str, Any], path: str) -> None:
  """The confusion matrix as a heat map of row-normalized shares (the colour bar), counts
  written in the cells."""
  plt = pyplot()
  counts = np.asarray(cm['counts'])
  rows = counts.sum(axis=1, keepdims=True)
  share = counts / np.where(rows > 0, rows, 1)
  n = len(cm['labels'])
  fig, ax = plt.subplots(figsize=(1.1 * n + 2, 0.9 * n + 1.6), dpi=100)
  image = ax.imshow(share, cmap='Blues', vmin=0, vmax=1)
  for i in range(counts.shape[0]):
    for j in range(counts.shape[1]):
      if counts[i, j]:
        ax.text(j, i, str(counts[i, j]), ha='center', va='center', fontsize=9,
                color='white' if share[i, j] > 0.5 else 'black')
  ax.set_xticks(range(n), cm['columns'], rotation=45, ha='right')
  ax.set_yticks(range(n), cm['labels'])
  ax.set_xlabel('predicted')
  ax.set_ylabel('ground truth')
  ax.set_title(f'Confusion, IoU >= {cm["iou_threshold"]:g}, score >= {cm["min_score"]:g}',
               fontsize=10)
  fig.colorbar(image, ax=ax, label="share of the row's boxes", fraction=0.046, pad=0.04)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
