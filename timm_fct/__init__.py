"""timm plugin: importing it registers the FCT model family (and the CIFAR-stem ResNets) in timm.

The package's rooms: models/ (the architectures), data/, train/, runs/ (the run folder and loading a model
from any source), report/ and export/ (Hub, ONNX).
"""
from .models import CifarResNet, FctNet

__version__ = '0.1.0'
__all__ = ['FctNet', 'CifarResNet', '__version__']
