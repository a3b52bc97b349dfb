"""torch.compile of a training step (forward, cross-entropy, backward) of the Table 1 models at their training sizes.

Each row's model as its config names it (configs/cifar10_*.yaml: 10 classes; the CIFAR-stem models at 32 px, the
pre-trained row's ImageNet-stem model at 128 px), and that model at 32 px too, where its ImageNet stem leaves the
last FCT module a 1x1 patch grid (it warns in eager mode; the warning must not break the graph). The model is
captured whole (fullgraph=True, static shapes) by Dynamo and its backward traced by AOTAutograd (the `aot_eager`
backend): what a graph break, a guard or an untraceable call would stop. Inductor's code generation on top is
tried on the small model (tests/models/test_fct_model.py); for a ResNet-50 training step it takes minutes on a
2-core CPU, too long for the suite.

The gradients must be as accurate as eager's: both are compared with the same step in float64, and for every
parameter the compiled step's error may be at most 10 times the eager float32 step's, plus a floor of 1e-6 of the
whole gradient's norm (some gradients are zero in exact arithmetic, e.g. K's bias, which softmax ignores). A
direct float32 comparison would need a loose tolerance: at batch 2, BatchNorm on the backbone's 1x1 maps
normalises two values per channel and magnifies rounding differences to a few percent.
"""
import copy
from typing import Dict

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

BATCH = 2
NUM_CLASSES = 10
ERROR_RATIO = 10.0
FLOOR = 1e-6
BACKEND = 'aot_eager'

TABLE1_STEPS = [
    ('resnet50_cifar', 32),  # vanilla (ResNet-50)
    ('resnet50_fct_ln_cifar', 32),  # ours (with LN)
    ('resnet50_fct_bn_cifar', 32),  # ours (with BN)
    ('resnet50_fct_bn', 128),  # ours (pre-trained), at its fine-tuning size
    ('resnet50_fct_bn', 32),  # the same at 32 px: 1x1 patch grid in the last FCT module
]


def _step_grads(model: nn.Module, x: torch.Tensor, target: torch.Tensor, compile: bool = False) -> Dict[str, torch.Tensor]:
    forward = torch.compile(model, fullgraph=True, dynamic=False, backend=BACKEND) if compile else model
    F.cross_entropy(forward(x), target).backward()
    return {name: p.grad.detach().double() for name, p in model.named_parameters()}


@pytest.mark.parametrize('name,size', TABLE1_STEPS, ids=[f'{n}-{s}px' for n, s in TABLE1_STEPS])
def test_compiled_training_step_gives_eagers_gradients(name, size):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=NUM_CLASSES).train()
    x = torch.randn(BATCH, 3, size, size)
    target = torch.arange(BATCH) % NUM_CLASSES
    exact = _step_grads(copy.deepcopy(model).double(), x.double(), target)
    eager = _step_grads(copy.deepcopy(model), x, target)
    compiled = _step_grads(copy.deepcopy(model), x, target, compile=True)

    floor = FLOOR * torch.cat([g.flatten() for g in exact.values()]).norm()
    worse = {}
    for param_name, g in exact.items():
        eager_error, compiled_error = (eager[param_name] - g).norm(), (compiled[param_name] - g).norm()
        if compiled_error > ERROR_RATIO * eager_error + floor:
            worse[param_name] = (compiled_error.item(), eager_error.item(), g.norm().item())
    assert not worse, f'compiled gradients less accurate than eager (compiled error, eager error, norm): {worse}'
