"""train.py flags that are parsed but could silently go unapplied: each checked where it acts, in-process."""
import re
import shlex

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from timm_fct.train import build, command, loop
from tests.support.helpers import REPO, assert_backbone_is, backbone_hub_cache, run_offline
from timm_fct.train.args import parse_args, resolve_args

TINY = ('--epochs', '1', '--img-size', '8', '-b', '64', '--model-kwargs', 'embed_dim=32')


def model_from_flags(*flags: str) -> torch.nn.Module:
    """train.py's model for these flags, on the digits' 10 classes."""
    args = parse_args(list(flags))
    args.num_classes = 10
    return build.build_model(args)


def training_outputs_differ(model: torch.nn.Module) -> bool:
    """Two forward passes of one batch in training mode: equal unless something random (dropout) acts."""
    model.train()
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return not torch.equal(model(x), model(x))


@pytest.mark.parametrize('flag', ['--drop', '--drop-path'])
def test_drop_flags_reach_the_model(flag):
    """--drop (dropout before the classifier) and --drop-path (stochastic depth) make training passes random;
    without them the same batch gives the same logits twice."""
    assert not training_outputs_differ(model_from_flags('--model-kwargs', 'embed_dim=32'))
    assert training_outputs_differ(model_from_flags(flag, '0.5', '--model-kwargs', 'embed_dim=32'))


def test_label_smoothing_reaches_the_training_loss():
    """--smoothing 0.2: the loss train.py optimises is PyTorch's cross-entropy with label_smoothing=0.2."""
    args = parse_args(['--smoothing', '0.2', '--device', 'cpu', '--model-kwargs', 'embed_dim=32'])
    args.distributed, args.world_size, args.rank, args.local_rank = False, 1, 0, 0
    resolve_args(args)
    args.num_classes = 10
    model = build.build_model(args)
    training, _ = loop.build_training(args, model, ([None] * 3, [None]), resume=None)
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8)
    training.task.train()
    with torch.no_grad():
        loss = training.task(x, y)['loss']
        expected = F.cross_entropy(model(x), y, label_smoothing=0.2)
        assert not torch.allclose(expected, F.cross_entropy(model(x), y)), 'smoothing must change the loss here'
    torch.testing.assert_close(loss, expected)


def test_num_classes_that_disagree_with_the_dataset_are_refused(tmp_path, capsys):
    assert command.main([*TINY, '--num-classes', '5', '--output', str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: --num-classes 5 but the dataset has 10 classes')
    assert not any(tmp_path.iterdir())


def test_pretrained_flag_loads_the_backbone_weights(tmp_path):
    """train.py --pretrained --model resnet18_fct_bn: the backbone holds the ImageNet weights (offline cache)."""
    hf_home, weights_file = backbone_hub_cache(tmp_path / 'hf_home', 'resnet18')
    out = tmp_path / 'loaded.safetensors'
    result = run_offline(hf_home, f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from timm_fct.train import build
from safetensors.torch import save_file
from timm_fct.train.args import parse_args
args = parse_args(['--model', 'resnet18_fct_bn', '--pretrained'])
args.num_classes = 10
model = build.build_model(args)
save_file({{k: v.contiguous() for k, v in model.state_dict().items()}}, {str(out)!r})
""")
    assert result.returncode == 0, result.stderr[-3000:]
    hub = load_file(str(weights_file))
    loaded = load_file(str(out))
    assert_backbone_is(loaded, hub)


def resolved(*flags: str):
    args = parse_args(['--device', 'cpu', *flags])
    args.distributed, args.world_size, args.rank, args.local_rank = False, 1, 0, 0
    resolve_args(args)
    return args


def test_defaults_on_cifar_are_the_papers_recipe_as_documented():
    """train.py's docstring (Sec. 4 of the paper): Adam at lr 0.01, weight decay 1e-4, batch 128, OneCycleLR,
    clipping at norm 1, 4-pixel pad-and-crop and horizontal flips, 200 epochs."""
    args = resolved('--dataset', 'torch/cifar10', '--data-dir', str(REPO / 'data'))
    assert (args.opt, args.lr, args.weight_decay, args.batch_size) == ('adam', 0.01, 1e-4, 128)
    assert (args.sched, args.clip_grad, args.clip_mode, args.epochs) == ('onecycle', 1.0, 'norm', 200)
    assert (args.pad_crop, args.hflip, args.vflip, args.smoothing) == (4, 0.5, 0.0, 0.0)
    assert args.pipeline == 'memory'


@pytest.mark.parametrize('flags,lr', [
    (('-b', '32'), 0.01 * 32 / 128),  # linear in the global batch, timm's default rule
    (('-b', '32', '--lr-base-scale', 'sqrt'), 0.01 * (32 / 128) ** 0.5),
    (('-b', '32', '--lr-base', '0.1', '--lr-base-size', '64'), 0.1 * 32 / 64),
    (('-b', '32', '--lr', '0.003'), 0.003),  # an explicit --lr is not scaled
])
def test_learning_rate_follows_the_scaling_flags(flags, lr):
    assert resolved(*flags).lr == pytest.approx(lr, rel=1e-12)


# `torchrun [--nnodes M] --nproc_per_node N [--rdzv_... VALUE | --max_restarts K ...] train.py ARGS`
TORCHRUN = re.compile(r'torchrun (?:--nnodes (\d+) )?--nproc_per_node (\d+)(?: --(?:rdzv|max)_\w+ \S+)* '
                      r'(?:train\.py|-m timm_fct\.train) ([^`\n|]+)')


def torchrun_resolution(nnodes: str, nproc: str, argline: str):
    """(global batch, lr) that `torchrun --nnodes M --nproc_per_node N train.py ARGS` trains with: M x N processes'
    batches."""
    world_size = int(nnodes or 1) * int(nproc)
    args = parse_args(['--device', 'cpu', *shlex.split(argline)])
    args.distributed, args.world_size, args.rank, args.local_rank = False, world_size, 0, 0
    resolve_args(args)
    return args.batch_size * world_size, args.lr


def test_the_multi_gpu_examples_keep_the_papers_global_batch_and_learning_rate(monkeypatch):
    """train.py's and the README's torchrun examples: the paper's batch of 128 and lr 0.01 on any number of
    processes and nodes."""
    monkeypatch.chdir(REPO)
    examples = TORCHRUN.findall(command.__doc__)
    cluster = TORCHRUN.findall((REPO / 'README.md').read_text())
    assert examples and cluster and all(nnodes for nnodes, _, _ in cluster)
    for nnodes, nproc, argline in examples + cluster:
        assert torchrun_resolution(nnodes, nproc, argline) == (128, pytest.approx(0.01)), argline


def test_the_training_docs_say_what_each_torchrun_command_gives(monkeypatch):
    """docs/training.md's table of torchrun commands: the global batch and lr it states are what train.py does."""
    monkeypatch.chdir(REPO)
    rows = [line for line in (REPO / 'docs' / 'training.md').read_text().splitlines()
            if line.startswith('| `torchrun')]
    assert rows
    for row in rows:
        (nnodes, nproc, argline), = TORCHRUN.findall(row)
        batch, lr = (re.match(r'\s*([\d.]+)', cell).group(1) for cell in row.split('|')[2:4])
        assert torchrun_resolution(nnodes, nproc, argline) == (int(batch), pytest.approx(float(lr))), row
