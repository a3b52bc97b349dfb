"""What a run folder and its Hub export record, checked against the command line that made them.

Every expected value below is a literal of COMMAND, never read back through RunFolder or the export: a run
that recorded the model's defaults instead of the flags, or an export that dropped them, fails here.
"""
import json
from pathlib import Path

import pytest
import timm
import yaml

from tests.support.helpers import SMALL_MODEL
from timm_fct.export.hub import export

IMG_SIZE = 10  # neither the model's default (32) nor the digits' (16)
MEAN, STD = [0.25, 0.3, 0.35], [0.5, 0.55, 0.6]
CROP_PCT, INTERPOLATION = 0.8, 'bicubic'
TAPS = [2, 3]  # not the default (1, 2, 3)
COMMAND = ('--no-progress', '--epochs', '1', '-b', '64', '--model', SMALL_MODEL, '--img-size', str(IMG_SIZE),
           '--mean', *map(str, MEAN), '--std', *map(str, STD), '--crop-pct', str(CROP_PCT),
           '--interpolation', INTERPOLATION, '--model-kwargs', 'embed_dim=32', 'taps=(2, 3)')


@pytest.fixture(scope='module')
def run(tmp_path_factory) -> Path:
    """One tiny train.py run (in-process) with non-default preprocessing and model arguments."""
    from timm_fct.train import command
    out = tmp_path_factory.mktemp('cmdline')
    assert command.main([*COMMAND, '--output', str(out), '--experiment', 'run']) == 0
    return out / 'run'


def assert_config_is_the_command_line(config: dict) -> None:
    """A timm config.json as the command line asked for: architecture, model arguments and preprocessing."""
    assert config['architecture'] == SMALL_MODEL
    assert config['num_classes'] == 10 and config['label_names'] == [str(i) for i in range(10)]
    passed = {'embed_dim': 32, 'taps': TAPS}  # timm adds in_chans and global_pool
    assert {k: config['model_args'].get(k) for k in passed} == passed
    assert 'num_classes' not in config['model_args']  # at the root only, where timm and transformers read it
    cfg = config['pretrained_cfg']
    assert cfg['input_size'] == [3, IMG_SIZE, IMG_SIZE]
    assert (cfg['mean'], cfg['std']) == (MEAN, STD)
    assert (cfg['crop_pct'], cfg['interpolation']) == (CROP_PCT, INTERPOLATION)


def test_run_folder_config_json_is_the_command_line(run):
    assert_config_is_the_command_line(json.loads((run / 'config.json').read_text()))


def test_args_yaml_records_the_command_line(run):
    args = yaml.safe_load((run / 'args.yaml').read_text())
    assert args['model'] == SMALL_MODEL and args['img_size'] == IMG_SIZE
    assert (args['mean'], args['std']) == (MEAN, STD)
    assert (args['crop_pct'], args['interpolation']) == (CROP_PCT, INTERPOLATION)
    assert args['model_kwargs'] == {'embed_dim': 32, 'taps': TAPS}
    assert args['epochs'] == 1 and args['batch_size'] == 64


def test_hub_export_config_json_is_the_command_line(run, tmp_path):
    exported = export(run, tmp_path / 'hub')
    assert_config_is_the_command_line(json.loads((exported / 'config.json').read_text()))


def test_timm_resolves_the_run_to_the_command_lines_preprocessing(run):
    """timm's own loader and data config: what a user of `local-dir:RUN` preprocesses with."""
    model = timm.create_model(f'local-dir:{run}', pretrained=True)
    config = timm.data.resolve_data_config({}, model=model)
    assert config['input_size'] == (3, IMG_SIZE, IMG_SIZE)
    assert (list(config['mean']), list(config['std'])) == (MEAN, STD)
    assert (config['crop_pct'], config['interpolation']) == (CROP_PCT, INTERPOLATION)
    assert model.taps == tuple(TAPS) and model.num_classes == 10
