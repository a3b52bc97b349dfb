"""One way to load a trained model from any source: 'hf-hub:' / 'local-dir:' names, a run folder or a checkpoint.

The report and the export both load through `load_model`, with one vocabulary for the weights choice
(weights.py): 'auto', 'ema' or 'raw'.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Union

import timm
import torch
import torch.nn as nn
from timm.models import clean_state_dict, split_model_name_tag

from ..errors import FctError
from .folder import RunFolder, RunInfo, read_checkpoint
from .weights import EMA_KEY, EPOCH_KEY, state_key

HUB_PREFIXES = ('hf-hub:', 'local-dir:')  # models timm loads itself, with their published weights


@dataclass
class LoadedModel:
    """A trained model (eval mode) and where it came from."""
    source: str  # as given: a hub name, a run folder or a checkpoint file
    model: nn.Module
    info: RunInfo
    folder: Optional[RunFolder] = None  # the checkpoint's folder; None for hub names
    checkpoint: Optional[Path] = None
    weights: Optional[str] = None  # 'ema' or 'raw' entry of the checkpoint; None for a hub model's only weights
    epoch: Optional[int] = None  # the checkpoint's epoch, which names the summary.csv row it was evaluated in


def check_model_name(name: str) -> None:
    """A name timm knows, and a tag its architecture has, else one line naming what there is: a run folder's
    config.json or checkpoint, or a command line, can name either."""
    if not timm.is_model(name):
        raise FctError(f'unknown model {name!r}; see timm.list_models() (FCT models: '
                       f'{", ".join(timm.list_models("*fct*"))})')
    arch, tag = split_model_name_tag(name)
    tags = [n.split('.', 1)[1] for n in timm.list_pretrained(f'{arch}.*')]
    if tag and tag not in tags:
        raise FctError(f'unknown pretrained tag {tag!r} of {arch}; its tags: {", ".join(tags) or "none"}')


def load_model(source: Union[str, Path], weights: str = 'auto') -> LoadedModel:
    """The model at `source`; for a run or checkpoint, its 'auto', 'ema' or 'raw' weights."""
    source = str(source)
    if source.startswith(HUB_PREFIXES):
        if weights not in ('auto', 'raw'):
            raise FctError(f'{source} has one set of weights; --weights {weights} applies to training runs')
        try:
            model = timm.create_model(source, pretrained=True)
        except OSError as e:  # huggingface_hub and file-system errors: offline, missing repo, unreadable file
            raise FctError(f'cannot load model {source}: {e}') from None
        info = RunInfo.from_cfg(source, model.pretrained_cfg, {'num_classes': model.num_classes})
        return LoadedModel(source, model.eval(), info)
    path = Path(source)
    checkpoint = RunFolder(path).find_checkpoint() if path.is_dir() else path
    folder = RunFolder(checkpoint.parent)
    ckpt = read_checkpoint(checkpoint)
    info = folder.info(ckpt)
    key = state_key(ckpt, weights, folder.ema_evaluated_better())
    check_model_name(info.model)
    try:
        model = timm.create_model(info.model, num_classes=info.num_classes, **info.model_args)
    except (TypeError, ValueError) as e:  # model arguments the architecture does not take
        raise FctError(f'{folder.path} names model arguments {info.model} does not take: {e}') from None
    load_state(model, ckpt[key], str(checkpoint))
    return LoadedModel(source, model.eval(), info, folder, checkpoint, 'ema' if key == EMA_KEY else 'raw',
                       ckpt.get(EPOCH_KEY))


def load_state(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Strict load, DDP and torch.compile prefixes stripped, with one message that names any mismatch."""
    try:
        result = model.load_state_dict(clean_state_dict(dict(state_dict)), strict=False)
    except RuntimeError as e:  # mis-shaped tensors; torch's message spans lines, an error line does not
        raise FctError(f'{source} does not fit {type(model).__name__}: {" ".join(str(e).split())}; is it a '
                       f'checkpoint of another architecture?') from None
    if result.missing_keys or result.unexpected_keys:
        raise FctError(
            f'{source} does not fit {type(model).__name__}: {len(result.missing_keys)} missing, '
            f'{len(result.unexpected_keys)} unexpected tensors (e.g. '
            f'{(result.missing_keys or result.unexpected_keys)[:3]}); is it a checkpoint of another architecture?')
