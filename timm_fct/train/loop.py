"""The epoch loop: timm's task, optimizer, AMP scaler, EMA and schedule driven over the loaders, one epoch after
another, each recorded by the primary process.

Losses accumulate on the device and are read only every --log-interval updates: each read waits for the device.
"""
import argparse
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
import torch.distributed as dist
from timm.task import ClassificationTask
from timm.utils import CheckpointSaver, NativeScaler, dispatch_clip_grad
from tqdm import tqdm

from ..data.loaders import Loader, set_epoch_seed
from ..errors import DivergedError
from .build import build_optimizer, build_scheduler
from .record import RunRecord
from .resume import restore_training


@dataclass
class Training:
    """What the epoch loop drives."""
    task: ClassificationTask
    optimizer: torch.optim.Optimizer
    loss_scaler: Optional[NativeScaler]
    scheduler: Any
    train_loader: Loader
    eval_loader: Loader


def build_training(args: argparse.Namespace, model: torch.nn.Module, loaders: Tuple[Loader, Loader],
                   resume: Optional[Mapping[str, Any]]) -> Tuple[Training, int]:
    """timm's task, optimizer, AMP scaler, EMA and the schedule, restored from --resume; and the first epoch."""
    task = ClassificationTask(model, criterion_kwargs=dict(smoothing=args.smoothing), device=args.device,
                              verbose=False)
    optimizer = build_optimizer(args, model)
    loss_scaler = NativeScaler(device=args.device.type) if args.amp and args.amp_dtype == 'float16' else None
    if args.model_ema:
        task.setup_ema(decay=args.model_ema_decay)
    start_epoch = restore_training(resume, task, optimizer, loss_scaler) if resume else 0
    if args.torchcompile:
        task.compile(backend=args.torchcompile, mode=args.torchcompile_mode)
        if args.model_ema:
            task.compile_ema(backend=args.torchcompile, mode=args.torchcompile_mode)
    if args.distributed:
        task.prepare_distributed(device_ids=[args.local_rank] if args.device.type == 'cuda' else None)
    scheduler = build_scheduler(args, optimizer, len(loaders[0]))
    scheduler.step(start_epoch)
    scheduler.step_update(num_updates=start_epoch * len(loaders[0]))
    return Training(task, optimizer, loss_scaler, scheduler, *loaders), start_epoch


def autocast(args: argparse.Namespace):
    if not args.amp:
        return nullcontext()
    return torch.autocast(device_type=args.device.type, dtype=getattr(torch, args.amp_dtype))


