"""Training's flags: timm's names and meanings, the paper's recipe as defaults, and what they resolve to.

A YAML config (-c) sets defaults and the command line overrides it, as in timm's train.py; resolve_args
fills in what depends on the device, the dataset, the model and the world size, and refuses what cannot work.
"""
import argparse
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
import yaml
from timm.data import resolve_data_config
from timm.utils import ParseKwargs

from ..data.datasets import DIGITS, DIGITS_MEAN, DIGITS_STD, IN_MEMORY_DATASETS
from ..data.loaders import PIPELINES, default_workers
from ..errors import FctError
from ..runs.load import check_model_name

DEFAULT_MODEL = 'resnet18_fct_bn_cifar'
CONFIGS = Path(__file__).resolve().parents[1] / 'configs'  # package data: `-c NAME` finds them from any install
# batch and epochs the paper's; the 4 px padding and the horizontal flips only ours (the paper flips "either
# horizontally or vertically"; the Table 1 configs set both)
PAPER_DEFAULTS = dict(batch_size=128, epochs=200, pad_crop=4, hflip=0.5, vflip=0.0)
# the digits recipe, the one place it is written: the embedded main job, about a minute on 2 CPU cores: the 8 px
# digits upsampled 2x, padded by 1 px, never flipped (a flipped digit is another digit or none)
DIGITS_DEFAULTS = dict(batch_size=64, epochs=5, img_size=16, pad_crop=1, hflip=0.0, vflip=0.0)


def build_parser(description: str = '') -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m timm_fct.train', description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-c', '--config', default='', metavar='FILE',
                        help='YAML file whose keys set the defaults of these flags')
    for add_flags in (add_dataset_flags, add_model_flags, add_optimisation_flags, add_augmentation_flags,
                      add_run_flags):
        add_flags(parser)
    return parser


def add_dataset_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group('Dataset')
    group.add_argument('data', nargs='?', metavar='DIR', help='path to dataset (positional, same as --data-dir)')
    group.add_argument('--data-dir', metavar='DIR', help='path to dataset (root dir)')
    group.add_argument('--dataset', metavar='NAME', default=None,
                       help=f"'{DIGITS}' (default with no --data-dir, ships with scikit-learn); any of timm's: "
                            "'torch/cifar10' (torchvision), 'hfds/NAME' (Hugging Face datasets, a Hub name or a local "
                            "folder), 'hfids/NAME' (the same, streamed), 'wds/NAME' (webdataset shards in --data-dir), "
                            "'tfds/NAME'; or '' for an image folder tree in --data-dir")
    group.add_argument('--train-split', default='train', help='dataset train split (default: train)')
    group.add_argument('--val-split', default='validation', help='dataset validation split (default: validation)')
    group.add_argument('--train-num-samples', default=None, type=int, metavar='N',
                       help='number of samples in the train split, for streaming datasets that do not state it')
    group.add_argument('--val-num-samples', default=None, type=int, metavar='N',
                       help='number of samples in the validation split, for streaming datasets that do not state it')
    group.add_argument('--input-key', default=None, type=str,
                       help="the image column of a Hugging Face dataset ('image' unless given; 'img' for "
                            "uoft-cs/cifar10) or the image extensions of webdataset samples")
    group.add_argument('--target-key', default=None, type=str,
                       help="the label column of a Hugging Face dataset ('label' unless given)")
    group.add_argument('--dataset-download', action='store_true', default=False,
                       help='download the dataset if it is not present and the scheme supports it: torchvision '
                            '(CIFAR-10/100 into --data-dir), hfids/ (prepares it, counting its samples), tfds/')


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group('Model')
    group.add_argument('--model', default=DEFAULT_MODEL, help='any timm model name')
    group.add_argument('--pretrained', action='store_true', default=False, help="load the model's pretrained weights")
    group.add_argument('--num-classes', type=int, default=None, help='default: the number of classes in the dataset')
    group.add_argument('--img-size', type=int, default=None, help="input size, default: the model's")
    group.add_argument('--mean', type=float, nargs=3, default=None, metavar='MEAN')
    group.add_argument('--std', type=float, nargs=3, default=None, metavar='STD')
    group.add_argument('--crop-pct', type=float, default=None, help='eval center crop fraction')
    group.add_argument('--interpolation', default='', help='resize interpolation, default: the model\'s')
    group.add_argument('--drop', type=float, default=0.0, help='dropout before the classifier')
    group.add_argument('--drop-path', type=float, default=None, help='stochastic depth rate')
    group.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs,
                       help='extra model arguments, e.g. --model-kwargs embed_dim=64 taps="(2,3)"')
    group.add_argument('--channels-last', action='store_true', default=False)
    group.add_argument('--torchcompile', nargs='?', type=str, default=None, const='inductor',
                       help='torch.compile the model (backend, default inductor)')
    group.add_argument('--torchcompile-mode', type=str, default=None,
                       help="torch.compile's mode, e.g. 'reduce-overhead' (CUDA graphs) or 'max-autotune'")
    group.add_argument('--sync-bn', action='store_true', default=False, help='SyncBatchNorm across processes')


