"""bf16 autocast with channels_last on a CPU (issue #8, item 9): our model's gradients stay finite.

Before K and V were strided only on patch grids larger than kv_min_grid, `train.py --amp --channels-last`
at the tiny setting below was stopped by the NaN guard in 5 of 8 runs. With the current model it completed
24 of 24 runs (seeds 0-7 at 8, 12 and 16 px). The old trigger alone (a depth-wise stride-2 convolution on
1x1-4x4 maps, and the ConvAttention with K/V strided on every grid, bf16 vs fp32, contiguous vs
channels_last, MALLOC_PERTURB_=165) gave finite gradients within bf16 rounding of float64 in every trial,
so there is no PyTorch-only reproduction to keep as an expected failure. The whole model with the old
striding (`kv_min_grid=0`, a single key in every FCT module at 8 px) still fails under `--amp` even without
`--channels-last`: seed 0 with `--weight-decay 0` hit the NaN guard at update 21 in 2 of 2 runs, the first
non-finite value coming from the backward of v_conv's strided depth-wise convolution, but finished (without
learning) under MALLOC_PERTURB_=165, which points at a read of uninitialised memory; not pinned down yet.
"""
import csv
import math

import pytest
import timm
import torch
import torch.nn.functional as F

from tests.conftest import run_train

# the tests' tiny training setting: the digits at their native 8 px, a narrow FCT head, batches of 64
QUICK = ('--img-size', '8', '--model-kwargs', 'embed_dim=32', '-b', '64')


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
    with open(tmp_path / 'run' / 'summary.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1
    assert math.isfinite(float(rows[0]['train_loss'])) and math.isfinite(float(rows[0]['eval_loss']))
