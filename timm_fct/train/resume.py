"""Resuming a training run from its checkpoint, read once: checked against the new flags, then restored.

`--resume auto` finds the checkpoint itself (the run folder's newest, or none: a fresh start), so the same
command serves a first start and every restart of a worker group (torchrun --max-restarts).

timm's `resume_task_checkpoint`, `load_task_ema_checkpoint` and `CheckpointSaver.load_state_dict_from_checkpoint`
each read the file themselves; with the check below that was four reads of one checkpoint. Here the parts
go from the one read to the same public setters those helpers call.
"""
import argparse
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple

import torch.distributed as dist
import torch.nn as nn
import yaml
from timm.models import clean_state_dict
from timm.task import TrainingTask
from timm.utils import CheckpointSaver, NativeScaler
from torch.optim import Optimizer

from ..errors import FctError
from ..runs.folder import RunFolder
from ..runs.load import load_state
from ..runs.weights import (
    ARCH_KEY, ARGS_KEY, EMA_KEY, EPOCH_KEY, OPTIMIZER_KEY, RAW_KEY, SAVER_KEY, TASK_STATE_EMA_KEY, TASK_STATE_KEY, VERSION_KEY,
)
from .distributed import startup_watchdog
from .identity import check_same_run

AUTO = 'auto'


def resolve_auto_resume(args: argparse.Namespace) -> None:
    """--resume auto becomes the run folder's newest complete checkpoint, or '' (a fresh start) when it has none;
    a folder with no checkpoint but another run's settings is refused. Rank 0 looks and every process takes its
    answer, so a restarted worker group agrees on where it stands."""
    if args.resume != AUTO:
        return
    if not args.experiment:
        raise FctError('--resume auto needs --experiment NAME: it resumes the run folder --output/--experiment '
                       'when that holds a checkpoint, and starts it otherwise')
    answer = [_look_in_run_folder(RunFolder(Path(args.output) / args.experiment), args) if args.rank == 0 else None]
    if args.distributed:  # every rank waits here for rank 0: bounded, as the rest of the start-up
        with startup_watchdog('agreeing on the checkpoint of --resume auto', args.dist_timeout):
            dist.broadcast_object_list(answer, src=0)
    checkpoint, error = answer[0]
    if error:
        raise FctError(error)
    args.resume = checkpoint


def _look_in_run_folder(folder: RunFolder, args: argparse.Namespace) -> Tuple[str, str]:
    """(checkpoint path or '', error or ''): what --resume auto makes of this folder."""
    checkpoint = folder.latest_checkpoint()
    if checkpoint is not None:
        return str(checkpoint), ''
    try:  # killed before its first checkpoint: the folder still says which run it is
        check_same_run(yaml.safe_load(folder.args_text()) or {}, args, f'--resume auto ({folder.path / folder.ARGS})')
    except FctError as e:
        return '', str(e)
    return '', ''


def check_resume(ckpt: Mapping[str, Any], args: argparse.Namespace, model: nn.Module) -> None:
    """A checkpoint of another architecture, or of a run with other settings (identity.py), is refused."""
    arch = ckpt.get(ARCH_KEY)
    if arch and arch != args.model:
        raise FctError(f'--resume {args.resume} is a checkpoint of {arch}, not of --model {args.model}')
    saved = ckpt.get(ARGS_KEY)
    check_same_run(vars(saved) if isinstance(saved, argparse.Namespace) else (saved or {}), args,
                   f'--resume {args.resume}')
    load_state(model, ckpt[RAW_KEY], args.resume)


def restore_training(ckpt: Mapping[str, Any], task: TrainingTask, optimizer: Optimizer,
                     loss_scaler: Optional[NativeScaler]) -> int:
    """Model, EMA, task, optimizer and AMP scaler state; returns the epoch to start from."""
    task.load_checkpoint_state(clean_state_dict(ckpt[RAW_KEY]), ckpt.get(TASK_STATE_KEY))
    if task.has_ema():  # a checkpoint without EMA weights starts the EMA from the model's, as timm's loader does
        has_ema = EMA_KEY in ckpt
        task.load_checkpoint_state(clean_state_dict(ckpt[EMA_KEY if has_ema else RAW_KEY]),
                                   ckpt.get(TASK_STATE_EMA_KEY if has_ema else TASK_STATE_KEY), ema=True)
    if OPTIMIZER_KEY in ckpt:
        optimizer.load_state_dict(ckpt[OPTIMIZER_KEY])
    if loss_scaler is not None and loss_scaler.state_dict_key in ckpt:
        loss_scaler.load_state_dict(ckpt[loss_scaler.state_dict_key])
    epoch = ckpt.get(EPOCH_KEY)
    # CheckpointSaver (version 2) stores the epoch it finished, older checkpoints the next one
    return 0 if epoch is None else epoch + int(ckpt.get(VERSION_KEY, 1) > 1)


def restore_saver(ckpt: Mapping[str, Any], saver: CheckpointSaver) -> None:
    """The saver's history of kept checkpoints and best metric, so a resumed run ranks them as before."""
    if ckpt.get(SAVER_KEY) is not None:
        saver.load_state_dict(ckpt[SAVER_KEY])
