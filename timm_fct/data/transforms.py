"""The images' geometry and augmentation, for the PIL pipeline and (geometry only) the in-memory one."""
from typing import Callable, Sequence

from timm.data import create_transform
from timm.data.transforms import MaybeToTensor, str_to_interp_mode
from torchvision import transforms


def train_geometry(img_size: int, interpolation: str = 'bilinear') -> Callable:
    """What a training image goes through before the random augmentation: resized to img_size.

    `interpolation` is the run's (--interpolation, else the model's pretrained_cfg), the one eval_transform
    resizes with: training and evaluation images are upsampled alike (32 -> 128 px on the pre-trained row).
    """
    return transforms.Resize(img_size, interpolation=str_to_interp_mode(interpolation))


def pad_crop_flip_transform(
        img_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        padding: int = 4,
        hflip: float = 0.5,
        vflip: float = 0.,
        interpolation: str = 'bilinear',
) -> Callable:
    """Pad-and-crop plus flips, our reading of the paper's "random cropping, padding, or flipping" (Sec. 4;
    the padding width is ours, docs/decisions.md): resize with the run's interpolation, pad by `padding`
    pixels, random crop back, flips with the given probabilities."""
    steps = [train_geometry(img_size, interpolation),
             transforms.RandomCrop(img_size, padding=padding, padding_mode='constant')]
    if hflip > 0:
        steps.append(transforms.RandomHorizontalFlip(hflip))
    if vflip > 0:
        steps.append(transforms.RandomVerticalFlip(vflip))
    steps += [transforms.ToTensor(), transforms.Normalize(mean, std)]
    return transforms.Compose(steps)


def eval_transform(img_size: int, mean: Sequence[float], std: Sequence[float], crop_pct: float,
                   interpolation: str = 'bilinear') -> Callable:
    return create_transform(
        img_size, is_training=False, mean=mean, std=std, crop_pct=crop_pct, interpolation=interpolation)


def eval_geometry(img_size: int, crop_pct: float, interpolation: str = 'bilinear') -> Callable:
    """eval_transform's resize and centre crop alone, for pipelines that convert and normalise themselves."""
    full = eval_transform(img_size, (0.,) * 3, (1.,) * 3, crop_pct, interpolation)
    return transforms.Compose([t for t in full.transforms
                               if not isinstance(t, (transforms.ToTensor, MaybeToTensor, transforms.Normalize))])
