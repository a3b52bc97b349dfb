"""A train.py run folder, the one owner of its files, and loading a trained model back from it.

A run folder is a timm model folder with the training record beside it (README, 'What a run leaves
behind'): config.json and model.safetensors in timm's own format, so `timm.create_model('local-dir:RUN',
pretrained=True)` and timm's scripts load the run's best weights with the preprocessing it trained with.
"""
import csv
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import timm
import torch
import torch.nn as nn
import yaml
from safetensors.torch import save
from timm.models import clean_state_dict
from timm.models._hub import save_config_for_hf  # the config.json half of timm's save_for_hf

from .cli import CliError

WEIGHT_CHOICES = ('auto', 'ema', 'raw')
DATA_CONFIG_KEYS = ('input_size', 'mean', 'std', 'crop_pct', 'interpolation')  # the preprocessing a run used


class RunError(CliError):
    """A run, checkpoint or model that cannot be used; the message names the cause."""


@contextmanager
def replace_when_done(path: Union[str, Path]) -> Iterator[Path]:
    """A hidden sibling path to build a file or folder in, renamed onto `path` when the block succeeds.

    Readers never see half a file or folder, a failure or Ctrl-C removes what was built, and the caller
    creates what it builds, so it gets the usual permissions (the umask's), not mkstemp's 0600.
    """
    path = Path(path)
    tmp = path.parent / f'.{path.name}.{uuid.uuid4().hex[:12]}.tmp'
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


@dataclass
class RunInfo:
    """What rebuilding and evaluating a trained model needs."""
    model: str
    num_classes: int
    label_names: List[str]
    data_config: Dict[str, Any]  # the preprocessing the model was trained with: DATA_CONFIG_KEYS
    model_args: Dict[str, Any] = field(default_factory=dict)  # beside num_classes
    dataset: str = ''
    data_dir: Optional[str] = None

    @classmethod
    def from_cfg(cls, model: str, cfg: Mapping[str, Any], model_args: Mapping[str, Any],
                 args: Optional[Mapping[str, Any]] = None) -> 'RunInfo':
        """From a timm pretrained_cfg (with label_names), the model's arguments and train.py's arguments."""
        args = args or {}
        num_classes = model_args.get('num_classes') or cfg['num_classes']
        labels = cfg.get('label_names') or range(num_classes)
        return cls(model=model, num_classes=num_classes, label_names=[str(n) for n in labels],
                   data_config={k: cfg.get(k) for k in DATA_CONFIG_KEYS},
                   model_args={k: v for k, v in model_args.items() if k != 'num_classes'},
                   dataset=args.get('dataset') or '', data_dir=args.get('data_dir'))


