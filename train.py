#!/usr/bin/env python3
"""Train any timm model, the FCT family included, with the paper's recipe on timm's training machinery.

    python train.py                                        # embedded digits, resnet18_fct_bn_cifar, ~1 min on CPU
    python train.py -c configs/cifar10_resnet50_fct_bn.yaml --data-dir data --dataset-download
    torchrun --nproc_per_node 4 train.py -c configs/cifar10_resnet50_fct_bn.yaml --data-dir data -b 32

-b is per process: 4 x 32 keeps the paper's global batch 128 and lr 0.01 (lr = lr_base 0.01 x global batch /
lr_base_size 128); without -b 32 the config's 128 per process makes a global batch of 512 and lr 0.04.

Flags share names and meanings with timm's train.py wherever the two overlap. The paper's recipe
(Sec. 4) is the default: Adam at lr 0.01, weight decay 1e-4, batch 128, cyclical learning rates,
gradient clipping at global norm 1, cross-entropy, random crops with padding plus flips. Where the paper
gives no detail the choices are ours (docs/decisions.md): PyTorch's OneCycleLR per update for the cycle,
4-pixel padding, and in the Table 1 configs weight decay coupled to every parameter as
torch.optim.Adam(weight_decay=1e-4) applies it (--wd-all-params) and vertical flips (--vflip 0.5).
"""
import argparse
import logging
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import timm
import torch
import torch.distributed as dist
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.task import ClassificationTask
from timm.utils import CheckpointSaver, NativeScaler, dispatch_clip_grad, random_seed
from torch.utils.data import Dataset
from tqdm import tqdm

import timm_fct  # noqa: F401  registers the FCT models
from timm_fct.cli import run_cli
from timm_fct.data.datasets import build_dataset, dataset_class_names
from timm_fct.data.loaders import Loader, build_loaders, set_epoch_seed
from timm_fct.errors import DivergedError, FctError
from timm_fct.runs.folder import RunFolder, read_checkpoint
from timm_fct.train.args import parse_args, resolve_args, resolve_preprocessing
from timm_fct.train.distributed import init_distributed
from timm_fct.train.onecycle import OneCycleScheduler
from timm_fct.train.record import RunRecord
from timm_fct.train.resume import check_resume, resolve_auto_resume, restore_saver, restore_training


def build_datasets(args: argparse.Namespace) -> Tuple[Dataset, Dataset, List[str]]:
    common = dict(download=args.dataset_download, batch_size=args.batch_size, seed=args.seed,
                  input_key=args.input_key, target_key=args.target_key)
    train_ds = build_dataset(args.dataset, args.data_dir, args.train_split, is_training=True,
                             num_samples=args.train_num_samples, **common)
    eval_ds = build_dataset(args.dataset, args.data_dir, args.val_split, num_samples=args.val_num_samples, **common)
    if len(train_ds) == 0 or len(eval_ds) == 0:
        raise FctError(f'empty dataset: {len(train_ds)} training and {len(eval_ds)} evaluation images')
    names = dataset_class_names(train_ds, args.num_classes)
    args.num_classes = args.num_classes or len(names)
    if args.num_classes != len(names):
        raise FctError(f'--num-classes {args.num_classes} but the dataset has {len(names)} classes')
    return train_ds, eval_ds, names


def build_model(args: argparse.Namespace) -> torch.nn.Module:
    """The timm model; arguments it rejects are a user mistake, not a traceback."""
    model_kwargs = dict(args.model_kwargs)
    if args.drop_path is not None:
        model_kwargs['drop_path_rate'] = args.drop_path
    try:
        return timm.create_model(args.model, pretrained=args.pretrained, num_classes=args.num_classes,
                                 drop_rate=args.drop, **model_kwargs)
    except (TypeError, ValueError, AssertionError) as e:  # timm's models assert on arguments as often as they raise
        raise FctError(f'--model-kwargs not accepted by {args.model}: {e}') from None


def build_optimizer(args: argparse.Namespace, model: torch.nn.Module) -> torch.optim.Optimizer:
    """timm's factory; --wd-all-params decays norms and biases too, as torch.optim.Adam(weight_decay=...) does."""
    return create_optimizer_v2(model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay,
                               momentum=args.momentum, filter_bias_and_bn=not args.wd_all_params)


def build_scheduler(args: argparse.Namespace, optimizer: torch.optim.Optimizer, updates_per_epoch: int):
    """'onecycle' is PyTorch's OneCycleLR stepped per update (lr and momentum); anything else is timm's."""
    if args.sched == 'onecycle':
        return OneCycleScheduler(
            optimizer, args.lr, args.epochs * updates_per_epoch, pct_start=args.pct_start,
            div_factor=args.div_factor, final_div_factor=args.final_div_factor,
            three_phase=args.onecycle_three_phase)
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=args.sched, num_epochs=args.epochs, warmup_epochs=args.warmup_epochs,
        warmup_lr=args.warmup_lr, min_lr=args.min_lr, step_on_epochs=False, updates_per_epoch=updates_per_epoch)
    return scheduler


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
                   resume: Optional[Dict[str, Any]]) -> Tuple[Training, int]:
    """timm's task, optimizer, AMP scaler, EMA and the schedule, restored from --resume; and the first epoch."""
    task = ClassificationTask(model, criterion_kwargs=dict(smoothing=args.smoothing), device=args.device,
                              verbose=False)
    optimizer = build_optimizer(args, model)
    loss_scaler = NativeScaler(device=args.device.type) if args.amp and args.amp_dtype == 'float16' else None
    if args.model_ema:
        task.setup_ema(decay=args.model_ema_decay)
    start_epoch = restore_training(resume, task, optimizer, loss_scaler) if resume else 0
    if args.torchcompile:
        task.compile(backend=args.torchcompile)
        if args.model_ema:
            task.compile_ema(backend=args.torchcompile)
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


