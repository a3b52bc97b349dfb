"""A run's identity: every setting that can change a result is part of it, so a rerun that changes one is refused.

The parser is walked flag by flag: a flag added to training later is checked here without anyone listing it, and
fails this test (naming itself) until it has a value to change to below or a reason in NOT_IDENTITY.
"""
import argparse
import copy
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from tests.support.dataset_files import write_image_folder
from tests.support.helpers import SMALL_RUN_ARGS
from timm_fct.errors import FctError
from timm_fct.train.args import build_parser
from timm_fct.train.command import resolved_settings
from timm_fct.train.identity import NOT_IDENTITY, check_same_run, plain_settings

BASE = ['--img-size', '8', '-b', '32', '--epochs', '2', '--model-kwargs', 'embed_dim=32', '--device', 'cpu']
# another valid value for each flag whose type alone does not give one
OTHER_VALUES = {
    'model': 'resnet18_fct_ln_cifar',
    'model_kwargs': 'embed_dim=16',
    'interpolation': 'bicubic',
    'opt': 'adamw',
    'sched': 'cosine',
    'train_split': 'training',  # the digits read it as their training split, so it resolves
    'val_split': 'test',
    'input_key': 'img',
    'target_key': 'digit',
    'mean': ['0.2', '0.3', '0.4'],
    'std': ['0.5', '0.6', '0.7'],
    'hflip': '0.25',
    'vflip': '0.25',
}
# flags whose other value the digits cannot resolve: set on the resolved settings instead
UNRESOLVABLE_HERE = {
    'sync_bn': True,  # needs CUDA devices
    'num_classes': 5,  # the digits have 10
}


def other_value(action: argparse.Action, current) -> Optional[List[str]]:
    """Command-line words that change `action`'s setting from `current`, its resolved value; None if unknown."""
    if action.dest in OTHER_VALUES:
        value = OTHER_VALUES[action.dest]
        return value if isinstance(value, list) else [value]
    if isinstance(action, argparse._StoreTrueAction):
        return []
    if action.choices:
        return [next(str(c) for c in action.choices if c != current and c != 'auto')]
    if action.type is int:
        return [str((current or 2) + 1)]
    if action.type is float:
        return [str(0.4 if current == 0.3 else 0.3)]
    return None


def identity_flags() -> Dict[str, argparse.Action]:
    return {a.dest: a for a in build_parser()._actions if a.dest != 'help' and a.dest not in NOT_IDENTITY}


def test_not_identity_is_short_and_every_entry_is_a_setting_with_a_reason():
    settings = {a.dest for a in build_parser()._actions} | {'distributed', 'rank', 'local_rank', 'world_size'}
    assert set(NOT_IDENTITY) <= settings, set(NOT_IDENTITY) - settings
    assert all(reason.strip() for reason in NOT_IDENTITY.values())
    assert len(NOT_IDENTITY) < len(identity_flags()) / 2


def test_a_rerun_that_changes_any_setting_outside_not_identity_is_refused_naming_the_flag(tmp_path):
    """For every flag of training's parser outside NOT_IDENTITY: the settings of BASE with that flag changed, resolved
    as training resolves them, are refused against BASE's, with the flag's name in the one error message."""
    base = resolved_settings(BASE)
    saved = plain_settings(base)
    folder = tmp_path / 'images'
    write_image_folder(folder, {'train': 2, 'validation': 2})
    checked = []
    for dest, action in identity_flags().items():
        flag = max(action.option_strings, key=len)
        if dest in UNRESOLVABLE_HERE:
            changed = copy.copy(base)
            setattr(changed, dest, UNRESOLVABLE_HERE[dest])
        elif dest == 'dataset':
            changed = resolved_settings([*BASE, '--dataset', '', '--data-dir', str(folder)])
        else:
            words = other_value(action, getattr(base, dest))
            assert words is not None, f'{flag}: give it another valid value in OTHER_VALUES, or a reason in NOT_IDENTITY'
            changed = resolved_settings([*BASE, flag, *words])
        assert getattr(changed, dest) != getattr(base, dest), flag
        with pytest.raises(FctError) as refused:
            check_same_run(saved, changed, 'the run')
        assert f' {flag} ' in str(refused.value), (flag, str(refused.value))
        checked.append(flag)
    assert {'--pct-start', '--div-factor', '--final-div-factor', '--onecycle-three-phase', '--amp',
            '--interpolation', '--seed', '--model-kwargs'} <= set(checked)


def test_the_same_settings_are_accepted_whatever_not_identity_says():
    base = resolved_settings(BASE)
    moved = resolved_settings([*BASE, '--output', 'elsewhere', '--experiment', 'x', '--workers', '2',
                               '--log-interval', '7', '--checkpoint-hist', '3', '--no-progress', '--channels-last'])
    check_same_run(plain_settings(base), moved, 'the run')


def test_a_run_that_predates_a_flag_had_its_default():
    """A run folder written before --onecycle-three-phase existed: the flag's default is what it trained with."""
    base = resolved_settings(BASE)
    saved = plain_settings(base)
    del saved['onecycle_three_phase']
    check_same_run(saved, base, 'the run')
    with pytest.raises(FctError, match=r'--onecycle-three-phase True \(the run has False\)'):
        check_same_run(saved, resolved_settings([*BASE, '--onecycle-three-phase']), 'the run')


def files_state(folder: Path) -> dict:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


@pytest.mark.parametrize('resume', ['path', 'auto'])
def test_a_changed_schedule_is_refused_by_resume_and_changes_nothing(small_run, capsys, resume):
    """The shared small run resumed with --pct-start changed: one error line naming only that flag; the run folder
    is left as it was (a schedule changed part-way would silently give another run)."""
    from timm_fct.train import command
    before = files_state(small_run)
    where = (['--resume', str(small_run / 'last.pth.tar')] if resume == 'path' else
             ['--resume', 'auto', '--output', str(small_run.parent), '--experiment', small_run.name])
    assert command.main(['--no-progress', *SMALL_RUN_ARGS, '--pct-start', '0.5', *where]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith('error: --resume'), err
    assert 'a resumed run keeps its settings, but --pct-start 0.5 (the run has 0.3); drop' in err[0]
    assert files_state(small_run) == before
