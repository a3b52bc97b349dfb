"""train.py as users drive it: the main job, what a run leaves behind, resume, DDP and user mistakes."""
import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import yaml

from tests.conftest import REPO, run_train
from timm_fct.runs import read_run_info, read_summary

# a cheap model setting for the tests that are about the machinery, not the accuracy
QUICK = ('--img-size', '8', '--model-kwargs', 'embed_dim=32', '-b', '64')  # digits at their native 8 px


def summary_rows(run_dir: Path):
    with open(run_dir / 'summary.csv', newline='') as f:
        return list(csv.DictReader(f))


def test_main_job_reaches_95_percent_on_digits_and_leaves_a_complete_run(trained_run):
    rows = summary_rows(trained_run)
    assert list(rows[0]) == ['epoch', 'train_loss', 'eval_loss', 'eval_top1', 'eval_top5', 'lr', 'epoch_time',
                             'eval_ema_loss', 'eval_ema_top1', 'eval_ema_top5']
    assert len(rows) == 4
    assert float(rows[-1]['eval_top1']) >= 95.0
    for name in ('args.yaml', 'run.json', 'last.pth.tar', 'model_best.pth.tar', 'loss.png', 'accuracy.png'):
        assert (trained_run / name).stat().st_size > 0, name
    args = yaml.safe_load((trained_run / 'args.yaml').read_text())
    assert args['model'] == 'resnet18_fct_bn_cifar' and args['dataset'] == 'sklearn/digits'
    assert args['opt'] == 'adam' and args['weight_decay'] == 1e-4 and args['clip_grad'] == 1.0
    info = read_run_info(trained_run)
    assert info.label_names == [str(i) for i in range(10)] and info.pretrained_cfg['input_size'] == [3, 32, 32]
    assert (trained_run / 'loss.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert not list(trained_run.glob('*.tmp'))


def test_best_checkpoint_reproduces_the_reported_accuracy(trained_run):
    """model_best.pth.tar holds the weights (raw or EMA) whose top-1 the run reported as best."""
    from timm_fct.data import DigitsDataset, eval_transform
    ckpt = torch.load(trained_run / 'model_best.pth.tar', map_location='cpu', weights_only=False)
    info = read_run_info(trained_run)
    cfg = info.pretrained_cfg
    ds = DigitsDataset('validation', eval_transform(32, cfg['mean'], cfg['std'], cfg['crop_pct']))
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.tensor(ds.targets)
    model = timm.create_model(info.model, num_classes=info.num_classes).eval()
    top1 = []
    for key in ('state_dict', 'state_dict_ema'):
        model.load_state_dict(ckpt[key])
        with torch.no_grad():
            top1.append((model(x).argmax(1) == y).float().mean().item() * 100)
    assert max(top1) == pytest.approx(ckpt['metric'], abs=0.01)
    assert max(r['eval_top1'] for r in read_summary(trained_run)) == pytest.approx(top1[0], abs=0.01)


def test_sigkill_then_resume_ends_like_an_uninterrupted_run(tmp_path):
    common = ('--epochs', '2', '--model-ema', *QUICK)
    straight = run_train(*common, '--output', str(tmp_path), '--experiment', 'straight')
    assert straight.returncode == 0, straight.stderr

    cmd = [sys.executable, str(REPO / 'train.py'), '--no-progress', *common, '--output', str(tmp_path),
           '--experiment', 'killed']
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith('epoch 1/2'):  # printed once epoch 1's checkpoint is on disk
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    killed = tmp_path / 'killed'
    assert len(summary_rows(killed)) == 1

    resumed = run_train('--resume', str(killed / 'last.pth.tar'), *common)
    assert resumed.returncode == 0, resumed.stderr
    a, b = summary_rows(tmp_path / 'straight'), summary_rows(killed)
    assert len(a) == len(b) == 2
    # same data order, augmentation and dropout per epoch; CPU kernels here are deterministic, allow float noise
    for key in ('train_loss', 'eval_loss', 'eval_top1', 'eval_ema_top1', 'lr'):
        assert float(b[-1][key]) == pytest.approx(float(a[-1][key]), rel=1e-4, abs=1e-4), key


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(tmp_path):
    first = run_train('--epochs', '1', *QUICK, '--output', str(tmp_path), '--experiment', 'run')
    assert first.returncode == 0, first.stderr
    last = tmp_path / 'run' / 'last.pth.tar'
    before = last.read_bytes()
    # a mean of 3e38 normalises every pixel to -inf: the loss of the next epoch is not finite
    diverged = run_train('--resume', str(last), '--epochs', '2', *QUICK, '--mean', '3e38', '3e38', '3e38')
    assert diverged.returncode == 3
    assert 'the loss became nan' in diverged.stderr and 'Traceback' not in diverged.stderr
    assert last.read_bytes() == before
    assert len(summary_rows(tmp_path / 'run')) == 1


def test_two_cpu_processes_with_gloo_stay_in_sync(tmp_path):
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29517',
           str(REPO / 'train.py'), '--no-progress', '--epochs', '1', *QUICK, '--device', 'cpu',
           '--output', str(tmp_path), '--experiment', 'ddp']
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                            env={**os.environ, 'OMP_NUM_THREADS': '1'})  # two processes share two cores
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):
        assert f'rank {rank}: replicas in sync across 2 processes' in result.stdout
    assert 'on 2 x cpu' in result.stdout
    args = yaml.safe_load((tmp_path / 'ddp' / 'args.yaml').read_text())
    assert args['world_size'] == 2 and args['lr'] == pytest.approx(0.01 * 2 * 64 / 128)  # linear in the global batch
    assert len(summary_rows(tmp_path / 'ddp')) == 1


