"""Getting a trained model out.

`python -m timm_fct.export` (command.py) turns a training run into a Hugging Face Hub repository, its timm
model folder plus a model card, and pushes it (hub.py); `export_onnx` writes one ONNX file per input size
(onnx.py).
"""
