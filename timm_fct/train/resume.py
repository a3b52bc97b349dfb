"""Resuming a train.py run from its checkpoint, read once: checked against the new flags, then restored.

timm's `resume_task_checkpoint`, `load_task_ema_checkpoint` and `CheckpointSaver.load_state_dict_from_checkpoint`
each read the file themselves; with the check below that was four reads of one checkpoint. Here the parts
go from the one read to the same public setters those helpers call.
"""
import argparse
from typing import Any, Mapping, Optional

import torch.nn as nn
from timm.models import clean_state_dict
from timm.task import TrainingTask
from timm.utils import CheckpointSaver, NativeScaler
from torch.optim import Optimizer

from ..errors import FctError
from ..runs.load import load_state

# what a run is: a resume must keep these, or its weights, metrics and recorded preprocessing would disagree
RUN_IDENTITY_ARGS = ('model', 'model_kwargs', 'num_classes', 'img_size', 'mean', 'std', 'crop_pct', 'interpolation',
                     'dataset', 'drop', 'drop_path', 'pretrained')


def check_resume(ckpt: Mapping[str, Any], args: argparse.Namespace, model: nn.Module) -> None:
    """A checkpoint of another architecture, or of a run with other model or preprocessing flags, is refused."""
    arch = ckpt.get('arch')
    if arch and arch != args.model:
        raise FctError(f'--resume {args.resume} is a checkpoint of {arch}, not of --model {args.model}')
    saved = ckpt.get('args')
    saved = vars(saved) if isinstance(saved, argparse.Namespace) else (saved or {})
    differ = [f'--{k.replace("_", "-")} {getattr(args, k)!r} (the run has {saved[k]!r})'
              for k in RUN_IDENTITY_ARGS if k in saved and _comparable(saved[k]) != _comparable(getattr(args, k))]
    if differ:
        raise FctError(f'--resume {args.resume}: a resumed run keeps its model and preprocessing, but '
                       f'{"; ".join(differ)}; drop these flags, or start a new run')
    load_state(model, ckpt['state_dict'], args.resume)


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
