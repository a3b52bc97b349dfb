"""The pretrained paths, proven offline: ImageNet backbone weights from a Hub cache, and our own checkpoints."""
import json
import runpy
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import timm_fct

from tests.support.helpers import REPO, assert_backbone_is, backbone_hub_cache, run_offline, write_hub_cache
from timm_fct.models.fct import checkpoint_filter_fn

@pytest.fixture(scope='module')
def resnet18_hub_cache(tmp_path_factory):
    return backbone_hub_cache(tmp_path_factory.mktemp('hf_home'), 'resnet18')


def test_imagenet_backbone_loads_from_hub_cache_offline(resnet18_hub_cache, tmp_path):
    hf_home, weights_file = resnet18_hub_cache
    out = tmp_path / 'loaded.safetensors'
    code = f"""
import timm, timm_fct, torch
from safetensors.torch import save_file
model = timm.create_model('resnet18_fct_bn', pretrained=True, num_classes=10)
assert model.pretrained_cfg['tag'] == 'a1_in1k_backbone', model.pretrained_cfg
assert model.get_classifier().out_features == 10
with torch.no_grad():
    assert torch.isfinite(model.eval()(torch.randn(2, 3, 64, 64))).all()
save_file({{k: v.contiguous() for k, v in model.state_dict().items()}}, {str(out)!r})
"""
    result = run_offline(hf_home, code)
    assert result.returncode == 0, result.stderr
    hub = load_file(str(weights_file))
    loaded = load_file(str(out))
    assert_backbone_is(loaded, hub)
    assert any(k.startswith('fct.') for k in loaded) and 'head.fc.weight' in loaded


def test_resnet50_backbone_and_features_only_load_offline(tmp_path):
    """The paper's backbone, and features_only=True with pretrained weights: backbone bit-exact, FCT outputs out."""
    hf_home, weights_file = backbone_hub_cache(tmp_path / 'hf_home', 'resnet50')
    out = tmp_path / 'loaded.safetensors'
    code = f"""
import timm, timm_fct, torch
from safetensors.torch import save_file
model = timm.create_model('resnet50_fct_bn', pretrained=True, features_only=True, out_indices=(0, 2))
with torch.no_grad():
    feats = model.eval()(torch.randn(1, 3, 64, 64))
# taps 1 and 3 of ResNet-50 reduce 4x and 16x, the patch embedding 2x more: 8x8 and 2x2 at 64 px
assert [tuple(f.shape) for f in feats] == [(1, 96, 8, 8), (1, 96, 2, 2)], [f.shape for f in feats]
save_file({{k: v.contiguous() for k, v in model.state_dict().items()}}, {str(out)!r})
"""
    result = run_offline(hf_home, code)
    assert result.returncode == 0, result.stderr
    hub, loaded = load_file(str(weights_file)), load_file(str(out))
    backbone = {k.split('backbone.', 1)[1]: v for k, v in loaded.items() if 'backbone.' in k}
    assert set(backbone) == {k for k in hub if not k.startswith('fc.')}
    for k, v in backbone.items():
        torch.testing.assert_close(v, hub[k], rtol=0, atol=0, msg=k)


def test_imagenet_backbone_adapts_to_grayscale_offline(resnet18_hub_cache, tmp_path):
    """in_chans=1: the stem's RGB filters summed into one channel (timm's adapt_input_conv), the rest exact."""
    hf_home, weights_file = resnet18_hub_cache
    out = tmp_path / 'gray.safetensors'
    code = f"""
import timm, timm_fct
from safetensors.torch import save_file
model = timm.create_model('resnet18_fct_ln', pretrained=True, in_chans=1, num_classes=5)
save_file({{k: v.contiguous() for k, v in model.backbone.state_dict().items()}}, {str(out)!r})
"""
    result = run_offline(hf_home, code)
    assert result.returncode == 0, result.stderr
    hub, loaded = load_file(str(weights_file)), load_file(str(out))
    assert loaded['conv1.weight'].shape == (64, 1, 7, 7)
    torch.testing.assert_close(loaded['conv1.weight'], hub['conv1.weight'].sum(1, keepdim=True))
    for k in ('bn1.weight', 'layer1.0.conv1.weight', 'layer4.1.bn2.running_var'):
        torch.testing.assert_close(loaded[k], hub[k], rtol=0, atol=0, msg=k)


