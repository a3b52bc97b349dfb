"""Cost of each FCT model beside its vanilla ResNet baseline, measured in one run.

Prints parameters, forward FLOPs (torch.utils.flop_counter), compute operators dispatched per training step
and inference / training-step throughput at each model's default input size, plus the FCT/baseline ratios,
as a Markdown table.

    python benchmarks/cost.py                      # all FCT models, this machine's CPU
    python benchmarks/cost.py --models 'resnet50*' --batch-size 32 --device cuda
    python benchmarks/cost.py --models 'resnet50*' --ops-only   # parameters and operator counts, no timing
"""
import argparse
import fnmatch
import time
from collections import Counter
from typing import Any, Callable, Dict, List, Optional

import timm
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

import timm_fct  # noqa: F401  registers the models

BASELINES = {
    'resnet18_fct_bn': 'resnet18', 'resnet18_fct_ln': 'resnet18',
    'resnet50_fct_bn': 'resnet50', 'resnet50_fct_ln': 'resnet50',
    'resnet18_fct_bn_cifar': 'resnet18_cifar', 'resnet18_fct_ln_cifar': 'resnet18_cifar',
    'resnet50_fct_bn_cifar': 'resnet50_cifar', 'resnet50_fct_ln_cifar': 'resnet50_cifar',
}


def count_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Forward FLOPs for one image (multiply and add counted separately, as flop_counter does).

    scaled_dot_product_attention runs on its math backend here: flop_counter has no formula for the
    fused CPU kernel (aten._scaled_dot_product_flash_attention_for_cpu), so attention that dispatched
    to it counted zero (ViT-Tiny's 0.36 GFLOPs, the FCT modules' 0.064 at 224 px) while the same
    attention on the math path counted in full. The math backend decomposes into counted matmuls.
    """
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x[:1])
    return counter.get_total_flops()


# operators that only allocate or re-describe memory, as views do: no kernel runs
NO_COMPUTE = {'aten::_unsafe_view', 'aten::empty', 'aten::empty_strided', 'aten::empty_like', 'aten::new_empty',
              'aten::new_empty_strided'}


class ComputeOpCounter(TorchDispatchMode):
    """Counts, by name, the aten operators dispatched under it that compute: not views (their schema says the
    output aliases an input), not in-place changes of a view's metadata, not pure allocations."""

    def __init__(self):
        super().__init__()
        self.counts: Counter = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func.name()
        if not (func.is_view or torch.Tag.inplace_view in func.tags or name.split('.')[0] in NO_COMPUTE):
            self.counts[name] += 1
        return func(*args, **(kwargs or {}))


def count_ops(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> Counter:
    """Compute operators one training step dispatches (forward, cross-entropy, backward), by name.

    Roughly what a GPU launches kernels for: every aten operator below autograd, the backward's included. The
    optimizer's update is left out (its count depends on the optimizer, foreach or not, not on the model).
    A first step runs uncounted, so that lazy initialisations do not count.
    """
    def step() -> None:
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), target).backward()

    model.train()
    step()
    with ComputeOpCounter() as counter:
        step()
    model.zero_grad(set_to_none=True)
    return counter.counts


def timed(step: Callable[[], None], iters: int, sync: Callable[[], None]) -> float:
    sync()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    sync()
    return time.perf_counter() - start


