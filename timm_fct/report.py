"""Evaluate and explain trained models: the paper's Sec. 4 evaluation and Figs. 3-5 as one report folder.

    python -m timm_fct.report RUN [RUN ...] --out DIR

RUN is a train.py run folder, a checkpoint file, or an 'hf-hub:' / 'local-dir:' model. The report holds
top-1 / top-5, per-class accuracy and the most confused class pairs (metrics.json, metrics.md, which also
record whether a run's EMA or raw weights were evaluated and the checkpoint's epoch), the confusion
matrix (Fig. 3), Grad-CAM maps with the predicted class and confidence (Figs. 4 and 5; for an FCT model,
on the FCT module outputs its classifier reads), the attention each FCT module pays over its input (the
coarse-to-fine discussion of Fig. 4), and an index.html showing all of it. Given several models it also
compares them side by side, as Table 1 does, with one sub-folder per model. The report is built in a
hidden sibling folder and renamed into place at the end, so a failure never leaves a partial report behind.
"""
import argparse
import html
import json
import math
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from matplotlib.figure import Figure
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import scale_cam_image, show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from sklearn.metrics import confusion_matrix
from timm.utils import AttentionExtract
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .data import DIGITS, DatasetError, build_dataset, class_names, default_workers, eval_transform
from .cli import CliError, run_cli
from .fct import FctNet
from .runs import RunFolder, RunInfo, load_run, replace_when_done

METRICS_JSON = 'metrics.json'
METRICS_MD = 'metrics.md'
CONFUSION_PNG = RunFolder.CONFUSION_PLOT  # the model card of a Hub export shows it
GRADCAM_PNG = 'gradcam.png'
ATTENTION_PNG = 'attention.png'
COMPARISON_MD = 'comparison.md'
COMPARISON_JSON = 'comparison.json'
COMPARISON_PNG = 'comparison.png'
INDEX_HTML = 'index.html'
TOP_K = 5
MAX_CONFUSED_PAIRS = 10
GRID_COLUMNS = 4

Table = Tuple[List[str], List[List[str]]]  # headers, rows of already formatted cells
WEIGHT_FLAGS = {None: 'auto', True: 'ema', False: 'raw'}  # --ema / --no-ema / neither, as runs.load_run takes it
HUB_PREFIXES = ('hf-hub:', 'local-dir:')  # models timm loads itself, with their published weights


class ReportError(CliError):
    """A report that cannot be made from what the user gave; the message says why."""


@dataclass
class LoadedModel:
    spec: str
    name: str  # short display name
    model: nn.Module
    info: RunInfo
    weights: Optional[str] = None  # 'ema' or 'raw' weights of a run's checkpoint; None for a Hub model's only ones
    epoch: Optional[int] = None  # the checkpoint's epoch, which names the summary.csv row it was evaluated in


@dataclass
class Evaluation:
    targets: np.ndarray  # (N,) true class indices
    topk: np.ndarray  # (N, k) predicted classes, most likely first
    confidence: np.ndarray  # (N,) softmax probability of the top prediction
    loss: float  # mean cross-entropy


class TransformedSubset(Dataset):
    """Some images of a dataset under one model's eval transform; models may differ in input size."""

    def __init__(self, base: Dataset, indices: Sequence[int], transform: Callable):
        self.base = base
        self.indices = list(indices)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, int]:
        img, target = self.base[self.indices[i]]
        return self.transform(img), int(target)


# ---------------------------------------------------------------------------------------------- inputs

def display_name(spec: str) -> str:
    """Hub names as given, run folders by their name, checkpoint files with their folder for context."""
    if spec.startswith(HUB_PREFIXES):
        return spec
    path = Path(spec)
    return path.name if path.is_dir() or not path.parent.name else f'{path.parent.name}/{path.name}'


