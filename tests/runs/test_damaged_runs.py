"""A run folder damaged after training (a file missing, config.json edited by hand) loads as far as it can, or is
refused in one line naming what is wrong; loading never changes the folder."""
import json
import shutil
from pathlib import Path
from typing import Callable

import pytest

from timm_fct.errors import FctError
from timm_fct.runs.load import load_model


def folder_state(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def edit_config(value, *keys: str) -> Callable[[Path], None]:
    """config.json with the entry at `keys` (nested) set to `value`."""
    def edit(run: Path) -> None:
        config = json.loads((run / 'config.json').read_text())
        entry = config
        for key in keys[:-1]:
            entry = entry[key]
        entry[keys[-1]] = value
        (run / 'config.json').write_text(json.dumps(config))
    return edit


def without(*names: str) -> Callable[[Path], None]:
    def remove(run: Path) -> None:
        for name in names:
            (run / name).unlink()
    return remove


@pytest.mark.parametrize('damage,message', [
    (without('model_best.pth.tar', 'last.pth.tar'), 'no checkpoint in .*: expected model_best.pth.tar or last.pth.tar'),
    (lambda run: (run / 'config.json').write_text('{"architecture": "fct_bn", '), 'is not a timm model config'),
    (edit_config('resnet50_fct_gn', 'architecture'), "unknown model 'resnet50_fct_gn'"),
    (edit_config('resnet18_fct_bn_cifar.in22k', 'architecture'), "unknown pretrained tag 'in22k'"),
    (edit_config(7, 'pretrained_cfg', 'num_classes'), 'does not fit FctNet: .*size mismatch'),
], ids=['no-checkpoint', 'config-not-json', 'unknown-model', 'unknown-tag', 'other-class-count'])
def test_a_damaged_run_folder_is_refused_in_one_line_and_left_as_it_was(small_run, tmp_path, damage, message):
    run = shutil.copytree(small_run, tmp_path / 'run')
    damage(run)
    before = folder_state(run)
    with pytest.raises(FctError, match=message):
        load_model(run)
    assert folder_state(run) == before


def test_a_run_folder_without_config_json_or_args_yaml_loads_from_its_checkpoint(small_run, tmp_path):
    """The checkpoint records the architecture and the training arguments: enough to rebuild the model."""
    run = shutil.copytree(small_run, tmp_path / 'run')
    without('config.json', 'args.yaml')(run)
    loaded = load_model(run)
    assert (loaded.info.model, loaded.info.num_classes) == ('resnet18_fct_bn_cifar', 10)
    assert loaded.info.model_args == {'embed_dim': 32}