def train_step(model: Callable[[torch.Tensor], torch.Tensor], optimizer: torch.optim.Optimizer, x: torch.Tensor,
               target: torch.Tensor, amp_dtype: Optional[torch.dtype] = None) -> None:
    """One training step: forward and cross-entropy (under autocast to `amp_dtype` if given), backward, update."""
    with torch.autocast(device_type=x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        loss = torch.nn.functional.cross_entropy(model(x), target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


class Subject:
    """One model with its inference and training-step closures at its default input size."""

    def __init__(self, name: str, args: argparse.Namespace):
        device = torch.device(args.device)
        self.name = name
        memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
        self.model = timm.create_model(name).to(device, memory_format=memory_format)
        self.x = torch.randn(args.batch_size, *self.model.pretrained_cfg['input_size'], device=device).contiguous(
            memory_format=memory_format)
        self.target = torch.randint(0, self.model.num_classes, (args.batch_size,), device=device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-3)
        self.params = sum(p.numel() for p in self.model.parameters()) / 1e6
        self.ops = count_ops(self.model, self.x, self.target)
        self.gflops = 0. if args.ops_only else count_flops(self.model.eval(), self.x) / 1e9

    def infer(self) -> None:
        self.model.eval()
        with torch.no_grad():
            self.model(self.x)

    def train_step(self) -> None:
        self.model.train()
        train_step(self.model, self.optimizer, self.x, self.target)


def compare(fct_name: str, base_name: str, args: argparse.Namespace) -> Dict[str, Dict[str, Any]]:
    """Alternate the two models for several rounds and keep each one's best rate, so drift hits both.

    Also returns, under 'spread', half the interquartile range of the FCT/baseline ratio of each round
    (both models timed back to back): how far one round's ratio strays, a measure of the noise.
    """
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    subjects = [Subject(base_name, args), Subject(fct_name, args)]
    if args.ops_only:
        return {s.name: dict(params=s.params, ops=s.ops) for s in subjects}
    rates: Dict[str, Dict[str, List[float]]] = {s.name: dict(infer=[], train=[]) for s in subjects}
    for s in subjects:
        for _ in range(args.warmup):
            s.infer()
            s.train_step()
    for _ in range(args.rounds):
        for s in subjects:
            for kind, step in (('infer', s.infer), ('train', s.train_step)):
                rates[s.name][kind].append(args.batch_size * args.iters / timed(step, args.iters, sync))
    best = {s.name: dict(params=s.params, gflops=s.gflops, ops=s.ops, **{k: max(v) for k, v in rates[s.name].items()})
            for s in subjects}
    best['spread'] = {}
    for kind in ('infer', 'train'):
        ratios = torch.tensor(rates[fct_name][kind]) / torch.tensor(rates[base_name][kind])
        q1, q3 = torch.quantile(ratios, torch.tensor([0.25, 0.75])).tolist()
        best['spread'][kind] = (q3 - q1) / 2
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', default='*', help='glob over the FCT model names (default: all)')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--iters', type=int, default=3, help='steps per timed round')
    parser.add_argument('--rounds', type=int, default=3, help='alternating rounds; the best round counts')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: leave as is)')
    parser.add_argument('--channels-last', action='store_true',
                        help='models and inputs channels_last, as timm\'s --channels-last trains (the GPU recipe)')
    parser.add_argument('--ops-only', action='store_true',
                        help='count operators only (no FLOPs, no timing), with the operators each FCT model adds')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n for n in BASELINES if fnmatch.fnmatch(n, args.models)]
    if not names:
        parser.error(f'--models {args.models!r} matches none of {sorted(BASELINES)}')

    rows: List[str] = []
    for name in names:
        print(f'measuring {name} against {BASELINES[name]} ...', flush=True)
        results = compare(name, BASELINES[name], args)
        fct, base = results[name], results[BASELINES[name]]
        ops, base_ops = sum(fct['ops'].values()), sum(base['ops'].values())
        if args.ops_only:
            added = sorted(((n - base['ops'].get(op, 0), op) for op, n in fct['ops'].items()), reverse=True)
            rows.append(f"| {name} | {BASELINES[name]} | {ops} ({base_ops}) | {ops / base_ops:.3f} | "
                        + ', '.join(f'{op.replace("aten::", "")} +{n}' for n, op in added if n > 0) + ' |')
            continue
        spread, flops = results['spread'], fct['gflops'] / base['gflops']
        infer, train = fct['infer'] / base['infer'], fct['train'] / base['train']
        rows.append(
            f"| {name} | {BASELINES[name]} | {fct['params']:.2f} ({base['params']:.2f}) "
            f"| {fct['gflops']:.3f} ({base['gflops']:.3f}) | {flops:.3f} | {ops} ({base_ops}) | {ops / base_ops:.3f} "
            f"| {fct['infer']:.1f} ({base['infer']:.1f}) | {infer:.2f} ±{spread['infer']:.2f} | {infer * flops:.2f} "
            f"| {fct['train']:.1f} ({base['train']:.1f}) | {train:.2f} ±{spread['train']:.2f} | {train * flops:.2f} |")
    layout = 'channels_last' if args.channels_last else 'NCHW'
    print(f'\ndevice: {args.device}, threads: {torch.get_num_threads()}, batch {args.batch_size}, {layout}, '
          f'torch {torch.__version__}, '
          f'timm {timm.__version__}; ops: compute operators dispatched per training step (forward, cross-entropy, '
          f'backward; count_ops)\n')
    if args.ops_only:
        print('| model | baseline | ops/step (base) | ops x | operators added (count over the baseline\'s) |')
        print('|---|---|---|---|---|')
        print('\n'.join(rows))
        return
    print(f'best of {args.rounds} alternating rounds of {args.iters} steps after {args.warmup} warm-up. x: best rate '
          f'over best rate; ±: half the interquartile range of the ratio round by round; x·F: the rate ratio times the '
          f'FLOPs ratio, 1.0 where the FCT modules cost exactly their FLOPs at the baseline\'s rate\n')
    print('| model | baseline | params M (base) | GFLOPs/img (base) | FLOPs x | ops/step (base) | ops x '
          '| infer img/s (base) | infer x | infer x·F | train img/s (base) | train x | train x·F |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    print('\n'.join(rows))


if __name__ == '__main__':
    main()
