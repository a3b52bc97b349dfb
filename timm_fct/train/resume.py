"""Resuming a train.py run from its checkpoint, read once: checked against the new flags, then restored.

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
from .distributed import startup_watchdog

AUTO = 'auto'

# what a run is: a resume must keep these, or its weights, metrics and recorded preprocessing would disagree
RUN_IDENTITY_ARGS = ('model', 'model_kwargs', 'num_classes', 'img_size', 'mean', 'std', 'crop_pct', 'interpolation',
                     'dataset', 'drop', 'drop_path', 'pretrained')


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
    """A checkpoint of another architecture, or of a run with other model or preprocessing flags, is refused."""
    arch = ckpt.get('arch')
    if arch and arch != args.model:
        raise FctError(f'--resume {args.resume} is a checkpoint of {arch}, not of --model {args.model}')
    saved = ckpt.get('args')
    check_same_run(vars(saved) if isinstance(saved, argparse.Namespace) else (saved or {}), args,
                   f'--resume {args.resume}')
    load_state(model, ckpt['state_dict'], args.resume)


def check_same_run(saved: Mapping[str, Any], args: argparse.Namespace, source: str) -> None:
    """Refuse, naming each difference, flags that change what the run `saved` (its arguments) is."""
    differ = [f'--{k.replace("_", "-")} {getattr(args, k)!r} (the run has {saved[k]!r})'
              for k in RUN_IDENTITY_ARGS if k in saved and _comparable(saved[k]) != _comparable(getattr(args, k))]
    if differ:
        raise FctError(f'{source}: a resumed run keeps its model and preprocessing, but '
                       f'{"; ".join(differ)}; drop these flags, or start a new run')


def _comparable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def restore_training(ckpt: Mapping[str, Any], task: TrainingTask, optimizer: Optimizer,
                     loss_scaler: Optional[NativeScaler]) -> int:
    """Model, EMA, task, optimizer and AMP scaler state; returns the epoch to start from."""
    task.load_checkpoint_state(clean_state_dict(ckpt['state_dict']), ckpt.get('task_state'))
    if task.has_ema():  # a checkpoint without EMA weights starts the EMA from the model's, as timm's loader does
        has_ema = 'state_dict_ema' in ckpt
        task.load_checkpoint_state(clean_state_dict(ckpt['state_dict_ema' if has_ema else 'state_dict']),
                                   ckpt.get('task_state_ema' if has_ema else 'task_state'), ema=True)
    if 'optimizer' in ckpt:
        optimizer.load_state_dict(ckpt['optimizer'])
    if loss_scaler is not None and loss_scaler.state_dict_key in ckpt:
        loss_scaler.load_state_dict(ckpt[loss_scaler.state_dict_key])
    epoch = ckpt.get('epoch')
    # CheckpointSaver (version 2) stores the epoch it finished, older checkpoints the next one
    return 0 if epoch is None else epoch + int(ckpt.get('version', 1) > 1)


def restore_saver(ckpt: Mapping[str, Any], saver: CheckpointSaver) -> None:
    """The saver's history of kept checkpoints and best metric, so a resumed run ranks them as before."""
    if ckpt.get('saver') is not None:
        saver.load_state_dict(ckpt['saver'])
