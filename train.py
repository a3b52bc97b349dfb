#!/usr/bin/env python3
"""Train any timm model, the FCT family included, with the paper's recipe on timm's training machinery.

    python train.py                                        # embedded digits, resnet18_fct_bn_cifar, ~1 min on CPU
    python train.py -c configs/cifar10_resnet50_fct_bn.yaml --data-dir data --dataset-download
    torchrun --nproc_per_node 4 train.py -c configs/cifar10_resnet50_fct_bn.yaml --data-dir data

Flags share names and meanings with timm's train.py wherever the two overlap. The paper's recipe
(Sec. 4) is the default: Adam at lr 0.01, weight decay 1e-4, batch 128, PyTorch's OneCycleLR per update,
gradient clipping at global norm 1, cross-entropy, 4-pixel pad-and-crop plus flips (the Table 1 configs
also decay norms and biases, --wd-all-params, and flip vertically, --vflip 0.5).
"""
import argparse
import logging
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import timm
import torch
import torch.distributed as dist
import yaml
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.task import ClassificationTask, load_task_ema_checkpoint, resume_task_checkpoint
from timm.utils import (
    CheckpointSaver, NativeScaler, ParseKwargs, accuracy, dispatch_clip_grad, init_distributed_device, random_seed,
)
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Subset
from tqdm import tqdm

import timm_fct  # noqa: F401  registers the FCT models
from timm_fct.data import (
    DIGITS, DIGITS_MEAN, DIGITS_STD, IN_MEMORY_DATASETS, DatasetError, build_dataset, class_names, default_workers,
    eval_geometry, eval_transform, pad_crop_flip_transform, train_geometry,
)
from timm_fct.plots import plot_curves
from timm_fct.onecycle import OneCycleScheduler
from timm_fct.tensor_loader import TensorLoader, preload
from timm_fct.runs import (
    BEST, LAST, RUN_INFO, SUMMARY, RunError, RunInfo, atomic_write, check_state_fits, read_checkpoint, read_summary,
    write_run_info,
)

_logger = logging.getLogger('train')

DEFAULT_MODEL = 'resnet18_fct_bn_cifar'
PAPER_DEFAULTS = dict(batch_size=128, epochs=200, pad_crop=4)
# the embedded main job, about a minute on 2 CPU cores: the 8 px digits upsampled 2x, padded by 1 px
DIGITS_DEFAULTS = dict(batch_size=64, epochs=5, img_size=16, pad_crop=1)
EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3
SUMMARY_COLUMNS = ('epoch', 'train_loss', 'eval_loss', 'eval_top1', 'eval_top5', 'lr', 'epoch_time')
EMA_COLUMNS = ('eval_ema_loss', 'eval_ema_top1', 'eval_ema_top5')
# what a run is: a resume must keep these, or its weights, metrics and recorded preprocessing would disagree
RUN_IDENTITY_ARGS = ('model', 'model_kwargs', 'num_classes', 'img_size', 'mean', 'std', 'crop_pct', 'interpolation',
                     'dataset', 'drop', 'drop_path', 'pretrained')


class ConfigError(ValueError):
    """A flag or config value that cannot work; the message says what was expected."""


