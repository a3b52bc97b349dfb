"""hub/: export a run in timm's Hub layout, load it back three ways offline, and push it with the network stubbed."""
import json
import os
import re
import shutil
import socket
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Dict, List

import huggingface_hub
import pytest
import timm
import torch
from safetensors.torch import load_file

import timm_fct  # noqa: F401  registers the models
from timm_fct.errors import FctError
from timm_fct.export import command as publish_cli
from timm_fct.export import hub
from timm_fct.export.hub import NO_TOKEN, export, push, validate_export
from timm_fct.runs.folder import RunFolder, RunInfo, read_checkpoint
from timm_fct.runs.load import load_model

from tests.support.helpers import BEST_CHECKPOINT, assert_same_tensors, run_offline, write_hub_cache

REPO_ID = 'org/fct-digits'
TOKEN = 'hf_secret_test_token_0123456789'
EXPORTED_FILES = ['README.md', 'accuracy.png', 'config.json', 'confusion_matrix.png', 'model.safetensors']




def _save_plot(path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [55.0, 50.0])
    fig.savefig(path)
    plt.close(fig)


@pytest.fixture(scope='module')
def exported(small_run, tmp_path_factory) -> Path:
    """The run exported once, with a report folder holding a confusion matrix."""
    report = tmp_path_factory.mktemp('report')
    _save_plot(report / 'confusion_matrix.png')
    return export(small_run, tmp_path_factory.mktemp('exported') / 'fct-digits', report_dir=report,
                  repo_id=REPO_ID)


@pytest.fixture(scope='module')
def run_info(small_run) -> RunInfo:
    return RunFolder(small_run).info()


# summary.csv of the doctored runs, written by the tests: (top-1, top-5) per epoch of the weights that evaluated
# better and of those that evaluated worse; each one's best epoch differs from its last, so the card's columns differ
BETTER = [(70.0, 95.0), (68.0, 94.0)]
WORSE = [(60.0, 90.0), (65.0, 92.0)]
EMA_WINS = {'ema-wins': True, 'ema-loses': False}  # the doctored runs, and whether EMA evaluated better in each
CARD_LINES = {  # weights, best top-1, best top-5, last top-1, last top-5; then which weights the card says it holds
    'ema-wins': ['| raw | 65.00 | 92.00 | 65.00 | 92.00 |', '| EMA (published) | 70.00 | 95.00 | 68.00 | 94.00 |',
                 f'| Published weights | EMA weights of `{BEST_CHECKPOINT}`'],
    'ema-loses': ['| raw (published) | 70.00 | 95.00 | 68.00 | 94.00 |', '| EMA | 65.00 | 92.00 | 65.00 | 92.00 |',
                  f'| Published weights | raw weights of `{BEST_CHECKPOINT}`'],
}


def write_summary(run: Path, raw: List[tuple], ema: List[tuple]) -> None:
    """summary.csv with train.py's columns and the given top-1 / top-5 of the raw and EMA weights."""
    lines = ['epoch,train_loss,eval_loss,eval_top1,eval_top5,lr,epoch_time,eval_ema_loss,eval_ema_top1,eval_ema_top5']
    lines += [f'{epoch},1.0,1.0,{r1},{r5},0.001,1.0,1.0,{e1},{e5}'
              for epoch, ((r1, r5), (e1, e5)) in enumerate(zip(raw, ema))]
    (run / 'summary.csv').write_text('\n'.join(lines) + '\n')


def doctored_run(run: Path, folder: Path, ema_wins: bool) -> Path:
    """A copy of the run (files linked, not copied) whose summary.csv says EMA evaluated better, or worse."""
    folder.mkdir()
    for path in run.iterdir():
        if path.name != 'summary.csv':
            (folder / path.name).symlink_to(path)
    write_summary(folder, raw=WORSE if ema_wins else BETTER, ema=BETTER if ema_wins else WORSE)
    return folder


@pytest.fixture(scope='module')
def checkpoint(small_run) -> dict:
    """The run's best checkpoint, whose raw and EMA weights must differ for the weight tests to tell them apart."""
    ckpt = read_checkpoint(small_run / BEST_CHECKPOINT)
    raw, ema = ckpt['state_dict'], ckpt['state_dict_ema']
    assert any(not torch.equal(raw[k], ema[k]) for k in raw), 'EMA weights equal the raw ones'
    return ckpt


