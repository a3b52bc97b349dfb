"""bf16 autocast on a CPU: our model's gradients and losses stay finite.

On a CPU, the bf16 backward of a depth-wise convolution with stride 2 on 1x1 maps (the K/V projections
when K/V were strided on every grid, still reachable with kv_min_grid=0) returned non-finite gradients from
finite inputs, inconsistently: recomputed on captured inputs inside a failing run it gave NaN once, replayed
on the same saved inputs in a fresh process never, and MALLOC_PERTURB_ changed the outcome, which points at
a read of uninitialised memory in the kernel. No script reproduces it in PyTorch alone, so there is no
expected-failure test of PyTorch; fct.depthwise_conv runs strided depth-wise convolutions in float32 under
CPU autocast. The tests below check that path directly (it is taken, and it computes what float32 does)
rather than waiting for a bf16 run to diverge, which depends on the heap. (Without the path, the few bf16
steps of the tiny model at 8 px with kv_min_grid=0 below did hit it, on the 1x1 grid's K/V weights, in 2
of 6 runs on an AVX-512 core: a sighting, not a check.)

Every test here takes a handful of steps on a tiny network, in this process. A CPU without native bf16
(AVX2 only, no AVX-512) emulates autocast: a training step of resnet18_fct_bn_cifar (embed_dim=32, batch 64,
8 px, kv_min_grid=0) took 79 s in bf16 against 0.7 s in float32 on one such core, so a test that trains an
epoch in bf16 would take its time from the instruction set, not from what it checks.
"""
import math

import pytest
import timm
import torch
import torch.nn.functional as F
import yaml

from tests.support.dataset_files import write_image_folder
from tests.support.helpers import TINY_BACKBONE, TINY_EMBED_DIM, TINY_TRAIN_ARGS, summary_rows
from timm_fct.models.fct import FctNet, depthwise_conv

SINGLE_KEY = 'ignore:an FCT module attends over a single key'


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on these tiny tensors a second one has nothing to share, and on a shared machine
    every parallel region waits for it when it is descheduled (at load 10 on 2 cores this file took 166 s with
    torch's 2 threads, 3.4 s with 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(**kwargs) -> FctNet:
    return timm.create_model('fct_bn', num_classes=10, embed_dim=TINY_EMBED_DIM, **TINY_BACKBONE, **kwargs)


@pytest.mark.parametrize('memory_format', [torch.contiguous_format, torch.channels_last], ids=['nchw', 'nhwc'])
@pytest.mark.parametrize('grid', [1, 2, 3])
def test_strided_depthwise_convolution_computes_in_float32_under_cpu_bf16_autocast(grid, memory_format):
    """Output and both gradients equal a float32 convolution's to float32 round-off (bf16 is ~1e-2 off)."""
    torch.manual_seed(0)
    x = torch.randn(4, 8, grid, grid).contiguous(memory_format=memory_format).requires_grad_()
    weight = torch.randn(8, 1, 3, 3, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = depthwise_conv(x, weight, 2)
    assert out.dtype == torch.float32
    grad_out = torch.randn(out.shape)
    grads = torch.autograd.grad(out, (x, weight), grad_out)
    expected = F.conv2d(x, weight, None, 2, 1, 1, 8)
    expected_grads = torch.autograd.grad(expected, (x, weight), grad_out)
    torch.testing.assert_close(out, expected)
    for name, grad, expected_grad in zip(('input', 'weight'), grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, msg=lambda m, name=name: f'{name} gradient: {m}')


@pytest.mark.filterwarnings(SINGLE_KEY)
def test_strided_k_and_v_projections_run_in_float32_and_the_rest_in_bf16_under_cpu_autocast():
    """kv_min_grid=0 strides K/V on every FCT grid, 4x4, 2x2 and 1x1 at 8 px: their (stacked) depth-wise
    convolution and norm give float32, while Q's unstrided one, like the rest of the model, stays in bf16."""
    torch.manual_seed(0)
    model = tiny_model(kv_min_grid=0).train().to(memory_format=torch.channels_last)
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen[name] = (tuple(inputs[0].shape[-2:]), output.dtype)
        return hook

    for name, module in model.named_modules():
        if name.endswith(('.q_conv', '.kv_conv')):
            module.register_forward_hook(record(name))
    x = torch.randn(8, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        model(x).float().sum().backward()
    assert sorted({grid for grid, _ in seen.values()}) == [(1, 1), (2, 2), (4, 4)]
    for name, (grid, dtype) in seen.items():
        expected = torch.bfloat16 if name.endswith('.q_conv') else torch.float32
        assert dtype == expected, (name, grid, dtype)


@pytest.mark.filterwarnings(SINGLE_KEY)
@pytest.mark.parametrize('kv_min_grid', [8, 0])
@pytest.mark.parametrize('size', [8, 16])
def test_model_trains_with_finite_gradients_under_bf16_autocast_with_channels_last_on_cpu(size, kv_min_grid):
    """A few bf16 steps on one batch: loss and every gradient finite, and the loss goes down."""
    torch.manual_seed(0)
    model = tiny_model(kv_min_grid=kv_min_grid).train().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-4)
    x = torch.randn(8, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.arange(8) % 10
    losses = []
    for _ in range(5):
        with torch.autocast('cpu', dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        losses.append(loss.item())
        assert math.isfinite(losses[-1])
        bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        assert not bad, bad
        opt.step()
    assert losses[-1] < losses[0], losses


@pytest.mark.filterwarnings(SINGLE_KEY)
def test_train_with_amp_and_channels_last_on_cpu_ends_with_finite_losses(tmp_path, monkeypatch):
    """train.py's --amp --channels-last, end to end on a tiny ImageFolder (an epoch of 3 steps, one eval batch):
    the forward runs under bf16 autocast on channels_last inputs, and the losses it records are finite."""
    from timm_fct.train import build, command
    data = tmp_path / 'data'
    write_image_folder(data, {'train': 12, 'validation': 4})
    forwards = []
    build_model = build.build_model

    def watched(*args, **kwargs):
        model = build_model(*args, **kwargs)
        model.register_forward_pre_hook(lambda module, inputs: forwards.append(
            (module.training, torch.is_autocast_enabled('cpu'), torch.get_autocast_dtype('cpu'),
             inputs[0].is_contiguous(memory_format=torch.channels_last))))
        return model

    monkeypatch.setattr(command, 'build_model', watched)
    assert command.train_from_args(['--no-progress', '--amp', '--channels-last', '--data-dir', str(data),
                                '--epochs', '1', '--img-size', '8', '-b', '8', *TINY_TRAIN_ARGS,
                                '--output', str(tmp_path), '--experiment', 'run']) == 0
    # 24 training images in batches of 8, then the 8 validation images in one
    assert forwards == [(True, True, torch.bfloat16, True)] * 3 + [(False, True, torch.bfloat16, True)]
    args = yaml.safe_load((tmp_path / 'run' / 'args.yaml').read_text())
    assert args['amp'] and args['amp_dtype'] == 'bfloat16' and args['channels_last']
    row, = summary_rows(tmp_path / 'run')
    assert math.isfinite(float(row['train_loss'])) and math.isfinite(float(row['eval_loss']))
