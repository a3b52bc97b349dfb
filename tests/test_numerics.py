"""bf16 autocast on a CPU (issue #8, item 9): our model's gradients and losses stay finite.

On a CPU, the bf16 backward of a depth-wise convolution with stride 2 on 1x1 maps (the K/V projections
when K/V were strided on every grid, still reachable with kv_min_grid=0) returned non-finite gradients from
finite inputs, inconsistently: recomputed on captured inputs inside a failing run it gave NaN once, replayed
on the same saved inputs in a fresh process never, and MALLOC_PERTURB_ changed the outcome, which points at
a read of uninitialised memory in the kernel. No script reproduces it in PyTorch alone, so there is no
expected-failure test of PyTorch; fct.depthwise_conv runs strided depth-wise convolutions in float32 under
CPU autocast, and the last test below diverged (exit 3) in 3 of 3 seeds without that path.
"""
import math

import pytest
import timm
import torch
import torch.nn.functional as F

from tests.helpers import QUICK, run_train, summary_rows


@pytest.mark.filterwarnings('ignore:an FCT module attends over a single key')
@pytest.mark.parametrize('size', [8, 16])
def test_model_gradients_stay_finite_under_bf16_autocast_with_channels_last_on_cpu(size):
    torch.manual_seed(0)
    model = timm.create_model('resnet18_fct_bn_cifar', embed_dim=32, num_classes=10).train()
    model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    for _ in range(3):
        x = torch.randn(64, 3, size, size).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (64,))
        with torch.autocast('cpu', dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        assert math.isfinite(loss.item())
        bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
        assert not bad, bad
        opt.step()


def test_train_with_amp_and_channels_last_on_cpu_ends_with_finite_losses(tmp_path):
    result = run_train('--amp', '--channels-last', '--epochs', '1', *QUICK, '--output', str(tmp_path),
                       '--experiment', 'run')
    assert result.returncode == 0, result.stderr[-3000:]
    rows = summary_rows(tmp_path / 'run')
    assert len(rows) == 1
    assert math.isfinite(float(rows[0]['train_loss'])) and math.isfinite(float(rows[0]['eval_loss']))


@pytest.mark.filterwarnings('ignore:an FCT module attends over a single key')
def test_strided_depthwise_convolutions_under_cpu_bf16_autocast_train_without_diverging(tmp_path):
    """kv_min_grid=0 strides K/V on 1x1 grids: without depthwise_conv's float32 path, bf16 diverged in 3 of 3 seeds."""
    result = run_train('--amp', '--weight-decay', '0', '--epochs', '1', '--img-size', '8', '-b', '64',
                       '--model-kwargs', 'embed_dim=32', 'kv_min_grid=0', '--seed', '0',
                       '--output', str(tmp_path), '--experiment', 'run')
    assert result.returncode == 0, result.stderr[-3000:]
    row, = summary_rows(tmp_path / 'run')
    assert math.isfinite(float(row['train_loss'])) and float(row['eval_top1']) > 20.0