class DivergedError(RuntimeError):
    """The loss became NaN or infinite."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add('-c', '--config', default='', metavar='FILE', help='YAML file whose keys set the defaults of these flags')

    group = parser.add_argument_group('Dataset')
    group.add_argument('data', nargs='?', metavar='DIR', help='path to dataset (positional, same as --data-dir)')
    group.add_argument('--data-dir', metavar='DIR', help='path to dataset (root dir)')
    group.add_argument('--dataset', metavar='NAME', default=None,
                       help=f"'{DIGITS}' (default with no --data-dir, ships with scikit-learn), 'torch/cifar10', "
                            "'torch/cifar100', or '' for an ImageFolder tree in --data-dir")
    group.add_argument('--train-split', default='train')
    group.add_argument('--val-split', default='validation')
    group.add_argument('--dataset-download', action='store_true', default=False,
                       help='download torchvision datasets (CIFAR-10/100) into --data-dir')

    group = parser.add_argument_group('Model')
    group.add_argument('--model', default=DEFAULT_MODEL, help='any timm model name')
    group.add_argument('--pretrained', action='store_true', default=False, help="load the model's pretrained weights")
    group.add_argument('--num-classes', type=int, default=None, help='default: the number of classes in the dataset')
    group.add_argument('--img-size', type=int, default=None, help="input size, default: the model's")
    group.add_argument('--mean', type=float, nargs=3, default=None, metavar='MEAN')
    group.add_argument('--std', type=float, nargs=3, default=None, metavar='STD')
    group.add_argument('--crop-pct', type=float, default=None, help='eval center crop fraction')
    group.add_argument('--interpolation', default='', help='resize interpolation, default: the model\'s')
    group.add_argument('--drop', type=float, default=0.0, help='dropout before the classifier')
    group.add_argument('--drop-path', type=float, default=None, help='stochastic depth rate')
    group.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs,
                       help='extra model arguments, e.g. --model-kwargs embed_dim=64 taps="(2,3)"')
    group.add_argument('--channels-last', action='store_true', default=False)
    group.add_argument('--torchcompile', nargs='?', type=str, default=None, const='inductor',
                       help='torch.compile the model (backend, default inductor)')
    group.add_argument('--sync-bn', action='store_true', default=False, help='SyncBatchNorm across processes')

    group = parser.add_argument_group('Optimisation')
    group.add_argument('-b', '--batch-size', type=int, default=None,
                       help=f'batch size per process (default 128, {DIGITS_DEFAULTS["batch_size"]} for {DIGITS})')
    group.add_argument('--epochs', type=int, default=None,
                       help=f'default 200, the paper\'s; {DIGITS_DEFAULTS["epochs"]} for {DIGITS}')
    group.add_argument('--opt', default='adam', help='timm optimizer name')
    group.add_argument('--lr', type=float, default=None, help='learning rate (default: --lr-base scaled)')
    group.add_argument('--lr-base', type=float, default=0.01, help='lr for a global batch of --lr-base-size')
    group.add_argument('--lr-base-size', type=int, default=128)
    group.add_argument('--lr-base-scale', default='linear', choices=('linear', 'sqrt'))
    group.add_argument('--momentum', type=float, default=0.9)
    group.add_argument('--weight-decay', type=float, default=1e-4)
    group.add_argument('--wd-all-params', action='store_true', default=False,
                       help='decay every parameter, norms and biases too (torch.optim.Adam(weight_decay=...), the '
                            "paper's setting); default: timm's exemption of norm and bias parameters")
    group.add_argument('--clip-grad', type=float, default=1.0, help='clip gradients at this global norm (0: off)')
    group.add_argument('--clip-mode', default='norm', choices=('norm', 'value', 'agc'))
    group.add_argument('--sched', default='onecycle',
                       help="'onecycle' (the paper's cyclical schedule: PyTorch's OneCycleLR per update, lr and "
                            "beta1/momentum) or any timm scheduler name")
    group.add_argument('--pct-start', type=float, default=0.3, help='onecycle: fraction of training spent warming up')
    group.add_argument('--div-factor', type=float, default=25.0, help='onecycle: starting lr = lr / div-factor')
    group.add_argument('--final-div-factor', type=float, default=1e4,
                       help='onecycle: final lr = starting lr / final-div-factor')
    group.add_argument('--warmup-epochs', type=int, default=0, help='other schedulers: warmup epochs')
    group.add_argument('--warmup-lr', type=float, default=1e-5)
    group.add_argument('--min-lr', type=float, default=0.0)
    group.add_argument('--smoothing', type=float, default=0.0, help='label smoothing')

    group = parser.add_argument_group('Augmentation')
    group.add_argument('--pad-crop', type=int, default=None,
                       help=f'pad by this many pixels, random crop back (0: off; default 4, 1 for {DIGITS})')
    group.add_argument('--hflip', type=float, default=None,
                       help=f'horizontal flip probability (default 0.5, 0 for {DIGITS})')
    group.add_argument('--vflip', type=float, default=0.0, help='vertical flip probability')
    group.add_argument('--pipeline', default='auto', choices=('auto', 'memory', 'pil'),
                       help="'memory': the whole split as one uint8 tensor on the device, pad-crop and flips per "
                            "batch there; 'pil': a DataLoader over PIL images; 'auto' (default): memory for "
                            f"{DIGITS} and CIFAR with --pad-crop, pil otherwise (timm's augmentation)")

    group = parser.add_argument_group('Model EMA')
    group.add_argument('--model-ema', action='store_true', default=False, help='track an EMA of the weights')
    group.add_argument('--model-ema-decay', type=float, default=0.9998)

    group = parser.add_argument_group('Run')
    group.add_argument('--amp', action='store_true', default=False, help='mixed precision (autocast)')
    group.add_argument('--amp-dtype', default='bfloat16', choices=('bfloat16', 'float16'))
    group.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    group.add_argument('--dist-backend', default=None, help='default: nccl on cuda, gloo on cpu')
    group.add_argument('--dist-url', default=None)
    group.add_argument('-j', '--workers', type=int, default=None,
                       help='data loading processes (default: 0 on CPU, where they compete with the model for cores)')
    group.add_argument('--pin-mem', action='store_true', default=None, help='default: on for cuda')
    group.add_argument('--seed', type=int, default=42)
    group.add_argument('--resume', default='', metavar='PATH', help='checkpoint to resume model, optimizer, '
                       'scheduler, EMA, AMP scaler and epoch from; the run continues in its folder')
    group.add_argument('--output', default='output/train', metavar='DIR', help='parent folder of the run folder')
    group.add_argument('--experiment', default='', metavar='NAME', help='run folder name (default: time-model)')
    group.add_argument('--checkpoint-hist', type=int, default=1, help='per-epoch checkpoints kept')
    group.add_argument('--no-progress', action='store_true', default=False, help='no progress bar')
    group.add_argument('--log-interval', type=int, default=50,
                       help='updates between progress reports and non-finite loss checks (each waits for the device)')
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """timm's two-step parse: a YAML config sets defaults, command-line flags override it."""
    parser = build_parser()
    config_parser = argparse.ArgumentParser(add_help=False)
    config_parser.add_argument('-c', '--config', default='')
    known, remaining = config_parser.parse_known_args(argv)
    if known.config:
        parser.set_defaults(**read_config(known.config, parser))
    args = parser.parse_args(remaining)
    args.config = known.config
    return args


