"""`python -m timm_fct.table1`: the whole Table 1 protocol on the digits at the tiniest settings, run again, interrupted, refused.

One protocol run (two rows, two seeds, two epochs at 8 px, offline with an empty Hugging Face cache) is made once
per session and copied for each xdist worker; the interrupted run repeats one of its runs and must end equal.
"""
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.support.helpers import REPO, run_offline, summary_rows, write_hub_cache
from tests.support.runs import made_once
from timm_fct.table1 import protocol
from timm_fct.table1.table import RowResult, markdown, run_result

ROWS = ('resnet50', 'fct_bn')
TINY = ('--epochs', '2', '--img-size', '8')  # --img-size goes through to training unchanged
SEEDS = (1, 2)


def table1_command(out: Path, *args: str) -> list:
    return [sys.executable, '-m', 'timm_fct.table1', '--out', str(out), *args]


def offline_env(hf_home: Path) -> dict:
    return dict(os.environ, HF_HOME=str(hf_home), HF_HUB_OFFLINE='1', HF_HUB_DISABLE_TELEMETRY='1')


def run_table1(out: Path, *args: str, hf_home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(table1_command(out, *args), cwd=REPO, capture_output=True, text=True, timeout=3600,
                          env=offline_env(hf_home))


PROTOCOL_ARGS = ('--seeds', '2', '--rows', *ROWS, *TINY)


@pytest.fixture(scope='module')
def table1_run(tmp_path_factory: pytest.TempPathFactory, worker_id: str):
    """The protocol once per session, copied into this worker's folder (the tests rerun into and compare it)."""
    def make(folder: Path) -> None:
        result = run_table1(folder / 'out', *PROTOCOL_ARGS, hf_home=folder / 'hf_home')
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        (folder / 'stdout.txt').write_text(result.stdout)

    root = tmp_path_factory.mktemp('table1') / 'copy'
    shutil.copytree(made_once(tmp_path_factory, worker_id, 'table1_run', make), root)
    return root, SimpleNamespace(stdout=(root / 'stdout.txt').read_text())


def table(out: Path) -> dict:
    return json.loads((out / 'table.json').read_text())


def files_state(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob('*')) if p.is_file()}