def to_device(args: argparse.Namespace, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    x = x.to(args.device, non_blocking=True)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(args.device, non_blocking=True)


def check_finite(loss_sum: torch.Tensor, epoch: int, num_updates: int) -> float:
    """The one host-device synchronisation of a log interval: stop if any loss in it was NaN or infinite."""
    value = loss_sum.item()
    if not math.isfinite(value):
        raise DivergedError(f'the loss became {value} at epoch {epoch + 1}, by update {num_updates}; '
                            f'stopped, the last good checkpoint is kept')
    return value


def train_one_epoch(args: argparse.Namespace, epoch: int, training: Training, num_updates: int,
                    progress: bool) -> Tuple[float, int]:
    """One pass over the data; losses accumulate on the device and are read every --log-interval updates."""
    task, optimizer, loss_scaler = training.task, training.optimizer, training.loss_scaler
    loader = training.train_loader
    task.train()
    loss_sum = torch.zeros((), device=args.device)
    interval_sum = torch.zeros((), device=args.device)
    seen = interval_seen = 0
    clip = args.clip_grad or None
    bar = tqdm(loader, desc=f'epoch {epoch + 1}/{args.epochs}', disable=not progress, leave=False, unit='batch')
    for step, (x, y) in enumerate(bar, 1):
        x, y = to_device(args, x, y)
        with autocast(args):
            loss = task(x, y)['loss']
        optimizer.zero_grad(set_to_none=True)
        if loss_scaler is not None:
            loss_scaler(loss, optimizer, clip_grad=clip, clip_mode=args.clip_mode,
                        parameters=task.get_clip_parameters())
        else:
            loss.backward()
            if clip:
                dispatch_clip_grad(task.get_clip_parameters(), clip, mode=args.clip_mode)
            optimizer.step()
        num_updates += 1
        training.scheduler.step_update(num_updates=num_updates)
        task.update_ema(step=num_updates)
        interval_sum += loss.detach().float() * x.shape[0]
        interval_seen += x.shape[0]
        if step % args.log_interval == 0 or step == len(loader):
            interval_loss = check_finite(interval_sum, epoch, num_updates) / interval_seen
            if progress:
                bar.set_postfix(loss=f'{interval_loss:.4f}', lr=f"{optimizer.param_groups[0]['lr']:.2e}")
            loss_sum += interval_sum
            seen += interval_seen
            interval_sum.zero_()
            interval_seen = 0
    totals = torch.stack([loss_sum, torch.tensor(float(seen), device=args.device)])
    if args.distributed:
        dist.all_reduce(totals)
    return (totals[0] / totals[1]).item(), num_updates


def padded(x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """`x` with zero images appended up to `batch_size`: a compiled model sees one input shape in evaluation, so
    the last short batch neither recompiles it nor records another CUDA graph. In eval mode every image is computed
    on its own (BatchNorm uses its running statistics), so the padding changes no real image's output."""
    if x.shape[0] == batch_size:
        return x
    return torch.cat([x, x.new_zeros((batch_size - x.shape[0], *x.shape[1:]))])


@torch.no_grad()
def evaluate(args: argparse.Namespace, training: Training, progress: bool, ema: bool = False) -> Dict[str, float]:
    """Loss, top-1 and top-5 over the whole eval set with timm's evaluator, summed exactly across processes."""
    model = training.task.get_eval_model(ema=ema).eval()
    evaluator = training.task.create_evaluator()
    bar = tqdm(training.eval_loader, desc='eval ema' if ema else 'eval', disable=not progress, leave=False,
               unit='batch')
    for x, y in bar:
        images = x.shape[0]
        x, y = to_device(args, padded(x, args.batch_size) if args.torchcompile else x, y)
        with autocast(args):
            evaluator.update(model(x)[:images], y)
    return dict(evaluator.compute(distributed=args.distributed))


def check_replicas_in_sync(args: argparse.Namespace, model: torch.nn.Module) -> None:
    """DDP keeps replicas equal; verify it each epoch so silent divergence cannot go unnoticed."""
    if not args.distributed:
        return
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
    gathered = [torch.zeros_like(checksum) for _ in range(args.world_size)]
    dist.all_gather(gathered, checksum)
    if any(not torch.equal(g, gathered[0]) for g in gathered):
        raise RuntimeError(f'replicas diverged: parameter checksums {[g.item() for g in gathered]}')


def fit(args: argparse.Namespace, model: torch.nn.Module, training: Training, start_epoch: int,
        run: Optional[RunRecord], saver: Optional[CheckpointSaver]) -> None:
    """The epochs from start_epoch; the primary process (the one with a `run`) records each and keeps the best
    weights."""
    progress = run is not None and not args.no_progress
    num_updates = start_epoch * len(training.train_loader)
    for epoch in range(start_epoch, args.epochs):
        start = time.time()
        set_epoch_seed(training.train_loader, epoch, args.seed, args.rank)
        train_loss, num_updates = train_one_epoch(args, epoch, training, num_updates, progress)
        training.scheduler.step(epoch + 1)
        check_replicas_in_sync(args, model)
        metrics = evaluate(args, training, progress)
        ema = evaluate(args, training, progress, ema=True) if args.model_ema else None
        if run is None:
            continue
        epoch_time = time.time() - start
        run.record_epoch(epoch, train_loss, metrics, training.optimizer.param_groups[0]['lr'], epoch_time, ema)
        best = saver.save_checkpoint(epoch, metric=max(metrics['top1'], ema['top1'] if ema else -1.0))
        run.update_weights(best[1])
        ema_text = f", ema top-1 {ema['top1']:.2f}" if ema else ''
        print(f"epoch {epoch + 1}/{args.epochs}: train loss {train_loss:.4f}, eval loss {metrics['loss']:.4f}, "
              f"top-1 {metrics['top1']:.2f}, top-5 {metrics['top5']:.2f}{ema_text} ({epoch_time:.1f}s)", flush=True)