def read_config(path: str, parser: argparse.ArgumentParser) -> Dict[str, Any]:
    if not Path(path).is_file():
        raise ConfigError(f'config file {path} does not exist')
    try:
        cfg = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f'config file {path} is not valid YAML: {e}') from None
    if not isinstance(cfg, dict):
        raise ConfigError(f'config file {path} must hold a mapping of flag names to values')
    known = {a.dest for a in parser._actions}
    unknown = sorted(k for k in cfg if k.replace('-', '_') not in known)
    if unknown:
        raise ConfigError(f'config file {path} has unknown keys {unknown}; keys are flag names, e.g. '
                          f'batch_size, lr, model, epochs')
    return {k.replace('-', '_'): v for k, v in cfg.items()}


def resolve_args(args: argparse.Namespace) -> None:
    """Fill in what depends on the dataset, the model and the world size; reject what cannot work."""
    args.data_dir = args.data_dir or args.data
    if args.dataset is None:
        args.dataset = '' if args.data_dir else DIGITS
    if not timm.is_model(args.model):
        raise ConfigError(f'unknown model {args.model!r}; see timm.list_models() (FCT models: '
                          f'{", ".join(timm.list_models("*fct*"))})')
    cfg = timm.get_pretrained_cfg(args.model)
    is_digits = args.dataset == DIGITS
    for key, value in (DIGITS_DEFAULTS if is_digits else PAPER_DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.img_size = args.img_size or cfg.input_size[-1]
    args.mean = args.mean or list(DIGITS_MEAN if is_digits else cfg.mean)
    args.std = args.std or list(DIGITS_STD if is_digits else cfg.std)
    args.crop_pct = args.crop_pct or (1.0 if is_digits else cfg.crop_pct)
    args.interpolation = args.interpolation or cfg.interpolation or 'bilinear'
    if args.hflip is None:
        args.hflip = 0.0 if is_digits else 0.5
    if args.lr is None:
        global_batch = args.batch_size * args.world_size
        ratio = global_batch / args.lr_base_size
        args.lr = args.lr_base * (math.sqrt(ratio) if args.lr_base_scale == 'sqrt' else ratio)
    if args.sync_bn and args.device.type != 'cuda':
        raise ConfigError('--sync-bn needs GPUs: PyTorch implements SyncBatchNorm for CUDA devices only')
    if args.epochs < 1 or args.batch_size < 1 or args.log_interval < 1:
        raise ConfigError('--epochs, --batch-size and --log-interval must be at least 1')
    for flag in ('hflip', 'vflip'):
        if not 0 <= getattr(args, flag) <= 1:
            raise ConfigError(f'--{flag} is a probability: expected a value in [0, 1], got {getattr(args, flag)}')
    if args.pipeline == 'auto':
        args.pipeline = 'memory' if args.dataset in IN_MEMORY_DATASETS and args.pad_crop > 0 else 'pil'
    if args.pipeline == 'memory' and args.dataset not in IN_MEMORY_DATASETS:
        raise ConfigError(f'--pipeline memory holds {", ".join(IN_MEMORY_DATASETS)}; use --pipeline pil for '
                          f'{args.dataset or "an ImageFolder tree"}')


def build_datasets(args: argparse.Namespace) -> Tuple[Dataset, Dataset, List[str]]:
    train_ds = build_dataset(args.dataset, args.data_dir, args.train_split, args.dataset_download)
    eval_ds = build_dataset(args.dataset, args.data_dir, args.val_split, args.dataset_download)
    names = class_names(train_ds)
    if len(train_ds) == 0 or len(eval_ds) == 0:
        raise DatasetError(f'empty dataset: {len(train_ds)} training and {len(eval_ds)} evaluation images')
    return train_ds, eval_ds, names


def build_loaders(args: argparse.Namespace, train_ds: Dataset, eval_ds: Dataset):
    """Training batches shuffled per epoch (seeded, so a resumed run sees the same order); eval sharded exactly."""
    if args.pipeline == 'memory':
        return build_memory_loaders(args, train_ds, eval_ds)
    return build_pil_loaders(args, train_ds, eval_ds)


def build_memory_loaders(args: argparse.Namespace, train_ds: Dataset, eval_ds: Dataset) -> Tuple[TensorLoader, ...]:
    common = dict(batch_size=args.batch_size, mean=args.mean, std=args.std, device=args.device, rank=args.rank,
                  world_size=args.world_size)
    train_images, train_targets = preload(train_ds, train_geometry(args.img_size), 'preloading train')
    eval_images, eval_targets = preload(
        eval_ds, eval_geometry(args.img_size, args.crop_pct, args.interpolation), 'preloading eval')
    train_loader = TensorLoader(train_images, train_targets, train=True, padding=args.pad_crop, hflip=args.hflip,
                                vflip=args.vflip, **common)
    return train_loader, TensorLoader(eval_images, eval_targets, **common)


def build_pil_loaders(args: argparse.Namespace, train_ds: Dataset,
                      eval_ds: Dataset) -> Tuple[DataLoader, DataLoader]:
    if args.pad_crop > 0:
        train_ds.transform = pad_crop_flip_transform(
            args.img_size, args.mean, args.std, padding=args.pad_crop, hflip=args.hflip, vflip=args.vflip)
    else:
        train_ds.transform = timm.data.create_transform(
            args.img_size, is_training=True, hflip=args.hflip, vflip=args.vflip, mean=args.mean, std=args.std,
            interpolation=args.interpolation, no_aug=False)
    eval_ds.transform = eval_transform(args.img_size, args.mean, args.std, args.crop_pct, args.interpolation)
    if args.distributed:
        train_sampler = DistributedSampler(train_ds, shuffle=True, seed=args.seed, drop_last=True)
        eval_ds = Subset(eval_ds, range(args.rank, len(eval_ds), args.world_size))
    else:
        train_sampler = RandomSampler(train_ds, generator=torch.Generator())
    # workers restart each epoch and take their seeds from the per-epoch seed, so a resume replays exactly
    common = dict(num_workers=args.workers, pin_memory=args.pin_mem)
    train_loader = DataLoader(
        train_ds, batch_size=args.batch_size, sampler=train_sampler, drop_last=len(train_ds) > args.batch_size,
        **common)
    eval_loader = DataLoader(eval_ds, batch_size=args.batch_size, shuffle=False, **common)
    return train_loader, eval_loader


def set_epoch_seed(args: argparse.Namespace, loader: DataLoader, epoch: int) -> None:
    """Seed everything from (seed, epoch, rank): an epoch replays identically whether or not the run resumed."""
    random_seed(args.seed + 1000 * epoch, args.rank)
    if isinstance(loader, TensorLoader):
        loader.set_epoch(args.seed, epoch)
        return
    sampler = loader.sampler
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
    else:
        sampler.generator.manual_seed(args.seed + epoch)


def build_optimizer(args: argparse.Namespace, model: torch.nn.Module) -> torch.optim.Optimizer:
    """timm's factory; --wd-all-params decays norms and biases too, as torch.optim.Adam(weight_decay=...) does."""
    return create_optimizer_v2(model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay,
                               momentum=args.momentum, filter_bias_and_bn=not args.wd_all_params)


def build_scheduler(args: argparse.Namespace, optimizer: torch.optim.Optimizer, updates_per_epoch: int):
    """'onecycle' is PyTorch's OneCycleLR stepped per update (lr and momentum); anything else is timm's."""
    if args.sched == 'onecycle':
        return OneCycleScheduler(
            optimizer, args.lr, args.epochs * updates_per_epoch, pct_start=args.pct_start,
            div_factor=args.div_factor, final_div_factor=args.final_div_factor)
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=args.sched, num_epochs=args.epochs, warmup_epochs=args.warmup_epochs,
        warmup_lr=args.warmup_lr, min_lr=args.min_lr, step_on_epochs=False, updates_per_epoch=updates_per_epoch)
    return scheduler


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
        raise DivergedError(f'the loss became {value} at epoch {epoch + 1}, by update {num_updates}')
    return value


