"""The rows of the paper's Table 1 (CIFAR-10 top-1), the config that runs each, and the small digits setting.

On CIFAR a row is its config as shipped (timm_fct/configs/). On the embedded digits (no dataset given) each row
keeps its config's recipe (optimiser, lr, weight decay, schedule, clipping) on the digits recipe of training
(timm_fct/train/args.py DIGITS_DEFAULTS) for DIGITS_EPOCHS epochs: ResNet-50s take minutes per epoch on a CPU, so
each row runs its ResNet-18 counterpart with a narrow FCT head.
"""
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import timm
from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache

import timm_fct  # noqa: F401  registers the models

WEIGHT_FILES = ('model.safetensors', 'pytorch_model.bin')  # what timm loads from a Hub repository, in its order


@dataclass(frozen=True)
class Row:
    name: str  # the --rows name and the run folders' prefix
    label: str  # the paper's
    config: str  # the name of a config that ships with timm-fct (training's -c NAME)
    paper_top1: float
    digits_args: Tuple[str, ...]  # training flags that make the digits setting of this row


DIGITS_EPOCHS = 3  # the digits setting's epochs, fewer than the main job's: 4 rows x 3 seeds on a CPU
NARROW_FCT = ('--model-kwargs', 'embed_dim=32')

ROWS: Dict[str, Row] = {row.name: row for row in (
    Row('resnet50', 'vanilla (ResNet-50)', 'cifar10_resnet50', 92.87,
        ('--model', 'resnet18_cifar')),
    Row('fct_ln', 'ours (with LN)', 'cifar10_resnet50_fct_ln', 93.04,
        ('--model', 'resnet18_fct_ln_cifar', *NARROW_FCT)),
    Row('fct_bn', 'ours (with BN)', 'cifar10_resnet50_fct_bn', 93.35,
        ('--model', 'resnet18_fct_bn_cifar', *NARROW_FCT)),
    # ImageNet's ResNet-18 backbone; the ImageNet stem (stride 32) at 4x upsampling, as the CIFAR config does
    Row('pretrained', 'ours (pre-trained)', 'cifar10_resnet50_fct_bn_pretrained', 95.72,
        ('--model', 'resnet18_fct_bn', *NARROW_FCT, '--img-size', '32', '--pad-crop', '2')),
)}


def weights_unavailable(model: str) -> Optional[str]:
    """Why the ImageNet weights a pretrained model loads cannot be had here, or None when they are cached or
    were just downloaded.

    The cache is read first and the Hub asked once per file without retries: hf_hub_download alone retries
    an unreachable Hub for about 25 s per file, which made every offline rerun of reproduce.py wait a minute.
    """
    repo = timm.get_pretrained_cfg(model).hf_hub_id
    if any(isinstance(try_to_load_from_cache(repo, filename), str) for filename in WEIGHT_FILES):
        return None
    errors = []
    for filename in WEIGHT_FILES:
        try:
            get_hf_file_metadata(hf_hub_url(repo, filename), timeout=10)
            hf_hub_download(repo, filename)
            return None
        except Exception as e:  # offline, unreachable, or not in the repository: each its own exception type
            errors.append(f'{filename}: {type(e).__name__}')
    return (f'the ImageNet weights of {model} (Hugging Face Hub {repo}) are not in the cache and cannot be '
            f'downloaded ({"; ".join(errors)})')
