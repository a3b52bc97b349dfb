"""train.py as users drive it: the main job, what a run leaves behind, resume, DDP and user mistakes."""
import json
import math
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
import yaml

from tests.support.helpers import (
    QUICK, REPO, SMALL_RUN_ARGS, SMALL_RUN_UMASK, assert_same_tensors, free_port, plain_one_cycle, read_state,
    kill_after_first_epoch, run_train, summary_rows,
)
from timm_fct.data.datasets import DigitsDataset
from timm_fct.data.transforms import eval_transform
from timm_fct.runs.folder import RunFolder


def validation_logits(run: Path, state_dict: dict):
    """The run's model with `state_dict`, on the whole digits validation split under the run's own preprocessing."""
    info = RunFolder(run).info()
    cfg = info.data_config
    ds = DigitsDataset('validation', eval_transform(cfg['input_size'][-1], cfg['mean'], cfg['std'], cfg['crop_pct']))
    x, y = torch.stack([ds[i][0] for i in range(len(ds))]), torch.tensor(ds.targets)
    model = timm.create_model(info.model, num_classes=info.num_classes, **info.model_args).eval()
    model.load_state_dict(state_dict)
    with torch.no_grad():
        return model(x), y


def top1(logits: torch.Tensor, y: torch.Tensor) -> float:
    return (logits.argmax(1) == y).float().mean().item() * 100