@pytest.fixture(scope='module')
def doctored_runs(small_run, tmp_path_factory) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp('doctored')
    return {name: doctored_run(small_run, root / name, wins) for name, wins in EMA_WINS.items()}


@pytest.fixture(scope='module')
def doctored_exports(doctored_runs, tmp_path_factory) -> Dict[str, Path]:
    """Each doctored run exported with the default --weights auto."""
    root = tmp_path_factory.mktemp('doctored-exports')
    return {name: export(run, root / name, repo_id=REPO_ID) for name, run in doctored_runs.items()}


@pytest.fixture(scope='module')
def reference(small_run):
    """A fixed batch at the run's input size, and the logits of the model runs.load.load_model builds."""
    trained = load_model(small_run)
    x = torch.randn(4, *trained.info.data_config['input_size'], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return x, trained.model(x)


@pytest.fixture(scope='module')
def hub_cache(exported, tmp_path_factory) -> Path:
    """HF_HOME whose hub cache holds REPO_ID as a download of the exported folder would leave it."""
    hf_home = tmp_path_factory.mktemp('hf_home')
    write_hub_cache(hf_home, REPO_ID, {
        p.name: (lambda dst, src=p: shutil.copyfile(src, dst)) for p in exported.iterdir()})
    return hf_home


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to resolve or connect fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError('network access attempted')
    monkeypatch.setattr(socket, 'getaddrinfo', refuse)
    monkeypatch.setattr(socket.socket, 'connect', refuse)


@pytest.fixture
def fake_hub(monkeypatch, no_network) -> SimpleNamespace:
    """HfApi's network methods replaced at their boundary: calls are recorded, answers are the Hub's shape.

    upload_folder is the boundary of a push: the real one also asks the Hub to validate the card and, with
    hf_xet installed, uploads and commits through its own pipeline rather than create_commit."""
    hub = SimpleNamespace(calls=[], has_card=False, commits=[])
    monkeypatch.setenv('HF_TOKEN', TOKEN)

    def file_exists(self, repo_id, filename, **kwargs):
        hub.calls.append('file_exists')
        return hub.has_card and filename == 'README.md'

    def create_repo(self, repo_id, **kwargs):
        hub.calls.append('create_repo')
        assert kwargs.get('exist_ok') is True
        return huggingface_hub.RepoUrl(f'https://huggingface.co/{repo_id}')

    def upload_folder(self, repo_id, folder_path, **kwargs):
        hub.calls.append('upload_folder')
        files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir() if p.is_file()}
        hub.commits.append(dict(repo_id=repo_id, token=self.token, files=files, **kwargs))
        return SimpleNamespace(commit_url=f'https://huggingface.co/{repo_id}/commit/0123abc')

    for name, fn in (('file_exists', file_exists), ('create_repo', create_repo), ('upload_folder', upload_folder)):
        monkeypatch.setattr(huggingface_hub.HfApi, name, fn)
    return hub


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    for var in ('HF_TOKEN', 'HUGGING_FACE_HUB_TOKEN', 'HF_OIDC_RESOURCE'):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, 'HF_TOKEN_PATH', str(tmp_path / 'no-token'))


def run_cli(capsys, *argv: str) -> SimpleNamespace:
    rc = publish_cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return SimpleNamespace(rc=rc, out=out, err=err)


def test_export_writes_timm_hub_layout_with_run_config(exported, small_run, run_info):
    assert sorted(p.name for p in exported.iterdir()) == EXPORTED_FILES
    assert [p.name for p in exported.parent.iterdir()] == [exported.name]  # no temporary folder left
    umask = os.umask(0)
    os.umask(umask)
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in exported.iterdir()} == {oct(0o666 & ~umask)}
    assert oct(stat.S_IMODE(exported.stat().st_mode)) == oct(0o777 & ~umask)
    config = json.loads((exported / 'config.json').read_text())
    assert config == json.loads((small_run / 'config.json').read_text())  # the run folder's own
    assert config['architecture'] == run_info.model and config['num_classes'] == run_info.num_classes
    assert config['label_names'] == run_info.label_names
    assert 'num_classes' not in config['model_args']  # at the root only (runs/model_folder.py)
    for key in ('input_size', 'mean', 'std', 'crop_pct', 'interpolation'):
        expected = run_info.data_config[key]
        assert config['pretrained_cfg'][key] == (list(expected) if isinstance(expected, tuple) else expected), key


