"""benchmarks/gpu.py on a CPU with tiny settings: the JSON it writes has the rows and fields docs/benchmarks.md
promises, its ratios are its own throughputs divided, and a failing setting is recorded while the run goes on.

The four rows' ResNet-50s take seconds a step on a busy 2-core CPU, so each row's model is swapped for a tiny
network here; what is checked is the script's bookkeeping, which does not depend on the model. No bf16 (slow
where the CPU emulates it) and no torch.compile (a C++ toolchain and a minute).
"""
import json
from pathlib import Path

import pytest
import timm
import torch

from tests.support.helpers import REPO, TINY_BACKBONE, TINY_EMBED_DIM

ROWS = ('resnet50', 'fct_ln', 'fct_bn', 'pretrained')
BATCH_SIZES = (2, 4)  # not 3: torch 2.14.1 corrupts its heap in a channels_last CPU step of this tiny net at batch 3
COMBOS = ('fp32', 'channels_last')
TRAINING_FIELDS = {'row', 'model', 'batch_size', 'combo', 'bf16', 'channels_last', 'compile', 'status', 'error',
                   'img_per_s', 'step_ms', 'peak_mem_gib', 'first_step_s', 'vs_baseline'}
PIPELINE_FIELDS = {'data', 'pipeline', 'batch_size', 'img_per_s', 'vs_pil'}
FAILING = ('fct_ln', 4)  # this row's model raises at this batch size


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(REPO / 'benchmarks'))
    import gpu

    def tiny_row_model(row: str) -> torch.nn.Module:
        if row == 'resnet50':
            return timm.create_model(TINY_BACKBONE['backbone'], **TINY_BACKBONE['backbone_kwargs'], num_classes=10)
        model = timm.create_model('fct_ln' if row == 'fct_ln' else 'fct_bn', **TINY_BACKBONE,
                                  embed_dim=TINY_EMBED_DIM, num_classes=10)
        if row == FAILING[0]:
            def fail(module, inputs):
                if inputs[0].shape[0] == FAILING[1]:
                    raise RuntimeError('out of memory, pretended')
            model.register_forward_pre_hook(fail)
        return model

    monkeypatch.setattr(gpu, 'create_row_model', tiny_row_model)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a second thread on these tiny tensors waits on a busy machine (89 s against 6.5 s under load)
    yield gpu
    torch.set_num_threads(threads)


def run(gpu, tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / 'sub' / 'gpu.json'
    argv = ['--device', 'cpu', '--batch-sizes', *map(str, BATCH_SIZES), '--warmup', '1', '--steps', '1',
            '--combos', *COMBOS, '--pipeline-images', '256', '--workers', '0', '--out', str(out), *extra]
    assert gpu.main(argv) == 0
    assert [p.name for p in out.parent.iterdir()] == ['gpu.json']  # no temporary file left
    return json.loads(out.read_text())


@pytest.mark.filterwarnings('ignore:an FCT module attends over a single key')
def test_gpu_benchmark_json(gpu, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = run(gpu, tmp_path)
    assert data['meta']['finished'] is True and data['meta']['device']
    training = data['training']
    assert sorted((r['row'], r['batch_size'], r['combo']) for r in training) == sorted(
        (row, b, c) for row in ROWS for b in BATCH_SIZES for c in COMBOS)
    base = {}
    for r in training:
        assert set(r) == TRAINING_FIELDS
        assert (r['bf16'], r['channels_last'], r['compile']) == (False, r['combo'] == 'channels_last', False)
        assert r['peak_mem_gib'] is None  # a CPU has no peak-memory counter
        if (r['row'], r['batch_size']) == FAILING:
            assert r['status'] == 'error' and 'out of memory, pretended' in r['error']
            assert r['img_per_s'] is None and r['vs_baseline'] is None
            continue
        assert r['status'] == 'ok' and r['error'] is None
        assert r['img_per_s'] == pytest.approx(r['batch_size'] * 1000 / r['step_ms'])
        assert r['img_per_s'] > 0 and r['first_step_s'] > 0
        if r['row'] == 'resnet50':
            base[r['batch_size'], r['combo']] = r['img_per_s']
    for r in training:
        if r['status'] == 'ok':
            assert r['vs_baseline'] == pytest.approx(r['img_per_s'] / base[r['batch_size'], r['combo']])
    models = {r['row']: r['model'] for r in training}
    assert models == {'resnet50': 'resnet50_cifar', 'fct_ln': 'resnet50_fct_ln_cifar',
                      'fct_bn': 'resnet50_fct_bn_cifar', 'pretrained': 'resnet50_fct_bn'}

    pipeline = data['pipeline']
    assert [r['pipeline'] for r in pipeline] == ['pil, 0 workers', 'memory']
    for r in pipeline:
        assert set(r) == PIPELINE_FIELDS
        assert r['vs_pil'] == pytest.approx(r['img_per_s'] / pipeline[0]['img_per_s'])

    printed = capsys.readouterr().out
    assert printed.count('| training |') == len(training) and printed.count('| pipeline |') == len(pipeline)


def test_gpu_benchmark_time_budget(gpu, tmp_path: Path) -> None:
    """Past --time-budget no training setting starts; each is recorded as skipped, the pipelines still run."""
    data = run(gpu, tmp_path, '--time-budget', '0')
    assert len(data['training']) == len(ROWS) * len(BATCH_SIZES) * len(COMBOS)
    assert {r['status'] for r in data['training']} == {'skipped'}
    assert all(r['img_per_s'] is None and 'time-budget' in r['error'] for r in data['training'])
    assert len(data['pipeline']) == 2 and data['meta']['finished'] is True


@pytest.mark.filterwarnings('ignore:an FCT module attends over a single key')
def test_gpu_benchmark_profiles_each_models_training_step(gpu, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--profile-batch-size: per row, the profiled step's time and launches and its top events, on a CPU the aten
    operators; the FCT models launch more than the plain network they extend. --compile-mode is recorded."""
    data = run(gpu, tmp_path, '--combos', 'fp32', '--pipeline-images', '0', '--profile-batch-size', '2',
               '--profile-combo', 'fp32', '--profile-steps', '1', '--top', '5', '--compile-mode', 'reduce-overhead')
    assert 'reduce-overhead' in data['meta']['compile'] and data['pipeline'] == []
    profiles = data['profiles']
    assert [p['row'] for p in profiles] == list(ROWS)
    for p in profiles:
        assert set(p) == {'row', 'model', 'batch_size', 'combo', 'events', 'ms_per_step', 'launches_per_step', 'top'}
        assert (p['batch_size'], p['combo'], p['events']) == (2, 'fp32', 'aten operators (CPU)')
        assert p['ms_per_step'] > 0 and p['launches_per_step'] > 0
        times = [e['ms_per_step'] for e in p['top']]
        assert len(times) == 5 and times == sorted(times, reverse=True)
        assert all(e['name'].startswith('aten::') and 0 < e['share'] <= 1 for e in p['top'])
        assert sum(e['share'] for e in p['top']) <= 1 + 1e-9
    launches = {p['row']: p['launches_per_step'] for p in profiles}
    assert min(launches['fct_ln'], launches['fct_bn']) > launches['resnet50']
    printed = capsys.readouterr().out
    assert sum(f'| {p["model"]} | 2 | fp32 | aten operators (CPU) |' in line
               for p in profiles for line in printed.splitlines()) == len(profiles)