def test_protocol_writes_the_table_the_plot_and_a_folder_per_run(table1_run):
    root, result = table1_run
    out = root / 'out'
    assert 'NOT CIFAR-10' in result.stdout
    text = (out / 'table.md').read_text()
    assert 'These are NOT CIFAR-10 numbers' in text
    header = next(line for line in text.splitlines() if line.startswith('| row |'))
    assert header.index('last-epoch top-1') < header.index('best top-1')
    assert (out / 'table1.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    for row in ROWS:
        for seed in SEEDS:
            run = out / 'runs' / f'{row}-seed{seed}'
            assert [r['epoch'] for r in summary_rows(run)] == ['0', '1'], run
            assert (run / 'last.pth.tar').is_file()
    assert not [p for p in out.rglob('*') if p.name.startswith('.') or p.name.endswith('.tmp')]
    rows = {r['row']: r for r in table(out)['rows']}
    assert [rows[name]['status'] for name in ROWS] == ['complete', 'complete']
    assert [rows[name]['paper_top1'] for name in ROWS] == [92.87, 93.35]


def test_unavailable_row_is_reported_not_run_with_the_reason(tmp_path):
    """Offline with an empty cache the pre-trained row cannot load its ImageNet weights: reported, not run, the
    table written with its line."""
    out = tmp_path / 'out'
    result = run_table1(out, '--seeds', '1', '--rows', 'pretrained', '--epochs', '1', hf_home=tmp_path / 'hf_home')
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    row = {r['row']: r for r in table(out)['rows']}['pretrained']
    assert row['status'].startswith('not run:') and 'timm/resnet18.a1_in1k' in row['status']
    assert row['seeds_done'] == 0 and row['last_top1'] == {'mean': None, 'std': None}
    assert 'pretrained: NOT RUN' in result.stdout
    assert not (out / 'runs' / 'pretrained-seed1').exists()
    assert '| ours (pre-trained) |' in (out / 'table.md').read_text()


def test_flags_a_row_cannot_take_are_refused_before_anything_trains(tmp_path, capsys):
    """--img-size 8 goes to every row; the pre-trained row's ImageNet stem needs 32 px: one line naming the row."""
    assert protocol.main(['--out', str(tmp_path / 'out'), '--rows', 'fct_bn', 'pretrained', *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: training rejects the flags of row pretrained:'), err
    assert '--img-size 8' in err[0] and '32 px' in err[0]
    assert not (tmp_path / 'out').exists()


def test_table_statistics_equal_those_of_each_runs_summary(table1_run):
    """Means and sample standard deviations, computed here from each run's summary.csv."""
    root, _ = table1_run
    rows = {r['row']: r for r in table(root / 'out')['rows']}
    for name in ROWS:
        top1 = [[float(r['eval_top1']) for r in summary_rows(root / 'out' / 'runs' / f'{name}-seed{s}')]
                for s in SEEDS]
        for key, values in (('last_top1', [t[-1] for t in top1]), ('best_top1', [max(t) for t in top1])):
            assert rows[name][key] == {'mean': pytest.approx(statistics.mean(values), abs=1e-9),
                                       'std': pytest.approx(statistics.stdev(values), abs=1e-9)}, (name, key)
        assert rows[name]['seeds_done'] == 2 and rows[name]['seeds_requested'] == 2


def test_second_invocation_trains_nothing(table1_run):
    root, _ = table1_run
    out = root / 'out'
    before, rows_before = files_state(out / 'runs'), table(out)['rows']
    result = run_table1(out, *PROTOCOL_ARGS, hf_home=root / 'hf_home')
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count('skipped, finished earlier') == len(ROWS) * len(SEEDS)
    assert 'starting' not in result.stdout and 'resuming' not in result.stdout
    assert files_state(out / 'runs') == before
    assert table(out)['rows'] == rows_before


def test_interrupted_run_is_resumed_not_restarted_and_ends_as_if_never_interrupted(table1_run, tmp_path):
    """SIGKILL to the whole invocation once its first epoch is in; the next invocation continues from it."""
    root, _ = table1_run
    out, args = tmp_path / 'out', ('--seeds', '1', '--rows', 'fct_bn', *TINY)
    run = out / 'runs' / 'fct_bn-seed1'
    proc = subprocess.Popen(table1_command(out, *args), cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env=offline_env(root / 'hf_home'), start_new_session=True)
    for line in proc.stdout:
        if 'fct_bn seed 1 | epoch 1/2' in line:  # training prints it after the epoch's checkpoint is saved
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    first_epoch = summary_rows(run)
    assert [r['epoch'] for r in first_epoch] == ['0']

    result = run_table1(out, *args, hf_home=root / 'hf_home')
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'resuming after epoch 1/2' in result.stdout
    rows = summary_rows(run)
    assert rows[0] == first_epoch[0]  # its epoch time too: epoch 1 was not trained again
    uninterrupted = summary_rows(root / 'out' / 'runs' / 'fct_bn-seed1')
    columns = ('epoch', 'train_loss', 'eval_loss', 'eval_top1', 'eval_top5', 'lr')
    assert [[r[c] for c in columns] for r in rows] == [[r[c] for c in columns] for r in uninterrupted]
    resumed_row = table(out)['rows'][0]
    reference = {r['row']: r for r in table(root / 'out')['rows']}['fct_bn']
    assert resumed_row['runs'][0] == reference['runs'][0]


@pytest.mark.parametrize('changed,named', [(('--epochs', '3'), '--epochs 3 (the run has 2)'),
                                           (('--epochs', '2', '--pct-start', '0.5'), '--pct-start 0.5 (the run has 0.3)')])
def test_changed_settings_in_the_same_results_folder_are_refused(table1_run, capsys, changed, named):
    """A finished 2-epoch run is not a 3-epoch run, nor one on another schedule: one error line naming the one
    difference, and nothing trains or changes."""
    root, _ = table1_run
    before = files_state(root / 'out')
    argv = ['--out', str(root / 'out'), '--rows', 'fct_bn', '--seeds', '1', '--img-size', '8', *changed]
    assert protocol.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error:') and f'but {named}; drop' in err[0], err
    assert files_state(root / 'out') == before


@pytest.mark.parametrize('argv, message', [
    (['--rows', 'fct_bn', 'resnet101'], 'unknown row resnet101'),
    (['--seeds', '0'], '--seeds'),
    (['--seed', '3'], 'use --seeds'),
    (['--output', 'x'], 'use --seeds and --out'),
    (['--no-such-flag'], 'unrecognized arguments: --no-such-flag'),
])
def test_bad_input_is_one_error_line_and_exit_code_2(argv, message, tmp_path, capsys):
    assert protocol.main(['--out', str(tmp_path / 'out'), *argv]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error:') and message in err[0], err
    assert captured.out == '' and not (tmp_path / 'out').exists()


def test_cached_imagenet_weights_make_the_pretrained_row_available_offline(tmp_path):
    """The cache check the pre-trained row passes before it runs: a cached file is enough, offline."""
    hf_home = tmp_path / 'hf_home'
    write_hub_cache(hf_home, 'timm/resnet18.a1_in1k', {'model.safetensors': lambda p: p.write_bytes(b'weights')})
    code = 'from timm_fct.table1.rows import weights_unavailable; print(weights_unavailable("resnet18_fct_bn"))'
    result = run_offline(hf_home, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'None'
    result = run_offline(tmp_path / 'empty_hf_home', code)
    assert 'timm/resnet18.a1_in1k' in result.stdout and 'cannot be downloaded' in result.stdout


def test_the_table_reports_the_last_epoch_apart_from_the_best(tmp_path):
    """Runs whose best epoch is not their last: the last-epoch column is each run's final row, the best column its
    best row, each mean and sample std over the seeds computed here from the rows written."""
    top1 = {1: [50.0, 80.0, 70.0], 2: [60.0, 90.0, 85.0]}
    for seed, values in top1.items():
        run = tmp_path / 'runs' / f'fct_bn-seed{seed}'
        run.mkdir(parents=True)
        lines = ['epoch,train_loss,eval_loss,eval_top1,eval_top5,lr,epoch_time']
        lines += [f'{e},1,1,{t},99,0.01,1' for e, t in enumerate(values)]
        (run / 'summary.csv').write_text('\n'.join(lines) + '\n')
    row = RowResult('fct_bn', 'ours (with BN)', 'resnet50_fct_bn_cifar', 93.35, 'cmd', 2, 'complete')
    row.runs = [run_result(tmp_path / 'runs' / f'fct_bn-seed{s}', tmp_path, s, 3) for s in top1]
    last, best = [v[-1] for v in top1.values()], [max(v) for v in top1.values()]
    assert row.stats('last_top1') == {'mean': statistics.mean(last), 'std': pytest.approx(statistics.stdev(last))}
    assert row.stats('best_top1') == {'mean': statistics.mean(best), 'std': pytest.approx(statistics.stdev(best))}
    table_row = next(line for line in markdown([row], [], 'the digits').splitlines() if line.startswith('| ours'))
    assert (f'| {statistics.mean(last):.2f} ± {statistics.stdev(last):.2f} | '
            f'{statistics.mean(best):.2f} ± {statistics.stdev(best):.2f} |') in table_row