@torch.no_grad()
def evaluate(args: argparse.Namespace, training: Training, progress: bool, ema: bool = False) -> Dict[str, float]:
    """Loss, top-1 and top-5 over the whole eval set with timm's evaluator, summed exactly across processes."""
    model = training.task.get_eval_model(ema=ema).eval()
    evaluator = training.task.create_evaluator()
    bar = tqdm(training.eval_loader, desc='eval ema' if ema else 'eval', disable=not progress, leave=False,
               unit='batch')
    for x, y in bar:
        x, y = to_device(args, x, y)
        with autocast(args):
            evaluator.update(model(x), y)
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


def start_run(args: argparse.Namespace, model: torch.nn.Module, labels: List[str], data_config: Dict[str, Any],
              training: Training, resume: Optional[Dict[str, Any]],
              start_epoch: int) -> Tuple[RunRecord, CheckpointSaver]:
    """The run's record (args.yaml and config.json written when it starts) and timm's checkpoint saver for it."""
    name = args.experiment or '-'.join([time.strftime('%Y%m%d-%H%M%S'), args.model, str(args.img_size)])
    in_place = args.resume and not args.experiment  # a resume continues in the checkpoint's run folder
    run = RunRecord(RunFolder(Path(args.resume).resolve().parent if in_place else Path(args.output) / name),
                    model, labels, data_config)
    resolved = {k: (str(v) if isinstance(v, torch.device) else v) for k, v in vars(args).items()}
    run.start(resolved, resume_epoch=start_epoch if resume else None)
    saver = CheckpointSaver(model, training.optimizer, args=args, amp_scaler=training.loss_scaler,
                            checkpoint_dir=str(run.path), recovery_dir=str(run.path),
                            max_history=args.checkpoint_hist, task=training.task)
    if resume:
        restore_saver(resume, saver)
    return run, saver


def train(args: argparse.Namespace, model: torch.nn.Module, training: Training, start_epoch: int,
          run: Optional[RunRecord], saver: Optional[CheckpointSaver]) -> Tuple[Optional[Tuple[float, int]], float]:
    """The epochs from start_epoch; the primary process records each and keeps the best weights.
    Returns the best (metric, epoch), None on other processes, and the last epoch's top-1."""
    progress = run is not None and not args.no_progress
    num_updates = start_epoch * len(training.train_loader)
    best, last_top1 = None, float('nan')
    for epoch in range(start_epoch, args.epochs):
        start = time.time()
        set_epoch_seed(args, training.train_loader, epoch)
        train_loss, num_updates = train_one_epoch(args, epoch, training, num_updates, progress)
        training.scheduler.step(epoch + 1)
        check_replicas_in_sync(args, model)
        metrics = evaluate(args, training, progress)
        ema = evaluate(args, training, progress, ema=True) if args.model_ema else None
        last_top1 = max(metrics['top1'], ema['top1'] if ema else -1.0)
        if run is None:
            continue
        epoch_time = time.time() - start
        run.record_epoch(epoch, train_loss, metrics, training.optimizer.param_groups[0]['lr'], epoch_time, ema)
        best = saver.save_checkpoint(epoch, metric=max(metrics['top1'], ema['top1'] if ema else -1.0))
        run.update_weights(best[1])
        ema_text = f", ema top-1 {ema['top1']:.2f}" if ema else ''
        print(f"epoch {epoch + 1}/{args.epochs}: train loss {train_loss:.4f}, eval loss {metrics['loss']:.4f}, "
              f"top-1 {metrics['top1']:.2f}, top-5 {metrics['top5']:.2f}{ema_text} ({epoch_time:.1f}s)", flush=True)
    return best, last_top1


def train_command(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.WARNING, format='%(message)s')
    args = parse_args(argv, description=__doc__)
    init_distributed(args)
    resolve_args(args)
    random_seed(args.seed, args.rank)
    train_ds, eval_ds, labels = build_datasets(args)
    model = build_model(args)
    data_config = resolve_preprocessing(args, model)
    resolve_auto_resume(args)
    resume = read_checkpoint(args.resume) if args.resume else None
    if resume:
        check_resume(resume, args, model)
    if args.sync_bn and args.distributed:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(args.device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    training, start_epoch = build_training(args, model, build_loaders(args, train_ds, eval_ds), resume)
    run = saver = None
    if args.rank == 0:
        run, saver = start_run(args, model, labels, data_config, training, resume, start_epoch)
        print(f'training {args.model} on {args.dataset or args.data_dir} ({len(train_ds)} train / '
              f'{len(eval_ds)} eval images, {args.num_classes} classes) at {args.img_size}px for {args.epochs} '
              f'epochs on {args.world_size} x {args.device.type}; run folder {run.path}', flush=True)
    best, last_top1 = train(args, model, training, start_epoch, run, saver)
    if best is not None:
        # the best epoch is chosen on the split it is scored on, so its top-1 is biased upwards; the last is not
        print(f'best top-1 {best[0]:.2f} at epoch {best[1] + 1} (chosen on this evaluation split), last-epoch '
              f'top-1 {last_top1:.2f}; checkpoints {run.path / RunFolder.BEST}, {run.path / RunFolder.LAST}, '
              f'weights {run.path / RunFolder.WEIGHTS}')
    if args.distributed:
        print(f'rank {args.rank}: replicas in sync across {args.world_size} processes', flush=True)
        dist.destroy_process_group()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """User mistakes end with one `error:` line and exit code 2, a diverged run with exit code 3."""
    return run_cli(train_command, argv)


if __name__ == '__main__':
    sys.exit(main())
