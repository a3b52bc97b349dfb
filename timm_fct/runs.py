"""A train.py run folder, and loading a trained model back from one, a checkpoint file or a Hub repo.

A run folder holds (see README, 'What a run leaves behind'):
    args.yaml            every resolved train.py argument
    run.json             what a consumer needs to rebuild the model: RunInfo below
    summary.csv          one row per epoch
    last.pth.tar         timm CheckpointSaver checkpoints ('state_dict', optional 'state_dict_ema', ...)
    model_best.pth.tar
    loss.png, accuracy.png
"""
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import timm
import torch
import torch.nn as nn

RUN_INFO = 'run.json'
SUMMARY = 'summary.csv'
LAST = 'last.pth.tar'
BEST = 'model_best.pth.tar'
HUB_PREFIXES = ('hf-hub:', 'local-dir:')
WEIGHT_CHOICES = ('auto', 'ema', 'raw')
DATA_CFG_KEYS = ('input_size', 'mean', 'std', 'crop_pct', 'interpolation')  # the preprocessing a run used


class RunError(ValueError):
    """A run, checkpoint or model that cannot be used; the message names the cause."""


@dataclass
class RunInfo:
    model: str
    num_classes: int
    label_names: List[str]
    pretrained_cfg: Dict[str, Any]  # input_size, mean, std, crop_pct, interpolation the run used
    model_kwargs: Dict[str, Any] = field(default_factory=dict)
    dataset: str = ''
    data_dir: Optional[str] = None

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> 'RunInfo':
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


