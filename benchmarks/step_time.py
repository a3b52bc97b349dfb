"""Milliseconds per inference and training step of FCT models, for comparing two versions of the code.

benchmarks/cost.py compares a model with its baseline inside one process; this times the models of
whichever timm_fct is imported, so a change is measured by running it on two checkouts one after the
other (alternate them, and repeat, since CPU speed drifts):

    PYTHONPATH=/path/to/old/checkout python benchmarks/step_time.py
    PYTHONPATH=. python benchmarks/step_time.py
"""
import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import timm
import torch

sys.path.insert(0, str(Path(__file__).parent))
from cost import train_step  # noqa: E402  the training step every benchmark here times

import timm_fct  # noqa: E402,F401  registers the models


def best_ms(step: Callable[[], None], steps: int, repeats: int) -> float:
    step(), step()  # warm-up
    best = float('inf')
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        best = min(best, (time.perf_counter() - start) / steps)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', nargs='+', default=['resnet50_fct_bn_cifar', 'resnet50_fct_bn',
                                                        'resnet18_fct_bn_cifar'])
    parser.add_argument('--batch-sizes', nargs='+', type=int, default=[1, 16])
    parser.add_argument('--repeats', type=int, default=3, help='timings of each; the best counts')
    args = parser.parse_args()
    print(f'timm_fct from {Path(timm_fct.__file__).parent.parent}, threads {torch.get_num_threads()}, '
          f'torch {torch.__version__}')
    print('| model | batch | inference ms | training step ms |\n|---|---|---|---|')
    for name in args.models:
        torch.manual_seed(0)
        model = timm.create_model(name)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        for batch_size in args.batch_sizes:
            x = torch.randn(batch_size, *model.pretrained_cfg['input_size'])
            target = torch.zeros(batch_size, dtype=torch.long)

            def infer() -> None:
                model.eval()
                with torch.no_grad():
                    model(x)

            steps = max(3, 20 // batch_size)
            train_ms = best_ms(lambda: train_step(model.train(), optimizer, x, target), steps, args.repeats)
            print(f'| {name} | {batch_size} | {best_ms(infer, steps, args.repeats):.1f} | {train_ms:.1f} |',
                  flush=True)


if __name__ == '__main__':
    main()