def add_optimisation_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group('Optimisation')
    group.add_argument('-b', '--batch-size', type=int, default=None,
                       help=f'batch size per process (default 128, {DIGITS_DEFAULTS["batch_size"]} for {DIGITS})')
    group.add_argument('--epochs', type=int, default=None,
                       help=f'default 200, the paper\'s; {DIGITS_DEFAULTS["epochs"]} for {DIGITS}')
    group.add_argument('--opt', default='adam', help='timm optimizer name')
    group.add_argument('--lr', type=float, default=None, help='learning rate (default: --lr-base scaled)')
    group.add_argument('--lr-base', type=float, default=0.01, help='lr for a global batch of --lr-base-size')
    group.add_argument('--lr-base-size', type=int, default=128)
    group.add_argument('--lr-base-scale', default='linear', choices=('linear', 'sqrt'))
    group.add_argument('--momentum', type=float, default=0.9)
    group.add_argument('--weight-decay', type=float, default=1e-4)
    group.add_argument('--wd-all-params', action='store_true', default=False,
                       help='decay every parameter, norms and biases too, coupled to the gradient as '
                            "torch.optim.Adam(weight_decay=...) does (our reading of the paper's Adam with weight "
                            "decay 1e-4); default: timm's exemption of norm and bias parameters")
    group.add_argument('--clip-grad', type=float, default=1.0, help='clip gradients at this global norm (0: off)')
    group.add_argument('--clip-mode', default='norm', choices=('norm', 'value', 'agc'))
    group.add_argument('--sched', default='onecycle',
                       help="'onecycle' (our implementation of the paper's cyclical learning rates: PyTorch's "
                            "OneCycleLR per update, lr and beta1/momentum) or any timm scheduler name")
    group.add_argument('--pct-start', type=float, default=0.3, help='onecycle: fraction of training spent warming up')
    group.add_argument('--div-factor', type=float, default=25.0, help='onecycle: starting lr = lr / div-factor')
    group.add_argument('--final-div-factor', type=float, default=1e4,
                       help='onecycle: final lr = starting lr / final-div-factor')
    group.add_argument('--onecycle-three-phase', action='store_true', default=False,
                       help="onecycle: Smith and Topin's linear three-phase cycle (OneCycleLR(three_phase=True, "
                            "anneal_strategy='linear')) instead of OneCycleLR's default two cosine phases")
    group.add_argument('--warmup-epochs', type=int, default=0, help='other schedulers: warmup epochs')
    group.add_argument('--warmup-lr', type=float, default=1e-5)
    group.add_argument('--min-lr', type=float, default=0.0)
    group.add_argument('--smoothing', type=float, default=0.0, help='label smoothing')