def test_main_job_reaches_97_percent_on_digits_and_leaves_a_complete_run(tmp_path):
    """`python -m timm_fct.train` as the README gives it, the one run of the main job in the suite."""
    result = run_train('--output', str(tmp_path), '--experiment', 'main', timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / 'main'
    rows = summary_rows(run)
    assert list(rows[0]) == ['epoch', 'train_loss', 'eval_loss', 'eval_top1', 'eval_top5', 'lr', 'epoch_time']
    args = yaml.safe_load((run / 'args.yaml').read_text())
    assert len(rows) == args['epochs']
    assert float(rows[-1]['eval_top1']) >= 97.0
    for name in ('args.yaml', 'config.json', 'model.safetensors', 'last.pth.tar', 'model_best.pth.tar', 'loss.png',
                 'accuracy.png'):
        assert (run / name).stat().st_size > 0, name
    assert args['model'] == 'resnet18_fct_bn_cifar' and args['dataset'] == 'sklearn/digits'
    assert args['opt'] == 'adam' and args['weight_decay'] == 1e-4 and args['clip_grad'] == 1.0
    assert args['pipeline'] == 'memory' and args['img_size'] == 16
    info = RunFolder(run).info()
    assert info.label_names == [str(i) for i in range(10)] and info.data_config['input_size'] == [3, 16, 16]
    assert (run / 'loss.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert not list(run.glob('*.tmp')) and not list(run.glob('.*'))


def test_best_checkpoint_reproduces_the_reported_accuracy(small_run):
    """model_best.pth.tar holds the weights (raw or EMA) whose top-1 the run reported as best."""
    ckpt = read_state(small_run / 'model_best.pth.tar')
    accuracy = [top1(*validation_logits(small_run, ckpt[key])) for key in ('state_dict', 'state_dict_ema')]
    row = next(r for r in RunFolder(small_run).summary() if r['epoch'] == ckpt['epoch'])
    assert accuracy == pytest.approx([row['eval_top1'], row['eval_ema_top1']], abs=1e-3)
    assert max(accuracy) == pytest.approx(ckpt['metric'], abs=1e-3)



def test_run_folder_loads_in_timm_with_the_best_weights_and_the_runs_preprocessing(small_run):
    """`local-dir:RUN` is the best checkpoint's weights that evaluated better (EMA or raw), with the preprocessing
    the run trained with in its pretrained_cfg: timm's own transform then scores what the run recorded."""
    args = yaml.safe_load((small_run / 'args.yaml').read_text())
    model = timm.create_model(f'local-dir:{small_run}', pretrained=True).eval()
    config = timm.data.resolve_data_config({}, model=model)
    assert config['input_size'] == (3, args['img_size'], args['img_size'])
    assert (config['mean'], config['std']) == (args['mean'], args['std'])
    assert (config['crop_pct'], config['interpolation']) == (args['crop_pct'], args['interpolation'])
    assert model.pretrained_cfg['label_names'] == [str(i) for i in range(10)]

    rows = summary_rows(small_run)
    ema_better = max(float(r['eval_ema_top1']) for r in rows) > max(float(r['eval_top1']) for r in rows)
    best = read_state(small_run / 'model_best.pth.tar')
    reference = timm.create_model(args['model'], num_classes=10, **args['model_kwargs']).eval()
    reference.load_state_dict(best['state_dict_ema' if ema_better else 'state_dict'])
    ds = DigitsDataset('validation', timm.data.create_transform(**config))
    x, y = torch.stack([ds[i][0] for i in range(len(ds))]), torch.tensor(ds.targets)
    with torch.no_grad():
        logits = model(x)
        torch.testing.assert_close(logits, reference(x), rtol=0, atol=0)
    row = next(r for r in rows if int(r['epoch']) == best['epoch'])
    assert top1(logits, y) == pytest.approx(float(row['eval_ema_top1' if ema_better else 'eval_top1']), abs=1e-3)


def test_files_a_run_writes_keep_the_usual_permissions(small_run):
    """Written aside and renamed into place, yet readable as any file made under the umask (conftest trains the
    run under umask 002), where mkstemp and safetensors' save_file made them 0600."""
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in small_run.iterdir()}
    assert {'args.yaml', 'config.json', 'model.safetensors', 'summary.csv', 'loss.png', 'last.pth.tar'} <= set(modes)
    assert modes == dict.fromkeys(modes, oct(0o666 & ~SMALL_RUN_UMASK))
    assert oct(stat.S_IMODE(small_run.stat().st_mode)) == oct(0o777 & ~SMALL_RUN_UMASK)


def test_resume_reads_its_checkpoint_once(small_run, tmp_path, monkeypatch):
    """The check against the new flags, model, EMA, optimizer, epoch and the saver's history: all from one read."""
    from timm_fct.train import command
    reads = []
    load = torch.load

    def counted(f, *args, **kwargs):
        reads.append(Path(f))
        return load(f, *args, **kwargs)

    monkeypatch.setattr(torch, 'load', counted)
    checkpoint = small_run / 'last.pth.tar'
    assert command.train_from_args(['--no-progress', *SMALL_RUN_ARGS, '--resume', str(checkpoint), '--output', str(tmp_path),
                       '--experiment', 'resumed']) == 0  # all epochs done: restored, nothing trained
    assert reads == [checkpoint]

RECORDING_WRAPPER = """
import json, os, sys, torch
sys.path.insert(0, {repo!r})
from timm_fct.train import command
step = torch.optim.Adam.step
def recorded(self, *args, **kwargs):
    group = self.param_groups[0]
    with open(os.environ['RECORD_TO'], 'a') as f:
        f.write(json.dumps([group['lr'], group['betas'][0]]) + '\\n')
    return step(self, *args, **kwargs)
torch.optim.Adam.step = recorded
sys.exit(command.main(sys.argv[1:]))
"""


def recording_train(tmp_path: Path, record: Path, *args: str, popen: bool = False):
    """train.py run through a wrapper that appends (lr, beta1) before every optimizer step to `record`."""
    wrapper = tmp_path / 'recording_train.py'
    wrapper.write_text(RECORDING_WRAPPER.format(repo=str(REPO)))
    cmd = [sys.executable, str(wrapper), '--no-progress', *args]
    env = {**os.environ, 'RECORD_TO': str(record)}
    if popen:
        return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)


def records(path: Path) -> list:
    """The recorded lr and beta1 of every update, flattened: [lr_0, beta1_0, lr_1, beta1_1, ...]."""
    return [v for line in path.read_text().splitlines() for v in json.loads(line)]


