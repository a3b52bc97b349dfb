"""Training curves as PNGs: what people look at first after a run."""
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

from .runs import atomic_write  # noqa: E402

LOSS_CURVES = (('train_loss', 'train'), ('eval_loss', 'eval'), ('eval_ema_loss', 'eval (EMA)'))
ACCURACY_CURVES = (('eval_top1', 'top-1'), ('eval_top5', 'top-5'),
                   ('eval_ema_top1', 'top-1 (EMA)'), ('eval_ema_top5', 'top-5 (EMA)'))


def plot_curves(rows: List[Dict[str, float]], run_dir: Path) -> None:
    """Write loss.png and accuracy.png from the summary rows."""
    _plot(rows, LOSS_CURVES, 'loss', run_dir / 'loss.png')
    _plot(rows, ACCURACY_CURVES, 'accuracy (%)', run_dir / 'accuracy.png')


def _plot(rows: List[Dict[str, float]], curves: Sequence[Tuple[str, str]], ylabel: str, path: Path) -> None:
    epochs = [int(r['epoch']) + 1 for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for key, label in curves:
        if rows and key in rows[0]:
            ax.plot(epochs, [r[key] for r in rows], marker='o' if len(rows) < 30 else None, label=label)
    ax.set_xlabel('epoch')
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format='png'))
    plt.close(fig)
