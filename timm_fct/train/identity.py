"""Whether a run folder or checkpoint holds the run a command line asks for: the one owner of a run's identity.

`--resume PATH`, `--resume auto` and the Table 1 protocol all ask `check_same_run`. It is safe by construction:
every resolved training setting (train's parser, after resolution: the lr from its base, the preprocessing from
the model, the class count from the dataset) is part of a run's identity, except the few in NOT_IDENTITY, each
with the reason it cannot change what the run computes. A flag added to the parser later is covered without
anyone remembering to list it.
"""
import argparse
from pathlib import Path
from typing import Any, Dict, Mapping

import torch

from ..errors import FctError
from .args import build_parser

_WHERE = 'where the run lives or what it continues from, not what it computes'
_SHOWN = 'what is shown or kept on disk, not what is computed'
_HOW = ('how the same computation is carried out (device, processes, memory layout, compiler); results agree to '
        'round-off, and with the PIL pipeline the worker count redraws the random augmentation from the same '
        'distribution')
NOT_IDENTITY: Dict[str, str] = {
    'config': "the config file's name: the values it sets are the other settings",
    'data': 'where the dataset lies (the dataset is --dataset and its splits)',
    'data_dir': 'where the dataset lies (the dataset is --dataset and its splits)',
    'dataset_download': 'whether a missing dataset may be fetched',
    'output': _WHERE,
    'experiment': _WHERE,
    'resume': _WHERE,
    'no_progress': _SHOWN,
    'log_interval': _SHOWN + ' (the loss is read, and checked to be finite, every this many updates)',
    'checkpoint_hist': _SHOWN,
    'device': _HOW,
    'dist_backend': _HOW,
    'dist_url': _HOW,
    'dist_timeout': 'how long a distributed start-up or collective may wait before the worker gives up',
    'distributed': 'derived from --world-size, which is part of the identity',
    'rank': _HOW,
    'local_rank': _HOW,
    'workers': _HOW,
    'pin_mem': _HOW,
    'channels_last': _HOW,
    'torchcompile': _HOW,
    'torchcompile_mode': _HOW,
}


def plain(value: Any) -> Any:
    """A setting as YAML stores it and as it compares: tuples as lists, devices and paths as strings."""
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (torch.device, Path)):
        return str(value)
    return value


def plain_settings(args: argparse.Namespace) -> Dict[str, Any]:
    """Every resolved setting of a run, as args.yaml records it."""
    return {k: plain(v) for k, v in vars(args).items()}


def identity(settings: Mapping[str, Any]) -> Dict[str, Any]:
    """The settings that make a run what it is: all but NOT_IDENTITY."""
    return {k: plain(v) for k, v in settings.items() if k not in NOT_IDENTITY}


def parser_flags() -> Dict[str, tuple]:
    """{setting: (its flag as users type it, its default)} for every flag of train's parser."""
    return {a.dest: (max(a.option_strings, key=len) if a.option_strings else a.dest, a.default)
            for a in build_parser()._actions if a.dest != 'help'}


def differences(saved: Mapping[str, Any], current: argparse.Namespace) -> Dict[str, tuple]:
    """{setting: (now, in the run)} for every identity setting that differs. A setting the run does not record
    (its folder predates the flag) counts as the flag's default, the behaviour the run had."""
    defaults = {k: plain(default) for k, (_, default) in parser_flags().items()}
    now, then = identity(vars(current)), identity(saved)
    return {k: (v, then.get(k, defaults.get(k))) for k, v in sorted(now.items()) if v != then.get(k, defaults.get(k))}


def check_same_run(saved: Mapping[str, Any], current: argparse.Namespace, source: str) -> None:
    """Refuse, naming each differing flag, settings that would make `current` another run than the one `saved`
    (its resolved settings, from args.yaml or a checkpoint) records. A run that records none (a folder not yet
    started, a bare state dict) has nothing to compare."""
    if not saved:
        return
    differ = differences(saved, current)
    if differ:
        names = {k: name for k, (name, _) in parser_flags().items()}
        listed = '; '.join(f'{names.get(k, k)} {now!r} (the run has {then!r})' for k, (now, then) in differ.items())
        raise FctError(f'{source}: a resumed run keeps its settings, but {listed}; drop these flags, or start a '
                       f'new run (another --experiment or --output)')