def load_model(spec: str, use_ema: Optional[bool], device: torch.device) -> LoadedModel:
    """A Hub model, or a run's EMA or raw weights (recorded, so its metrics can be checked against the run's)."""
    try:
        if spec.startswith(HUB_PREFIXES):
            model = timm.create_model(spec, pretrained=True).eval()
            info = RunInfo.from_cfg(spec, model.pretrained_cfg, {'num_classes': model.num_classes})
            return LoadedModel(spec=spec, name=display_name(spec), model=model.to(device), info=info)
        trained = load_run(spec, WEIGHT_FLAGS[use_ema])
    except OSError as e:  # huggingface_hub and file-system errors: offline, missing repo, unreadable file
        raise ReportError(f'cannot load model {spec}: {e}') from None
    return LoadedModel(spec=spec, name=display_name(spec), model=trained.model.to(device), info=trained.info,
                       weights='ema' if trained.ema else 'raw', epoch=trained.epoch)


def weights_line(lm: LoadedModel) -> str:
    """Which weights were evaluated, in words, for metrics.md and index.html."""
    if lm.weights is None:
        return f'The weights published as {lm.spec}.'
    epoch = '' if lm.epoch is None else f' (epoch {lm.epoch}, counted from 0)'
    return f"{'EMA' if lm.weights == 'ema' else 'Raw'} weights of the checkpoint{epoch}."


def resolve_dataset(name: Optional[str], data_dir: Optional[str],
                    infos: Sequence[RunInfo]) -> Tuple[str, Optional[str]]:
    """The dataset given on the command line, else the one the models were trained on, else DIGITS."""
    if name is not None:
        return name, data_dir
    trained_on = {(i.dataset, i.data_dir) for i in infos if i.dataset or i.data_dir}
    if len(trained_on) > 1:
        raise ReportError(f'the models were trained on different datasets ({sorted(map(str, trained_on))}); '
                          f'choose one with --dataset')
    if trained_on:
        run_name, run_dir = trained_on.pop()
        return run_name, data_dir or run_dir
    return DIGITS, data_dir


def spread_indices(length: int, count: Optional[int]) -> List[int]:
    """`count` indices evenly over range(length): a subset that covers sorted (e.g. by class) datasets."""
    if count is None or count >= length:
        return list(range(length))
    return np.unique(np.linspace(0, length - 1, count).round().astype(int)).tolist()


def dataset_labels(dataset: Dataset, loaded: Sequence[LoadedModel]) -> List[str]:
    """The dataset's class names, checked against every model's number of outputs."""
    try:
        names = class_names(dataset)
    except DatasetError:
        names = list(loaded[0].info.label_names)
    for lm in loaded:
        if lm.info.num_classes != len(names):
            raise ReportError(f'{lm.name} predicts {lm.info.num_classes} classes but the dataset has '
                              f'{len(names)}; pass the dataset it was trained on with --dataset')
    return names


def model_transform(info: RunInfo) -> Callable:
    cfg = info.data_config
    return eval_transform(tuple(cfg['input_size']), cfg['mean'], cfg['std'], cfg['crop_pct'],
                          cfg.get('interpolation') or 'bilinear')


# ---------------------------------------------------------------------------------------------- metrics

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
        raise ReportError(f'cannot read the dataset: {e}') from None
    if not targets:
        raise ReportError('the dataset split is empty: nothing to evaluate')
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


def html_table(table: Table) -> str:
    headers, rows = table
    head = ''.join(f'<th>{html.escape(h)}</th>' for h in headers)
    body = ''.join('<tr>' + ''.join(f'<td>{html.escape(c)}</td>' for c in row) + '</tr>' for row in rows)
    return f'<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def metrics_markdown(row: Dict[str, Any]) -> str:
    m = row['metrics']
    confused = markdown_table(confused_table(m)) if m['most_confused'] else 'No misclassified images.\n'
    return (f"# {row['name']}\n\n{row['dataset_line']}. {row['weights_line']}\n\n"
            f"{markdown_table(summary_table([row]))}\n"
            f"## Per-class accuracy\n\n{markdown_table(per_class_table(m))}\n"
            f"## Most confused class pairs\n\n{confused}")


# ---------------------------------------------------------------------------------------------- maps

