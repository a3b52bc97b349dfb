"""Train any timm model, the FCT family included, with the paper's recipe on timm's training machinery.

    python -m timm_fct.train                               # embedded digits, resnet18_fct_bn_cifar, ~1 min on CPU
    python -m timm_fct.train -c cifar10_resnet50_fct_bn --data-dir data --dataset-download
    torchrun --nproc_per_node 4 -m timm_fct.train -c cifar10_resnet50_fct_bn --data-dir data -b 32

(`python train.py ...` in a checkout, and the `timm-fct-train` command, are the same.) -c takes a YAML file or
the name of a config that ships with timm-fct (the paper's Table 1 rows: cifar10_resnet50, cifar10_resnet50_fct_ln,
cifar10_resnet50_fct_bn, cifar10_resnet50_fct_bn_pretrained).

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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from timm.utils import CheckpointSaver, random_seed
from torch.utils.data import Dataset

from ..cli import run_cli
from ..data.loaders import build_loaders
from ..runs.folder import RunFolder, read_checkpoint
from .args import parse_args, resolve_args, resolve_preprocessing
from .build import build_datasets, build_model, loader_config
from .distributed import init_distributed
from .identity import plain_settings
from .loop import Training, build_training, fit
from .record import RunRecord
from .resume import check_resume, resolve_auto_resume, restore_saver


@dataclass
class Start:
    """What a run starts from once its settings are resolved."""
    train_ds: Dataset
    eval_ds: Dataset
    labels: List[str]
    model: torch.nn.Module
    data_config: Dict[str, Any]


def resolve(args: argparse.Namespace, load_weights: bool = True) -> Start:
    """Complete `args` in place as the run will use them: the defaults that depend on the dataset and device, the
    class count from the opened dataset, the preprocessing from the model (built with its pretrained weights
    when `load_weights`)."""
    resolve_args(args)
    random_seed(args.seed, args.rank)
    train_ds, eval_ds, labels = build_datasets(args)
    model = build_model(args, load_weights)
    return Start(train_ds, eval_ds, labels, model, resolve_preprocessing(args, model))


def resolved_settings(argv: Sequence[str]) -> argparse.Namespace:
    """The settings a run of `argv` resolves to in one process, without training or fetching weights: what the
    Table 1 protocol compares with a run folder before anything trains (identity.py)."""
    args = parse_args(argv)
    args.distributed, args.world_size, args.rank, args.local_rank = False, 1, 0, 0  # as outside torchrun
    resolve(args, load_weights=False)
    return args


def start_run(args: argparse.Namespace, model: torch.nn.Module, start: Start, training: Training,
              resume: Optional[Dict[str, Any]], start_epoch: int) -> Tuple[RunRecord, CheckpointSaver]:
    """The run's record (args.yaml and config.json written when it starts) and timm's checkpoint saver for it."""
    name = args.experiment or '-'.join([time.strftime('%Y%m%d-%H%M%S'), args.model, str(args.img_size)])
    in_place = args.resume and not args.experiment  # a resume continues in the checkpoint's run folder
    run = RunRecord(RunFolder(Path(args.resume).resolve().parent if in_place else Path(args.output) / name),
                    model, start.labels, start.data_config)
    run.start(plain_settings(args), resume_epoch=start_epoch if resume else None)
    saver = CheckpointSaver(model, training.optimizer, args=args, amp_scaler=training.loss_scaler,
                            checkpoint_dir=str(run.path), recovery_dir=str(run.path),
                            max_history=args.checkpoint_hist, task=training.task)
    if resume:
        restore_saver(resume, saver)
    return run, saver


def outcome(folder: RunFolder) -> str:
    """The run's last line: best and last-epoch top-1 of the weights its model folder holds, and where they are."""
    accuracy = folder.accuracy(ema=folder.ema_evaluated_better())
    # the best epoch is chosen on the split it is scored on, so its top-1 is biased upwards; the last is not
    return (f"best top-1 {accuracy['best_top1']:.2f} at epoch {accuracy['best_epoch'] + 1} (chosen on this evaluation "
            f"split), last-epoch top-1 {accuracy['last_top1']:.2f}; checkpoints {folder.path / RunFolder.BEST}, "
            f"{folder.path / RunFolder.LAST}, weights {folder.path / RunFolder.WEIGHTS}")


def train_from_args(argv: Optional[Sequence[str]] = None) -> int:
    """Parse, resolve, resume if asked, train and record; the primary process writes the run folder."""
    logging.basicConfig(level=logging.WARNING, format='%(message)s')
    args = parse_args(argv, description=__doc__)
    init_distributed(args)
    start = resolve(args)
    resolve_auto_resume(args)
    resume = read_checkpoint(args.resume) if args.resume else None
    if resume:
        check_resume(resume, args, start.model)
    model = start.model
    if args.sync_bn and args.distributed:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(args.device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    loaders = build_loaders(loader_config(args), start.train_ds, start.eval_ds)
    training, start_epoch = build_training(args, model, loaders, resume)
    run = saver = None
    if args.rank == 0:
        run, saver = start_run(args, model, start, training, resume, start_epoch)
        print(f'training {args.model} on {args.dataset or args.data_dir} ({len(start.train_ds)} train / '
              f'{len(start.eval_ds)} eval images, {args.num_classes} classes) at {args.img_size}px for {args.epochs} '
              f'epochs on {args.world_size} x {args.device.type}; run folder {run.path}', flush=True)
    fit(args, model, training, start_epoch, run, saver)
    if run is not None and run.folder.summary():
        print(outcome(run.folder), flush=True)
    if args.distributed:
        print(f'rank {args.rank}: replicas in sync across {args.world_size} processes', flush=True)
        dist.destroy_process_group()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """User mistakes end with one `error:` line and exit code 2, a diverged run with exit code 3."""
    return run_cli(train_from_args, argv)
