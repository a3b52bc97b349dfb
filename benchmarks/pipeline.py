"""Images per second of train.py's two input pipelines: PIL images through a DataLoader, and in-memory tensors.

Times one training epoch of data alone (pad-and-crop, flips, normalisation, batching, moved to the
device), no model, for the embedded digits and for a CIFAR-shaped set (50,000 random 32x32 RGB images,
since CIFAR itself needs a download). Prints a Markdown table.

    python benchmarks/pipeline.py                       # this machine's CPU
    python benchmarks/pipeline.py --device cuda --workers 0 4
"""
import argparse
import time
from typing import Iterable, List, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, RandomSampler

from timm_fct.data.datasets import DIGITS_MEAN, DIGITS_STD, DigitsDataset
from timm_fct.data.tensor_loader import TensorLoader, preload
from timm_fct.data.transforms import pad_crop_flip_transform, train_geometry


class RandomImages(Dataset):
    """CIFAR-10's shape and storage (uint8 HWC arrays decoded to PIL per item), random pixels."""

    def __init__(self, n: int, size: int = 32):
        self.data = np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        self.targets = [i % 10 for i in range(n)]
        self.transform = None

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        img = Image.fromarray(self.data[index])
        return (self.transform(img) if self.transform else img), self.targets[index]


def images_per_second(batches: Iterable, device: torch.device, rounds: int) -> float:
    """Best of `rounds` full passes: every batch moved to the device, as the training loop does."""
    best = 0.0
    for _ in range(rounds):
        start, seen = time.perf_counter(), 0
        for x, y in batches:
            x = x.to(device, non_blocking=True)
            seen += x.shape[0]
        if device.type == 'cuda':
            torch.cuda.synchronize()
        best = max(best, seen / (time.perf_counter() - start))
    return best


def measure(name: str, dataset: Dataset, img_size: int, args: argparse.Namespace) -> List[Tuple[str, str, float]]:
    device = torch.device(args.device)
    rows = []
    for workers in args.workers:
        dataset.transform = pad_crop_flip_transform(img_size, DIGITS_MEAN, DIGITS_STD, padding=args.pad, hflip=0.5)
        loader = DataLoader(dataset, batch_size=args.batch_size, sampler=RandomSampler(dataset), drop_last=True,
                            num_workers=workers, pin_memory=device.type == 'cuda',
                            persistent_workers=workers > 0)
        rows.append((name, f'pil, {workers} workers', images_per_second(loader, device, args.rounds)))
    dataset.transform = None
    images, targets = preload(dataset, train_geometry(img_size))
    loader = TensorLoader(images, targets, args.batch_size, DIGITS_MEAN, DIGITS_STD, device, train=True,
                          padding=args.pad, hflip=0.5)
    loader.set_epoch(0, 0)
    rows.append((name, 'memory', images_per_second(loader, device, args.rounds)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--batch-size', type=int, default=128)
    parser.add_argument('--pad', type=int, default=4)
    parser.add_argument('--workers', type=int, nargs='+', default=[0, 2])
    parser.add_argument('--rounds', type=int, default=3)
    args = parser.parse_args()
    rows = measure('digits, 16 px', DigitsDataset('train'), 16, args)
    rows += measure('CIFAR-shaped, 32 px', RandomImages(50000), 32, args)
    print(f'device: {args.device}, threads: {torch.get_num_threads()}, batch {args.batch_size}, pad {args.pad}, '
          f'hflip 0.5, best of {args.rounds} epochs, torch {torch.__version__}\n')
    print('| data | pipeline | images/s | x PIL (0 workers) |')
    print('|---|---|---|---|')
    base = {}
    for name, pipeline, rate in rows:
        base.setdefault(name, rate)
        print(f'| {name} | {pipeline} | {rate:,.0f} | {rate / base[name]:.1f} |')


if __name__ == '__main__':
    main()
