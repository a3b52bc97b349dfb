"""ONNX file size and onnxruntime CPU latency of the FCT models, beside PyTorch eager, in one run.

Each model is exported with both of PyTorch's exporters (timm_fct.export.onnx.export_onnx, at the model's
default input size); each file runs in onnxruntime on the CPU with as many threads as torch uses.
Eager and the two sessions alternate round by round and each keeps its best round, so drift hits all
three. Prints a Markdown table.

    python benchmarks/onnx_bench.py                              # resnet50_fct_bn_cifar, resnet50_fct_bn
    python benchmarks/onnx_bench.py --models resnet18_fct_bn --batch-sizes 1 8 --rounds 3
"""
import argparse
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import onnxruntime
import timm
import torch
import torch.nn as nn

import timm_fct  # noqa: F401  registers the models
from timm_fct.export.onnx import INPUT_NAME, export_onnx

EXPORTERS = {'torch.export': True, 'TorchScript': False}  # name -> export_onnx's dynamo argument


def untie_zero_init(model: nn.Module) -> None:
    """Set the zero-initialised BatchNorm scales of a fresh timm ResNet (zero_init_last) to 1.

    The TorchScript exporter folds each BatchNorm into its convolution and stores identical weights once:
    a fresh model's all-zero folded weights made its file 12% (ResNet-50) to 26% (ResNet-18) smaller than
    its parameters.
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d) and not m.weight.any():
                m.weight.fill_(1.0)


def round_ms(step: Callable[[], None], iters: int) -> float:
    start = time.perf_counter()
    for _ in range(iters):
        step()
    return (time.perf_counter() - start) / iters * 1e3


def measure(name: str, args: argparse.Namespace, out_dir: Path) -> List[str]:
    """Export `name` with each exporter, then time eager and each session at each batch size."""
    model = timm.create_model(name).eval()
    untie_zero_init(model)
    input_size = model.pretrained_cfg['input_size']
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    # idle onnxruntime threads spin by default, which steals the CPU from eager PyTorch running next
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    sessions, info = {}, {}
    for exporter, dynamo in EXPORTERS.items():
        path = out_dir / f'{name}_{"dynamo" if dynamo else "torchscript"}.onnx'
        start = time.perf_counter()
        export_onnx(model, path, dynamo=dynamo)
        info[exporter] = dict(export_s=time.perf_counter() - start, mb=path.stat().st_size / 1e6)
        sessions[exporter] = onnxruntime.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])

    rows = []
    for batch in args.batch_sizes:
        x = torch.randn(batch, *input_size)
        feed = {INPUT_NAME: x.numpy()}
        with torch.no_grad():
            expected = model(x).numpy()
        steps: Dict[str, Callable[[], None]] = {'eager': lambda: model(x)}
        for exporter, session in sessions.items():
            # relative: with fresh weights and BatchNorm scales of 1 the logits reach the hundreds
            diff = float(np.abs(session.run(None, feed)[0] - expected).max() / np.abs(expected).max())
            info[exporter][f'diff{batch}'] = diff
            steps[exporter] = lambda s=session: s.run(None, feed)
        best = {k: float('inf') for k in steps}
        with torch.no_grad():
            for step in steps.values():
                for _ in range(args.warmup):
                    step()
            for _ in range(args.rounds):
                for k, step in steps.items():
                    best[k] = min(best[k], round_ms(step, args.iters))
        for exporter in sessions:
            e = info[exporter]
            rows.append(f"| {name} | {exporter} | {e['mb']:.1f} | {e['export_s']:.1f} | {batch} "
                        f"| {best['eager']:.1f} | {best[exporter]:.1f} | {best['eager'] / best[exporter]:.2f} "
                        f"| {e[f'diff{batch}']:.1e} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', nargs='+', default=['resnet50_fct_bn_cifar', 'resnet50_fct_bn'])
    parser.add_argument('--batch-sizes', nargs='+', type=int, default=[1, 16])
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--iters', type=int, default=3, help='runs per timed round')
    parser.add_argument('--rounds', type=int, default=5, help='alternating rounds; the best round counts')
    parser.add_argument('--threads', type=int, default=0, help='CPU threads for torch and onnxruntime (0: torch\'s)')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    unknown = sorted(set(args.models) - set(timm.list_models('*_fct_*')))
    if unknown:
        parser.error(f'not FCT models: {unknown}')

    rows: List[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            print(f'measuring {name} ...', flush=True)
            rows += measure(name, args, Path(tmp))
    print(f'\ndevice: cpu, threads: {torch.get_num_threads()}, best of {args.rounds} alternating rounds of '
          f'{args.iters} runs after {args.warmup} warm-up, fp32, torch {torch.__version__}, '
          f'onnxruntime {onnxruntime.__version__}, timm {timm.__version__}\n')
    print('| model | exporter | file MB | export s | batch | eager ms | onnxruntime ms | eager / ORT '
          '| max rel diff |')
    print('|---|---|---|---|---|---|---|---|---|')
    print('\n'.join(rows))


if __name__ == '__main__':
    main()