def test_sigkill_then_resume_ends_like_an_uninterrupted_run_on_the_same_one_cycle(tmp_path):
    common = ('--epochs', '2', '--model-ema', '--model-ema-decay', '0.9', *QUICK)
    straight = recording_train(tmp_path, tmp_path / 'straight.jsonl', *common, '--output', str(tmp_path),
                               '--experiment', 'straight')
    assert straight.returncode == 0, straight.stderr
    proc = recording_train(tmp_path, tmp_path / 'killed.jsonl', *common, '--output', str(tmp_path),
                           '--experiment', 'killed', popen=True)
    kill_after_first_epoch(proc)
    killed = tmp_path / 'killed'
    assert len(summary_rows(killed)) == 1

    assert (killed / 'model.safetensors').is_file(), 'the best weights so far, for a run that never finishes'
    metadata = {name: (killed / name).read_bytes() for name in ('args.yaml', 'config.json')}
    resumed = recording_train(tmp_path, tmp_path / 'killed.jsonl', '--resume', str(killed / 'last.pth.tar'), *common)
    assert resumed.returncode == 0, resumed.stderr
    assert {name: (killed / name).read_bytes() for name in metadata} == metadata, 'written once, at the start'
    assert 'epoch 2/2' in resumed.stdout and 'epoch 1/2' not in resumed.stdout, 'the resume starts at epoch 2'
    # the learning rate and Adam's beta1 follow PyTorch's OneCycleLR at every update, across the kill
    expected = plain_one_cycle(0.01 * 64 / 128, total=2 * 21)
    assert records(tmp_path / 'straight.jsonl') == pytest.approx(expected, rel=1e-12)
    assert records(tmp_path / 'killed.jsonl') == pytest.approx(expected, rel=1e-12)
    assert max(expected[1::2]) == 0.95 and min(expected[1::2]) == pytest.approx(0.85, abs=1e-3)

    a, b = summary_rows(tmp_path / 'straight'), summary_rows(killed)
    assert len(a) == len(b) == 2
    for key in ('train_loss', 'eval_loss', 'eval_top1', 'eval_ema_loss', 'eval_ema_top1', 'lr'):
        assert float(b[-1][key]) == pytest.approx(float(a[-1][key]), rel=1e-5, abs=1e-9), key
    x, y = read_state(tmp_path / 'straight' / 'last.pth.tar'), read_state(killed / 'last.pth.tar')
    assert x['epoch'] == y['epoch'] == 1
    assert_same_tensors(x['state_dict'], y['state_dict'], 'model', exact=False)
    assert_same_tensors(x['state_dict_ema'], y['state_dict_ema'], 'EMA', exact=False)
    ema_moved = x['state_dict_ema']['head.fc.weight'] - x['state_dict']['head.fc.weight']
    assert ema_moved.abs().max() > 1e-4, 'the EMA should lag the weights, or its restore goes untested'
    xo, yo = x['optimizer'], y['optimizer']
    assert xo['param_groups'] == yo['param_groups']
    for i in xo['state']:
        assert_same_tensors(xo['state'][i], yo['state'][i], f'optimizer state {i}', exact=False)


NAN_AFTER = 25  # the loss turns NaN from this update on: in epoch 2 of QUICK (21 updates per epoch)