def test_config_file_sets_defaults_and_flags_override(tmp_path):
    """Also runs the channels_last path, which works on a CPU too."""
    cfg = tmp_path / 'cfg.yaml'
    cfg.write_text('epochs: 1\nbatch_size: 96\nweight_decay: 0.0\n')
    result = run_train('-c', str(cfg), *QUICK, '--channels-last', '--output', str(tmp_path),
                       '--experiment', 'c')  # QUICK: -b 64
    assert result.returncode == 0, result.stderr
    args = yaml.safe_load((tmp_path / 'c' / 'args.yaml').read_text())
    assert (args['epochs'], args['batch_size'], args['weight_decay']) == (1, 64, 0.0)
    assert args['channels_last'] and not args['amp']
    assert float(summary_rows(tmp_path / 'c')[0]['train_loss']) < 10


@pytest.mark.parametrize('argv,message', [
    (('--data-dir', '/nonexistent/data'), 'data folder /nonexistent/data does not exist'),
    (('--dataset', 'torch/notaset', '--data-dir', '.'), "unknown dataset 'torch/notaset'"),
    (('--dataset', 'imagenet-ish'), "unknown dataset 'imagenet-ish'"),
    (('--model', 'resnet50_fct_gn'), "unknown model 'resnet50_fct_gn'"),
    (('--model-kwargs', 'not_an_arg=1'), '--model-kwargs not accepted'),
])
def test_user_mistakes_exit_2_with_one_clear_line(tmp_path, argv, message):
    result = run_train(*argv, '--output', str(tmp_path))
    assert result.returncode == 2
    assert message in result.stderr and 'Traceback' not in result.stderr
    assert not any(tmp_path.iterdir()), 'nothing may be written for a run that could not start'


def test_empty_data_folder(tmp_path):
    empty = tmp_path / 'data'
    empty.mkdir()
    result = run_train('--data-dir', str(empty), '--output', str(tmp_path / 'out'))
    assert result.returncode == 2 and 'is empty' in result.stderr


def test_unknown_yaml_key(tmp_path):
    cfg = tmp_path / 'cfg.yaml'
    cfg.write_text('epochs: 1\nlearning_rate: 0.1\n')
    result = run_train('-c', str(cfg), '--output', str(tmp_path / 'out'))
    assert result.returncode == 2 and "unknown keys ['learning_rate']" in result.stderr


def test_resume_from_another_architecture(tmp_path):
    ckpt = tmp_path / 'other.pth.tar'
    torch.save({'state_dict': timm.create_model('resnet18_cifar').state_dict(), 'arch': 'resnet18_cifar',
                'epoch': 0}, ckpt)
    result = run_train('--resume', str(ckpt), '--output', str(tmp_path / 'out'))
    assert result.returncode == 2
    assert 'is a checkpoint of resnet18_cifar, not of --model resnet18_fct_bn_cifar' in result.stderr


def test_paper_configs_are_complete_and_valid():
    from train import build_parser, read_config
    parser = build_parser()
    rows = {'cifar10_resnet50.yaml': 'resnet50_cifar', 'cifar10_resnet50_fct_ln.yaml': 'resnet50_fct_ln_cifar',
            'cifar10_resnet50_fct_bn.yaml': 'resnet50_fct_bn_cifar',
            'cifar10_resnet50_fct_bn_pretrained.yaml': 'resnet50_fct_bn'}
    for name, model in rows.items():
        cfg = read_config(str(REPO / 'configs' / name), parser)
        assert cfg['model'] == model and timm.is_model(model)
        assert (cfg['opt'], cfg['lr_base'], cfg['lr_base_size'], cfg['weight_decay']) == ('adam', 0.01, 128, 1e-4)
        assert (cfg['sched'], cfg['clip_grad'], cfg['epochs'], cfg['batch_size']) == ('onecycle', 1.0, 200, 128)
        assert cfg['dataset'] == 'torch/cifar10' and cfg['hflip'] == 0.5
