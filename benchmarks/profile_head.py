"""Where the FCT modules' time goes on this machine, by operator (torch.profiler).

For each model, profiles inference and the training step of the FCT model and of its vanilla baseline
(benchmarks/cost.py's pairs) at the model's default input size, and prints, per aten operator, the self
CPU time per step of each and the difference: the time the FCT modules add beyond the baseline. Then
the same for the FCT modules alone (every module on its tap's map, as the model feeds it), and the modules'
time beside the baseline's, timed back to back without the profiler: where the throughput x FLOPs target of
benchmarks/cost.py stands once the whole-model timings' noise is out of the way.

    python benchmarks/profile_head.py                                  # resnet50_fct_bn_cifar, resnet50_fct_bn
    python benchmarks/profile_head.py --models resnet18_fct_bn_cifar --batch-size 1 --top 20
    python benchmarks/profile_head.py --models resnet50_fct_ln_cifar --batch-size 1 --by-shape  # per kernel size
"""
import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Dict, List

import timm
import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).parent))
from cost import BASELINES, count_flops  # noqa: E402  the model/baseline pairs live in cost.py

import timm_fct  # noqa: E402,F401  registers the models


def op_times(step: Callable[[], None], steps: int, by_shape: bool = False) -> Dict[str, float]:
    """Self CPU milliseconds per step of each aten operator (and 'total'), over `steps` profiled steps.

    by_shape: one entry per operator and input shapes ('aten::mkldnn_convolution [[1, 96, 4, 4], ...]'), which
    tells a kernel's fixed cost (the same time on a 4x4 map as on a 16x16 one) from its work.
    """
    with profile(activities=[ProfilerActivity.CPU], record_shapes=by_shape) as prof:
        for _ in range(steps):
            step()
    times: Dict[str, float] = defaultdict(float)
    for event in prof.key_averages(group_by_input_shape=by_shape):
        key = f'{event.key} {event.input_shapes}' if by_shape else event.key
        times[key] += event.self_cpu_time_total / 1e3 / steps
    times['total'] = sum(times.values())
    return times