def test_model_card_describes_the_run(exported, small_run, run_info):
    card = (exported / 'README.md').read_text()
    front_matter = card.split('---\n')[1]
    for line in ('library_name: timm', 'license: apache-2.0', '- image-classification', '- timm'):
        assert line in front_matter.splitlines()
    assert 'Learning to Pay Multiple Attention with Fully Convolutional Transformers' in card
    assert 'Mensah, Bah and Brink' in card
    assert '](accuracy.png)' in card and '](confusion_matrix.png)' in card
    assert run_info.dataset in card and (small_run / 'args.yaml').read_text().strip() in card
    assert f"timm.create_model('hf-hub:{REPO_ID}', pretrained=True)" in card


@pytest.mark.parametrize('run, weights, expected', [
    ('ema-wins', 'auto', 'state_dict_ema'),
    ('ema-loses', 'auto', 'state_dict'),
    ('ema-wins', 'raw', 'state_dict'),
    ('ema-loses', 'ema', 'state_dict_ema'),
])
def test_weights_flag_picks_ema_or_raw(doctored_runs, checkpoint, run, weights, expected):
    """auto takes EMA exactly when the run's summary says it evaluated better; ema and raw override it."""
    assert_same_tensors(load_model(doctored_runs[run], weights).model.state_dict(), checkpoint[expected])


@pytest.mark.parametrize('run', EMA_WINS)
def test_exported_weights_are_the_better_evaluated_ones(doctored_exports, checkpoint, run):
    expected = checkpoint['state_dict_ema' if EMA_WINS[run] else 'state_dict']
    assert_same_tensors(load_file(str(doctored_exports[run] / 'model.safetensors')), expected)


@pytest.mark.parametrize('run', EMA_WINS)
def test_model_card_marks_the_published_weights(doctored_exports, run):
    card = (doctored_exports[run] / 'README.md').read_text()
    for line in CARD_LINES[run]:
        assert line in card, card


def test_local_dir_loads_with_identical_logits(exported, reference, run_info):
    x, logits = reference
    model = timm.create_model(f'local-dir:{exported}', pretrained=True).eval()
    assert model.pretrained_cfg['label_names'] == run_info.label_names
    with torch.no_grad():
        torch.testing.assert_close(model(x), logits, rtol=0, atol=0)


HUB_LOADS = {
    'hf-hub': f"timm.create_model('hf-hub:{REPO_ID}', pretrained=True)",
    'cfg-overlay': (  # the architecture's name with the repo as its weights, timm's pretrained_cfg_overlay; the
        # run's preprocessing and labels as a default_cfgs entry would state them, its model arguments the caller's
        f"timm.create_model(info.model, pretrained=True, pretrained_cfg_overlay=dict(hf_hub_id='{REPO_ID}', "
        "num_classes=info.num_classes, label_names=info.label_names, **info.data_config), **info.model_args)"),
}


@pytest.mark.parametrize('create', HUB_LOADS.values(), ids=HUB_LOADS.keys())
def test_hub_cache_loads_offline_with_identical_logits(create, hub_cache, reference, small_run, tmp_path):
    x, logits = reference
    torch.save(x, tmp_path / 'x.pt')
    code = f"""
import timm, timm_fct, torch
from timm_fct.runs.folder import RunFolder
torch.set_num_threads({torch.get_num_threads()})
info = RunFolder({str(small_run)!r}).info()
model = {create}.eval()
assert model.pretrained_cfg['label_names'] == info.label_names, model.pretrained_cfg
with torch.no_grad():
    torch.save(model(torch.load({str(tmp_path / 'x.pt')!r})), {str(tmp_path / 'logits.pt')!r})
"""
    result = run_offline(hub_cache, code)
    assert result.returncode == 0, result.stderr
    torch.testing.assert_close(torch.load(tmp_path / 'logits.pt'), logits, rtol=0, atol=0)