def train_one_epoch(args, epoch, task, loader, optimizer, scheduler, loss_scaler, num_updates, progress) -> Tuple[float, int]:
    """One pass over the data; losses accumulate on the device and are read every --log-interval updates."""
    task.train()
    loss_sum = torch.zeros((), device=args.device)
    interval_sum = torch.zeros((), device=args.device)
    seen = interval_seen = 0
    bar = tqdm(loader, desc=f'epoch {epoch + 1}/{args.epochs}', disable=not progress, leave=False, unit='batch')
    for step, (x, y) in enumerate(bar, 1):
        x, y = to_device(args, x, y)
        with autocast(args):
            loss = task(x, y)['loss']
        optimizer.zero_grad(set_to_none=True)
        clip = args.clip_grad or None
        if loss_scaler is not None:
            loss_scaler(loss, optimizer, clip_grad=clip, clip_mode=args.clip_mode, parameters=task.get_clip_parameters())
        else:
            loss.backward()
            if clip:
                dispatch_clip_grad(task.get_clip_parameters(), clip, mode=args.clip_mode)
            optimizer.step()
        num_updates += 1
        scheduler.step_update(num_updates=num_updates)
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
    totals = all_reduce(args, torch.stack([loss_sum, torch.tensor(float(seen), device=args.device)]))
    return (totals[0] / totals[1]).item(), num_updates