class RunFolder:
    """A train.py run folder: its file names and summary columns, written by train.py, read by the rest."""
    ARGS = 'args.yaml'  # every resolved train.py argument
    CONFIG = 'config.json'  # timm's: architecture, model_args, label_names, the run's preprocessing
    WEIGHTS = 'model.safetensors'  # the best checkpoint's weights, EMA or raw as an export chooses them
    SUMMARY = 'summary.csv'  # one row per epoch
    LAST = 'last.pth.tar'  # timm CheckpointSaver checkpoints ('state_dict', optional 'state_dict_ema', ...)
    BEST = 'model_best.pth.tar'
    LOSS_PLOT = 'loss.png'
    ACCURACY_PLOT = 'accuracy.png'
    CONFUSION_PLOT = 'confusion_matrix.png'  # the report's; a model card shows it from a report or the run
    COLUMNS = ('epoch', 'train_loss', 'eval_loss', 'eval_top1', 'eval_top5', 'lr', 'epoch_time')
    EMA_COLUMNS = ('eval_ema_loss', 'eval_ema_top1', 'eval_ema_top5')
    LOSS_CURVES = (('train_loss', 'train'), ('eval_loss', 'eval'), ('eval_ema_loss', 'eval (EMA)'))
    ACCURACY_CURVES = (('eval_top1', 'top-1'), ('eval_top5', 'top-5'),
                       ('eval_ema_top1', 'top-1 (EMA)'), ('eval_ema_top5', 'top-5 (EMA)'))

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        self._summary: Optional[List[Dict[str, float]]] = None
        self._weights_key: Optional[Tuple[int, bool]] = None

    def write(self, name: str, write: Callable[[Path], None]) -> None:
        """Write one file of the folder with `write(tmp_path)`, whole or not at all."""
        with replace_when_done(self.path / name) as tmp:
            write(tmp)

    # ------------------------------------------------------------------ written by train.py

    def start(self, args: Mapping[str, Any], model: nn.Module, label_names: Sequence[str],
              data_config: Mapping[str, Any]) -> None:
        """args.yaml and config.json, once: a resumed run keeps the ones it started with."""
        self.path.mkdir(parents=True, exist_ok=True)
        if (self.path / self.CONFIG).is_file():
            return
        self.write(self.ARGS, lambda p: p.write_text(yaml.safe_dump(dict(args), sort_keys=True)))
        self.write_config(model, label_names, data_config)

    def write_config(self, model: nn.Module, label_names: Sequence[str], data_config: Mapping[str, Any]) -> None:
        """config.json as timm writes it for the Hub: what `local-dir:` and `hf-hub:` rebuild the model from."""
        self.write(self.CONFIG, lambda p: save_config_for_hf(
            model, str(p), model_config={'label_names': list(label_names)}, data_config=dict(data_config)))

    def write_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """model.safetensors, in the standard layout (safetensors refuses --channels-last weights); through bytes,
        since safetensors' save_file makes its files private (0600)."""
        tensors = {k: v.contiguous() for k, v in clean_state_dict(dict(state_dict)).items()}
        self.write(self.WEIGHTS, lambda p: p.write_bytes(save(tensors)))

    def resume_at(self, epoch: int) -> None:
        """Forget the summary rows of epochs a resumed run trains again."""
        self._summary = [r for r in self.summary() if r['epoch'] < epoch]

    def record_epoch(self, epoch: int, train_loss: float, metrics: Mapping[str, float], lr: float,
                     epoch_time: float, ema_metrics: Optional[Mapping[str, float]] = None) -> None:
        """Add an epoch's row to summary.csv and redraw the curves; metrics are loss, top1, top5."""
        row = dict(epoch=epoch, train_loss=train_loss, **{f'eval_{k}': v for k, v in metrics.items()}, lr=lr,
                   epoch_time=epoch_time, **{f'eval_ema_{k}': v for k, v in (ema_metrics or {}).items()})
        rows = self._summary = self.summary() + [row]
        columns = self.COLUMNS + (self.EMA_COLUMNS if ema_metrics else ())

        def write_csv(path: Path) -> None:
            with open(path, 'w', newline='') as f:
                writer = csv.writer(f)
                writer.writerow(columns)
                writer.writerows([str(int(r[c])) if c == 'epoch' else f'{r[c]:.6g}' for c in columns] for r in rows)

        self.write(self.SUMMARY, write_csv)
        from .plots import curves_figure  # matplotlib: train.py's extra, not needed to read a run
        for name, curves, ylabel in ((self.LOSS_PLOT, self.LOSS_CURVES, 'loss'),
                                     (self.ACCURACY_PLOT, self.ACCURACY_CURVES, 'accuracy (%)')):
            figure = curves_figure(rows, [c for c in curves if c[0] in row], ylabel)
            self.write(name, lambda p: figure.savefig(p, format='png'))

    def update_weights(self, best_epoch: int) -> None:
        """model.safetensors from the best checkpoint, rewritten when it or the EMA-or-raw choice changes."""
        key = (best_epoch, self.ema_evaluated_better())
        if key != self._weights_key:
            ckpt = read_checkpoint(self.path / self.BEST)
            self.write_weights(ckpt[self.state_key(ckpt, 'auto')])
            self._weights_key = key

    # ------------------------------------------------------------------ read by the report and the export

    def summary(self) -> List[Dict[str, float]]:
        """summary.csv's rows as numbers, read once."""
        if self._summary is None:
            path = self.path / self.SUMMARY
            self._summary = []
            if path.is_file():
                with open(path, newline='') as f:
                    self._summary = [{k: float(v) for k, v in row.items() if v not in ('', None)}
                                     for row in csv.DictReader(f)]
        return list(self._summary)

    def best_metrics(self) -> Dict[str, float]:
        """The best value of each eval column over the run (max for accuracy, min for loss)."""
        best: Dict[str, float] = {}
        for row in self.summary():
            for k, v in row.items():
                if k.startswith('eval_'):
                    best[k] = (min if k.endswith('loss') else max)(best.get(k, v), v)
        return best

    def accuracy(self, ema: bool = False) -> Dict[str, Optional[float]]:
        """Best and last top-1 / top-5 of the raw or EMA weights (best_top1, ..., last_top5); {} if never evaluated."""
        prefix = 'eval_ema_' if ema else 'eval_'
        best, rows = self.best_metrics(), self.summary()
        if f'{prefix}top1' not in best:
            return {}
        return {f'{when}_{k}': values.get(prefix + k) for when, values in (('best', best), ('last', rows[-1]))
                for k in ('top1', 'top5')}

    def ema_evaluated_better(self) -> bool:
        """True when the run's best EMA top-1 beats its best raw top-1."""
        best = self.best_metrics()
        return best.get('eval_ema_top1', float('-inf')) > best.get('eval_top1', float('-inf'))

    def state_key(self, ckpt: Mapping[str, Any], weights: str) -> str:
        """The checkpoint entry to use: 'auto' takes the EMA weights only when they evaluated better."""
        if weights not in WEIGHT_CHOICES:
            raise RunError(f'weights must be one of {WEIGHT_CHOICES}, got {weights!r}')
        has_ema = 'state_dict_ema' in ckpt
        if weights == 'ema' and not has_ema:
            raise RunError(f'the checkpoint in {self.path} has no EMA weights (train with --model-ema)')
        ema = has_ema and self.ema_evaluated_better() if weights == 'auto' else weights == 'ema'
        return 'state_dict_ema' if ema else 'state_dict'

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
                raise RunError(f'{config_path} is not a timm model config: {type(e).__name__}: {e}') from None
        if ckpt is None:
            raise RunError(f'{self.path} is not a timm model folder: {self.CONFIG} is missing')
        args = ckpt.get('args')
        args = vars(args) if args is not None and not isinstance(args, dict) else (args or {})
        model_name = ckpt.get('arch') or args.get('model')
        if not model_name or not timm.is_model(model_name):
            raise RunError(f'cannot tell the architecture of the checkpoint in {self.path}: no {self.CONFIG} '
                           f'beside it and no known model name in it (arch={model_name!r})')
        num_classes = args.get('num_classes') or _classifier_outputs(ckpt['state_dict'])
        model_args = dict(args.get('model_kwargs') or {}, num_classes=num_classes)
        return RunInfo.from_cfg(model_name, timm.get_pretrained_cfg(model_name).to_dict(), model_args, args)

    def card_plots(self, report_dir: Optional[Union[str, Path]] = None) -> List[Path]:
        """The plots a model card shows; a report folder, when given, is searched first."""
        if report_dir and not Path(report_dir).is_dir():
            raise RunError(f'report folder {report_dir} does not exist')
        folders = ([Path(report_dir)] if report_dir else []) + [self.path]
        found = (next((f / name for f in folders if (f / name).is_file()), None)
                 for name in (self.ACCURACY_PLOT, self.CONFUSION_PLOT))
        return [path for path in found if path]


