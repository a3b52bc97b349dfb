"""ONNX export of the FCT models: a dynamic batch axis, height and width fixed at export.

Each FCT module picks its K/V stride from its patch grid (`kv_stride_for`), and `area_resize` skips the
resample where a grid already has the target size: Python decisions on the spatial size. Both of
PyTorch's exporters record the decisions taken for the example input. torch.export also records guards
that would reject other sizes, but ONNX has nowhere to keep them, so a graph exported with dynamic H/W
runs at any size and answers wrongly wherever a decision would differ (measured in docs/onnx.md). Export
at the size you serve, one file per size.
"""
import warnings
from pathlib import Path
from typing import Optional, Tuple, Union

import torch

INPUT_NAME = 'input'
OUTPUT_NAME = 'logits'


def export_onnx(
        model: torch.nn.Module,
        path: Union[str, Path],
        input_size: Optional[Tuple[int, int, int]] = None,
        dynamo: bool = True,
        opset: Optional[int] = None,
) -> Path:
    """Export `model` in eval mode to one self-contained .onnx file taking (batch, C, H, W) at any batch size.

    Args:
        model: the model to export; it is put in eval mode.
        path: the .onnx file to write.
        input_size: (C, H, W) of the input the file accepts; the model's pretrained_cfg input_size if None.
        dynamo: True for the torch.export-based exporter (torch.onnx's default since PyTorch 2.9; needs
            onnxscript), False for the TorchScript-based one (deprecated by PyTorch; 5-10x faster to export).
        opset: ONNX opset version; the exporter's default if None.
    """
    path = Path(path)
    model.eval()
    input_size = tuple(input_size or model.pretrained_cfg['input_size'])
    device = next(model.parameters()).device
    # batch 2, not 1: some torch.export versions specialise a dimension of size 1 (timm's exporter does the same)
    example = torch.randn(2, *input_size, device=device)
    names = dict(input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=opset)
    if dynamo:
        # external_data=False: weights inside the .onnx (under 2 GB for every model here), one file to ship
        torch.onnx.export(model, (example,), str(path), dynamo=True, dynamic_shapes=({0: 'batch'},),
                          external_data=False, verbose=False, **names)
    else:
        with warnings.catch_warnings():
            # the trace warns at each size-dependent Python decision: fixing them for this size is the intent
            warnings.simplefilter('ignore', torch.jit.TracerWarning)
            torch.onnx.export(model, (example,), str(path), dynamo=False,
                              dynamic_axes={INPUT_NAME: {0: 'batch'}, OUTPUT_NAME: {0: 'batch'}}, **names)
    return path