def test_nan_loss_stops_within_one_log_interval_and_keeps_the_last_good_run(tmp_path):
    wrapper = tmp_path / 'nan_train.py'
    wrapper.write_text(f"""
import sys
sys.path.insert(0, {str(REPO)!r})
import timm.task
from timm_fct.train import command
forward = timm.task.ClassificationTask.forward
calls = [0]
def poisoned(self, *args, **kwargs):
    out = forward(self, *args, **kwargs)
    if self.training:
        calls[0] += 1
        if calls[0] >= {NAN_AFTER}:
            out['loss'] = out['loss'] * float('nan')
    return out
timm.task.ClassificationTask.forward = poisoned
sys.exit(command.main(sys.argv[1:]))
""")
    interval = 5
    cmd = [sys.executable, str(wrapper), '--no-progress', '--epochs', '2', *QUICK, '--log-interval', str(interval),
           '--output', str(tmp_path), '--experiment', 'run']
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 3, result.stderr[-2000:]
    assert 'the loss became nan at epoch 2' in result.stderr and 'Traceback' not in result.stderr
    stopped_at = int(result.stderr.split('by update ')[1].split(';')[0])
    assert NAN_AFTER <= stopped_at < NAN_AFTER + interval
    run = tmp_path / 'run'
    assert len(summary_rows(run)) == 1
    assert read_state(run / 'last.pth.tar')['epoch'] == 0
    assert not list(run.glob('.*'))


def test_infinite_loss_stops_the_run_like_nan_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    """A +inf loss (an overflow, not a NaN) from update NAN_AFTER on: exit code 3 within one log interval, epoch 1's
    checkpoint and summary kept."""
    import timm.task
    from timm_fct.train import command
    forward = timm.task.ClassificationTask.forward
    calls = [0]

    def overflowing(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        if self.training:
            calls[0] += 1
            if calls[0] >= NAN_AFTER:
                out['loss'] = out['loss'] * 0 + float('inf')
        return out

    monkeypatch.setattr(timm.task.ClassificationTask, 'forward', overflowing)
    interval = 5
    rc = command.main(['--no-progress', '--epochs', '2', *QUICK, '--log-interval', str(interval),
                     '--output', str(tmp_path), '--experiment', 'run'])
    err = capsys.readouterr().err
    assert rc == 3, err
    errors = [line for line in err.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and errors[0].startswith('error: the loss became inf at epoch 2, by update ')
    assert 'Traceback' not in err
    stopped_at = int(errors[0].split('by update ')[1].split(';')[0])
    assert NAN_AFTER <= stopped_at < NAN_AFTER + interval
    run = tmp_path / 'run'
    assert len(summary_rows(run)) == 1
    assert read_state(run / 'last.pth.tar')['epoch'] == 0
    assert not list(run.glob('.*'))


def test_resume_with_other_preprocessing_is_refused_and_changes_nothing(tmp_path):
    first = run_train('--epochs', '2', *QUICK, '--output', str(tmp_path), '--experiment', 'run')
    assert first.returncode == 0, first.stderr
    run = tmp_path / 'run'
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    result = run_train('--resume', str(run / 'last.pth.tar'), '--epochs', '3', *QUICK, '--mean', '0.1', '0.1', '0.1')
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert "--mean [0.1, 0.1, 0.1] (the run has [0.3053, 0.3053, 0.3053])" in result.stderr
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_sharded_evaluation_counts_every_image_once(tmp_path):
    """Two processes each evaluate half of the 450 images; the summed metrics equal one process evaluating all."""
    result = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29518',
         str(REPO / 'train.py'), '--no-progress', '--epochs', '1', *QUICK, '--device', 'cpu',
         '--output', str(tmp_path), '--experiment', 'ddp'],
        cwd=REPO, capture_output=True, text=True, timeout=900, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / 'ddp'
    row = summary_rows(run)[0]
    logits, y = validation_logits(run, read_state(run / 'last.pth.tar')['state_dict'])
    assert float(row['eval_top1']) == pytest.approx(top1(logits, y), abs=1e-3)
    assert float(row['eval_loss']) == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-4)


ODD_EVAL_IMAGES = 21  # with -b 2 on two ranks: 11 images in 6 batches and 10 in 5


