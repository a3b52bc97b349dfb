"""Data sets that fit in memory, held once as a uint8 tensor on the training device and augmented per batch.

Decoding and augmenting images one by one on the CPU bounds a 200-epoch CIFAR run on a GPU, and on a
small CPU the loader competes with the model for the cores. Here each split is decoded once (through the
same PIL geometry as the PIL path), then every batch is padded, cropped, flipped and normalised with a
few tensor operations on the device: the same distributions as torchvision's RandomCrop(padding=p) and
Random{Horizontal,Vertical}Flip(prob), and the same arithmetic as ToTensor + Normalize.
"""
import math
from typing import Callable, Iterator, Optional, Sequence, Tuple

import torch
from torch.utils.data import Dataset
from torchvision import transforms
from tqdm import tqdm


def preload(dataset: Dataset, geometry: Callable, desc: str = 'preloading') -> Tuple[torch.Tensor, torch.Tensor]:
    """Every image of `dataset` after the PIL `geometry` (resize, crop), as (N, C, H, W) uint8, and its targets."""
    saved = getattr(dataset, 'transform', None)
    dataset.transform = transforms.Compose([geometry, transforms.PILToTensor()])
    try:
        pairs = [dataset[i] for i in tqdm(range(len(dataset)), desc=desc, leave=False, unit='img',
                                          disable=len(dataset) < 5000)]
    finally:
        dataset.transform = saved
    images = torch.stack([img for img, _ in pairs])
    targets = torch.tensor([int(t) for _, t in pairs], dtype=torch.int64)
    return images, targets


def pad_crop_flip(
        images: torch.Tensor,
        padding: int,
        hflip: float,
        vflip: float,
        generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """RandomCrop(size, padding, fill=0) then the flips, drawn independently for every image of the batch."""
    n, _, h, w = images.shape
    device = images.device
    if padding > 0:
        padded = torch.nn.functional.pad(images, (padding,) * 4)
        top = torch.randint(0, 2 * padding + 1, (n, 1, 1), device=device, generator=generator)
        left = torch.randint(0, 2 * padding + 1, (n, 1, 1), device=device, generator=generator)
        rows = top + torch.arange(h, device=device).view(1, h, 1)
        cols = left + torch.arange(w, device=device).view(1, 1, w)
        batch = torch.arange(n, device=device).view(n, 1, 1)
        images = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    for prob, dim in ((hflip, 3), (vflip, 2)):
        if prob > 0:
            flip = torch.rand(n, device=device, generator=generator) < prob
            images = torch.where(flip.view(n, 1, 1, 1), images.flip(dim), images)
    return images


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 to float as ToTensor does (x / 255), then Normalize's (x - mean) / std, in the same order."""
    return images.float().div_(255).sub_(mean).div_(std)


class TensorLoader:
    """Batches of an in-memory split: shuffled per epoch (seeded), sharded across processes, augmented on device.

    Iterates like a DataLoader of (images, targets); set_epoch seeds the order and the augmentation, so an
    epoch replays exactly after a resume. Evaluation loaders shard exactly (rank::world_size, no padding).
    """

    def __init__(
            self,
            images: torch.Tensor,
            targets: torch.Tensor,
            batch_size: int,
            mean: Sequence[float],
            std: Sequence[float],
            device: torch.device,
            train: bool = False,
            padding: int = 0,
            hflip: float = 0.,
            vflip: float = 0.,
            rank: int = 0,
            world_size: int = 1,
    ):
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.targets = targets.to(self.device)
        self.batch_size = batch_size
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.train = train
        self.padding, self.hflip, self.vflip = padding, hflip, vflip
        self.rank, self.world_size = rank, world_size
        self.generator = torch.Generator(device=self.device)
        self.order_generator = torch.Generator()
        n = len(self.targets)
        # training: equal shards (DistributedSampler's drop_last); evaluation: every image exactly once
        self.shard_size = n // world_size if train else len(range(rank, n, world_size))
        self.drop_last = train and self.shard_size > batch_size

    def set_epoch(self, seed: int, epoch: int) -> None:
        """The order depends on (seed, epoch), the same on every rank; the augmentation also on the rank."""
        self.order_generator.manual_seed(seed + epoch)
        self.generator.manual_seed(seed + 1000 * epoch + self.rank)

    def __len__(self) -> int:
        if self.drop_last:
            return self.shard_size // self.batch_size
        return math.ceil(self.shard_size / self.batch_size)

    def _indices(self) -> torch.Tensor:
        n = len(self.targets)
        if not self.train:
            return torch.arange(self.rank, n, self.world_size)
        order = torch.randperm(n, generator=self.order_generator)
        return order[self.rank::self.world_size][:self.shard_size]

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        indices = self._indices().to(self.device)
        for b in range(len(self)):
            batch = indices[b * self.batch_size:(b + 1) * self.batch_size]
            images = self.images[batch]
            if self.train:
                images = pad_crop_flip(images, self.padding, self.hflip, self.vflip, self.generator)
            yield normalize(images, self.mean, self.std), self.targets[batch]
