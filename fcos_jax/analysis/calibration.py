"""Do scores rank boxes by localization quality? The paper's Fig. 7: for detections matched to a
ground-truth box, IoU against the class probability alone and against the final score
(class x centerness), with Pearson correlation coefficients."""

from typing import Any, Dict

import numpy as np


def pearson(x: np.ndarray, y: np.ndarray) -> float:
  """Pearson correlation coefficient of two samples; nan for fewer than two or no spread."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.size < 2 or x.std() == 0 or y.std() == 0:
    return float('nan')
  return float(np.corrcoef(x, y)[0, 1])


def score_iou_correlation(matched: Dict[str, np.ndarray]) -> Dict[str, Any]:
  """Correlations of IoU with the final score and with the class probability alone."""
  return {'num_matched': int(matched['iou'].size),
          'corr_final_score': pearson(matched['score'], matched['iou']),
          'corr_class_prob': pearson(matched['class_prob'], matched['iou'])}


def plot_score_vs_iou(matched: Dict[str, np.ndarray], corr: Dict[str, Any], path: str,
                      title: str = '') -> None:
  """Two 2-D histograms (PNG): class probability vs IoU and final score vs IoU on one log
  colour scale (the colour bar: detections per bin), y = x dashed (in the legend)."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  from matplotlib.colors import LogNorm
  from matplotlib.ticker import FuncFormatter
  fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100, sharey=True, layout='constrained')
  panels = (('class_prob', 'without centerness (class probability)', 'corr_class_prob'),
            ('score', 'with centerness (final score)', 'corr_final_score'))
  bins = np.linspace(0, 1, 41)
  # One scale for both panels, so equal colours are equal counts.
  most = max([np.histogram2d(matched['iou'], matched[key], bins=[bins, bins])[0].max()
              for key, _, _ in panels] + [1])
  norm = LogNorm(vmin=1, vmax=max(most, 2))
  for ax, (key, label, ckey) in zip(axes, panels):
    *_, image = ax.hist2d(matched['iou'], matched[key], bins=[bins, bins], cmap='viridis',
                          norm=norm, cmin=1)
    ax.plot([0, 1], [0, 1], 'k--', lw=1, label='score = IoU')
    ax.set_xlabel('IoU with the matched ground-truth box')
    ax.set_title(f'{label}\nPearson r = {corr[ckey]:.3f}', fontsize=10)
  axes[0].set_ylabel('score')
  axes[0].legend(loc='upper left', fontsize=8)
  fig.suptitle(title or f'{corr["num_matched"]} matched detections', fontsize=10)
  bar = fig.colorbar(image, ax=list(axes), label='detections per bin', fraction=0.04, pad=0.02)
  counts = FuncFormatter(lambda v, _: f'{v:g}')  # 1, 2, 10, 50, not powers of ten
  bar.ax.yaxis.set_major_formatter(counts)
  bar.ax.yaxis.set_minor_formatter(counts if most < 10 else FuncFormatter(lambda v, _: ''))
  fig.savefig(path)
  plt.close(fig)
