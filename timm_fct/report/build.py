"""Build a report folder: each model evaluated and explained, the comparison, and the page, all or nothing."""
import argparse
import json
import re
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..data.datasets import build_dataset
from ..errors import FctError
from ..models import FctNet
from ..runs.files import replace_when_done
from ..runs.load import LoadedModel, load_model
from .figures import plot_attention_grid, plot_comparison, plot_confusion_matrix, plot_gradcam_grid, to_display
from .inputs import (
    TransformedSubset, dataset_labels, display_name, indexable, model_transform, resolve_dataset, resolve_split,
    spread_indices, weights_line,
)
from .layout import (
    ATTENTION_PNG, COMPARISON_JSON, COMPARISON_MD, COMPARISON_PNG, CONFUSION_PNG, GRADCAM_PNG, INDEX_HTML,
    METRICS_JSON, METRICS_MD,
)
from .maps import fct_tap_maps, gradcam_rows, gradcam_title
from .metrics import compute_metrics, evaluate, markdown_table, metrics_markdown, summary_table
from .page import render_index


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
    name = display_name(lm.source)
    ev = evaluate(lm.model, loader, device, desc=f'evaluating {name}')
    metrics = compute_metrics(ev, names)
    row = {'name': name, 'spec': lm.source, 'arch': lm.info.model, 'dataset_line': dataset_line,
           'weights_line': weights_line(lm), 'gradcam': gradcam_title(lm.model), 'folder': folder,
           'has_attention': isinstance(lm.model, FctNet), 'metrics': metrics}
    (folder / METRICS_JSON).write_text(json.dumps(
        {'model': lm.source, 'arch': lm.info.model, 'dataset': dataset_line, 'weights': lm.weights,
         'checkpoint_epoch': lm.epoch, **metrics}, indent=2))
    (folder / METRICS_MD).write_text(metrics_markdown(row))
    plot_confusion_matrix(metrics, name, folder / CONFUSION_PNG)

    picks, images = grid_images(dataset, args.num_images)
    images = images.to(device)
    preds = ev.topk[picks, 0]
    display = to_display(images, lm.info.data_config['mean'], lm.info.data_config['std'])
    batches = [gradcam_rows(lm.model, images[s:s + args.batch_size], preds[s:s + args.batch_size])
               for s in range(0, len(picks), args.batch_size)]
    cam_rows = [(label, np.concatenate([batch[r][1] for batch in batches])) for r, (label, _) in enumerate(batches[0])]
    row['gradcam_rows'] = [label for label, _ in cam_rows]
    captions = [(f'{names[p]} {ev.confidence[i]:.0%}\ntrue: {names[ev.targets[i]]}', p == ev.targets[i])
                for i, p in zip(picks, preds)]
    plot_gradcam_grid(display, cam_rows, captions, gradcam_title(lm.model), folder / GRADCAM_PNG)
    if row['has_attention']:
        attention, outputs = fct_tap_maps(lm.model, images)
        labels = [f'pred {names[p]}\ntrue {names[ev.targets[i]]}' for i, p in zip(picks, preds)]
        plot_attention_grid(display, [a.cpu().numpy() for a in attention], [o.cpu().numpy() for o in outputs],
                            lm.model.fct_taps(), labels, folder / ATTENTION_PNG)
    return row


def comparison_rows_json(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [{'name': r['name'], 'model': r['spec'], 'arch': r['arch'], 'num_images': r['metrics']['num_images'],
             'top1': r['metrics']['top1'], 'top5': r['metrics']['top5'], 'loss': r['metrics']['loss'],
             'folder': r['folder'].name} for r in rows]


def model_folders(root: Path, loaded: Sequence[LoadedModel]) -> List[Path]:
    """The report root for one model; one uniquely named sub-folder per model for several."""
    if len(loaded) == 1:
        return [root]
    folders: List[Path] = []
    for lm in loaded:
        slug = re.sub(r'[^A-Za-z0-9._-]+', '-', display_name(lm.source)).strip('-.') or 'model'
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
        raise FctError(f'unknown --device {name!r}: {e}') from None
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise FctError(f'--device {name}: CUDA is not available on this machine')
    return device


def write_report(args: argparse.Namespace, root: Path) -> None:
    """Everything the report holds, written into root (a fresh temporary folder)."""
    device = parse_device(args.device)
    loaded = [load_model(spec, args.weights) for spec in args.models]
    for lm in loaded:
        lm.model.to(device)
    infos = [lm.info for lm in loaded]
    name, data_dir = resolve_dataset(args.dataset, args.data_dir, infos)
    split = resolve_split(args.split, args.dataset is not None, infos)
    stream = build_dataset(name, data_dir, split, download=args.dataset_download, num_samples=args.num_samples)
    names = dataset_labels(stream, loaded)
    base = indexable(stream, args.max_images)
    indices = spread_indices(len(base), args.max_images)
    dataset_line = f"{name or data_dir}, split '{split}', {len(indices)} images"
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
        raise FctError(f'{out} already exists; choose another --out or add --overwrite')
    out.parent.mkdir(parents=True, exist_ok=True)
    with replace_when_done(out) as tmp:
        tmp.mkdir()
        write_report(args, tmp)
    return out