def steps_of(model: torch.nn.Module, x: torch.Tensor) -> Dict[str, Callable[[], None]]:
    target = torch.zeros(x.shape[0], dtype=torch.long)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def infer() -> None:
        model.eval()
        with torch.no_grad():
            model(x)

    def train() -> None:
        model.train()
        loss = torch.nn.functional.cross_entropy(model(x), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return {'inference': infer, 'training step': train}


def head_steps(model: torch.nn.Module, x: torch.Tensor) -> Dict[str, Callable[[], None]]:
    """The FCT modules alone, with P(g) (FctNet.global_proj), on the backbone's maps of x (computed once)."""
    with torch.no_grad():
        feats = [model.backbone(x)[i] for i in model.read_levels]
    g = feats[-1].mean((2, 3))
    blocks = list(model.fct.values())

    def outputs() -> List[torch.Tensor]:
        g_projs = model.global_proj(g).split(model.global_proj_chs, dim=1)
        return [block(feats[i], g_proj) for i, (block, g_proj) in enumerate(zip(blocks, g_projs))]

    def infer() -> None:
        model.eval()
        with torch.no_grad():
            outputs()

    def train() -> None:
        model.train()
        model.zero_grad(set_to_none=True)  # fresh gradients, as a training step's, not accumulated ones
        outs = outputs()
        # a gradient laid out as each output (not out.mean()'s expanded one, which no model step produces and
        # which sends the elementwise backwards down their slow strided path)
        torch.autograd.backward(outs, [torch.ones_like(out) for out in outs])

    return {'inference': infer, 'forward + backward': train}


def time_share(head: Callable[[], None], base: Callable[[], None], rounds: int, iters: int) -> List[float]:
    """Per round, the FCT modules' time over the baseline model's, the two timed back to back (`iters` steps each).

    A model that ran the baseline and then its modules would give throughput x FLOPs ratio = F / (1 + share)
    (F: the FCT model's FLOPs over the baseline's); timed this way, the share is free of the whole models'
    round-to-round noise, which is as large as the modules' time.
    """
    shares = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(iters):
            base()
        middle = time.perf_counter()
        for _ in range(iters):
            head()
        shares.append((time.perf_counter() - middle) / (middle - start))
    return shares


def table(title: str, fct: Dict[str, float], base: Dict[str, float], top: int) -> List[str]:
    ops = sorted((k for k in set(fct) | set(base) if k != 'total'),
                 key=lambda k: fct.get(k, 0.) - base.get(k, 0.), reverse=True)
    lines = [f'\n{title}\n', '| operator | FCT model ms | baseline ms | added ms | share of added |', '|---|---|---|---|---|']
    added = fct['total'] - base['total']
    for k in ops[:top]:
        extra = fct.get(k, 0.) - base.get(k, 0.)
        lines.append(f'| {k} | {fct.get(k, 0.):.2f} | {base.get(k, 0.):.2f} | {extra:.2f} | {extra / added:.0%} |')
    lines.append(f'| **total** | {fct["total"]:.2f} | {base["total"]:.2f} | {added:.2f} | 100% |')
    return lines


def share_line(name: str, kind: str, shares: List[float], flops: float) -> str:
    share = statistics.median(shares)
    return (f'{name}, {kind}: modules / {BASELINES[name]} time {share:.3f} (median of {len(shares)} rounds, '
            f'{min(shares):.3f}-{max(shares):.3f}), FLOPs x {flops:.3f}: throughput x FLOPs ratio '
            f'{flops / (1 + share):.2f} if the model costs the baseline plus its modules')


def head_table(title: str, head: Dict[str, float], top: int) -> List[str]:
    ops = sorted((k for k in head if k != 'total'), key=lambda k: head[k], reverse=True)
    lines = [f'\n{title}\n', '| operator | ms | share |', '|---|---|---|']
    lines += [f'| {k} | {head[k]:.2f} | {head[k] / head["total"]:.0%} |' for k in ops[:top]]
    lines.append(f'| **total** | {head["total"]:.2f} | 100% |')
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', nargs='+', default=['resnet50_fct_bn_cifar', 'resnet50_fct_bn'],
                        choices=sorted(BASELINES))
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--steps', type=int, default=5, help='profiled steps, after 2 warm-up steps (0: no profile)')
    parser.add_argument('--top', type=int, default=12, help='operators listed per table')
    parser.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: leave as is)')
    parser.add_argument('--by-shape', action='store_true',
                        help='the FCT modules\' tables per operator and input shapes')
    parser.add_argument('--share-rounds', type=int, default=8,
                        help='alternating rounds timing the modules beside the baseline (0: skip)')
    parser.add_argument('--share-iters', type=int, default=10, help='steps of each per round')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f'threads: {torch.get_num_threads()}, batch {args.batch_size}, {args.steps} profiled steps after 2 '
          f'warm-up, self CPU time per step, torch {torch.__version__}, timm {timm.__version__}')
    lines: List[str] = []
    for name in args.models:
        torch.manual_seed(0)
        fct, base = timm.create_model(name), timm.create_model(BASELINES[name])
        x = torch.randn(args.batch_size, *fct.pretrained_cfg['input_size'])
        fct_steps, base_steps = steps_of(fct, x), steps_of(base, x)
        modules_steps = head_steps(fct, x)  # the backbone's maps of x, computed once for the tables and the shares
        if args.steps:
            for kind in fct_steps:
                for step in (fct_steps[kind], base_steps[kind]):
                    step(), step()
                times = op_times(fct_steps[kind], args.steps), op_times(base_steps[kind], args.steps)
                lines += table(f'{name} beside {BASELINES[name]}, {kind}, batch {args.batch_size}: ms per step',
                               *times, args.top)
            for kind, step in modules_steps.items():
                step(), step()
                lines += head_table(f'{name}: its {len(fct.fct)} FCT modules alone, {kind}, batch {args.batch_size}: '
                                    f'ms per step', op_times(step, args.steps, args.by_shape), args.top)
        if args.share_rounds:
            flops = count_flops(fct.eval(), x) / count_flops(base.eval(), x)
            lines.append('')
            for (kind, head), base_step in zip(modules_steps.items(), base_steps.values()):
                head(), base_step()
                shares = time_share(head, base_step, args.share_rounds, args.share_iters)
                lines.append(share_line(name, kind, shares, flops))
        print('\n'.join(lines), flush=True)
        lines = []


if __name__ == '__main__':
    main()
