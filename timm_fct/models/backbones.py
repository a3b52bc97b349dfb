"""Any timm model as an FCT backbone: built with features_only, its names, layer-decay groups and preprocessing.

timm's features_only wrappers rename flattened modules (ConvNeXt's stem.0 is stem_0) and have no
group_matcher; the functions here map between those names and the plain model's, so that the plain
model's checkpoints, groups and first convolution apply to the FCT model's backbone.
"""
import warnings
from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
from timm.layers import register_notrace_function
from timm.models import create_model, get_pretrained_cfg, group_parameters


PREPROCESSING_KEYS = ('input_size', 'test_input_size', 'fixed_input_size', 'interpolation', 'crop_pct',
                      'test_crop_pct', 'crop_mode', 'mean', 'std')  # preprocessing the backbone was trained with


def backbone_pretrained_cfg(backbone: str) -> Dict[str, Any]:
    """The preprocessing of a backbone (name and optional tag) from timm's registry. Its first convolution's
    name under features_only naming is known once built: FctNet declares it in timm's model traits."""
    cfg = get_pretrained_cfg(backbone)
    if cfg is None:
        return {}
    return {k: getattr(cfg, k) for k in PREPROCESSING_KEYS if getattr(cfg, k, None) is not None}


def default_taps(num_levels: int) -> Tuple[int, ...]:
    """The last three levels before the last (ResNet: stages 1-3; our choice, the paper does not say which layers
    it taps); fewer if absent."""
    return tuple(range(max(0, num_levels - 4), num_levels - 1))


def check_taps(backbone: str, levels: Sequence[Dict[str, Any]], taps: Sequence[int]) -> Tuple[int, ...]:
    """Taps must be increasing levels before the last one, which supplies the global descriptor."""
    taps = tuple(taps)
    if len(levels) < 2:
        raise ValueError(f'{backbone} has {len(levels)} feature level; FCT heads need at least two, '
                         f'one to tap and the last for the global descriptor')
    if not taps or list(taps) != sorted(set(taps)) or taps[0] < 0 or taps[-1] >= len(levels) - 1:
        raise ValueError(
            f'taps must be increasing feature levels of {backbone} before its last, in 0..{len(levels) - 2} '
            f'({len(levels)} levels, the last gives the global descriptor), got {taps}')
    return taps


def create_backbone(name: str, pretrained: bool, drop_path_rate: float, **kwargs: Any) -> nn.Module:
    """timm's features_only model of `name`: the levels timm returns by default, and always the last one.

    drop_path_rate goes only to backbones that take it (DenseNet and VGG do not). A backbone whose default
    leaves out its last level (Sequencer returns stages 0-2 of 4) is rebuilt with it: g comes from there.
    """
    kwargs.update(features_only=True, pretrained=pretrained)
    if drop_path_rate:
        kwargs['drop_path_rate'] = drop_path_rate
    try:
        model = _create_features(name, kwargs)
    except TypeError as e:
        if 'drop_path_rate' not in str(e):
            raise
        warnings.warn(f'{name} takes no drop_path_rate; stochastic depth applies to the FCT modules only')
        del kwargs['drop_path_rate']
        model = _create_features(name, kwargs)
    info = model.feature_info
    if info.out_indices[-1] != len(info.info) - 1:
        model = _create_features(name, dict(kwargs, out_indices=(*info.out_indices, len(info.info) - 1)))
    fmt = getattr(model, 'output_fmt', 'NCHW')  # timm's Format is a str enum
    if fmt not in ('NCHW', 'NHWC'):
        raise ValueError(f'{name} returns {fmt} features; FCT heads take NCHW or NHWC maps')
    return model


def _create_features(name: str, kwargs: Dict[str, Any]) -> nn.Module:
    try:
        return create_model(name, **kwargs)
    except (AttributeError, AssertionError) as e:
        if 'feature_info' not in str(e):
            raise
        raise ValueError(f'{name} has no feature_info, so timm cannot build it with features_only; FCT heads '
                         f'need a backbone that returns its feature maps') from e


def backbone_group_matcher(backbone: str, own_keys: Sequence[str], coarse: bool) -> Callable[[str], Tuple]:
    """Layer-decay groups: the plain backbone's own group_matcher, then the FCT modules and head on top.

    timm's features_only wrappers have no group_matcher and rename flattened modules (stem.0 -> stem_0),
    so the plain model is built once here and each backbone parameter is matched by its plain name.
    """
    plain = create_model(backbone)
    groups = group_parameters(plain, plain.group_matcher(coarse=coarse))
    layer_of = {n: layer for layer, names in groups.items() for n in names}
    own_layer = {k: layer_of[plain_key(k, layer_of)] for k in own_keys if plain_key(k, layer_of) in layer_of}

    def match(name: str) -> Tuple[float, ...]:
        if name.startswith('backbone.'):
            return (float(own_layer.get(name[len('backbone.'):], max(groups))),)
        return (float('inf'),)  # FCT modules and classifier: new, at the full learning rate
    return match


def plain_key(name: str, plain_names: Any) -> str:
    """A features_only name in the plain model: as is, or its first '_' back to '.' (stem_0 -> stem.0)."""
    return name if name in plain_names else name.replace('_', '.', 1)


def features_key(name: str, own_names: Any) -> str:
    """A plain model's parameter or module name under timm's features_only naming: as is, or flattened
    (stem.0 -> stem_0) where it is not among `own_names`, the names of the features_only model."""
    return name if name in own_names else name.replace('.', '_', 1)


@register_notrace_function
def check_feature_maps(feats: List[torch.Tensor], channels: List[int], backbone: str) -> None:
    """Feature maps must be NCHW (NHWC ones are permuted before); anything else fails clearly here."""
    for f, c in zip(feats, channels):
        if f.dim() != 4 or f.shape[1] != c:
            raise ValueError(f'{backbone} returned a feature map of shape {list(f.shape)}; expected NCHW with '
                             f'{c} channels (N, {c}, H, W)')