@torch.no_grad()
def evaluate(args, model, loader, num_classes: int, progress: bool, desc: str) -> Dict[str, float]:
    """Loss, top-1 and top-5 over the whole eval set, summed exactly across processes."""
    model.eval()
    k = min(5, num_classes)
    sums = torch.zeros(4, device=args.device)  # loss, top-1 hits, top-k hits, count
    for x, y in tqdm(loader, desc=desc, disable=not progress, leave=False, unit='batch'):
        x, y = to_device(args, x, y)
        with autocast(args):
            logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits.float(), y, reduction='sum')
        top1, topk = accuracy(logits, y, topk=(1, k))
        n = x.shape[0]
        sums += torch.stack([loss, top1 * n / 100, topk * n / 100, torch.tensor(float(n), device=args.device)])
    sums = all_reduce(args, sums)
    return dict(loss=(sums[0] / sums[3]).item(), top1=(100 * sums[1] / sums[3]).item(),
                top5=(100 * sums[2] / sums[3]).item())


def all_reduce(args: argparse.Namespace, t: torch.Tensor) -> torch.Tensor:
    if args.distributed:
        dist.all_reduce(t)
    return t


def check_replicas_in_sync(args: argparse.Namespace, model: torch.nn.Module) -> None:
    """DDP keeps replicas equal; verify it each epoch so silent divergence cannot go unnoticed."""
    if not args.distributed:
        return
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
    gathered = [torch.zeros_like(checksum) for _ in range(args.world_size)]
    dist.all_gather(gathered, checksum)
    if any(not torch.equal(g, gathered[0]) for g in gathered):
        raise RuntimeError(f'replicas diverged: parameter checksums {[g.item() for g in gathered]}')


