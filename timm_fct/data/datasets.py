"""The datasets training and the report read: timm's datasets plus an embedded default.

The embedded default is scikit-learn's handwritten digits (1,797 real 8x8 images that ship inside the
package), so training and evaluation run with no download at all.
"""
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

import numpy as np
import torch
from PIL import Image
from timm.data import create_dataset
from torch.utils.data import Dataset

from ..errors import FctError
from .schemes import SCHEMES, build_scheme_dataset, hfids_class_names, scheme

DIGITS = 'sklearn/digits'
DIGITS_MEAN = (0.3053,) * 3  # of the training split, images scaled to [0, 1]
DIGITS_STD = (0.3758,) * 3
DIGITS_VAL_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0
TORCH_DOWNLOADABLE = ('torch/cifar10', 'torch/cifar100')
IN_MEMORY_DATASETS = (DIGITS, *TORCH_DOWNLOADABLE)  # small enough to hold whole on the training device
TRAIN_SPLITS = ('train', 'training')


class DigitsDataset(Dataset):
    """scikit-learn's digits as RGB PIL images, with a fixed stratified held-out split."""

    def __init__(self, split: str = 'train', transform: Optional[Callable] = None):
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        indices = np.arange(len(digits.target))
        train_idx, val_idx = train_test_split(
            indices, test_size=DIGITS_VAL_FRACTION, random_state=DIGITS_SPLIT_SEED, stratify=digits.target)
        keep = train_idx if split in TRAIN_SPLITS else val_idx
        self.images = (digits.images[keep] * (255.0 / 16.0)).round().astype(np.uint8)
        self.targets = digits.target[keep].astype(np.int64).tolist()
        self.classes = [str(c) for c in digits.target_names]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        img = Image.fromarray(self.images[index], mode='L').convert('RGB')
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[index]


def build_dataset(name: str, data_dir: Optional[str], split: str, download: bool = False, **reader_args: Any) -> Dataset:
    """One split of DIGITS, a torchvision dataset ('torch/cifar10', ...), a timm reader dataset (hfds/, hfids/, wds/,
    tfds/) or an image folder tree (name ''). `reader_args` go to the readers: build_scheme_dataset's keywords
    (timm's create_dataset's is_training, batch_size, seed, num_samples, input_key, target_key)."""
    if name == DIGITS:
        return DigitsDataset(split)
    kind = scheme(name)
    if kind == 'torch':
        return _torchvision(name, data_dir, split, download)
    if kind in SCHEMES:
        return build_scheme_dataset(name, data_dir, split, download, **reader_args)
    if name:
        raise FctError(
            f"unknown dataset {name!r}: expected {DIGITS!r}, 'torch/<name>' (e.g. torch/cifar10), "
            f"{', '.join(s + '/<name>' for s in SCHEMES)}, or '' with --data-dir pointing at an image folder tree")
    return _image_folder(data_dir, split)


def _torchvision(name: str, data_dir: Optional[str], split: str, download: bool) -> Dataset:
    if not data_dir:
        raise FctError(f'--data-dir is required for {name} (where it is, or where to download it)')
    if download and name not in TORCH_DOWNLOADABLE:
        raise FctError(f'--dataset-download supports {", ".join(TORCH_DOWNLOADABLE)}, not {name}')
    try:
        return create_dataset(name, root=data_dir, split=split, download=download)
    except AssertionError as e:  # timm's message for an unknown torchvision name
        raise FctError(f'unknown dataset {name!r}: {e}') from None
    except RuntimeError as e:  # torchvision: not found and not downloading
        raise FctError(f'{name} not found in {data_dir} ({e}); add --dataset-download to fetch it') from None


def _image_folder(data_dir: Optional[str], split: str) -> Dataset:
    if not data_dir:
        raise FctError('an ImageFolder dataset needs --data-dir')
    root = Path(data_dir)
    if not root.is_dir():
        raise FctError(f'data folder {root} does not exist')
    if not any(root.iterdir()):
        raise FctError(f'data folder {root} is empty: expected class sub-folders of images')
    try:
        return create_dataset('', root=str(root), split=split)
    except (RuntimeError, FileNotFoundError) as e:
        raise FctError(f'no images found under {root} for split {split!r}: {e}') from None


def class_names(dataset: Dataset) -> List[str]:
    """Label names in class-index order, for torchvision, timm reader (folder, Hugging Face) and DIGITS datasets;
    webdataset shards carry none."""
    classes = getattr(dataset, 'classes', None)
    if classes:
        return [str(c) for c in classes]
    reader = getattr(dataset, 'reader', None)
    class_to_idx = getattr(reader, 'class_to_idx', None)
    if class_to_idx:
        return [name for name, _ in sorted(class_to_idx.items(), key=lambda kv: kv[1])]
    names = hfids_class_names(dataset)
    if names:
        return names
    raise FctError(f'cannot tell the class names of {type(dataset).__name__}; give their number with --num-classes')


def dataset_class_names(dataset: Dataset, num_classes: Optional[int] = None) -> List[str]:
    """The dataset's class names; for one that has none (webdataset shards), '0' ... from --num-classes."""
    try:
        return class_names(dataset)
    except FctError:
        if not num_classes:
            raise
        return [str(i) for i in range(num_classes)]