def gradcam_target_layers(model: nn.Module) -> List[nn.Module]:
    """The maps the classifier reads: every FCT module's output for an FCT model, else the last stage.

    An FCT model classifies the pooled FCT outputs; its last backbone stage reaches the logits only through
    the pooled global descriptor g, so Grad-CAM there would show the g path, not the modules. For a plain
    network the last stage's maps are the finest that still carry class evidence (Figs. 4, 5).
    """
    if isinstance(model, FctNet):
        return list(model.fct.values())
    if isinstance(getattr(model, 'layer4', None), nn.Module):
        return [model.layer4]
    feature_info = getattr(model, 'feature_info', None)
    if isinstance(feature_info, list) and feature_info and 'module' in feature_info[-1]:
        return [model.get_submodule(feature_info[-1]['module'])]
    raise ReportError(f'no Grad-CAM target layer known for {type(model).__name__}')


def gradcam_title(model: nn.Module) -> str:
    if isinstance(model, FctNet):
        return f'Grad-CAM on the {len(model.fct)} FCT module outputs the classifier reads (their mean)'
    return 'Grad-CAM on the last backbone stage'


def gradcam_maps(model: nn.Module, images: torch.Tensor, classes: Sequence[int]) -> np.ndarray:
    """Grad-CAM of each image for the given class, scaled to [0, 1] at the input resolution: (B, H, W).

    One map per target layer, each scaled to [0, 1] and resized to the image, then averaged: an FCT
    model's modules run at different resolutions and each carries part of the evidence.
    """
    targets = [ClassifierOutputTarget(int(c)) for c in classes]
    maps = []
    for layer in gradcam_target_layers(model):  # one pass per layer: its gradients are matched to no other
        with GradCAM(model=model, target_layers=[layer]) as cam:
            maps.append(cam(input_tensor=images, targets=targets))
    return scale_cam_image(np.mean(maps, axis=0))


@contextmanager
def explicit_attention(model: FctNet) -> Iterator[None]:
    """The FCT modules on timm's explicit attention path, which materialises the weights; fused_attn restored after."""
    modules = [block.attn for block in model.fct.values()]
    fused = [m.fused_attn for m in modules]
    for m in modules:
        m.fused_attn = False
    try:
        yield
    finally:
        for m, was_fused in zip(modules, fused):
            m.fused_attn = was_fused


def attention_weights(model: FctNet, images: torch.Tensor) -> List[Tuple[torch.Tensor, torch.Size]]:
    """Per FCT module, in tap order: softmax(QK^T / sqrt(d)), (B, heads, Nq, Nk), and the K/V grid (H', W').

    timm's AttentionExtract traces the model (in eval mode) on the explicit path, since the fused
    scaled_dot_product_attention the model runs never materialises the weights; V's output gives the
    grid the keys lie on, strided or not.
    """
    names = [(f'fct.{key}.attn.softmax', f'fct.{key}.attn.v') for key in model.fct]
    with explicit_attention(model):
        extracted = AttentionExtract(model, names=[n for pair in names for n in pair])(images)
    return [(extracted[weights], extracted[v].shape[-2:]) for weights, v in names]


def attention_received(weights: torch.Tensor, kv_grid: Sequence[int]) -> torch.Tensor:
    """The attention each K/V position receives, averaged over heads and queries: (B, H', W'), sums to 1."""
    return weights.mean(dim=(1, 2)).reshape(weights.shape[0], *kv_grid)


@torch.no_grad()
def fct_tap_maps(model: FctNet, images: torch.Tensor) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """Per FCT module: the attention received on its K/V grid, and its output's channel mean, (B, h, w) each."""
    attention = [attention_received(weights, kv_grid) for weights, kv_grid in attention_weights(model, images)]
    outputs = model.forward_intermediates(images, intermediates_only=True)
    return attention, [out.mean(dim=1) for out in outputs]


def fct_stages(model: FctNet) -> List[int]:
    """The backbone stage each kept FCT module reads: model.fct is keyed by position in model.taps."""
    return [model.taps[int(key)] for key in model.fct]