def atomic_write(path: Union[str, Path], write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_run_info(run_dir: Union[str, Path], info: RunInfo) -> None:
    atomic_write(Path(run_dir) / RUN_INFO, lambda p: p.write_text(json.dumps(asdict(info), indent=2)))


def read_run_info(run_dir: Union[str, Path]) -> RunInfo:
    path = Path(run_dir) / RUN_INFO
    if not path.is_file():
        raise RunError(f'{run_dir} is not a train.py run folder: {RUN_INFO} is missing')
    try:
        return RunInfo.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as e:
        raise RunError(f'{path} is not a valid run description: {e}') from None


def find_checkpoint(run: Union[str, Path]) -> Path:
    """The checkpoint a run folder stands for (best, else last), or the file itself."""
    run = Path(run)
    if run.is_dir():
        for name in (BEST, LAST):
            if (run / name).is_file():
                return run / name
        raise RunError(f'no checkpoint in {run}: expected {BEST} or {LAST}')
    if not run.is_file():
        raise RunError(f'checkpoint {run} does not exist')
    return run


def read_checkpoint(path: Union[str, Path]) -> Dict[str, Any]:
    """Load a checkpoint file on the CPU, turning truncation and foreign files into a RunError."""
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


def run_info_for(checkpoint_path: Path, ckpt: Dict[str, Any]) -> RunInfo:
    """The RunInfo beside a checkpoint, or one rebuilt from the args stored in it."""
    if (checkpoint_path.parent / RUN_INFO).is_file():
        return read_run_info(checkpoint_path.parent)
    args = ckpt.get('args')
    args = vars(args) if args is not None and not isinstance(args, dict) else (args or {})
    model_name = ckpt.get('arch') or args.get('model')
    if not model_name or not timm.is_model(model_name):
        raise RunError(f'cannot tell the architecture of {checkpoint_path}: no {RUN_INFO} beside it and '
                       f'no known model name in it (arch={model_name!r})')
    num_classes = args.get('num_classes') or _classifier_outputs(ckpt['state_dict'])
    cfg = timm.get_pretrained_cfg(model_name)
    pretrained_cfg = {k: getattr(cfg, k) for k in DATA_CFG_KEYS}
    return RunInfo(model=model_name, num_classes=num_classes, label_names=[str(i) for i in range(num_classes)],
                   pretrained_cfg=pretrained_cfg, model_kwargs=args.get('model_kwargs') or {})


def _classifier_outputs(state_dict: Dict[str, torch.Tensor]) -> int:
    for key in ('head.fc.weight', 'fc.weight'):
        if key in state_dict:
            return state_dict[key].shape[0]
    raise RunError('cannot tell the number of classes: the checkpoint has no classifier weights')


def build_model(info: RunInfo) -> nn.Module:
    return timm.create_model(
        info.model, num_classes=info.num_classes, pretrained_cfg_overlay=dict(info.pretrained_cfg),
        **info.model_kwargs)


def check_state_fits(model: nn.Module, state_dict: Dict[str, torch.Tensor], source: str) -> None:
    """Raise a RunError naming the mismatch, instead of torch's wall of keys, when a state dict does not fit."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state_dict) if own[k].shape != state_dict[k].shape)
    if missing or unexpected or wrong_shape:
        arch = type(model).__name__
        raise RunError(
            f'{source} does not fit {arch}: {len(missing)} missing, {len(unexpected)} unexpected, '
            f'{len(wrong_shape)} mis-shaped tensors (e.g. {(missing or unexpected or wrong_shape)[:3]}); '
            f'is it a checkpoint of another architecture?')


def load_state(model: nn.Module, state_dict: Dict[str, torch.Tensor], source: str) -> None:
    """Strict load with a message that names the mismatch."""
    check_state_fits(model, state_dict, source)
    model.load_state_dict(state_dict)


@dataclass
class TrainedRun:
    """A trained model with where it came from and which of its weights were taken."""
    model: nn.Module
    info: RunInfo
    checkpoint: Path
    ema: bool
    epoch: Optional[int]

    @property
    def run_dir(self) -> Path:
        return self.checkpoint.parent


def use_ema_weights(ckpt: Dict[str, Any], run_dir: Path, weights: str) -> bool:
    """'auto' takes the EMA weights only when the run's summary says they evaluated better."""
    if weights not in WEIGHT_CHOICES:
        raise RunError(f'weights must be one of {WEIGHT_CHOICES}, got {weights!r}')
    has_ema = 'state_dict_ema' in ckpt
    if weights == 'ema' and not has_ema:
        raise RunError(f'the checkpoint in {run_dir} has no EMA weights (train with --model-ema)')
    if weights == 'auto':
        return has_ema and ema_evaluated_better(run_dir)
    return weights == 'ema'


def load_run(run: Union[str, Path], weights: str = 'auto') -> TrainedRun:
    """The trained model (eval mode) of a run folder or checkpoint file, with EMA or raw weights."""
    checkpoint = find_checkpoint(run)
    ckpt = read_checkpoint(checkpoint)
    info = run_info_for(checkpoint, ckpt)
    ema = use_ema_weights(ckpt, checkpoint.parent, weights)
    model = build_model(info)
    load_state(model, ckpt['state_dict_ema' if ema else 'state_dict'], str(checkpoint))
    return TrainedRun(model.eval(), info, checkpoint, ema, ckpt.get('epoch'))


def load_trained_model(spec: Union[str, Path], use_ema: Optional[bool] = None) -> Tuple[nn.Module, RunInfo]:
    """A model in eval mode from a run folder, a checkpoint file, or an 'hf-hub:' / 'local-dir:' name.

    use_ema: None takes the EMA weights when the checkpoint has them and they evaluated better;
    True / False force the choice.
    """
    spec = str(spec)
    if spec.startswith(HUB_PREFIXES):
        model = timm.create_model(spec, pretrained=True).eval()
        cfg = model.pretrained_cfg
        labels = cfg.get('label_names') or [str(i) for i in range(model.num_classes)]
        info = RunInfo(
            model=spec, num_classes=model.num_classes, label_names=list(labels),
            pretrained_cfg={k: cfg.get(k) for k in DATA_CFG_KEYS})
        return model, info
    trained = load_run(spec, 'auto' if use_ema is None else ('ema' if use_ema else 'raw'))
    return trained.model, trained.info


def ema_evaluated_better(run_dir: Path) -> bool:
    """True when the run's best EMA top-1 beats its best raw top-1."""
    best = best_metrics(run_dir)
    return best.get('eval_ema_top1', float('-inf')) > best.get('eval_top1', float('-inf'))


def read_summary(run_dir: Union[str, Path]) -> List[Dict[str, float]]:
    import csv
    path = Path(run_dir) / SUMMARY
    if not path.is_file():
        return []
    with open(path, newline='') as f:
        return [{k: float(v) for k, v in row.items() if v not in ('', None)} for row in csv.DictReader(f)]


def best_metrics(run_dir: Union[str, Path]) -> Dict[str, float]:
    """The best value of each eval column over the run (max for accuracy, min for loss)."""
    rows = read_summary(run_dir)
    best: Dict[str, float] = {}
    for row in rows:
        for k, v in row.items():
            if not k.startswith('eval_'):
                continue
            better = min if k.endswith('loss') else max
            best[k] = better(best.get(k, v), v)
    return best
