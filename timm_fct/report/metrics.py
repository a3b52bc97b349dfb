"""The paper's Sec. 4 evaluation: top-1 / top-5, per-class accuracy, the confusion matrix and its largest cells."""
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..errors import FctError

TOP_K = 5
MAX_CONFUSED_PAIRS = 10
Table = Tuple[List[str], List[List[str]]]  # headers, rows of already formatted cells


@dataclass
class Evaluation:
    targets: np.ndarray  # (N,) true class indices
    topk: np.ndarray  # (N, k) predicted classes, most likely first
    confidence: np.ndarray  # (N,) softmax probability of the top prediction
    loss: float  # mean cross-entropy


@torch.inference_mode()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, desc: str) -> Evaluation:
    """One pass over the loader, keeping only what the metrics and figures need (not the full logits)."""
    targets, topk, confidence, loss_sum = [], [], [], 0.0
    k = None
    try:
        for images, labels in tqdm(loader, desc=desc, unit='batch', dynamic_ncols=True):
            logits = model(images.to(device)).float()
            labels = labels.to(device)
            k = k or min(TOP_K, logits.shape[1])
            loss_sum += F.cross_entropy(logits, labels, reduction='sum').item()
            probs = logits.softmax(dim=1)
            confidence.append(probs.max(dim=1).values.cpu())
            topk.append(logits.topk(k, dim=1).indices.cpu())
            targets.append(labels.cpu())
    except OSError as e:  # PIL cannot read an image of the dataset
        raise FctError(f'cannot read the dataset: {e}') from None
    if not targets:
        raise FctError('the dataset split is empty: nothing to evaluate')
    n = sum(len(t) for t in targets)
    return Evaluation(torch.cat(targets).numpy(), torch.cat(topk).numpy(), torch.cat(confidence).numpy(),
                      loss_sum / n)


def compute_metrics(ev: Evaluation, names: Sequence[str]) -> Dict[str, Any]:
    """Top-1, top-k, per-class accuracy, the confusion matrix and its largest off-diagonal cells."""
    preds = ev.topk[:, 0]
    cm = confusion_matrix(ev.targets, preds, labels=list(range(len(names))))
    support = cm.sum(axis=1)
    per_class = [
        {'class': name, 'support': int(support[c]), 'correct': int(cm[c, c]),
         'accuracy': 100.0 * cm[c, c] / support[c] if support[c] else None}
        for c, name in enumerate(names)
    ]
    off_diagonal = [(int(cm[t, p]), t, p) for t, p in zip(*np.nonzero(cm)) if t != p]
    confused = [{'true': names[t], 'predicted': names[p], 'count': n}
                for n, t, p in sorted(off_diagonal, key=lambda x: (-x[0], x[1], x[2]))[:MAX_CONFUSED_PAIRS]]
    return {
        'num_images': int(len(ev.targets)),
        'top1': 100.0 * float((preds == ev.targets).mean()),
        'top5': 100.0 * float((ev.topk == ev.targets[:, None]).any(axis=1).mean()),  # top-C below 5 classes
        'loss': ev.loss,
        'class_names': list(names),
        'per_class': per_class,
        'most_confused': confused,
        'confusion_matrix': cm.tolist(),
    }


def fmt_pct(value: Optional[float]) -> str:
    return '–' if value is None else f'{value:.2f}'


def summary_table(rows: Sequence[Dict[str, Any]]) -> Table:
    """One row per model: the paper's Table 1 with top-k and loss beside top-1."""
    headers = ['Model', 'Architecture', 'Images', 'Top-1 (%)', 'Top-5 (%)', 'Loss']
    return headers, [[r['name'], r['arch'], str(r['metrics']['num_images']), fmt_pct(r['metrics']['top1']),
                      fmt_pct(r['metrics']['top5']), f"{r['metrics']['loss']:.4f}"] for r in rows]


def per_class_table(metrics: Dict[str, Any]) -> Table:
    return ['Class', 'Images', 'Correct', 'Accuracy (%)'], [
        [c['class'], str(c['support']), str(c['correct']), fmt_pct(c['accuracy'])] for c in metrics['per_class']]


def confused_table(metrics: Dict[str, Any]) -> Table:
    return ['True class', 'Predicted as', 'Images'], [
        [p['true'], p['predicted'], str(p['count'])] for p in metrics['most_confused']]


def markdown_table(table: Table) -> str:
    headers, rows = table
    lines = ['| ' + ' | '.join(headers) + ' |', '|' + '---|' * len(headers)]
    lines += ['| ' + ' | '.join(cell.replace('|', '\\|') for cell in row) + ' |' for row in rows]
    return '\n'.join(lines) + '\n'


def metrics_markdown(row: Dict[str, Any]) -> str:
    m = row['metrics']
    confused = markdown_table(confused_table(m)) if m['most_confused'] else 'No misclassified images.\n'
    return (f"# {row['name']}\n\n{row['dataset_line']}. {row['weights_line']}\n\n"
            f"{markdown_table(summary_table([row]))}\n"
            f"## Per-class accuracy\n\n{markdown_table(per_class_table(m))}\n"
            f"## Most confused class pairs\n\n{confused}")
