"""What a report evaluates: the models' names and weights, the dataset and its subset, each model's transform."""
from pathlib import Path
import itertools
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.datasets import DIGITS, class_names
from ..data.schemes import is_streaming
from ..data.transforms import eval_transform
from ..errors import FctError
from ..runs.folder import RunInfo
from ..runs.load import HUB_PREFIXES, LoadedModel


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


def display_name(spec: str) -> str:
    """Hub names as given, run folders by their name, checkpoint files with their folder for context."""
    if spec.startswith(HUB_PREFIXES):
        return spec
    path = Path(spec)
    return path.name if path.is_dir() or not path.parent.name else f'{path.parent.name}/{path.name}'


def weights_line(lm: LoadedModel) -> str:
    """Which weights were evaluated, in words, for metrics.md and index.html."""
    if lm.weights is None:
        return f'The weights published as {lm.source}.'
    epoch = '' if lm.epoch is None else f' (epoch {lm.epoch}, counted from 0)'
    return f"{'EMA' if lm.weights == 'ema' else 'Raw'} weights of the checkpoint{epoch}.{training_record(lm)}"


def training_record(lm: LoadedModel) -> str:
    """The run's best and last-epoch top-1 as training recorded them, with the selection bias of the best said."""
    if lm.folder is None:
        return ''
    ema = lm.weights == 'ema' and bool(lm.folder.accuracy(ema=True))  # else the raw weights' record
    accuracy = lm.folder.accuracy(ema=ema)
    if not accuracy:
        return ''
    return (f" In training ({lm.info.dataset or 'its evaluation split'}, {'EMA' if ema else 'raw'} weights): best "
            f"top-1 {accuracy['best_top1']:.2f} at epoch {accuracy['best_epoch']}, chosen on that same split and so "
            f"biased upwards; last epoch ({accuracy['last_epoch']}) top-1 {accuracy['last_top1']:.2f}.")


def resolve_dataset(name: Optional[str], data_dir: Optional[str],
                    infos: Sequence[RunInfo]) -> Tuple[str, Optional[str]]:
    """The dataset given on the command line, else the one the models were trained on, else DIGITS."""
    if name is not None:
        return name, data_dir
    trained_on = {(i.dataset, i.data_dir) for i in infos if i.dataset or i.data_dir}
    if len(trained_on) > 1:
        raise FctError(f'the models were trained on different datasets ({sorted(map(str, trained_on))}); '
                          f'choose one with --dataset')
    if trained_on:
        run_name, run_dir = trained_on.pop()
        return run_name, data_dir or run_dir
    return DIGITS, data_dir


def resolve_split(split: Optional[str], dataset_given: bool, infos: Sequence[RunInfo]) -> str:
    """--split, else the split the runs evaluated on when the report reads their own dataset (CIFAR-10's 'test' for
    the Table 1 configs) and they agree, else 'validation'."""
    if split is not None:
        return split
    splits = {i.val_split for i in infos if i.val_split}
    return splits.pop() if not dataset_given and len(splits) == 1 else 'validation'


class HeldImages(Dataset):
    """The first images of a streaming split, held in memory so the report can index them as any dataset."""

    def __init__(self, stream: Dataset, count: Optional[int]):
        self.samples = list(itertools.islice(stream, count))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Tuple[Any, int]:
        return self.samples[i]


def indexable(dataset: Dataset, max_images: Optional[int]) -> Dataset:
    """The dataset itself, or for a streaming one (wds/, hfids/, tfds/) its first max_images images (all without)."""
    return HeldImages(dataset, max_images) if is_streaming(dataset) else dataset


def spread_indices(length: int, count: Optional[int]) -> List[int]:
    """`count` indices evenly over range(length): a subset that covers sorted (e.g. by class) datasets."""
    if count is None or count >= length:
        return list(range(length))
    return np.unique(np.linspace(0, length - 1, count).round().astype(int)).tolist()


def dataset_labels(dataset: Dataset, loaded: Sequence[LoadedModel]) -> List[str]:
    """The dataset's class names, checked against every model's number of outputs."""
    try:
        names = class_names(dataset)
    except FctError:
        names = list(loaded[0].info.label_names)
    for lm in loaded:
        if lm.info.num_classes != len(names):
            raise FctError(f'{display_name(lm.source)} predicts {lm.info.num_classes} classes but the dataset has '
                           f'{len(names)}; pass the dataset it was trained on with --dataset')
    return names


def model_transform(info: RunInfo) -> Callable:
    cfg = info.data_config
    return eval_transform(tuple(cfg['input_size']), cfg['mean'], cfg['std'], cfg['crop_pct'],
                          cfg.get('interpolation') or 'bilinear')