def test_push_sends_the_export_as_one_commit(fake_hub, small_run, run_info, exported, capsys):
    result = run_cli(capsys, small_run, '--repo-id', REPO_ID)
    assert result.rc == 0, result.err
    assert fake_hub.calls == ['file_exists', 'create_repo', 'upload_folder']
    commit, = fake_hub.commits
    assert commit['repo_id'] == REPO_ID and commit['token'] == TOKEN
    assert commit['commit_message'] == f'Add {run_info.model} weights trained with timm-fct {timm_fct.__version__}'
    assert sorted(commit['files']) == [f for f in EXPORTED_FILES if f != 'confusion_matrix.png']
    assert commit['files']['model.safetensors'] == (exported / 'model.safetensors').read_bytes()
    assert f'hf-hub:{REPO_ID}' in commit['files']['README.md'].decode()
    assert f'published {REPO_ID}' in result.out
    assert TOKEN not in result.out + result.err


def test_push_keeps_an_existing_model_card_unless_told(fake_hub, exported):
    fake_hub.has_card = True
    with pytest.raises(FctError, match='already has a model card.*--overwrite-card'):
        push(exported, REPO_ID)
    assert fake_hub.calls == ['file_exists'] and not fake_hub.commits
    push(exported, REPO_ID, overwrite_card=True)
    assert 'README.md' in fake_hub.commits[0]['files']


def test_dry_run_lists_the_upload_without_network_or_token(no_network, no_token, small_run, capsys):
    result = run_cli(capsys, small_run, '--repo-id', REPO_ID, '--dry-run')
    assert result.rc == 0, result.err
    assert f'would upload to https://huggingface.co/{REPO_ID}' in result.out
    size = (small_run / 'accuracy.png').stat().st_size
    assert re.search(rf'accuracy\.png +{size / 1e3:.1f} kB', result.out), result.out
    assert re.search(r'model\.safetensors +\d+\.\d MB', result.out), result.out
    assert 'nothing was sent' in result.out


def _missing(run: Path, tmp: Path) -> Path:
    return tmp / 'no-such-run'


