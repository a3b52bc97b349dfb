"""What a training run is made of, from its resolved flags: datasets, model, optimizer, schedule, loaders."""
import argparse
from typing import Any, Dict, List, Tuple

import timm
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torch.utils.data import Dataset

from ..data.datasets import build_dataset, dataset_class_names
from ..data.loaders import LoaderConfig
from ..errors import FctError
from .onecycle import OneCycleScheduler


def build_datasets(args: argparse.Namespace) -> Tuple[Dataset, Dataset, List[str]]:
    """The training and evaluation splits and the class names; --num-classes is filled in from the dataset."""
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


def build_model(args: argparse.Namespace, load_weights: bool = True) -> torch.nn.Module:
    """The timm model, with its pretrained weights if --pretrained and `load_weights`; arguments it rejects are a
    user mistake, not a traceback."""
    model_kwargs = dict(args.model_kwargs)
    if args.drop_path is not None:
        model_kwargs['drop_path_rate'] = args.drop_path
    try:
        return timm.create_model(args.model, pretrained=args.pretrained and load_weights, num_classes=args.num_classes,
                                 drop_rate=args.drop, **model_kwargs)
    except (TypeError, ValueError, AssertionError) as e:  # timm's models assert on arguments as often as they raise
        raise FctError(f'--model-kwargs not accepted by {args.model}: {e}') from None


FUSED_ON_CUDA = ('adam', 'adamw')  # torch.optim's Adam and AdamW, which have a fused kernel


def optimizer_kwargs(opt: str, device: torch.device) -> Dict[str, Any]:
    """On CUDA, Adam's fused kernel (one launch for every parameter, not a few per tensor), capturable so that a
    CUDA graph of the training step (--torchcompile-mode reduce-overhead) can hold its step counts."""
    return dict(fused=True, capturable=True) if device.type == 'cuda' and opt.lower() in FUSED_ON_CUDA else {}


def build_optimizer(args: argparse.Namespace, model: torch.nn.Module) -> torch.optim.Optimizer:
    """timm's factory; --wd-all-params decays norms and biases too, as torch.optim.Adam(weight_decay=...) does."""
    return create_optimizer_v2(model, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay,
                               momentum=args.momentum, filter_bias_and_bn=not args.wd_all_params,
                               **optimizer_kwargs(args.opt, torch.device(args.device)))


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


def loader_config(args: argparse.Namespace) -> LoaderConfig:
    """The data room's settings, from the resolved flags."""
    return LoaderConfig(
        pipeline=args.pipeline, batch_size=args.batch_size, img_size=args.img_size, mean=args.mean, std=args.std,
        crop_pct=args.crop_pct, interpolation=args.interpolation, pad_crop=args.pad_crop, hflip=args.hflip,
        vflip=args.vflip, seed=args.seed, device=args.device, workers=args.workers, pin_memory=args.pin_mem,
        rank=args.rank, world_size=args.world_size)
