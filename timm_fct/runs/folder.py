"""A training run folder: the one owner of its file names, and what the rest of timm-fct reads from it.

A run folder is a timm model folder (model_folder.py: config.json, model.safetensors) with the training
record beside it: args.yaml, summary.csv, the curves and timm's checkpoints. train/record.py writes the
record; the report and the export read it through RunFolder.
"""
import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import timm
import torch
import yaml
from timm.data import resolve_data_config

from ..errors import FctError
from . import model_folder
from .weights import ARCH_KEY, ARGS_KEY, EMA_KEY, RAW_KEY


@dataclass
class RunInfo:
    """What rebuilding and evaluating a trained model needs."""
    model: str
    num_classes: int
    label_names: List[str]
    data_config: Dict[str, Any]  # the preprocessing the model was trained with, as timm's resolve_data_config gives it
    model_args: Dict[str, Any] = field(default_factory=dict)  # beside num_classes
    dataset: str = ''
    data_dir: Optional[str] = None
    val_split: Optional[str] = None  # the split the run evaluated on

    @classmethod
    def from_cfg(cls, model: str, cfg: Mapping[str, Any], model_args: Mapping[str, Any],
                 args: Optional[Mapping[str, Any]] = None) -> 'RunInfo':
        """From a timm pretrained_cfg (with label_names), the model's arguments and training's arguments."""
        args = args or {}
        num_classes = model_args.get('num_classes') or cfg['num_classes']
        labels = cfg.get('label_names') or range(num_classes)
        return cls(model=model, num_classes=num_classes, label_names=[str(n) for n in labels],
                   data_config=resolve_data_config(pretrained_cfg=dict(cfg)),
                   model_args={k: v for k, v in model_args.items() if k != 'num_classes'},
                   dataset=args.get('dataset') or '', data_dir=args.get('data_dir'), val_split=args.get('val_split'))


