"""A training step ready for CUDA graphs, checked on the CPU: one compiled graph per mode for a whole run (the last
short training batch is dropped, the last evaluation batch padded), and Adam's fused, capturable kernel on CUDA."""
import torch
from torch._dynamo.utils import counters

from tests.support.helpers import TINY_TRAIN_ARGS, summary_rows
from timm_fct.data.datasets import DigitsDataset
from timm_fct.train.args import parse_args
from timm_fct.train.build import build_optimizer


def test_a_compiled_run_compiles_one_graph_for_training_and_one_for_evaluation(tmp_path):
    """Two epochs under --torchcompile (aot_eager: Dynamo's graphs, no C++ toolchain): the digits' 450 evaluation
    images at batch 64 end in a batch of 2, which would be a third graph (a recompile, and under reduce-overhead
    another CUDA graph recorded) were it not padded; its metrics still count 450 images."""
    from timm_fct.train import command
    torch._dynamo.reset()
    counters.clear()
    assert command.train_from_args(['--no-progress', '--epochs', '2', '--img-size', '12', '-b', '64', *TINY_TRAIN_ARGS,
                                    '--torchcompile', 'aot_eager', '--output', str(tmp_path),
                                    '--experiment', 'compiled']) == 0
    assert counters['stats']['unique_graphs'] == 2, dict(counters['stats'])
    images = len(DigitsDataset('validation'))
    assert images % 64 != 0
    for row in summary_rows(tmp_path / 'compiled'):  # top-1 is a whole number of the 450 images, padding not counted
        correct = float(row['eval_top1']) * images / 100
        assert abs(correct - round(correct)) < 1e-3, row


def test_adam_is_fused_and_capturable_on_cuda_only():
    model = torch.nn.Linear(4, 2)
    for device, fused in (('cuda', True), ('cpu', False)):
        args = parse_args(['--lr', '0.01', '--device', device])
        args.device = torch.device(device)
        defaults = build_optimizer(args, model).defaults
        assert bool(defaults.get('fused')) == fused and bool(defaults.get('capturable')) == fused, device