# ---------------------------------------------------------------------------------------------- figures

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


def plot_gradcam_grid(images: np.ndarray, cams: np.ndarray, captions: Sequence[Tuple[str, bool]],
                      title: str, path: Path) -> None:
    """Figs. 4 and 5: each image with its Grad-CAM, the predicted class and confidence above it."""
    cols = min(GRID_COLUMNS, len(images))
    rows = math.ceil(len(images) / cols)
    fig = Figure(figsize=(2.4 * cols, 2.7 * rows), layout='constrained')
    for i, (image, cam, (caption, correct)) in enumerate(zip(images, cams, captions)):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(show_cam_on_image(image, cam, use_rgb=True), interpolation='nearest')
        ax.set_title(caption, fontsize=9, color='darkgreen' if correct else 'firebrick')
        ax.axis('off')
    fig.suptitle(f'{title}, for the predicted class')
    save_figure(fig, path)


def plot_attention_grid(images: np.ndarray, attention: List[np.ndarray], outputs: List[np.ndarray],
                        stages: Sequence[int], row_labels: Sequence[str], path: Path) -> None:
    """Per image: the attention each FCT module receives on its K/V grid, then its output, tap by tap."""
    columns = [('input', list(images))]
    for kind, maps in (('attention', attention), ('output', outputs)):
        columns += [(f'FCT {i} (stage {s})\n{kind} {m.shape[1]}x{m.shape[2]}', overlay(images, m))
                    for i, (s, m) in enumerate(zip(stages, maps))]
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
    fig.suptitle('Where each FCT module attends, per tapped stage (the paper reports coarse to fine)')
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


# ---------------------------------------------------------------------------------------------- report

def grid_images(dataset: TransformedSubset, count: int) -> Tuple[List[int], torch.Tensor]:
    """Positions in the evaluated subset spread over it, and their transformed images."""
    picks = spread_indices(len(dataset), count)
    return picks, torch.stack([dataset[i][0] for i in picks])


def model_report(lm: LoadedModel, base: Dataset, indices: Sequence[int], names: Sequence[str],
                 args: argparse.Namespace, device: torch.device, dataset_line: str, folder: Path) -> Dict[str, Any]:
    """Evaluate one model and write its metrics and figures into folder; returns its summary row."""
    dataset = TransformedSubset(base, indices, model_transform(lm.info))
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers,
                        pin_memory=device.type == 'cuda')
    ev = evaluate(lm.model, loader, device, desc=f'evaluating {lm.name}')
    metrics = compute_metrics(ev, names)
    row = {'name': lm.name, 'spec': lm.spec, 'arch': lm.info.model, 'dataset_line': dataset_line,
           'weights_line': weights_line(lm), 'gradcam': gradcam_title(lm.model), 'folder': folder,
           'has_attention': isinstance(lm.model, FctNet), 'metrics': metrics}
    (folder / METRICS_JSON).write_text(json.dumps(
        {'model': lm.spec, 'arch': lm.info.model, 'dataset': dataset_line, 'weights': lm.weights,
         'checkpoint_epoch': lm.epoch, **metrics}, indent=2))
    (folder / METRICS_MD).write_text(metrics_markdown(row))
    plot_confusion_matrix(metrics, lm.name, folder / CONFUSION_PNG)

    picks, images = grid_images(dataset, args.num_images)
    images = images.to(device)
    preds = ev.topk[picks, 0]
    display = to_display(images, lm.info.data_config['mean'], lm.info.data_config['std'])
    cams = np.concatenate([gradcam_maps(lm.model, images[s:s + args.batch_size], preds[s:s + args.batch_size])
                           for s in range(0, len(picks), args.batch_size)])
    captions = [(f'{names[p]} {ev.confidence[i]:.0%}\ntrue: {names[ev.targets[i]]}', p == ev.targets[i])
                for i, p in zip(picks, preds)]
    plot_gradcam_grid(display, cams, captions, gradcam_title(lm.model), folder / GRADCAM_PNG)
    if row['has_attention']:
        attention, outputs = fct_tap_maps(lm.model, images)
        labels = [f'pred {names[p]}\ntrue {names[ev.targets[i]]}' for i, p in zip(picks, preds)]
        plot_attention_grid(display, [a.cpu().numpy() for a in attention], [o.cpu().numpy() for o in outputs],
                            fct_stages(lm.model), labels, folder / ATTENTION_PNG)
    return row