def test_backbone_checkpoint_missing_a_key_is_an_error_for_any_num_classes(tmp_path):
    """timm loads non-strictly when num_classes differs from the checkpoint's: a missing key must still fail."""
    weights = timm.create_model('resnet18').state_dict()
    del weights['layer2.0.bn1.running_mean']
    write_hub_cache(tmp_path, 'timm/resnet18.a1_in1k', {
        'model.safetensors': lambda p: save_file(weights, str(p)),
        'config.json': lambda p: p.write_text(json.dumps({'architecture': 'resnet18', 'num_classes': 1000})),
    })
    code = "import timm, timm_fct; timm.create_model('resnet18_fct_bn', pretrained=True, num_classes=10)"
    result = run_offline(tmp_path, code)
    assert result.returncode != 0
    assert 'lacks 1 weights of the backbone' in result.stderr and 'layer2.0.bn1.running_mean' in result.stderr


def test_an_fct_checkpoint_missing_a_key_is_an_error_for_any_num_classes(tmp_path):
    """Our own checkpoint as pretrained weights, one FCT weight removed: refused, naming it, also at another class
    count (where timm loads non-strictly and drops the classifier)."""
    weights = timm.create_model('resnet18_fct_bn_cifar').state_dict()
    del weights['fct.1.focus.conv.weight']
    path = tmp_path / 'fct.safetensors'
    save_file({k: v.contiguous() for k, v in weights.items()}, str(path))
    for num_classes in (10, 5):
        with pytest.raises(RuntimeError, match=r'lacks 1 weights of FctNet.*fct\.1\.focus\.conv\.weight'):
            timm.create_model('resnet18_fct_bn_cifar', pretrained=True, num_classes=num_classes,
                              pretrained_cfg_overlay=dict(file=str(path)))


def test_offline_with_empty_cache_fails_fast_with_a_clear_error(tmp_path):
    code = "import timm, timm_fct; timm.create_model('resnet18_fct_bn', pretrained=True)"
    result = run_offline(tmp_path, code)
    assert result.returncode != 0
    assert 'resnet18.a1_in1k' in result.stderr and 'offline' in result.stderr.lower()


def test_own_checkpoint_round_trips_through_timm_checkpoint_path(tmp_path):
    model = timm.create_model('resnet18_fct_bn_cifar').eval()
    path = tmp_path / 'fct.pth'
    torch.save({'state_dict': model.state_dict()}, path)
    reloaded = timm.create_model('resnet18_fct_bn_cifar', checkpoint_path=str(path)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), model(x), rtol=0, atol=0)


def test_filter_keeps_fct_checkpoints_and_maps_resnet_ones():
    model = timm.create_model('resnet18_fct_bn')
    own = model.state_dict()
    assert checkpoint_filter_fn(own, model) == own
    mapped = checkpoint_filter_fn(timm.create_model('resnet18').state_dict(), model)
    assert set(mapped) == set(own)


def convnext_plain_name(features_name: str) -> str:
    """timm's features_only ConvNeXt flattens its stem and stages Sequentials: stem_0 is the plain stem.0."""
    return features_name.replace('stem_', 'stem.', 1).replace('stages_', 'stages.', 1)


def assert_backbone_is_hub_weights(loaded: dict, hub: dict) -> None:
    backbone = {convnext_plain_name(k.split('backbone.', 1)[1]): v for k, v in loaded.items() if 'backbone.' in k}
    assert set(backbone) == {k for k in hub if not k.startswith('head.')}
    for k, v in backbone.items():
        torch.testing.assert_close(v, hub[k], rtol=0, atol=0, msg=k)
    assert any(k.startswith('fct.') for k in loaded)


def test_generic_model_loads_a_convnext_backbone_by_name_and_tag_offline(tmp_path):
    """fct_bn with backbone='convnext_atto.d2_in1k', pretrained=True: timm loads that backbone's own weights."""
    hf_home, weights_file = backbone_hub_cache(tmp_path / 'hf_home', 'convnext_atto', 'd2_in1k')
    out = tmp_path / 'loaded.safetensors'
    code = f"""
import timm, timm_fct, torch
from safetensors.torch import save_file
model = timm.create_model('fct_bn', backbone='convnext_atto.d2_in1k', pretrained=True, num_classes=10)
cfg = model.pretrained_cfg
assert (cfg['crop_pct'], cfg['test_input_size']) == (0.875, (3, 288, 288)), cfg
assert timm.models.get_model_traits(model)['first_conv'] == 'backbone.stem_0'  # known once built
assert model.get_classifier().out_features == 10
save_file({{k: v.contiguous() for k, v in model.state_dict().items()}}, {str(out)!r})
"""
    result = run_offline(hf_home, code)
    assert result.returncode == 0, result.stderr
    assert_backbone_is_hub_weights(load_file(str(out)), load_file(str(weights_file)))


