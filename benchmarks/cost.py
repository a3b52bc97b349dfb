"""Cost of each FCT model beside its vanilla ResNet baseline, measured in one run.

Prints parameters, forward FLOPs (torch.utils.flop_counter) and inference / training-step throughput
at each model's default input size, plus the FCT/baseline ratios, as a Markdown table.

    python benchmarks/cost.py                      # all FCT models, this machine's CPU
    python benchmarks/cost.py --models 'resnet50*' --batch-size 32 --device cuda
"""
import argparse
import fnmatch
import time
from typing import Callable, Dict, List

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

import timm_fct  # noqa: F401  registers the models

BASELINES = {
    'resnet18_fct_bn': 'resnet18', 'resnet18_fct_ln': 'resnet18',
    'resnet50_fct_bn': 'resnet50', 'resnet50_fct_ln': 'resnet50',
    'resnet18_fct_bn_cifar': 'resnet18_cifar', 'resnet18_fct_ln_cifar': 'resnet18_cifar',
    'resnet50_fct_bn_cifar': 'resnet50_cifar', 'resnet50_fct_ln_cifar': 'resnet50_cifar',
}


def count_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Forward FLOPs for one image (multiply and add counted separately, as flop_counter does)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x[:1])
    return counter.get_total_flops()


def throughput(step: Callable[[], None], batch_size: int, warmup: int, iters: int, sync: Callable[[], None]) -> float:
    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    sync()
    return batch_size * iters / (time.perf_counter() - start)


def measure(name: str, args: argparse.Namespace) -> Dict[str, float]:
    device = torch.device(args.device)
    model = timm.create_model(name).to(device)
    x = torch.randn(args.batch_size, *model.pretrained_cfg['input_size'], device=device)
    target = torch.randint(0, model.num_classes, (args.batch_size,), device=device)
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def infer() -> None:
        with torch.no_grad():
            model(x)

    def train_step() -> None:
        loss = torch.nn.functional.cross_entropy(model(x), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.eval()
    flops = count_flops(model, x)
    infer_rate = throughput(infer, args.batch_size, args.warmup, args.iters, sync)
    model.train()
    train_rate = throughput(train_step, args.batch_size, args.warmup, args.iters, sync)
    return dict(
        params=sum(p.numel() for p in model.parameters()) / 1e6,
        gflops=flops / 1e9,
        infer=infer_rate,
        train=train_rate,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', default='*', help='glob over the FCT model names (default: all)')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: leave as is)')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n for n in BASELINES if fnmatch.fnmatch(n, args.models)]
    if not names:
        parser.error(f'--models {args.models!r} matches none of {sorted(BASELINES)}')

    results: Dict[str, Dict[str, float]] = {}
    rows: List[str] = []
    for name in names:
        for model_name in (BASELINES[name], name):
            if model_name not in results:
                print(f'measuring {model_name} ...', flush=True)
                results[model_name] = measure(model_name, args)
        fct, base = results[name], results[BASELINES[name]]
        rows.append(
            f"| {name} | {BASELINES[name]} | {fct['params']:.2f} ({base['params']:.2f}) "
            f"| {fct['gflops']:.3f} ({base['gflops']:.3f}) | {fct['gflops'] / base['gflops']:.3f} "
            f"| {fct['infer']:.1f} ({base['infer']:.1f}) | {fct['infer'] / base['infer']:.2f} "
            f"| {fct['train']:.1f} ({base['train']:.1f}) | {fct['train'] / base['train']:.2f} |")
    print(f'\ndevice: {args.device}, threads: {torch.get_num_threads()}, batch {args.batch_size}, '
          f'{args.iters} timed iterations after {args.warmup} warm-up, torch {torch.__version__}, timm {timm.__version__}\n')
    print('| model | baseline | params M (base) | GFLOPs/img (base) | FLOPs x | infer img/s (base) | infer x '
          '| train img/s (base) | train x |')
    print('|---|---|---|---|---|---|---|---|---|')
    print('\n'.join(rows))


if __name__ == '__main__':
    main()
