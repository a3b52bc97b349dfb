"""`python -m timm_fct.report RUN [RUN ...] --out DIR`: the report's command line (also `timm-fct-report`)."""
import argparse
from typing import Optional, Sequence

import torch

from ..cli import run_cli
from ..data.datasets import DIGITS
from ..data.loaders import default_workers
from ..runs.weights import WEIGHT_CHOICES
from . import __doc__ as REPORT_DOC
from .build import build_report
from .layout import INDEX_HTML


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be at least 1, got {value}')
    return value


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='python -m timm_fct.report', description=REPORT_DOC.split('\n\n')[0])
    parser.add_argument('models', nargs='+', metavar='MODEL',
                        help="a training run folder, checkpoint file, or 'hf-hub:' / 'local-dir:' model; "
                             'several are compared side by side')
    parser.add_argument('--out', required=True, metavar='DIR', help='report folder to create')
    parser.add_argument('--overwrite', action='store_true', help='replace DIR if it exists')
    data = parser.add_argument_group('dataset (as in training)')
    data.add_argument('--dataset', default=None,
                      help=f"dataset name; default: the one the model was trained on, else {DIGITS!r}")
    data.add_argument('--data-dir', default=None, help="dataset root; default: the run's")
    data.add_argument('--dataset-download', action='store_true',
                      help='download the dataset where the scheme supports it (torchvision, hfids/, tfds/)')
    data.add_argument('--split', default=None,
                      help="dataset split to evaluate (default: the one the runs evaluated on when --dataset is not "
                           "given, else 'validation')")
    data.add_argument('--max-images', type=positive_int, default=None,
                      help='evaluate at most this many images, spread over the split (the first ones of a '
                           'streaming split); all when not given')
    data.add_argument('--num-samples', type=positive_int, default=None,
                      help='number of samples in the split, for streaming datasets that do not state it (as '
                           "timm's validate.py)")
    parser.add_argument('-b', '--batch-size', type=positive_int, default=128, help='(default: 128)')
    parser.add_argument('-j', '--workers', type=int, default=default_workers(),
                        help='data loading processes (default: one per core but one, at most 8)')
    parser.add_argument('--num-images', type=positive_int, default=8,
                        help='images in the Grad-CAM and attention grids (default: 8)')
    parser.add_argument('--weights', choices=WEIGHT_CHOICES, default='auto',
                        help="a run's EMA or raw weights; auto takes EMA when it evaluated better (default)")
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                        help='(default: cuda when available, else cpu)')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Mistakes end with one `error:` line and exit code 2, as in training and the export."""
    return run_cli(make_report, argv)


def make_report(argv: Optional[Sequence[str]] = None) -> int:
    out = build_report(parse_args(argv))
    print(f'report written to {out / INDEX_HTML}')
    return 0