def add_augmentation_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group('Augmentation')
    group.add_argument('--pad-crop', type=int, default=None,
                       help=f'pad by this many pixels, random crop back (0: off; default 4, our choice: the paper '
                            f'gives no amount; 1 for {DIGITS})')
    group.add_argument('--hflip', type=float, default=None,
                       help=f'horizontal flip probability (default 0.5, 0 for {DIGITS})')
    group.add_argument('--vflip', type=float, default=None, help='vertical flip probability (default 0)')
    group.add_argument('--pipeline', default='auto', choices=('auto', *PIPELINES),
                       help="'memory': the whole split as one uint8 tensor on the device, pad-crop and flips per "
                            "batch there; 'pil': a DataLoader over PIL images; 'auto' (default): memory for "
                            f"{DIGITS} and CIFAR with --pad-crop, pil otherwise (timm's augmentation)")


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group('Model EMA')
    group.add_argument('--model-ema', action='store_true', default=False, help='track an EMA of the weights')
    group.add_argument('--model-ema-decay', type=float, default=0.9998)

    group = parser.add_argument_group('Run')
    group.add_argument('--amp', action='store_true', default=False, help='mixed precision (autocast)')
    group.add_argument('--amp-dtype', default='bfloat16', choices=('bfloat16', 'float16'))
    group.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    group.add_argument('--dist-backend', default=None, help='default: nccl on cuda, gloo on cpu')
    group.add_argument('--dist-url', default=None)
    group.add_argument('--dist-timeout', type=float, default=600.0, metavar='SECONDS',
                       help='the longest a process waits for the others: a start-up (process group, --resume auto) '
                            'not finished by then ends the process, and any collective fails after it, so torchrun '
                            'restarts the group instead of waiting')
    group.add_argument('-j', '--workers', type=int, default=None,
                       help='data loading processes (default: 0 on CPU, where they compete with the model for cores)')
    group.add_argument('--pin-mem', action='store_true', default=None, help='default: on for cuda')
    group.add_argument('--seed', type=int, default=42)
    group.add_argument('--resume', default='', metavar='PATH', help='checkpoint to resume model, optimizer, '
                       "scheduler, EMA, AMP scaler and epoch from; the run continues in its folder. 'auto': the "
                       'newest checkpoint in --output/--experiment if it has one, else a fresh start (one command '
                       'for the first start and every restart, e.g. under torchrun --max-restarts)')
    group.add_argument('--output', default='output/train', metavar='DIR', help='parent folder of the run folder')
    group.add_argument('--experiment', default='', metavar='NAME', help='run folder name (default: time-model)')
    group.add_argument('--checkpoint-hist', type=int, default=1, help='per-epoch checkpoints kept')
    group.add_argument('--no-progress', action='store_true', default=False, help='no progress bar')
    group.add_argument('--log-interval', type=int, default=50,
                       help='updates between progress reports and non-finite loss checks (each waits for the device)')

def digits_flags(**overrides: Any) -> List[str]:
    """The flags that run any config on the digits recipe (DIGITS_DEFAULTS, with `overrides`): a config's values
    are only defaults, which flags override."""
    settings = {**DIGITS_DEFAULTS, **overrides}
    return ['--dataset', DIGITS, '--val-split', 'validation',
            *(part for key, value in settings.items() for part in ('--' + key.replace('_', '-'), str(value)))]


def parse_args(argv: Optional[Sequence[str]] = None, description: str = '') -> argparse.Namespace:
    """timm's two-step parse: a YAML config sets defaults, command-line flags override it."""
    parser = build_parser(description)
    config_parser = argparse.ArgumentParser(add_help=False)
    config_parser.add_argument('-c', '--config', default='')
    known, remaining = config_parser.parse_known_args(argv)
    if known.config:
        parser.set_defaults(**read_config(known.config, parser))
    args = parser.parse_args(remaining)
    args.config = known.config
    return args


def shipped_configs() -> List[str]:
    """The names of the configs that ship inside the package (the paper's Table 1 rows)."""
    return sorted(p.stem for p in CONFIGS.glob('*.yaml'))