def comparison_rows_json(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [{'name': r['name'], 'model': r['spec'], 'arch': r['arch'], 'num_images': r['metrics']['num_images'],
             'top1': r['metrics']['top1'], 'top5': r['metrics']['top5'], 'loss': r['metrics']['loss'],
             'folder': r['folder'].name} for r in rows]


def model_section(row: Dict[str, Any], prefix: str) -> str:
    """One model's part of index.html; prefix is its sub-folder ('' for a single-model report)."""
    m = row['metrics']
    name = html.escape(row['name'])

    def figure(file: str, caption: str) -> str:
        return (f'<figure><img src="{html.escape(prefix + file)}" alt="{html.escape(caption)} of {name}">'
                f'<figcaption>{html.escape(caption)}</figcaption></figure>')

    attention = (figure(ATTENTION_PNG, 'Attention received on each FCT module\'s K/V grid (mean over heads '
                                       'and queries) and the channel mean of its output, per tapped stage')
                 if row['has_attention'] else '<p>This model has no FCT modules, so no attention maps.</p>')
    confused = html_table(confused_table(m)) if m['most_confused'] else '<p>No misclassified images.</p>'
    return (f'<section class="model"><h2>{name}</h2>'
            f'<p>{html.escape(row["arch"])} on {html.escape(row["dataset_line"])}. '
            f'{html.escape(row["weights_line"])} '
            f'<a href="{html.escape(prefix + METRICS_JSON)}">metrics.json</a> · '
            f'<a href="{html.escape(prefix + METRICS_MD)}">metrics.md</a></p>'
            f'{html_table(summary_table([row]))}'
            f'<h3>Confusion matrix</h3>{figure(CONFUSION_PNG, "Confusion matrix (Fig. 3)")}'
            f'<h3>Grad-CAM</h3>'
            f'{figure(GRADCAM_PNG, row["gradcam"] + ", for the predicted class, with its confidence (Figs. 4, 5)")}'
            f'<h3>FCT attention per tapped stage</h3>{attention}'
            f'<div class="tables"><div><h3>Per-class accuracy</h3>{html_table(per_class_table(m))}</div>'
            f'<div><h3>Most confused class pairs</h3>{confused}</div></div></section>')


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead { background: #f2f2f2; }
figure { margin: 0.5em 0 1.5em; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #555; }
.tables { display: flex; gap: 3em; flex-wrap: wrap; }
section.model { border-top: 2px solid #ddd; margin-top: 2em; }
"""


def render_index(rows: Sequence[Dict[str, Any]], prefixes: Sequence[str]) -> str:
    """index.html: the comparison (when there are several models), then one section per model."""
    title = 'Evaluation report: ' + ', '.join(r['name'] for r in rows)
    comparison = ''
    if len(rows) > 1:
        comparison = (f'<section id="comparison"><h2>Comparison</h2>{html_table(summary_table(rows))}'
                      f'<figure><img src="{COMPARISON_PNG}" alt="Top-1 and top-5 accuracy per model">'
                      f'<figcaption>Top-1 and top-5 accuracy per model (Table 1)</figcaption></figure></section>')
    sections = ''.join(model_section(r, p) for r, p in zip(rows, prefixes))
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>'
            f'<p>{html.escape(rows[0]["dataset_line"])}</p>{comparison}{sections}</body></html>\n')


def model_folders(root: Path, loaded: Sequence[LoadedModel]) -> List[Path]:
    """The report root for one model; one uniquely named sub-folder per model for several."""
    if len(loaded) == 1:
        return [root]
    folders: List[Path] = []
    for lm in loaded:
        slug = re.sub(r'[^A-Za-z0-9._-]+', '-', lm.name).strip('-.') or 'model'
        folder = root / slug
        n = 2
        while folder in folders:
            folder, n = root / f'{slug}-{n}', n + 1
        folder.mkdir()
        folders.append(folder)
    return folders


def parse_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ReportError(f'unknown --device {name!r}: {e}') from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ReportError(f'--device {name}: CUDA is not available on this machine')
    return device


def write_report(args: argparse.Namespace, root: Path) -> None:
    """Everything the report holds, written into root (a fresh temporary folder)."""
    device = parse_device(args.device)
    loaded = [load_model(spec, args.ema, device) for spec in args.models]
    name, data_dir = resolve_dataset(args.dataset, args.data_dir, [lm.info for lm in loaded])
    base = build_dataset(name, data_dir, args.split, download=args.dataset_download)
    names = dataset_labels(base, loaded)
    indices = spread_indices(len(base), args.max_images)
    dataset_line = f"{name or data_dir}, split '{args.split}', {len(indices)} images"
    rows = [model_report(lm, base, indices, names, args, device, dataset_line, folder)
            for lm, folder in zip(loaded, model_folders(root, loaded))]
    prefixes = ['' if r['folder'] == root else r['folder'].name + '/' for r in rows]
    if len(rows) > 1:
        table = markdown_table(summary_table(rows))
        (root / COMPARISON_MD).write_text(f'# Comparison\n\n{dataset_line}\n\n{table}')
        (root / COMPARISON_JSON).write_text(json.dumps(comparison_rows_json(rows), indent=2))
        plot_comparison(rows, root / COMPARISON_PNG)
    (root / INDEX_HTML).write_text(render_index(rows, prefixes))


def build_report(args: argparse.Namespace) -> Path:
    """Write the report in a hidden sibling folder and rename it into place: all of it or nothing."""
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise ReportError(f'{out} already exists; choose another --out or add --overwrite')
    out.parent.mkdir(parents=True, exist_ok=True)
    with replace_when_done(out) as tmp:
        tmp.mkdir()
        write_report(args, tmp)
    return out


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be at least 1, got {value}')
    return value


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='python -m timm_fct.report', description=__doc__.split('\n\n')[0])
    parser.add_argument('models', nargs='+', metavar='MODEL',
                        help="train.py run folder, checkpoint file, or 'hf-hub:' / 'local-dir:' model; "
                             'several are compared side by side')
    parser.add_argument('--out', required=True, metavar='DIR', help='report folder to create')
    parser.add_argument('--overwrite', action='store_true', help='replace DIR if it exists')
    data = parser.add_argument_group('dataset (as train.py)')
    data.add_argument('--dataset', default=None,
                      help=f"dataset name; default: the one the model was trained on, else {DIGITS!r}")
    data.add_argument('--data-dir', default=None, help="dataset root; default: the run's")
    data.add_argument('--dataset-download', action='store_true', help='download a torchvision dataset')
    data.add_argument('--split', default='validation', help="dataset split to evaluate (default: 'validation')")
    data.add_argument('--max-images', type=positive_int, default=None,
                      help='evaluate at most this many images, spread over the split; all when not given')
    parser.add_argument('-b', '--batch-size', type=positive_int, default=128, help='(default: 128)')
    parser.add_argument('-j', '--workers', type=int, default=default_workers(),
                        help='data loading processes (default: one per core but one, at most 8)')
    parser.add_argument('--num-images', type=positive_int, default=8,
                        help='images in the Grad-CAM and attention grids (default: 8)')
    parser.add_argument('--ema', action=argparse.BooleanOptionalAction, default=None,
                        help="use the EMA weights; default: when the run's EMA evaluated better")
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                        help='(default: cuda when available, else cpu)')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Mistakes end with one `error:` line and exit code 2, as in train.py and hub/publish.py."""
    return run_cli(make_report, argv)


def make_report(argv: Optional[Sequence[str]] = None) -> int:
    out = build_report(parse_args(argv))
    print(f'report written to {out / INDEX_HTML}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
