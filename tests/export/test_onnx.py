"""ONNX: every FCT model exports with a dynamic batch axis, and onnxruntime answers as PyTorch does.

Every model goes through the TorchScript-based exporter, the cheaper one (0.6-1.6 s a model here,
against 6-11 s for the torch.export-based one, which runs on two models). The CIFAR models export at
their 32 px, the ImageNet-stem ones at a small non-square 64x80. Exports are shared within the module.
"""
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Tuple

import numpy as np
import onnxruntime
import pytest
import timm
import torch
import torch.nn as nn

from timm_fct.export.onnx import INPUT_NAME, export_onnx

FCT_MODELS = timm.list_models('*_fct_*')
TOLERANCE = 1e-4
BATCHES = (1, 3)
DYNAMO_CASES = [('resnet18_fct_ln_cifar', (3, 36, 32)), ('resnet18_fct_bn', (3, 64, 64))]
FRESH_PROCESS_TIMEOUT = 120  # measured: about 2 s on this project's 2-core machine


def small_size(name: str) -> Tuple[int, int, int]:
    return (3, 32, 32) if name.endswith('_cifar') else (3, 64, 80)


def randomize_norms(model: nn.Module, seed: int = 0) -> None:
    """Give every norm a random affine and BatchNorm random running statistics, as trained weights have.

    A fresh timm ResNet zeroes the last BatchNorm scale of each block, which silences its residual branch
    (and lets the TorchScript exporter share one all-zero folded weight between blocks): compared as is,
    the residual convolutions of the backbone would not be tested.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


@dataclass
class Exported:
    path: Path
    size: Tuple[int, int, int]
    inputs: Dict[str, np.ndarray]  # 'batch1', 'batch3'
    expected: Dict[str, np.ndarray]  # PyTorch's logits for each input


@pytest.fixture(scope='module')
def exported(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, Tuple[int, int, int], bool], Exported]:
    """export(name, size, dynamo): the model exported once per module, with inputs and PyTorch's outputs saved."""
    root = tmp_path_factory.mktemp('onnx')
    cache: Dict[Tuple, Exported] = {}

    def export(name: str, size: Tuple[int, int, int], dynamo: bool) -> Exported:
        key = (name, size, dynamo)
        if key not in cache:
            model = timm.create_model(name)
            randomize_norms(model)
            stem = f'{name}_{"x".join(map(str, size))}_{"dynamo" if dynamo else "torchscript"}'
            path = export_onnx(model, root / f'{stem}.onnx', input_size=size, dynamo=dynamo)
            gen = torch.Generator().manual_seed(1)
            inputs = {f'batch{b}': torch.randn(b, *size, generator=gen) for b in BATCHES}
            with torch.no_grad():
                expected = {k: model(x).numpy() for k, x in inputs.items()}
            inputs = {k: x.numpy() for k, x in inputs.items()}
            np.savez(root / f'{stem}.npz', **{f'input_{k}': v for k, v in inputs.items()},
                     **{f'expected_{k}': v for k, v in expected.items()})
            cache[key] = Exported(path, size, inputs, expected)
        return cache[key]

    return export


def assert_onnxruntime_matches(exp: Exported) -> None:
    session = onnxruntime.InferenceSession(str(exp.path), providers=['CPUExecutionProvider'])
    assert session.get_inputs()[0].shape == ['batch', *exp.size]  # dynamic batch, fixed C, H, W
    for key, x in exp.inputs.items():
        (logits,) = session.run(None, {INPUT_NAME: x})
        np.testing.assert_allclose(logits, exp.expected[key], rtol=0, atol=TOLERANCE, err_msg=key)


@pytest.mark.parametrize('name', FCT_MODELS)
def test_torchscript_export_matches_pytorch(exported, name: str):
    assert_onnxruntime_matches(exported(name, small_size(name), False))


@pytest.mark.slow  # the dynamo exporter traces the model through torch.export: tens of seconds per model
@pytest.mark.parametrize('name, size', DYNAMO_CASES, ids=[n for n, _ in DYNAMO_CASES])
def test_dynamo_export_matches_pytorch(exported, name: str, size: Tuple[int, int, int]):
    assert_onnxruntime_matches(exported(name, size, True))


def test_other_image_sizes_are_refused(exported):
    """The K/V strides and area resampling are fixed for the exported size: other sizes must fail, not mislead."""
    exp = exported('resnet18_fct_bn_cifar', small_size('resnet18_fct_bn_cifar'), False)
    session = onnxruntime.InferenceSession(str(exp.path), providers=['CPUExecutionProvider'])
    with pytest.raises(Exception, match='dimensions'):
        session.run(None, {INPUT_NAME: np.zeros((1, 3, 64, 64), np.float32)})


FRESH_PROCESS = '''
import json
import sys

import importlib.abc


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'timm', 'timm_fct'):
            raise ModuleNotFoundError(f'{name} is blocked in this process')


sys.meta_path.insert(0, Blocker())
for blocked in ('torch', 'timm', 'timm_fct'):
    try:
        __import__(blocked)
    except ImportError:
        pass
    else:
        sys.exit(f'{blocked} could be imported')

import numpy as np
import onnxruntime

results = {}
for onnx_file in sys.argv[1:]:
    saved = np.load(onnx_file[:-len('.onnx')] + '.npz')
    session = onnxruntime.InferenceSession(onnx_file, providers=['CPUExecutionProvider'])
    name = session.get_inputs()[0].name
    results[onnx_file] = {
        key[len('input_'):]: float(np.abs(session.run(None, {name: saved[key]})[0]
                                          - saved['expected_' + key[len('input_'):]]).max())
        for key in saved.files if key.startswith('input_')
    }
print(json.dumps(results))
'''


def test_exported_files_run_without_torch_timm_or_timm_fct(exported, tmp_path: Path):
    """What a deployment has: onnxruntime and numpy. The process refuses to import torch, timm and timm_fct."""
    files = [exported('resnet18_fct_bn_cifar', small_size('resnet18_fct_bn_cifar'), False).path,
             exported(*DYNAMO_CASES[0], True).path]
    result = subprocess.run([sys.executable, '-I', '-c', FRESH_PROCESS, *map(str, files)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=FRESH_PROCESS_TIMEOUT)
    assert result.returncode == 0, result.stderr
    diffs = json.loads(result.stdout)
    assert sorted(diffs) == sorted(map(str, files))
    for onnx_file, per_batch in diffs.items():
        assert sorted(per_batch) == [f'batch{b}' for b in BATCHES]
        assert max(per_batch.values()) <= TOLERANCE, (onnx_file, per_batch)