def config_path(name: str) -> Path:
    """-c's argument: a YAML file, or the name of a config that ships with timm-fct (with or without .yaml), so
    an installed package runs the Table 1 rows with no checkout."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = CONFIGS / path.with_suffix('.yaml').name
    if path.parent == Path('.') and shipped.is_file():
        return shipped
    raise FctError(f'config file {name} does not exist; a file, or one of the configs that ship with timm-fct: '
                   f'{", ".join(shipped_configs())}')


def read_config(name: str, parser: argparse.ArgumentParser) -> Dict[str, Any]:
    path = config_path(name)
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise FctError(f'config file {path} is not valid YAML: {e}') from None
    if not isinstance(cfg, dict):
        raise FctError(f'config file {path} must hold a mapping of flag names to values')
    known = {a.dest for a in parser._actions}
    unknown = sorted(k for k in cfg if k.replace('-', '_') not in known)
    if unknown:
        raise FctError(f'config file {path} has unknown keys {unknown}; keys are flag names, e.g. '
                          f'batch_size, lr, model, epochs')
    spellings: Dict[str, list] = {}
    for k in cfg:
        spellings.setdefault(k.replace('-', '_'), []).append(k)
    twice = [(dest, sorted(keys)) for dest, keys in spellings.items() if len(keys) > 1]
    if twice:
        dest, keys = twice[0]
        raise FctError(f'config file {path} sets {dest} twice ({", ".join(map(repr, keys))}); keep one of them')
    # the flags' dashed spelling (weight-decay) or the argparse dest (weight_decay, as timm's configs use)
    return {k.replace('-', '_'): v for k, v in cfg.items()}


def resolve_args(args: argparse.Namespace) -> None:
    """Fill in what depends on the device, the dataset, the model and the world size; reject what cannot work."""
    args.device = torch.device(args.device)
    if args.pin_mem is None:
        args.pin_mem = args.device.type == 'cuda'
    if args.workers is None:
        args.workers = default_workers() if args.device.type == 'cuda' else 0
    args.data_dir = args.data_dir or args.data
    if args.dataset is None:
        args.dataset = '' if args.data_dir else DIGITS
    check_model_name(args.model)
    is_digits = args.dataset == DIGITS
    for key, value in (DIGITS_DEFAULTS if is_digits else PAPER_DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if is_digits:  # the dataset's own statistics, unless the flags say otherwise
        args.mean = args.mean or list(DIGITS_MEAN)
        args.std = args.std or list(DIGITS_STD)
        args.crop_pct = args.crop_pct or 1.0
    if args.lr is None:
        ratio = args.batch_size * args.world_size / args.lr_base_size
        args.lr = args.lr_base * (math.sqrt(ratio) if args.lr_base_scale == 'sqrt' else ratio)
    if args.sync_bn and args.device.type != 'cuda':
        raise FctError('--sync-bn needs GPUs: PyTorch implements SyncBatchNorm for CUDA devices only')
    if args.epochs < 1 or args.batch_size < 1 or args.log_interval < 1:
        raise FctError('--epochs, --batch-size and --log-interval must be at least 1')
    limit = 0.5 if args.onecycle_three_phase else 1.0  # three phases: up, as long back down, then the rest
    if args.sched == 'onecycle' and not 0 < args.pct_start < limit:
        raise FctError(f'--pct-start is the fraction of training spent warming up: expected a value in (0, {limit})'
                       f'{" with --onecycle-three-phase" if limit < 1 else ""}, got {args.pct_start}')
    for flag in ('hflip', 'vflip'):
        if not 0 <= getattr(args, flag) <= 1:
            raise FctError(f'--{flag} is a probability: expected a value in [0, 1], got {getattr(args, flag)}')
    if args.pipeline == 'auto':
        args.pipeline = 'memory' if args.dataset in IN_MEMORY_DATASETS and args.pad_crop > 0 else 'pil'
    if args.pipeline == 'memory' and args.dataset not in IN_MEMORY_DATASETS:
        raise FctError(f'--pipeline memory holds {", ".join(IN_MEMORY_DATASETS)}; use --pipeline pil for '
                          f'{args.dataset or "an ImageFolder tree"}')


def resolve_preprocessing(args: argparse.Namespace, model: torch.nn.Module) -> Dict[str, Any]:
    """The run's preprocessing as timm's train.py resolves it, once the model is built: each flag, else the
    model's pretrained_cfg (a generic FCT model's is its backbone's). Written back into args."""
    config = resolve_data_config(vars(args), model=model)
    args.img_size = config['input_size'][-1]
    args.mean, args.std = list(config['mean']), list(config['std'])
    args.crop_pct, args.interpolation = config['crop_pct'], config['interpolation']
    smallest = (getattr(model, 'pretrained_cfg', None) or {}).get('min_input_size')
    if smallest and args.img_size < smallest[-1]:  # refused now, not at the first forward as a traceback
        raise FctError(f'--img-size {args.img_size} is below the smallest input {args.model} takes, {smallest[-1]} px '
                       f'(for an FCT model: the total stride of its backbone, where the deepest map is 1x1)')
    return config
