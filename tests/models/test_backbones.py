"""FCT heads on timm backbones other than ResNet: the generic models, the named ones, and their errors."""
import json
import re

import pytest
import timm
import torch
import torch.nn as nn
from timm.layers import DropPath
from timm.models import build_model_with_cfg, register_model
from timm.optim import param_groups_layer_decay
from torch.utils.flop_counter import FlopCounterMode

from timm.data import resolve_data_config

from timm_fct.runs.model_folder import write_model_folder

# a representative set: ConvNeXt (flattened stem/stages), EfficientNet and MobileNetV3 (their own feature
# classes), RegNet, DenseNet and VGG (no drop_path_rate; VGG has 6 levels), MambaOut (NHWC maps)
BACKBONES = ['convnext_atto', 'efficientnet_b0', 'mobilenetv3_small_050', 'regnetx_002', 'densenet121',
             'vgg11_bn', 'mambaout_femto']


def plain_levels(arch: str):
    """Channels and reductions of the feature levels timm's features_only model of `arch` returns."""
    info = timm.create_model(arch, features_only=True).feature_info
    return info.channels(), info.reduction()


@pytest.mark.parametrize('backbone', BACKBONES)
def test_generic_model_trains_on_the_backbones_last_three_levels_before_the_last(backbone):
    channels, reductions = plain_levels(backbone)
    model = timm.create_model('fct_bn', backbone=backbone, embed_dim=32, num_classes=5)
    n = len(channels)
    assert model.taps == tuple(range(max(0, n - 4), n - 1))
    seen, g = [], []
    for block in model.fct.values():  # each module: its tap, and g projected to the tap's channels (P_l(g))
        block.register_forward_pre_hook(lambda m, args: seen.append((tuple(args[0].shape), tuple(args[1].shape))))
    model.global_proj.register_forward_pre_hook(lambda m, args: g.append(tuple(args[0].shape)))
    x = torch.randn(2, 3, 64, 96)  # non-square: an NHWC map read as NCHW would not fit
    logits = model(x)
    logits.logsumexp(1).sum().backward()
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    assert seen == [((2, channels[t], 64 // reductions[t], 96 // reductions[t]), (2, channels[t]))
                    for t in model.taps]
    assert g == [(2, channels[-1])]
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in [*model.fct.parameters(), *model.global_proj.parameters()])


def test_named_models_cost_at_most_1_2x_their_backbones_flops():
    """The named models' budget (docs/benchmarks.md): FCT heads on ConvNeXt-Tiny and EfficientNet-B0 at 224 px, against backbone + linear."""
    def flops(model: nn.Module) -> int:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.eval()(torch.randn(1, 3, 224, 224))
        return counter.get_total_flops()

    for arch in ('convnext_tiny', 'efficientnet_b0'):
        bare = flops(timm.create_model(arch))
        for norm in ('bn', 'ln'):
            ratio = flops(timm.create_model(f'{arch}_fct_{norm}')) / bare
            assert 1.0 < ratio <= 1.20, (arch, norm, ratio)


@pytest.mark.parametrize('name', sorted(timm.list_pretrained('*_fct_*')))
def test_every_backbone_tag_names_weights_timm_publishes(name):
    """Each named model's tag reads the weights of a tag timm itself registers for that backbone."""
    model = timm.create_model(name.split('.')[0])
    backbone_tag = f"{model.backbone_name}.{name.split('.')[1].removesuffix('_backbone')}"
    assert backbone_tag in timm.list_pretrained(model.backbone_name)
    ours, theirs = timm.models.get_pretrained_cfg(name), timm.models.get_pretrained_cfg(backbone_tag)
    assert ours.hf_hub_id == theirs.hf_hub_id
    assert (ours.mean, ours.std, ours.crop_pct, ours.interpolation) == (
        theirs.mean, theirs.std, theirs.crop_pct, theirs.interpolation)


def test_generic_model_takes_the_backbones_preprocessing():
    model = timm.create_model('fct_ln', backbone='mobilenetv3_small_050.lamb_in1k')
    theirs = timm.models.get_pretrained_cfg('mobilenetv3_small_050.lamb_in1k')
    cfg = timm.data.resolve_data_config({}, model=model)
    assert (cfg['mean'], cfg['std'], cfg['crop_pct'], cfg['interpolation']) == (
        theirs.mean, theirs.std, theirs.crop_pct, theirs.interpolation)
    assert timm.models.get_model_traits(model)['first_conv'] + '.weight' in model.state_dict()


def test_drop_path_reaches_backbones_that_take_it_and_spares_the_others():
    convnext = timm.create_model('fct_bn', backbone='convnext_atto', drop_path_rate=0.1)
    assert max(m.drop_prob for m in convnext.backbone.modules() if isinstance(m, DropPath)) == pytest.approx(0.1)
    with pytest.warns(UserWarning, match='densenet121 takes no drop_path_rate'):
        densenet = timm.create_model('fct_bn', backbone='densenet121', drop_path_rate=0.1)
    assert all(block.drop_path.drop_prob == 0.1 for block in densenet.fct.values())


@pytest.mark.parametrize('backbone', ['convnext_atto', 'efficientnet_b0'])
def test_layer_decay_follows_the_backbones_own_groups(backbone):
    """Stem slowest, the backbone's stages in order, the new FCT modules and classifier at the full rate."""
    model = timm.create_model('fct_bn', backbone=backbone)
    names = {id(p): n for n, p in model.named_parameters()}
    scale = {names[id(p)]: g['lr_scale'] for g in param_groups_layer_decay(model, layer_decay=0.5) for p in g['params']}
    stem = timm.models.get_model_traits(model)['first_conv'] + '.weight'  # declared by the model once built
    assert scale[stem] == min(scale.values())
    assert all(scale[n] == 1.0 for n in scale if not n.startswith('backbone.'))
    backbone_scales = [scale[n] for n in scale if n.startswith('backbone.') and n.endswith('weight')]
    assert backbone_scales == sorted(backbone_scales) and max(backbone_scales) < 1.0
    assert len(set(backbone_scales)) > 4


def lr_scales(model: nn.Module) -> dict:
    """Each parameter's lr scale under timm's layer-wise decay of 0.5, by name."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g['lr_scale'] for g in param_groups_layer_decay(model, layer_decay=0.5) for p in g['params']}


@pytest.mark.parametrize('name,kwargs,plain', [
    ('resnet18_fct_bn_cifar', {}, 'resnet18_cifar'),
    ('fct_bn', dict(backbone='convnext_atto'), 'convnext_atto'),
])
def test_layer_decay_scales_each_backbone_weight_as_timm_scales_it_in_the_plain_model(name, kwargs, plain):
    """Every backbone parameter's lr scale is timm's for the same parameter of the plain model, times one constant
    (the FCT modules and classifier, one group above the backbone's): the backbone's fine groups, each kept."""
    ours, theirs = (lr_scales(timm.create_model(name, **kwargs)), lr_scales(timm.create_model(plain)))
    # features_only flattens ConvNeXt's stem.0 / stages.0 into stem_0 / stages_0; ResNet's names are kept
    ratios = {n: ours[n] / theirs[re.sub(r'^backbone\.(stem|stages)_(\d+)', r'\1.\2', n).replace('backbone.', '', 1)]
              for n in ours if n.startswith('backbone.')}
    assert len(ratios) == sum(1 for n in theirs if not n.startswith(('fc.', 'head.')))
    assert len(set(ratios.values())) == 1, sorted(set(ratios.values()))
    assert {ours[n] for n in ours if not n.startswith('backbone.')} == {1.0}


class NoFeatures(nn.Module):
    """A registered model that timm cannot build with features_only, or one whose feature maps are tokens."""

    def __init__(self, levels: int = 0, tokens: bool = False, **kwargs):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.stage = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        if tokens:  # (N, C, H, W) -> (N, C, H * W): a map timm's features_only passes on as it is
            self.stage = nn.Sequential(self.stage, nn.Flatten(2))
        if levels:
            self.feature_info = [dict(num_chs=8, reduction=2, module='stem'),
                                 dict(num_chs=16, reduction=4, module='stage')][-levels:]

    def forward(self, x):
        return self.stage(self.stem(x))


@register_model
def _test_no_features(pretrained=False, **kwargs):
    out_indices = tuple(range(kwargs.get('levels', 0)))  # as timm's own models declare theirs
    return build_model_with_cfg(NoFeatures, '_test_no_features', pretrained, feature_cfg=dict(out_indices=out_indices),
                                **kwargs)


@pytest.mark.parametrize('kwargs,match', [
    (dict(), r'_test_no_features has no feature_info'),
    (dict(levels=1), r'_test_no_features has 1 feature level; FCT heads need at least two'),
])
def test_backbones_that_cannot_work_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        timm.create_model('fct_bn', backbone='_test_no_features', backbone_kwargs=kwargs)


def test_feature_maps_that_are_not_nchw_are_refused_by_name():
    model = timm.create_model('fct_bn', backbone='_test_no_features', backbone_kwargs=dict(levels=2, tokens=True))
    with pytest.raises(ValueError, match=r'_test_no_features returned a feature map of shape \[2, 16, 64\]; '
                                         r'expected NCHW with 16 channels'):
        model(torch.randn(2, 3, 32, 32))


def test_taps_out_of_range_name_the_backbone_and_its_levels():
    with pytest.raises(ValueError, match=r'levels of convnext_atto before its last, in 0\.\.2 \(4 levels'):
        timm.create_model('fct_bn', backbone='convnext_atto', taps=(0, 3))


def test_the_global_descriptor_comes_from_the_backbones_last_level():
    """Sequencer's features_only default leaves out its last stage; g must still come from there."""
    last = timm.create_model('sequencer2d_s').feature_info[-1]['module']  # 'stages.3'
    model = timm.create_model('fct_bn', backbone='sequencer2d_s', embed_dim=32)
    seen = []
    model.backbone.get_submodule(last.replace('.', '_', 1)).register_forward_hook(
        lambda m, a, out: seen.append(out.shape))
    g = []
    model.global_proj.register_forward_pre_hook(lambda m, args: g.append(args[0].shape))  # P(g) takes g
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 64, 64))
    assert len(seen) == 1 and g == [(1, seen[0][-1])]  # NHWC: channels last


