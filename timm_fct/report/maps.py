"""Where the models look: Grad-CAM on the maps the classifier reads (Figs. 4, 5) and each FCT module's attention."""
from typing import List, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from timm.utils import AttentionExtract

from ..errors import FctError
from ..models import FctNet


def gradcam_target_layers(model: nn.Module) -> List[nn.Module]:
    """The maps the classifier reads: every FCT module's output for an FCT model, else the last level.

    An FCT model classifies the pooled FCT outputs; its last backbone level reaches the logits only through
    the pooled global descriptor g, so Grad-CAM there would show the g path, not the modules. For a plain
    network the last level's maps are the finest that still carry class evidence (Figs. 4, 5).
    """
    if isinstance(model, FctNet):
        return [model.fct_module(i) for i in model.fct_indices]
    if isinstance(getattr(model, 'layer4', None), nn.Module):
        return [model.layer4]
    feature_info = getattr(model, 'feature_info', None)
    if isinstance(feature_info, list) and feature_info and 'module' in feature_info[-1]:
        return [model.get_submodule(feature_info[-1]['module'])]
    raise FctError(f'no Grad-CAM target layer known for {type(model).__name__}')


def gradcam_title(model: nn.Module) -> str:
    if isinstance(model, FctNet):
        return (f'Grad-CAM on each of the {len(model.fct_indices)} FCT module outputs the classifier reads, '
                f'one row per module by FCT index (Fig. 4), then their mean')
    return 'Grad-CAM on the last backbone level'


def gradcam_rows(model: nn.Module, images: torch.Tensor, classes: Sequence[int]) -> List[Tuple[str, np.ndarray]]:
    """Grad-CAM of each image for the given class, scaled to [0, 1] at the input resolution: (label, (B, H, W)).

    An FCT model gets one row per FCT module, first to last (the paper's Fig. 4 shows Grad-CAM of its FCT layers,
    the first coarse and later ones finer; its layout is ours), each Grad-CAM on that module's output alone and labelled with its FCT
    index and the level it taps; then the mean of those maps (each scaled to [0, 1] first), since the
    modules run at different resolutions and each carries part of the evidence. A plain network: one row,
    its last level.
    """
    targets = [ClassifierOutputTarget(int(c)) for c in classes]
    per_layer = []
    for layer in gradcam_target_layers(model):  # one pass per layer: its gradients are matched to no other
        with GradCAM(model=model, target_layers=[layer]) as cam:
            per_layer.append(cam(input_tensor=images, targets=targets))
    mean = scale_cam_image(np.mean(per_layer, axis=0))
    if not isinstance(model, FctNet):
        return [('last backbone level', mean)]
    labels = [f'FCT {i} (level {level})' for i, level in model.fct_taps().items()]
    return [*zip(labels, per_layer), (f'mean of the {len(per_layer)} FCT modules', mean)]


def gradcam_maps(model: nn.Module, images: torch.Tensor, classes: Sequence[int]) -> np.ndarray:
    """The last row of gradcam_rows: the mean over an FCT model's modules, or a plain network's last level."""
    return gradcam_rows(model, images, classes)[-1][1]


def attention_weights(model: FctNet, images: torch.Tensor) -> List[Tuple[torch.Tensor, torch.Size]]:
    """Per FCT module, in tap order: softmax(QK^T / sqrt(d)), (B, heads, Nq, Nk), and the K/V grid (H', W').

    timm's AttentionExtract traces the model (in eval mode) on the explicit path, since the fused
    scaled_dot_product_attention the model runs never materialises the weights; the K/V projection's output
    (K's and V's channels stacked) gives the grid the keys lie on, strided or not.
    """
    names = [(softmax, softmax.replace('.softmax', '.kv')) for softmax in model.attention_names().values()]
    with model.explicit_attention():
        extracted = AttentionExtract(model, names=[n for pair in names for n in pair])(images)
    return [(extracted[weights], extracted[v].shape[-2:]) for weights, v in names]


def attention_received(weights: torch.Tensor, kv_grid: Sequence[int]) -> torch.Tensor:
    """The attention each K/V position receives, averaged over heads and queries: (B, H', W'), sums to 1."""
    return weights.mean(dim=(1, 2)).reshape(weights.shape[0], *kv_grid)


@torch.no_grad()
def fct_tap_maps(model: FctNet, images: torch.Tensor) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """Per FCT module: the attention received on its K/V grid, and its output's channel mean, (B, h, w) each."""
    attention = [attention_received(weights, kv_grid) for weights, kv_grid in attention_weights(model, images)]
    outputs = model.forward_intermediates(images, intermediates_only=True)
    return attention, [out.mean(dim=1) for out in outputs]
