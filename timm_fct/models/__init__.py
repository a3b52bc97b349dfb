"""The registered architectures: what a timm pull request would hold. Imports only torch, timm and each other."""
from .fct import ConvAttention, FctBlock, FctNet, FocusLayer
from .resnet_cifar import CifarResNet

__all__ = ['FctNet', 'FctBlock', 'ConvAttention', 'FocusLayer', 'CifarResNet']