def test_a_generic_models_run_folder_loads_through_local_dir_with_its_backbone(tmp_path):
    """config.json carries backbone= in model_args; timm rebuilds the model from it and loads the weights."""
    model = timm.create_model('fct_ln', backbone='convnext_atto', embed_dim=32, num_classes=3).eval()
    write_model_folder(tmp_path, model, ['a', 'b', 'c'], dict(input_size=(3, 64, 64), mean=(0.5,) * 3,
                                                                std=(0.25,) * 3, crop_pct=1.0, interpolation='bilinear'))
    loaded = timm.create_model(f'local-dir:{tmp_path}', pretrained=True).eval()
    assert (loaded.backbone_name, tuple(loaded.pretrained_cfg['mean'])) == ('convnext_atto', (0.5,) * 3)
    config = json.loads((tmp_path / 'config.json').read_text())
    # num_classes at the root only: transformers' TimmWrapper passes model_args and num_classes side by side
    assert config['num_classes'] == loaded.num_classes == 3 and 'num_classes' not in config['model_args']
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_a_generic_models_data_config_is_its_backbones():
    """train.py resolves preprocessing as timm's does, from the model: a generic model's is its backbone's."""
    cfg = timm.models.get_pretrained_cfg('convnext_atto.d2_in1k')
    ours = resolve_data_config(model=timm.create_model('fct_bn', backbone='convnext_atto.d2_in1k'))
    assert (ours['crop_pct'], ours['interpolation'], ours['mean']) == (cfg.crop_pct, cfg.interpolation, cfg.mean)
    assert ours['crop_pct'] != timm.models.get_pretrained_cfg('fct_bn').crop_pct
    named = resolve_data_config(model=timm.create_model('resnet50_fct_bn'))
    assert named['crop_pct'] == timm.models.get_pretrained_cfg('resnet50_fct_bn').crop_pct