def find_checkpoint(run: Union[str, Path]) -> Path:
    """The checkpoint a run folder stands for (best, else last), or the file itself."""
    run = Path(run)
    if run.is_dir():
        for name in (RunFolder.BEST, RunFolder.LAST):
            if (run / name).is_file():
                return run / name
        raise RunError(f'no checkpoint in {run}: expected {RunFolder.BEST} or {RunFolder.LAST}')
    if not run.is_file():
        raise RunError(f'checkpoint {run} does not exist')
    return run


def read_checkpoint(path: Union[str, Path]) -> Dict[str, Any]:
    """A checkpoint file read once on the CPU, whole (timm's readers keep one state dict of it); truncated and
    foreign files become a RunError."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f'checkpoint {path} does not exist')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=False)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise RunError(f'checkpoint {path} cannot be read (truncated or not a PyTorch checkpoint): {e}') from None
    if not isinstance(ckpt, dict):
        raise RunError(f'checkpoint {path} holds a {type(ckpt).__name__}, expected a dict with a state_dict')
    if 'state_dict' not in ckpt:  # a bare state dict
        if not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            raise RunError(f'checkpoint {path} has no state_dict (keys: {sorted(ckpt)[:8]})')
        ckpt = {'state_dict': ckpt}
    return ckpt


def _classifier_outputs(state_dict: Mapping[str, torch.Tensor]) -> int:
    for key in ('head.fc.weight', 'fc.weight'):
        if key in state_dict:
            return state_dict[key].shape[0]
    raise RunError('cannot tell the number of classes: the checkpoint has no classifier weights')


def build_model(info: RunInfo) -> nn.Module:
    """The untrained model of a run, built as train.py built it.

    Its pretrained_cfg stays the architecture's, as in training: the run's preprocessing is info.data_config,
    which write_config records against that default as timm's save_for_hf does (an overlaid input size would
    keep the default's pool_size in config.json).
    """
    return timm.create_model(info.model, num_classes=info.num_classes, **info.model_args)


def check_state_fits(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise a RunError naming the mismatch, instead of torch's wall of keys, when a state dict does not fit."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape)
    if missing or unexpected or wrong_shape:
        raise RunError(
            f'{source} does not fit {type(model).__name__}: {len(missing)} missing, {len(unexpected)} unexpected, '
            f'{len(wrong_shape)} mis-shaped tensors (e.g. {(missing or unexpected or wrong_shape)[:3]}); '
            f'is it a checkpoint of another architecture?')


def load_state(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Strict load, DDP and torch.compile prefixes stripped, with a message that names any mismatch."""
    state_dict = clean_state_dict(dict(state_dict))
    check_state_fits(model, state_dict, source)
    model.load_state_dict(state_dict)


@dataclass
class TrainedRun:
    """A trained model with where it came from and which of its weights were taken."""
    model: nn.Module
    info: RunInfo
    folder: RunFolder  # the checkpoint's folder: a run folder, or any folder holding a checkpoint file
    checkpoint: Path
    ema: bool
    epoch: Optional[int]


def load_run(run: Union[str, Path], weights: str = 'auto') -> TrainedRun:
    """The trained model (eval mode) of a run folder or checkpoint file, with EMA or raw weights."""
    checkpoint = find_checkpoint(run)
    folder = RunFolder(checkpoint.parent)
    ckpt = read_checkpoint(checkpoint)
    info = folder.info(ckpt)
    key = folder.state_key(ckpt, weights)
    model = build_model(info)
    load_state(model, ckpt[key], str(checkpoint))
    return TrainedRun(model.eval(), info, folder, checkpoint, key == 'state_dict_ema', ckpt.get('epoch'))
