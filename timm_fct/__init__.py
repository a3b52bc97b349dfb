"""timm plugin: importing it registers the FCT model family (and the CIFAR-stem ResNets) in timm.

The package's rooms: models/ (the architectures), data/ (datasets, transforms, training's input pipelines),
runs/ (the run folder, the timm model folder writer, loading a trained model from any source), train/
(`python -m timm_fct.train`), table1/ (`python -m timm_fct.table1`), report/ (`python -m timm_fct.report`),
export/ (`python -m timm_fct.export` to the Hugging Face Hub, and ONNX) and configs/ (the Table 1 configs,
`-c NAME`). `python -m timm_fct SCRIPT.py` runs one of timm's own scripts with the models registered.
"""
from .models import CifarResNet, FctNet

__version__ = '0.1.0'
__all__ = ['FctNet', 'CifarResNet', '__version__']
