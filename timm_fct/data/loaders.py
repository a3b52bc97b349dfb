"""train.py's input pipelines: the data on the device (`--pipeline memory`) or a DataLoader over PIL images.

Training batches are shuffled per epoch from (seed, epoch, rank), so a resumed run sees the same order as
one never interrupted; evaluation is sharded exactly across processes (every image once). Streaming datasets
(timm's hfids/, wds/, tfds/ readers) shuffle and shard themselves, by process and loader worker, as in timm's
create_loader: no sampler, the epoch passed to the reader.
"""
import argparse
import os
from typing import Tuple, Union

import timm
import torch
from timm.utils import random_seed
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Subset

from .transforms import eval_geometry, eval_transform, pad_crop_flip_transform, train_geometry
from .schemes import check_streaming_shards, is_streaming
from .tensor_loader import TensorLoader, preload

Loader = Union[DataLoader, TensorLoader]


def build_loaders(args: argparse.Namespace, train_ds: Dataset, eval_ds: Dataset) -> Tuple[Loader, Loader]:
    if args.pipeline == 'memory':
        return build_memory_loaders(args, train_ds, eval_ds)
    return build_pil_loaders(args, train_ds, eval_ds)


def build_memory_loaders(args: argparse.Namespace, train_ds: Dataset, eval_ds: Dataset) -> Tuple[TensorLoader, ...]:
    common = dict(batch_size=args.batch_size, mean=args.mean, std=args.std, device=args.device, rank=args.rank,
                  world_size=args.world_size)
    train_images, train_targets = preload(
        train_ds, train_geometry(args.img_size, args.interpolation), 'preloading train')
    eval_images, eval_targets = preload(
        eval_ds, eval_geometry(args.img_size, args.crop_pct, args.interpolation), 'preloading eval')
    train_loader = TensorLoader(train_images, train_targets, train=True, padding=args.pad_crop, hflip=args.hflip,
                                vflip=args.vflip, **common)
    return train_loader, TensorLoader(eval_images, eval_targets, **common)


def build_pil_loaders(args: argparse.Namespace, train_ds: Dataset,
                      eval_ds: Dataset) -> Tuple[DataLoader, DataLoader]:
    if args.pad_crop > 0:
        train_ds.transform = pad_crop_flip_transform(
            args.img_size, args.mean, args.std, padding=args.pad_crop, hflip=args.hflip, vflip=args.vflip,
            interpolation=args.interpolation)
    else:
        train_ds.transform = timm.data.create_transform(
            args.img_size, is_training=True, hflip=args.hflip, vflip=args.vflip, mean=args.mean, std=args.std,
            interpolation=args.interpolation, no_aug=False)
    eval_ds.transform = eval_transform(args.img_size, args.mean, args.std, args.crop_pct, args.interpolation)
    if is_streaming(train_ds):
        return build_streaming_loaders(args, train_ds, eval_ds)
    if args.distributed:
        train_sampler = DistributedSampler(train_ds, num_replicas=args.world_size, rank=args.rank, shuffle=True,
                                           seed=args.seed, drop_last=True)
        eval_ds = Subset(eval_ds, range(args.rank, len(eval_ds), args.world_size))
    else:
        train_sampler = RandomSampler(train_ds, generator=torch.Generator())
    # workers restart each epoch and take their seeds from the per-epoch seed, so a resume replays exactly
    common = dict(num_workers=args.workers, pin_memory=args.pin_mem)
    # drop the incomplete batch only when the rank's shard has a full one, as TensorLoader does
    train_loader = DataLoader(
        train_ds, batch_size=args.batch_size, sampler=train_sampler, drop_last=len(train_sampler) > args.batch_size,
        **common)
    eval_loader = DataLoader(eval_ds, batch_size=args.batch_size, shuffle=False, **common)
    return train_loader, eval_loader


def build_streaming_loaders(args: argparse.Namespace, train_ds: Dataset,
                            eval_ds: Dataset) -> Tuple[DataLoader, DataLoader]:
    """DataLoaders over timm's streaming readers. Told the number of workers before the loaders start, the readers
    give every (process, worker) the same whole number of batches per training epoch, so len(loader) is exact."""
    check_streaming_shards(train_ds, args.world_size, args.workers)
    for ds in (train_ds, eval_ds):
        ds.set_loader_cfg(num_workers=args.workers)
    common = dict(batch_size=args.batch_size, num_workers=args.workers, pin_memory=args.pin_mem)
    return DataLoader(train_ds, drop_last=True, **common), DataLoader(eval_ds, **common)


def set_epoch_seed(args: argparse.Namespace, loader: Loader, epoch: int) -> None:
    """Seed everything from (seed, epoch, rank): an epoch replays identically whether or not the run resumed."""
    random_seed(args.seed + 1000 * epoch, args.rank)
    if isinstance(loader, TensorLoader):
        loader.set_epoch(args.seed, epoch)
        return
    if is_streaming(loader.dataset):  # timm's readers shuffle from (seed, epoch)
        loader.dataset.set_epoch(epoch)
        return
    sampler = loader.sampler
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
    else:
        sampler.generator.manual_seed(args.seed + epoch)


def default_workers() -> int:
    """One loading process per core but one, at most 8."""
    return min(8, max(0, (os.cpu_count() or 1) - 1))