class RunFolder:
    """A training run folder: its file names and summary columns, written by training, read by the rest."""
    ARGS = 'args.yaml'  # every resolved training setting
    CONFIG = model_folder.CONFIG
    WEIGHTS = model_folder.WEIGHTS  # the best checkpoint's weights, EMA or raw as 'auto' chooses them
    SUMMARY = 'summary.csv'  # one row per epoch
    LAST = 'last.pth.tar'  # timm CheckpointSaver checkpoints ('state_dict', optional 'state_dict_ema', ...)
    BEST = 'model_best.pth.tar'
    NUMBERED = 'checkpoint-{}.pth.tar'  # an epoch's, kept by --checkpoint-hist: a link or copy of a whole last.pth.tar
    LOSS_PLOT = 'loss.png'
    ACCURACY_PLOT = 'accuracy.png'
    COLUMNS = ('epoch', 'train_loss', 'eval_loss', 'eval_top1', 'eval_top5', 'lr', 'epoch_time')
    EMA_COLUMNS = ('eval_ema_loss', 'eval_ema_top1', 'eval_ema_top5')

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)

    def summary(self) -> List[Dict[str, float]]:
        """summary.csv's rows as numbers."""
        path = self.path / self.SUMMARY
        if not path.is_file():
            return []
        with open(path, newline='') as f:
            return [{k: float(v) for k, v in row.items() if v not in ('', None)} for row in csv.DictReader(f)]

    def best_metrics(self) -> Dict[str, float]:
        """The best value of each eval column over the run (max for accuracy, min for loss)."""
        best: Dict[str, float] = {}
        for row in self.summary():
            for k, v in row.items():
                if k.startswith('eval_'):
                    best[k] = (min if k.endswith('loss') else max)(best.get(k, v), v)
        return best

    def accuracy(self, ema: bool = False) -> Dict[str, Optional[float]]:
        """The run's best and last-epoch accuracy, the one place they are read from summary.csv: best_top1 and
        best_top5 (each the best over the epochs), best_epoch (0-based, the first with the best top-1), last_top1,
        last_top5, last_epoch; of the raw or the EMA weights. {} if never evaluated."""
        prefix = 'eval_ema_' if ema else 'eval_'
        best, rows = self.best_metrics(), self.summary()
        if f'{prefix}top1' not in best:
            return {}
        accuracy = {f'{when}_{k}': values.get(prefix + k) for when, values in (('best', best), ('last', rows[-1]))
                    for k in ('top1', 'top5')}
        accuracy['best_epoch'] = int(next(r['epoch'] for r in rows if r.get(prefix + 'top1') == best[prefix + 'top1']))
        accuracy['last_epoch'] = int(rows[-1]['epoch'])
        return accuracy

    def ema_evaluated_better(self) -> bool:
        """True when the run's best EMA top-1 beats its best raw top-1."""
        best = self.best_metrics()
        return best.get('eval_ema_top1', float('-inf')) > best.get('eval_top1', float('-inf'))

    def args_text(self) -> str:
        """args.yaml as written, '' when the folder has none."""
        path = self.path / self.ARGS
        return path.read_text() if path.is_file() else ''

    def info(self, ckpt: Optional[Mapping[str, Any]] = None) -> RunInfo:
        """From config.json and args.yaml, or for a checkpoint outside a run, from the arguments stored in it."""
        args = yaml.safe_load(self.args_text()) or {}
        config_path = self.path / self.CONFIG
        if config_path.is_file():
            try:
                config = json.loads(config_path.read_text())
                cfg = dict(config['pretrained_cfg'], label_names=config.get('label_names'))
                return RunInfo.from_cfg(config['architecture'], cfg, config.get('model_args', {}), args)
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise FctError(f'{config_path} is not a timm model config: {type(e).__name__}: {e}') from None
        if ckpt is None:
            raise FctError(f'{self.path} is not a timm model folder: {self.CONFIG} is missing')
        args = ckpt.get(ARGS_KEY)
        args = vars(args) if args is not None and not isinstance(args, dict) else (args or {})
        model_name = ckpt.get(ARCH_KEY) or args.get('model')
        if not model_name or not timm.is_model(model_name):
            raise FctError(f'cannot tell the architecture of the checkpoint in {self.path}: no {self.CONFIG} '
                           f'beside it and no known model name in it (arch={model_name!r})')
        cfg = timm.get_pretrained_cfg(model_name).to_dict()
        num_classes = args.get('num_classes') or _classifier_outputs(ckpt[RAW_KEY], cfg['classifier'])
        model_args = dict(args.get('model_kwargs') or {}, num_classes=num_classes)
        return RunInfo.from_cfg(model_name, cfg, model_args, args)

    def find_checkpoint(self) -> Path:
        """The checkpoint the run stands for: best, else last."""
        for name in (self.BEST, self.LAST):
            if (self.path / name).is_file():
                return self.path / name
        raise FctError(f'no checkpoint in {self.path}: expected {self.BEST} or {self.LAST}')

    def latest_checkpoint(self) -> Optional[Path]:
        """The checkpoint a run killed at any moment continues from: last.pth.tar, else the newest numbered one;
        None when the run has none yet. timm's saver writes tmp.pth.tar and renames it onto last.pth.tar after
        unlinking the old one, so a checkpoint being written is never one of these, and a kill between the unlink
        and the rename leaves the numbered ones."""
        if (self.path / self.LAST).is_file():
            return self.path / self.LAST
        prefix, suffix = self.NUMBERED.split('{}')
        epochs = [p.name[len(prefix):-len(suffix)] for p in self.path.glob(self.NUMBERED.format('*'))]
        epochs = [int(e) for e in epochs if e.isdigit()]
        return self.path / self.NUMBERED.format(max(epochs)) if epochs else None


def read_checkpoint(path: Union[str, Path]) -> Dict[str, Any]:
    """A checkpoint file read once on the CPU, whole (timm's readers keep one state dict of it); truncated and
    foreign files become an FctError."""
    path = Path(path)
    if not path.is_file():
        raise FctError(f'checkpoint {path} does not exist')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=False)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise FctError(f'checkpoint {path} cannot be read (truncated or not a PyTorch checkpoint): {e}') from None
    if not isinstance(ckpt, dict):
        raise FctError(f'checkpoint {path} holds a {type(ckpt).__name__}, expected a dict with a state_dict')
    if RAW_KEY not in ckpt:  # a bare state dict
        if not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            raise FctError(f'checkpoint {path} has no state_dict (keys: {sorted(ckpt)[:8]})')
        ckpt = {RAW_KEY: ckpt}
    return ckpt


def _classifier_outputs(state_dict: Mapping[str, torch.Tensor], classifier: str) -> int:
    """The number of classes, from the classifier the model's pretrained_cfg names (timm's 'classifier')."""
    key = f'{classifier}.weight'
    if key not in state_dict:
        raise FctError(f'cannot tell the number of classes: the checkpoint has no classifier weights ({key})')
    return state_dict[key].shape[0]


__all__ = ['RunFolder', 'RunInfo', 'read_checkpoint', 'EMA_KEY']