def tiny_classifier() -> torch.nn.Module:
    """The same weights in every process: a linear classifier of the 8 px digits."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))


def odd_digits(split: str) -> DigitsDataset:
    ds = DigitsDataset(split)
    ds.images, ds.targets = ds.images[:ODD_EVAL_IMAGES], ds.targets[:ODD_EVAL_IMAGES]
    return ds


def _sharded_eval_worker(rank: int, world_size: int, port: int, out: str) -> None:
    """train.py's own path on one rank: distributed init, loaders of each pipeline, loop.evaluate."""
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist
    from timm.task import ClassificationTask
    from timm.utils import init_distributed_device
    from timm_fct.train import loop
    from timm_fct.data.loaders import build_loaders
    from timm_fct.train.args import parse_args, resolve_args, resolve_preprocessing
    from timm_fct.train.build import loader_config
    results = {}
    for pipeline in ('memory', 'pil'):
        args = parse_args(['--img-size', '8', '-b', '2', '--device', 'cpu', '--pipeline', pipeline])
        if not dist.is_initialized():
            init_distributed_device(args)
        else:
            args.distributed, args.world_size, args.rank, args.local_rank = True, world_size, rank, rank
        resolve_args(args)
        model = tiny_classifier()
        resolve_preprocessing(args, model)
        loaders = build_loaders(loader_config(args), odd_digits('train'), odd_digits('validation'))
        task = ClassificationTask(model, device=args.device, verbose=False)
        evaluators = []
        create = task.create_evaluator
        task.create_evaluator = lambda **kw: evaluators.append(create(**kw)) or evaluators[-1]
        metrics = loop.evaluate(args, loop.Training(task, None, None, None, *loaders), progress=False)
        counted = evaluators[0].counts[:1].clone()
        dist.all_reduce(counted)
        results[pipeline] = dict(metrics, images=int(counted.item()), mean=args.mean, std=args.std)
    if rank == 0:
        Path(out).write_text(json.dumps(results))
    dist.destroy_process_group()


def test_sharded_evaluation_of_an_odd_count_counts_every_image_once(tmp_path):
    """Two ranks evaluate 21 images (11 + 10, so one rank runs a batch more) through either pipeline; the
    summed metrics are those of one plain pass over all 21, and 21 images were counted, not 20 or 22."""
    import torch.multiprocessing as mp
    out = tmp_path / 'metrics.json'
    mp.spawn(_sharded_eval_worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    results = json.loads(out.read_text())

    from timm_fct.data.datasets import DIGITS_MEAN, DIGITS_STD
    ds = odd_digits('validation')
    ds.transform = eval_transform(8, DIGITS_MEAN, DIGITS_STD, 1.0)
    x, y = torch.stack([ds[i][0] for i in range(len(ds))]), torch.tensor(ds.targets)
    with torch.no_grad():
        logits = tiny_classifier()(x)
    top5 = (logits.topk(5, dim=1).indices == y[:, None]).any(1).float().mean().item() * 100
    for pipeline, metrics in results.items():
        assert metrics['images'] == ODD_EVAL_IMAGES, pipeline
        assert metrics['top1'] == pytest.approx(top1(logits, y), abs=1e-4), pipeline  # one image is 4.8
        assert metrics['top5'] == pytest.approx(top5, abs=1e-4), pipeline
        assert metrics['loss'] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5), pipeline