def _truncated(run: Path, tmp: Path) -> Path:
    copy = shutil.copytree(run, tmp / 'truncated-run')
    data = (run / BEST_CHECKPOINT).read_bytes()
    (copy / BEST_CHECKPOINT).write_bytes(data[:len(data) // 2])
    return copy


def _other_architecture(run: Path, tmp: Path) -> Path:
    copy = shutil.copytree(run, tmp / 'other-arch-run')
    torch.save({'state_dict': timm.create_model('resnet18_cifar').state_dict()}, copy / BEST_CHECKPOINT)
    return copy


BAD_RUNS: Dict[str, tuple] = {
    'missing': (_missing, 'does not exist'),
    'truncated': (_truncated, 'truncated'),
    'other-architecture': (_other_architecture, 'another architecture'),
}


@pytest.mark.parametrize('make, message', BAD_RUNS.values(), ids=BAD_RUNS.keys())
def test_bad_checkpoint_fails_clearly_and_leaves_nothing(make: Callable, message, small_run, tmp_path, capsys):
    run = make(small_run, tmp_path)
    before = sorted(tmp_path.iterdir())
    result = run_cli(capsys, run, '--out', tmp_path / 'export')
    assert result.rc == 2 and message in result.err, result.err
    assert sorted(tmp_path.iterdir()) == before


def test_export_onto_an_existing_folder_is_refused_and_changes_nothing(small_run, tmp_path, capsys):
    """--out names a folder that exists (a previous export, or anything else): one error line, its files as they were."""
    out = tmp_path / 'export'
    out.mkdir()
    (out / 'README.md').write_text('an earlier export\n')
    result = run_cli(capsys, small_run, '--out', out)
    assert result.rc == 2 and result.err.strip().splitlines() == [f'error: {out} already exists: remove it or choose '
                                                                  f'another --out']
    assert [p.name for p in out.iterdir()] == ['README.md'] and (out / 'README.md').read_text() == 'an earlier export\n'
    assert [p.name for p in tmp_path.iterdir()] == ['export']


def test_an_out_folder_the_file_system_refuses_is_one_line(small_run, tmp_path, capsys):
    """--out inside a file (as on a read-only or full file system, the folder cannot be made): exit code 5, one
    line naming it, nothing written."""
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder\n')
    result = run_cli(capsys, small_run, '--out', blocker / 'export')
    err = result.err.splitlines()
    assert result.rc == 5 and len(err) == 1 and err[0].startswith('error: ') and str(blocker) in err[0], err
    assert [p.name for p in tmp_path.iterdir()] == ['a_file']


def test_export_failing_after_its_temporary_folder_exists_leaves_nothing(small_run, tmp_path, monkeypatch, capsys):
    """config.json saved for another head: validation refuses the folder after the weights were written into it."""
    saved_in = []
    write_model_folder = hub.write_model_folder

    def write_config_for_another_head(folder, *args, **kwargs):
        write_model_folder(folder, *args, **kwargs)
        saved_in.append(Path(folder))
        _edit_config(folder)

    monkeypatch.setattr(hub, 'write_model_folder', write_config_for_another_head)
    result = run_cli(capsys, small_run, '--out', tmp_path / 'export')
    assert result.rc == 2 and 'model.safetensors does not match config.json' in result.err, result.err
    assert [p.parent for p in saved_in] == [tmp_path]  # it failed in a temporary folder beside --out
    assert list(tmp_path.iterdir()) == []


def test_interrupted_export_leaves_nothing(small_run, tmp_path, monkeypatch):
    """Ctrl-C while the model card is written, after the weights: no folder, no hidden temporary folder."""
    def interrupt(*args, **kwargs):
        assert any(tmp_path.glob('.export.*/model.safetensors'))  # the temporary folder holds the weights
        raise KeyboardInterrupt

    monkeypatch.setattr(hub, 'model_card', interrupt)
    with pytest.raises(KeyboardInterrupt):
        export(small_run, tmp_path / 'export')
    assert list(tmp_path.iterdir()) == []


def _edit_config(folder: Path) -> None:
    config = json.loads((folder / 'config.json').read_text())
    config['model_args']['num_classes'] = 5
    (folder / 'config.json').write_text(json.dumps(config))


def _truncate_weights(folder: Path) -> None:
    data = (folder / 'model.safetensors').read_bytes()
    (folder / 'model.safetensors').write_bytes(data[:len(data) // 2])


BAD_EXPORTS = {
    'config-of-another-head': (_edit_config, 'model.safetensors does not match config.json'),
    'truncated-weights': (_truncate_weights, 'cannot be read'),
}


@pytest.mark.parametrize('damage, message', BAD_EXPORTS.values(), ids=BAD_EXPORTS.keys())
def test_export_not_matching_its_config_is_refused_before_upload(damage, message, exported, fake_hub, tmp_path):
    folder = shutil.copytree(exported, tmp_path / 'export')
    damage(folder)
    with pytest.raises(FctError, match=message):
        validate_export(folder)
    with pytest.raises(FctError, match=message):
        push(folder, REPO_ID)
    assert fake_hub.calls == []


@pytest.mark.parametrize('repo_id', ['fct-digits', 'org/fct/digits', 'org/fct digits', 'org/-fct', 'org/a--b'])
def test_malformed_repo_id_is_refused_up_front(repo_id, no_network, small_run, tmp_path, capsys):
    result = run_cli(capsys, small_run, '--repo-id', repo_id, '--out', tmp_path / 'export')
    assert result.rc == 2 and f'malformed repo id {repo_id!r}' in result.err, result.err
    assert list(tmp_path.iterdir()) == []  # refused before the export: nothing written, no network (no_network)


def test_push_without_token_says_how_to_log_in(no_token, no_network, small_run, exported, tmp_path, capsys):
    result = run_cli(capsys, small_run, '--repo-id', REPO_ID, '--out', tmp_path / 'export')
    assert result.rc == 2 and NO_TOKEN in result.err, result.err
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FctError, match='no Hugging Face token'):
        push(exported, REPO_ID)


def test_offline_with_empty_cache_fails_fast_naming_repo_and_cause(tmp_path):
    result = run_offline(tmp_path, f"import timm, timm_fct; timm.create_model('hf-hub:{REPO_ID}', pretrained=True)")
    assert result.returncode != 0
    # it failed on the offline switch, before any request (the message names it), and cached nothing
    assert REPO_ID in result.stderr and 'HF_HUB_OFFLINE' in result.stderr, result.stderr
    assert not any(p.is_file() for p in (tmp_path / 'hub').rglob('*')), sorted((tmp_path / 'hub').rglob('*'))
