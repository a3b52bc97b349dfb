"""timm plugin: importing it registers the FCT model family (and the CIFAR-stem ResNets) in timm."""
from .fct import FctNet
from .resnet_cifar import CifarResNet

__version__ = '0.1.0'
__all__ = ['FctNet', 'CifarResNet', '__version__']
