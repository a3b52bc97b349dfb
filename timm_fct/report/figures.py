"""The report's figures: the confusion matrix (Fig. 3), Grad-CAM grids (Figs. 4, 5), attention, the comparison."""
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch
from matplotlib.figure import Figure
from pytorch_grad_cam.utils.image import scale_cam_image, show_cam_on_image

GRID_COLUMNS = 4


def to_display(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Undo the eval normalisation: (B, C, H, W) tensors to (B, H, W, 3) float images in [0, 1]."""
    x = images.detach().cpu().float() * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)
    x = x.clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def overlay(images: np.ndarray, maps: np.ndarray) -> List[np.ndarray]:
    """Map b min-max scaled, resized to image b and drawn over it as a heat map."""
    h, w = images.shape[1:3]
    return [show_cam_on_image(img, m, use_rgb=True) for img, m in zip(images, scale_cam_image(maps, (w, h)))]


def save_figure(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=100)


def plot_confusion_matrix(metrics: Dict[str, Any], title: str, path: Path) -> None:
    """Fig. 3: counts in every cell, true classes down, predictions across."""
    cm = np.array(metrics['confusion_matrix'])
    names = metrics['class_names']
    n = len(names)
    size = min(4 + 0.55 * n, 40)
    fig = Figure(figsize=(size + 1.5, size), layout='constrained')
    ax = fig.add_subplot()
    shown = ax.imshow(cm, cmap='Blues', vmin=0)
    fig.colorbar(shown, ax=ax, shrink=0.8)
    ax.set_xticks(range(n), names, rotation=45, ha='right', rotation_mode='anchor')
    ax.set_yticks(range(n), names)
    ax.set_xlabel('Predicted class')
    ax.set_ylabel('True class')
    ax.set_title(f"{title}\n{metrics['num_images']} images, top-1 {metrics['top1']:.2f}%")
    if n <= 30:  # beyond that the numbers no longer fit in the cells
        threshold = cm.max() / 2
        for t in range(n):
            for p in range(n):
                ax.text(p, t, str(cm[t, p]), ha='center', va='center', fontsize=8,
                        color='white' if cm[t, p] > threshold else 'black')
    save_figure(fig, path)


def plot_gradcam_grid(images: np.ndarray, rows: Sequence[Tuple[str, np.ndarray]],
                      captions: Sequence[Tuple[str, bool]], title: str, path: Path) -> Figure:
    """Figs. 4 and 5: one column per image (the predicted class and confidence above it), one row per map:
    for an FCT model each FCT module's Grad-CAM, labelled with its FCT index and tap, then their mean."""
    cols = len(images)
    fig = Figure(figsize=(1.9 * cols + 1.2, 2.0 * len(rows) + 0.8), layout='constrained')
    for r, (label, cams) in enumerate(rows):
        for c, (image, cam, (caption, correct)) in enumerate(zip(images, cams, captions)):
            ax = fig.add_subplot(len(rows), cols, r * cols + c + 1)
            ax.imshow(show_cam_on_image(image, cam, use_rgb=True), interpolation='nearest')
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(caption, fontsize=8, color='darkgreen' if correct else 'firebrick')
            if c == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle(f'{title}, for the predicted class')
    save_figure(fig, path)
    return fig


def plot_attention_grid(images: np.ndarray, attention: List[np.ndarray], outputs: List[np.ndarray],
                        taps: Dict[int, int], row_labels: Sequence[str], path: Path) -> None:
    """Per image: the attention each FCT module receives on its K/V grid, then its output, tap by tap."""
    columns = [('input', list(images))]
    for kind, maps in (('attention', attention), ('output', outputs)):
        columns += [(f'FCT {i} (level {level})\n{kind} {m.shape[1]}x{m.shape[2]}', overlay(images, m))
                    for (i, level), m in zip(taps.items(), maps)]
    fig = Figure(figsize=(1.9 * len(columns), 2.0 * len(images) + 0.6), layout='constrained')
    for r in range(len(images)):
        for c, (title, cells) in enumerate(columns):
            ax = fig.add_subplot(len(images), len(columns), r * len(columns) + c + 1)
            ax.imshow(cells[r], interpolation='nearest')
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=8)
    fig.suptitle('Where each FCT module attends, by FCT index and the level it taps (the paper reports coarse to fine)')
    save_figure(fig, path)


def plot_comparison(rows: Sequence[Dict[str, Any]], path: Path) -> None:
    """Table 1 as a chart: top-1 and top-5 of each model side by side."""
    x = np.arange(len(rows))
    fig = Figure(figsize=(max(5, 1.6 * len(rows) + 2), 4), layout='constrained')
    ax = fig.add_subplot()
    for offset, key, label in ((-0.2, 'top1', 'Top-1'), (0.2, 'top5', 'Top-5')):
        values = [r['metrics'][key] for r in rows]
        bars = ax.bar(x + offset, values, width=0.4, label=label)
        ax.bar_label(bars, fmt='%.1f', fontsize=8)
    ax.set_xticks(x, [r['name'] for r in rows], rotation=20, ha='right')
    ax.set_ylabel('Accuracy (%)')
    ax.set_ylim(0, 118)  # headroom for the legend above 100%
    ax.legend(loc='upper center', ncols=2)
    ax.set_title(rows[0]['dataset_line'])
    save_figure(fig, path)
