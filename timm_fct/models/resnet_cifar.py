"""ResNets with the CIFAR stem: our models for the from-scratch rows of the paper's Table 1.

timm's ResNet reduces a 32x32 image to 8x8 before the first stage (7x7 stride-2 conv, then max-pool),
which throws away most of a CIFAR image. The CIFAR literature, and our from-scratch Table 1 rows, use a
3x3 stride-1 stem and no max-pool, so the four stages run at 32, 16, 8 and 4 pixels. The paper says only "a
ResNet-50 with no modifications" for its from-scratch rows: this stem is our choice (docs/decisions.md).
"""
from typing import Any, Dict

import torch.nn as nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

__all__ = ['CifarResNet']

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR_STEM_REDUCTION = 4  # the stride the 7x7 conv and max-pool would have applied


class CifarResNet(ResNet):
    """timm's ResNet with the stem swapped for a 3x3 stride-1 conv and no max-pool.

    Everything else (blocks, head, feature_info, forward_intermediates) is timm's, so the model works
    with every timm tool; only the stem and the feature reductions it implies change.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        dd = {'device': kwargs.get('device'), 'dtype': kwargs.get('dtype')}
        stem_chs = self.bn1.num_features
        self.conv1 = nn.Conv2d(self.in_chans, stem_chs, kernel_size=3, stride=1, padding=1, bias=False, **dd)
        nn.init.kaiming_normal_(self.conv1.weight, mode='fan_out', nonlinearity='relu')
        self.maxpool = nn.Identity()
        for info in self.feature_info:
            info['reduction'] = max(1, info['reduction'] // CIFAR_STEM_REDUCTION)


def _create_cifar_resnet(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return build_model_with_cfg(CifarResNet, variant, pretrained, **kwargs)


def cifar_cfg(**kwargs: Any) -> Dict[str, Any]:
    """The pretrained_cfg of a 32x32 CIFAR-10 model: its preprocessing, grid and stem; FctNet's reuse it."""
    return {
        'url': '',
        'num_classes': 10, 'input_size': (3, 32, 32), 'pool_size': (4, 4), 'min_input_size': (3, 8, 8),
        'crop_pct': 1.0, 'interpolation': 'bilinear',
        'mean': CIFAR10_MEAN, 'std': CIFAR10_STD,
        'first_conv': 'conv1', 'classifier': 'fc',
        'license': 'apache-2.0',
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    'resnet18_cifar': cifar_cfg(),
    'resnet50_cifar': cifar_cfg(),
})


@register_model
def resnet18_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-18 with the CIFAR stem (3x3 stride-1 conv, no max-pool), for 32x32 inputs."""
    model_args = dict(block=BasicBlock, layers=(2, 2, 2, 2))
    return _create_cifar_resnet('resnet18_cifar', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet50_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-50 with the CIFAR stem (our choice; the paper: "a ResNet-50 with no modifications"): our model for
    the 'vanilla (ResNet-50)' row of Table 1."""
    model_args = dict(block=Bottleneck, layers=(3, 4, 6, 3))
    return _create_cifar_resnet('resnet50_cifar', pretrained, **dict(model_args, **kwargs))