def run_dir_for(args: argparse.Namespace) -> Path:
    if args.resume and not args.experiment:
        return Path(args.resume).resolve().parent
    name = args.experiment or '-'.join([time.strftime('%Y%m%d-%H%M%S'), args.model, str(args.img_size)])
    return Path(args.output) / name


def write_summary(run_dir: Path, rows: List[Dict[str, float]]) -> None:
    columns = list(SUMMARY_COLUMNS) + [c for c in EMA_COLUMNS if rows and c in rows[0]]
    lines = [','.join(columns)] + [','.join(f'{row[c]:.6g}' if c != 'epoch' else str(int(row[c])) for c in columns)
                                   for row in rows]
    atomic_write(run_dir / SUMMARY, lambda p: p.write_text('\n'.join(lines) + '\n'))


def write_args(run_dir: Path, args: argparse.Namespace) -> None:
    resolved = {k: (str(v) if isinstance(v, torch.device) else v) for k, v in vars(args).items()}
    atomic_write(run_dir / 'args.yaml', lambda p: p.write_text(yaml.safe_dump(resolved, sort_keys=True)))


def check_resume_fits(args: argparse.Namespace, model: torch.nn.Module) -> None:
    """A checkpoint of another architecture, or of a run with other model or preprocessing flags, is refused."""
    ckpt = read_checkpoint(args.resume)
    arch = ckpt.get('arch')
    if arch and arch != args.model:
        raise RunError(f'--resume {args.resume} is a checkpoint of {arch}, not of --model {args.model}')
    saved = ckpt.get('args')
    saved = vars(saved) if isinstance(saved, argparse.Namespace) else (saved or {})
    differ = [f'--{k.replace("_", "-")} {getattr(args, k)!r} (the run has {saved[k]!r})'
              for k in RUN_IDENTITY_ARGS if k in saved and _comparable(saved[k]) != _comparable(getattr(args, k))]
    if differ:
        raise RunError(f'--resume {args.resume}: a resumed run keeps its model and preprocessing, but '
                       f'{"; ".join(differ)}; drop these flags, or start a new run')
    check_state_fits(model, {k.removeprefix('module.'): v for k, v in ckpt['state_dict'].items()}, args.resume)