def test_one_host_sync_per_log_interval(monkeypatch, tmp_path):
    """Losses stay on the device: train.py reads one value per --log-interval and the epoch total, no more."""
    from timm_fct.train import command, loop
    reads = []
    for name in ('item', '__bool__', '__float__', 'tolist'):
        def counting(self, *a, _original=getattr(torch.Tensor, name), _name=name, **k):
            if sys._getframe(1).f_code.co_filename == loop.__file__:  # reads made by the training loop itself
                reads.append(_name)
            return _original(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, counting)
    epoch_reads = []
    train_one_epoch = loop.train_one_epoch

    def counted(*args, **kwargs):
        reads.clear()
        out = train_one_epoch(*args, **kwargs)
        epoch_reads.append(list(reads))
        return out

    monkeypatch.setattr(loop, 'train_one_epoch', counted)
    assert command.train_from_args(['--no-progress', '--epochs', '1', *QUICK, '--log-interval', '5', '--output', str(tmp_path),
                       '--experiment', 'sync']) == 0
    updates = len(DigitsDataset('train')) // 64
    assert epoch_reads == [['item'] * (math.ceil(updates / 5) + 1)]


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
    (('--model', 'resnet18_fct_bn.in22k'), "unknown pretrained tag 'in22k' of resnet18_fct_bn; its tags: a1_in1k_backbone"),
    (('--img-size', '4'), '--img-size 4 is below the smallest input resnet18_fct_bn_cifar takes, 8 px'),
    (('--model-kwargs', 'not_an_arg=1'), '--model-kwargs not accepted'),
    (('--model-kwargs', 'embed_dim=97'), 'embed_dim (97) must be divisible by num_heads (2)'),
    (('--sync-bn',), '--sync-bn needs GPUs'),
    (('--hflip', '1.5'), '--hflip is a probability: expected a value in [0, 1], got 1.5'),
    (('--onecycle-three-phase', '--pct-start', '0.6'),
     '--pct-start is the fraction of training spent warming up: expected a value in (0, 0.5) with '
     '--onecycle-three-phase, got 0.6'),
    (('--pipeline', 'memory', '--data-dir', '.'), '--pipeline memory holds sklearn/digits, torch/cifar10'),
])
def test_user_mistakes_exit_2_with_one_clear_line(tmp_path, capsys, argv, message):
    from timm_fct.train import command
    assert command.main([*argv, '--output', str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1 and message in err
    assert not any(tmp_path.iterdir()), 'nothing may be written for a run that could not start'


def test_an_output_folder_that_cannot_be_made_is_one_line_and_nothing_is_written(tmp_path, capsys):
    """--output inside a file (any folder the file system refuses: read-only, not a folder): exit code 5, one line
    naming the folder, before anything trains."""
    from timm_fct.train import command
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder\n')
    assert command.main([*QUICK, '--epochs', '1', '--output', str(blocker / 'runs'), '--experiment', 'x']) == 5
    assert capsys.readouterr().err.splitlines() == [f'error: Not a directory: {blocker / "runs" / "x"}']
    assert [p.name for p in tmp_path.iterdir()] == ['a_file'] and blocker.read_text() == 'not a folder\n'


def test_a_full_disk_stops_the_run_in_one_line_keeping_every_whole_epoch(tmp_path, capsys, monkeypatch):
    """The disk fills while epoch 2's summary.csv is being written (simulated: its rows' write raises ENOSPC): exit
    code 5, one line; the run folder keeps epoch 1's summary and checkpoint whole, and no temporary file."""
    import csv
    import errno
    from timm_fct.train import command
    writer, summaries = csv.writer, []

    def filling_up(f, *args, **kwargs):
        inner = writer(f, *args, **kwargs)
        summaries.append(f.name)

        class Full:
            writerow = inner.writerow

            def writerows(self, rows):
                if len(summaries) == 2:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f.name)
                return inner.writerows(rows)
        return Full()

    monkeypatch.setattr(csv, 'writer', filling_up)
    assert command.main([*QUICK, '--epochs', '2', '--no-progress', '--output', str(tmp_path),
                         '--experiment', 'full']) == 5
    run = tmp_path / 'full'
    assert capsys.readouterr().err.splitlines()[-1] == f'error: No space left on device: {summaries[1]}'
    assert [r['epoch'] for r in summary_rows(run)] == ['0']
    assert read_state(run / 'last.pth.tar')['epoch'] == 0
    assert not [p.name for p in run.iterdir() if p.name.startswith('.') or 'tmp' in p.name]


def test_a_model_asserting_on_its_arguments_is_a_user_mistake(tmp_path, capsys):
    """timm's models check their arguments with assert as often as with raise: either is one error: line."""
    from timm_fct.train import command
    assert command.main(['--model', 'test_vit', '--model-kwargs', 'embed_dim=97', '--output', str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: --model-kwargs not accepted by test_vit: dim should be divisible by num_heads')
    assert not any(tmp_path.iterdir())


def test_empty_data_folder(tmp_path, capsys):
    from timm_fct.train import command
    empty = tmp_path / 'data'
    empty.mkdir()
    assert command.main(['--data-dir', str(empty), '--output', str(tmp_path / 'out')]) == 2
    assert 'is empty' in capsys.readouterr().err


def test_unknown_yaml_key(tmp_path, capsys):
    from timm_fct.train import command
    cfg = tmp_path / 'cfg.yaml'
    cfg.write_text('epochs: 1\nlearning_rate: 0.1\n')
    assert command.main(['-c', str(cfg), '--output', str(tmp_path / 'out')]) == 2
    assert "unknown keys ['learning_rate']" in capsys.readouterr().err


def test_resume_from_another_architecture(tmp_path):
    ckpt = tmp_path / 'other.pth.tar'
    torch.save({'state_dict': timm.create_model('resnet18_cifar').state_dict(), 'arch': 'resnet18_cifar',
                'epoch': 0}, ckpt)
    result = run_train('--resume', str(ckpt), '--output', str(tmp_path / 'out'))
    assert result.returncode == 2
    assert 'is a checkpoint of resnet18_cifar, not of --model resnet18_fct_bn_cifar' in result.stderr


def test_paper_configs_are_complete_and_valid():
    from timm_fct.train.args import build_parser, read_config
    parser = build_parser()
    rows = {'cifar10_resnet50.yaml': 'resnet50_cifar', 'cifar10_resnet50_fct_ln.yaml': 'resnet50_fct_ln_cifar',
            'cifar10_resnet50_fct_bn.yaml': 'resnet50_fct_bn_cifar',
            'cifar10_resnet50_fct_bn_pretrained.yaml': 'resnet50_fct_bn'}
    for name, model in rows.items():
        cfg = read_config(str(REPO / 'configs' / name), parser)
        assert cfg['model'] == model and timm.is_model(model)
        assert (cfg['opt'], cfg['lr_base'], cfg['lr_base_size'], cfg['weight_decay']) == ('adam', 0.01, 128, 1e-4)
        assert (cfg['sched'], cfg['clip_grad'], cfg['epochs'], cfg['batch_size']) == ('onecycle', 1.0, 200, 128)
        assert cfg['dataset'] == 'torch/cifar10' and cfg['hflip'] == cfg['vflip'] == 0.5
        assert cfg['wd_all_params'] is True


@pytest.mark.parametrize('flag,decayed', [((), 'weights only'), (('--wd-all-params',), 'everything')])
def test_weight_decay_exempts_norms_and_biases_unless_told(flag, decayed):
    """timm exempts norm and bias parameters; the paper's torch.optim.Adam(weight_decay=1e-4) decays them all."""
    from timm_fct.train.args import parse_args
    from timm_fct.train.build import build_optimizer
    model = timm.create_model('resnet18_fct_bn_cifar')
    args = parse_args(['--lr', '0.01', *flag])
    optimizer = build_optimizer(args, model)
    decay = {id(p) for g in optimizer.param_groups if g['weight_decay'] == 1e-4 for p in g['params']}
    one_d = [p for p in model.parameters() if p.ndim <= 1]  # norm weights and biases
    assert sum(len(g['params']) for g in optimizer.param_groups) == len(list(model.parameters()))
    assert all(id(p) in decay for p in model.parameters() if p.ndim > 1)
    assert all((id(p) in decay) == (decayed == 'everything') for p in one_d)


def test_dashed_yaml_keys_set_their_flags(tmp_path):
    """A config written with the flags' own spelling (weight-decay, as on the command line) sets them, as the
    underscored keys (timm's argparse dests) do; the command line still wins."""
    from timm_fct.train.args import parse_args
    from timm_fct.train.build import build_optimizer
    cfg = tmp_path / 'cfg.yaml'
    cfg.write_text('weight-decay: 0.5\nbatch-size: 32\nmodel-ema-decay: 0.99\n')
    args = parse_args(['-c', str(cfg), '--lr', '0.01'])
    assert (args.weight_decay, args.batch_size, args.model_ema_decay) == (0.5, 32, 0.99)
    optimizer = build_optimizer(args, timm.create_model('resnet18_fct_bn_cifar'))
    assert {g['weight_decay'] for g in optimizer.param_groups} == {0.0, 0.5}  # norms and biases exempt
    assert parse_args(['-c', str(cfg), '--weight-decay', '0.1']).weight_decay == 0.1


def test_a_yaml_key_given_twice_in_two_spellings_is_refused(tmp_path):
    """Which of the two would win is YAML's order, invisible to the user: neither does."""
    from timm_fct.errors import FctError
    from timm_fct.train.args import parse_args
    cfg = tmp_path / 'cfg.yaml'
    cfg.write_text('weight_decay: 0.5\nweight-decay: 0.1\n')
    with pytest.raises(FctError, match=r"sets weight_decay twice \('weight-decay', 'weight_decay'\)"):
        parse_args(['-c', str(cfg)])


def test_duplicate_taps_on_the_command_line_are_one_error_line(tmp_path, capsys):
    from timm_fct.train import command
    argv = ['--epochs', '1', '--img-size', '8', '-b', '64', '--model-kwargs', 'embed_dim=32', 'taps=(1, 1)']
    assert command.main([*argv, '--output', str(tmp_path)]) == 2  # a tiny run, were the taps accepted
    err = capsys.readouterr().err
    assert err.startswith('error: --model-kwargs not accepted by resnet18_fct_bn_cifar: taps must be increasing')
    assert 'got (1, 1)' in err and 'Traceback' not in err
    assert not any(tmp_path.iterdir())


def two_by_two_blocks(images: torch.Tensor) -> bool:
    """Each image is constant on 2x2 blocks at some row and column phase: an 8 px image upsampled 2x with
    nearest-neighbour interpolation, then shifted by a crop (bilinear would blend neighbouring pixels)."""
    def constant_pairs(x: torch.Tensor, dim: int, phase: int) -> bool:
        n = (x.shape[dim] - phase) // 2 * 2
        x = x.narrow(dim, phase, n)
        return torch.equal(x.index_select(dim, torch.arange(0, n, 2)), x.index_select(dim, torch.arange(1, n, 2)))
    return all(any(constant_pairs(img, 1, p) for p in (0, 1)) and any(constant_pairs(img, 2, p) for p in (0, 1))
               for img in images)


@pytest.mark.parametrize('pipeline', ['memory', 'pil'])
def test_interpolation_applies_to_training_images_as_to_evaluation(pipeline):
    """--interpolation nearest: the 8 px digits upsampled to 16 px are 2x2 blocks in training batches (after the
    pad-and-crop) and evaluation batches alike; a training resize left at bilinear blends them."""
    from timm_fct.data.loaders import build_loaders
    from timm_fct.train.args import parse_args, resolve_args, resolve_preprocessing
    from timm_fct.train.build import loader_config
    args = parse_args(['--img-size', '16', '--interpolation', 'nearest', '--pad-crop', '2', '-b', '32',
                       '--pipeline', pipeline, '--device', 'cpu'])
    args.distributed, args.world_size, args.rank = False, 1, 0
    resolve_args(args)
    resolve_preprocessing(args, timm.create_model('resnet18_fct_bn_cifar'))
    train_loader, eval_loader = build_loaders(loader_config(args), DigitsDataset('train'), DigitsDataset('validation'))
    if pipeline == 'memory':
        train_loader.set_epoch(args.seed, 0)
    x_train, _ = next(iter(train_loader))
    x_eval, _ = next(iter(eval_loader))
    assert x_train.shape[-2:] == x_eval.shape[-2:] == (16, 16)
    assert two_by_two_blocks(x_eval)
    assert two_by_two_blocks(x_train)
