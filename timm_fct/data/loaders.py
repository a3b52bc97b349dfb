"""The input pipelines of training: the data on the device (`pipeline='memory'`) or a DataLoader over PIL images.

Training batches are shuffled per epoch from (seed, epoch, rank), so a resumed run sees the same order as
one never interrupted; evaluation is sharded exactly across processes (every image once). Streaming datasets
(timm's hfids/, wds/, tfds/ readers) shuffle and shard themselves, by process and loader worker, as in timm's
create_loader: no sampler, the epoch passed to the reader.

Like timm's `create_loader`, the pipelines take their settings explicitly (one `LoaderConfig`), never a
command line's namespace.
"""
import os
from dataclasses import dataclass
from typing import Sequence, Tuple, Union

import timm
import torch
from timm.utils import random_seed
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Subset

from .transforms import eval_geometry, eval_transform, pad_crop_flip_transform, train_geometry
from .schemes import check_streaming_shards, is_streaming
from .tensor_loader import TensorLoader, preload

Loader = Union[DataLoader, TensorLoader]
PIPELINES = ('memory', 'pil')


@dataclass(frozen=True)
class LoaderConfig:
    """Everything the two pipelines read: the batch, the preprocessing, the augmentation and the process layout."""
    pipeline: str  # 'memory' (the split as one tensor on `device`) or 'pil' (a DataLoader over PIL images)
    batch_size: int  # per process
    img_size: int
    mean: Sequence[float]
    std: Sequence[float]
    crop_pct: float  # evaluation's centre crop
    interpolation: str
    pad_crop: int  # pixels of padding before the random crop back (0: timm's training transform instead)
    hflip: float
    vflip: float
    seed: int
    device: torch.device = torch.device('cpu')  # the memory pipeline's
    workers: int = 0
    pin_memory: bool = False
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.pipeline not in PIPELINES:
            raise ValueError(f'pipeline must be one of {PIPELINES}, got {self.pipeline!r}')

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def build_loaders(cfg: LoaderConfig, train_ds: Dataset, eval_ds: Dataset) -> Tuple[Loader, Loader]:
    if cfg.pipeline == 'memory':
        return build_memory_loaders(cfg, train_ds, eval_ds)
    return build_pil_loaders(cfg, train_ds, eval_ds)


def build_memory_loaders(cfg: LoaderConfig, train_ds: Dataset, eval_ds: Dataset) -> Tuple[TensorLoader, ...]:
    common = dict(batch_size=cfg.batch_size, mean=cfg.mean, std=cfg.std, device=cfg.device, rank=cfg.rank,
                  world_size=cfg.world_size)
    train_images, train_targets = preload(
        train_ds, train_geometry(cfg.img_size, cfg.interpolation), 'preloading train')
    eval_images, eval_targets = preload(
        eval_ds, eval_geometry(cfg.img_size, cfg.crop_pct, cfg.interpolation), 'preloading eval')
    train_loader = TensorLoader(train_images, train_targets, train=True, padding=cfg.pad_crop, hflip=cfg.hflip,
                                vflip=cfg.vflip, **common)
    return train_loader, TensorLoader(eval_images, eval_targets, **common)


def build_pil_loaders(cfg: LoaderConfig, train_ds: Dataset, eval_ds: Dataset) -> Tuple[DataLoader, DataLoader]:
    if cfg.pad_crop > 0:
        train_ds.transform = pad_crop_flip_transform(
            cfg.img_size, cfg.mean, cfg.std, padding=cfg.pad_crop, hflip=cfg.hflip, vflip=cfg.vflip,
            interpolation=cfg.interpolation)
    else:
        train_ds.transform = timm.data.create_transform(
            cfg.img_size, is_training=True, hflip=cfg.hflip, vflip=cfg.vflip, mean=cfg.mean, std=cfg.std,
            interpolation=cfg.interpolation, no_aug=False)
    eval_ds.transform = eval_transform(cfg.img_size, cfg.mean, cfg.std, cfg.crop_pct, cfg.interpolation)
    if is_streaming(train_ds):
        return build_streaming_loaders(cfg, train_ds, eval_ds)
    if cfg.distributed:
        train_sampler = DistributedSampler(train_ds, num_replicas=cfg.world_size, rank=cfg.rank, shuffle=True,
                                           seed=cfg.seed, drop_last=True)
        eval_ds = Subset(eval_ds, range(cfg.rank, len(eval_ds), cfg.world_size))
    else:
        train_sampler = RandomSampler(train_ds, generator=torch.Generator())
    # workers restart each epoch and take their seeds from the per-epoch seed, so a resume replays exactly
    common = dict(num_workers=cfg.workers, pin_memory=cfg.pin_memory)
    # drop the incomplete batch only when the rank's shard has a full one, as TensorLoader does
    train_loader = DataLoader(
        train_ds, batch_size=cfg.batch_size, sampler=train_sampler, drop_last=len(train_sampler) > cfg.batch_size,
        **common)
    eval_loader = DataLoader(eval_ds, batch_size=cfg.batch_size, shuffle=False, **common)
    return train_loader, eval_loader


def build_streaming_loaders(cfg: LoaderConfig, train_ds: Dataset, eval_ds: Dataset) -> Tuple[DataLoader, DataLoader]:
    """DataLoaders over timm's streaming readers. Told the number of workers before the loaders start, the readers
    give every (process, worker) the same whole number of batches per training epoch, so len(loader) is exact."""
    check_streaming_shards(train_ds, cfg.world_size, cfg.workers)
    for ds in (train_ds, eval_ds):
        ds.set_loader_cfg(num_workers=cfg.workers)
    common = dict(batch_size=cfg.batch_size, num_workers=cfg.workers, pin_memory=cfg.pin_memory)
    return DataLoader(train_ds, drop_last=True, **common), DataLoader(eval_ds, **common)


def set_epoch_seed(loader: Loader, epoch: int, seed: int, rank: int = 0) -> None:
    """Seed everything from (seed, epoch, rank): an epoch replays identically whether or not the run resumed."""
    random_seed(seed + 1000 * epoch, rank)
    if isinstance(loader, TensorLoader):
        loader.set_epoch(seed, epoch)
        return
    if is_streaming(loader.dataset):  # timm's readers shuffle from (seed, epoch)
        loader.dataset.set_epoch(epoch)
        return
    sampler = loader.sampler
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
    else:
        sampler.generator.manual_seed(seed + epoch)


def default_workers() -> int:
    """One loading process per core but one, at most 8."""
    return min(8, max(0, (os.cpu_count() or 1) - 1))