def test_named_convnext_model_loads_its_backbone_tag_offline(tmp_path):
    """convnext_tiny_fct_bn's default tag reads timm/convnext_tiny.fb_in1k; stem.0 lands in backbone.stem_0."""
    hf_home, weights_file = backbone_hub_cache(tmp_path / 'hf_home', 'convnext_tiny', 'fb_in1k')
    out = tmp_path / 'loaded.safetensors'
    code = f"""
import timm, timm_fct, torch
from safetensors.torch import save_file
model = timm.create_model('convnext_tiny_fct_bn', pretrained=True, in_chans=1, num_classes=10)
assert model.pretrained_cfg['tag'] == 'fb_in1k_backbone', model.pretrained_cfg
save_file({{k: v.contiguous() for k, v in model.state_dict().items()}}, {str(out)!r})
"""
    result = run_offline(hf_home, code)
    assert result.returncode == 0, result.stderr
    loaded, hub = load_file(str(out)), load_file(str(weights_file))
    # in_chans=1: timm sums the stem's RGB filters (adapt_input_conv), found through first_conv
    torch.testing.assert_close(loaded.pop('backbone.stem_0.weight'), hub.pop('stem.0.weight').sum(1, keepdim=True))
    assert_backbone_is_hub_weights(loaded, hub)


def test_torch_hub_finds_every_registered_model_through_hubconf():
    """`torch.hub.load` on a checkout lists and builds the models by their timm names, with timm's arguments."""
    repo = str(REPO)
    entries = runpy.run_path(str(Path(repo) / 'hubconf.py'))  # torch.hub.list reads only GitHub repos
    assert set(timm.list_models(module=['fct', 'resnet_cifar'])) <= set(entries)
    model = torch.hub.load(repo, 'resnet18_fct_bn_cifar', source='local', num_classes=7, embed_dim=32)
    assert isinstance(model, timm_fct.FctNet) and model.num_classes == 7
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


@pytest.fixture(scope='module')
def resnet50_tv_hub_cache(tmp_path_factory):
    return backbone_hub_cache(tmp_path_factory.mktemp('hf_home'), 'resnet50', tag='tv_in1k')


@pytest.mark.parametrize('flags', [
    ('--model', 'resnet50_fct_bn.tv_in1k_backbone'),
    ('--model', 'fct_bn', '--model-kwargs', 'backbone=resnet50.tv_in1k'),
], ids=['named-tag', 'generic'])
def test_torchvision_weights_for_the_pretrained_row_resolve_offline(resnet50_tv_hub_cache, tmp_path, flags):
    """The pre-trained row's alternative weights, as train.py builds them from its flags: timm/resnet50.tv_in1k's
    hub id and weights, and its own preprocessing (bilinear, crop 0.875), all as timm's registry has them."""
    hf_home, weights_file = resnet50_tv_hub_cache
    theirs = timm.models.get_pretrained_cfg('resnet50.tv_in1k')
    assert (theirs.interpolation, theirs.crop_pct) == ('bilinear', 0.875)  # what the row's a1 weights do not use
    out = tmp_path / 'loaded.safetensors'
    code = f"""
import json, sys
sys.path.insert(0, {str(REPO)!r})
from timm_fct.train import build
from safetensors.torch import save_file
from timm_fct.train.args import parse_args, resolve_args, resolve_preprocessing
args = parse_args({list(flags) + ['--pretrained', '--num-classes', '10', '--device', 'cpu', '--dataset', 'torch/cifar10']!r})
args.rank, args.world_size, args.distributed = 0, 1, False
resolve_args(args)
model = build.build_model(args)
resolve_preprocessing(args, model)
save_file({{k: v.contiguous() for k, v in model.state_dict().items()}}, {str(out)!r})
print(json.dumps(dict(hf_hub_id=model.pretrained_cfg.get('hf_hub_id'), interpolation=args.interpolation,
                      crop_pct=args.crop_pct, mean=args.mean, std=args.std, img_size=args.img_size)))
"""
    result = run_offline(hf_home, code)
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout.strip().splitlines()[-1])
    if flags[1] != 'fct_bn':  # the generic model names no weights of its own: its backbone loads by name and tag
        assert resolved['hf_hub_id'] == theirs.hf_hub_id == 'timm/resnet50.tv_in1k'
    assert (resolved['interpolation'], resolved['crop_pct']) == (theirs.interpolation, theirs.crop_pct)
    assert (resolved['mean'], resolved['std']) == (list(theirs.mean), list(theirs.std))
    assert resolved['img_size'] == theirs.input_size[-1]
    hub, loaded = load_file(str(weights_file)), load_file(str(out))
    assert_backbone_is(loaded, hub)