def _comparable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.WARNING, format='%(message)s')
    args = parse_args(argv)
    init_distributed_device(args)
    args.device = torch.device(args.device)
    if args.pin_mem is None:
        args.pin_mem = args.device.type == 'cuda'
    if args.workers is None:
        args.workers = default_workers() if args.device.type == 'cuda' else 0
    primary = args.rank == 0
    progress = primary and not args.no_progress
    resolve_args(args)
    random_seed(args.seed, args.rank)

    train_ds, eval_ds, labels = build_datasets(args)
    args.num_classes = args.num_classes or len(labels)
    if args.num_classes != len(labels):
        raise ConfigError(f'--num-classes {args.num_classes} but the dataset has {len(labels)} classes')
    model_kwargs = dict(args.model_kwargs)
    if args.drop_path is not None:
        model_kwargs['drop_path_rate'] = args.drop_path
    try:
        model = timm.create_model(args.model, pretrained=args.pretrained, num_classes=args.num_classes,
                                  drop_rate=args.drop, **model_kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f'--model-kwargs not accepted by {args.model}: {e}') from None
    if args.resume:
        check_resume_fits(args, model)
    if args.sync_bn and args.distributed:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(args.device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)

    train_loader, eval_loader = build_loaders(args, train_ds, eval_ds)
    task = ClassificationTask(model, criterion_kwargs=dict(smoothing=args.smoothing), device=args.device,
                              verbose=False)
    optimizer = build_optimizer(args, model)
    loss_scaler = NativeScaler(device=args.device.type) if args.amp and args.amp_dtype == 'float16' else None
    if args.model_ema:
        task.setup_ema(decay=args.model_ema_decay)
    start_epoch = 0
    if args.resume:
        start_epoch = resume_task_checkpoint(task, args.resume, optimizer, loss_scaler, log_info=False,
                                             weights_only=False) or 0
        if args.model_ema:
            load_task_ema_checkpoint(task, args.resume, weights_only=False)
    if args.torchcompile:
        task.compile(backend=args.torchcompile)
        if args.model_ema:
            task.compile_ema(backend=args.torchcompile)
    if args.distributed:
        task.prepare_distributed(device_ids=[args.local_rank] if args.device.type == 'cuda' else None)
    scheduler = build_scheduler(args, optimizer, len(train_loader))
    num_updates = start_epoch * len(train_loader)
    scheduler.step(start_epoch)
    scheduler.step_update(num_updates=num_updates)

    run_dir = run_dir_for(args)
    saver = None
    rows: List[Dict[str, float]] = []
    if primary:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not (run_dir / RUN_INFO).is_file():  # a run's metadata is written once, when it starts
            write_args(run_dir, args)
            write_run_info(run_dir, RunInfo(
                model=args.model, num_classes=args.num_classes, label_names=labels,
                pretrained_cfg=dict(input_size=[3, args.img_size, args.img_size], mean=list(args.mean),
                                    std=list(args.std), crop_pct=args.crop_pct, interpolation=args.interpolation),
                model_kwargs=model_kwargs, dataset=args.dataset, data_dir=args.data_dir))
        saver = CheckpointSaver(model, optimizer, args=args, amp_scaler=loss_scaler, checkpoint_dir=str(run_dir),
                                recovery_dir=str(run_dir), max_history=args.checkpoint_hist, task=task)
        if args.resume:
            saver.load_state_dict_from_checkpoint(args.resume)
            rows = [r for r in read_summary(run_dir) if r['epoch'] < start_epoch]
        print(f'training {args.model} on {args.dataset or args.data_dir} ({len(train_ds)} train / '
              f'{len(eval_ds)} eval images, {args.num_classes} classes) at {args.img_size}px for {args.epochs} '
              f'epochs on {args.world_size} x {args.device.type}; run folder {run_dir}', flush=True)

    best = None
    for epoch in range(start_epoch, args.epochs):
        start = time.time()
        set_epoch_seed(args, train_loader, epoch)
        train_loss, num_updates = train_one_epoch(
            args, epoch, task, train_loader, optimizer, scheduler, loss_scaler, num_updates, progress)
        scheduler.step(epoch + 1)
        check_replicas_in_sync(args, model)
        metrics = evaluate(args, task.get_eval_model(), eval_loader, args.num_classes, progress, 'eval')
        row = dict(epoch=epoch, train_loss=train_loss, eval_loss=metrics['loss'], eval_top1=metrics['top1'],
                   eval_top5=metrics['top5'], lr=optimizer.param_groups[0]['lr'])
        if args.model_ema:
            ema = evaluate(args, task.get_eval_model(ema=True), eval_loader, args.num_classes, progress, 'eval ema')
            row.update(eval_ema_loss=ema['loss'], eval_ema_top1=ema['top1'], eval_ema_top5=ema['top5'])
        row['epoch_time'] = time.time() - start
        if primary:
            rows.append(row)
            write_summary(run_dir, rows)
            plot_curves(rows, run_dir)
            best_metric, best_epoch = saver.save_checkpoint(epoch, metric=max(
                row['eval_top1'], row.get('eval_ema_top1', -1.0)))
            best = (best_metric, best_epoch)
            ema_text = f", ema top-1 {row['eval_ema_top1']:.2f}" if args.model_ema else ''
            print(f"epoch {epoch + 1}/{args.epochs}: train loss {train_loss:.4f}, eval loss {row['eval_loss']:.4f}, "
                  f"top-1 {row['eval_top1']:.2f}, top-5 {row['eval_top5']:.2f}{ema_text} "
                  f"({row['epoch_time']:.1f}s)", flush=True)
    if primary and best is not None:
        print(f'best top-1 {best[0]:.2f} at epoch {best[1] + 1}; checkpoints {run_dir / BEST}, {run_dir / LAST}')
    if args.distributed:
        print(f'rank {args.rank}: replicas in sync across {args.world_size} processes', flush=True)
        dist.destroy_process_group()
    return 0


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """User mistakes end with one clear line and a non-zero exit code, not a traceback."""
    try:
        return main(argv)
    except (ConfigError, DatasetError, RunError) as e:
        print(f'error: {e}', file=sys.stderr)
        return EXIT_USER_ERROR
    except DivergedError as e:
        print(f'error: {e}; stopped, the last good checkpoint is kept', file=sys.stderr)
        return EXIT_DIVERGED


if __name__ == '__main__':
    sys.exit(cli())
