"""Behaviour of the FCT models that timm's own test file does not reach."""
import math

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm2d

from timm_fct.fct import ConvAttention, FctResNet
from tests.conftest import our_models
from tests.upstream import test_models as upstream

FCT_MODELS = timm.list_models('*_fct_*')
SMALL = 'resnet18_fct_bn_cifar'


def _input(model: nn.Module, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, *model.pretrained_cfg['input_size'])


def test_registry_lists_the_family():
    names = set(our_models())
    for depth in ('18', '50'):
        for suffix in ('fct_bn', 'fct_ln', 'fct_bn_cifar', 'fct_ln_cifar', 'cifar'):
            assert f'resnet{depth}_{suffix}' in names
    assert set(timm.list_pretrained('*fct*')) == {
        f'resnet{d}_fct_{n}.a1_in1k_backbone' for d in ('18', '50') for n in ('bn', 'ln')}


@pytest.mark.parametrize('model_name', FCT_MODELS)
def test_forward_intermediates_timm_contract(model_name):
    """timm keys its forward_intermediates tests to its own module names; run them on ours."""
    upstream.test_model_forward_intermediates(model_name, 1)
    upstream.test_model_forward_intermediates_features(model_name, 1)


@pytest.mark.parametrize('model_name,norm_type', [('resnet18_fct_bn_cifar', nn.BatchNorm2d),
                                                   ('resnet18_fct_ln_cifar', LayerNorm2d)])
def test_norm_variant_sets_fct_norms_and_keeps_backbone_batchnorm(model_name, norm_type):
    model = timm.create_model(model_name)
    fct_norms = [m for n, m in model.fct.named_modules() if n.endswith('norm')]
    assert len(fct_norms) == 3 * 4  # per module: Q, K, V projections and the pre-focus norm
    assert all(type(m) is norm_type for m in fct_norms)
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.backbone.modules())
    assert not any(isinstance(m, LayerNorm2d) for m in model.backbone.modules())


def test_head_pools_each_fct_output_and_concatenates():
    """The paper's head: average-pool every FCT output, concatenate, classify."""
    model = timm.create_model(SMALL).eval()
    x = _input(model)
    with torch.no_grad():
        _, fct_outs = model.forward_intermediates(x)
        expected = torch.cat([z.mean((2, 3)) for z in fct_outs], dim=1)
        pre_logits = model.forward_head(model.forward_features(x), pre_logits=True)
        logits = model(x)
    torch.testing.assert_close(pre_logits, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits, model.head.fc(expected), rtol=1e-5, atol=1e-6)


def test_fct_outputs_have_each_taps_resolution_and_width():
    model = timm.create_model('resnet50_fct_bn', embed_dim=64, num_heads=4).eval()
    with torch.no_grad():
        outs = model.forward_intermediates(torch.randn(1, 3, 128, 96), intermediates_only=True)
    assert [tuple(o.shape) for o in outs] == [(1, 64, 128 // r, 96 // r) for r in (8, 16, 32)]
    assert model.feature_info == [dict(num_chs=64, reduction=r, module=f'fct.{i}') for i, r in enumerate((8, 16, 32))]


def test_global_descriptor_reaches_every_fct_module():
    """x_l = z_l + P_l(g): changing only the projection of g changes each FCT output."""
    model = timm.create_model(SMALL).eval()
    x = _input(model, 1)
    with torch.no_grad():
        before = model.forward_intermediates(x, intermediates_only=True)
        for block in model.fct:
            block.global_proj.bias.add_(1.0)
        after = model.forward_intermediates(x, intermediates_only=True)
    assert all(not torch.allclose(b, a) for b, a in zip(before, after))


def test_attention_uses_fused_sdpa_with_requested_heads(monkeypatch):
    calls = []

    def spy(q, k, v, **kwargs):
        calls.append((q.shape, k.shape))
        return F.scaled_dot_product_attention(q, k, v, **kwargs)

    monkeypatch.setattr('timm_fct.fct.F', type('F', (), {'scaled_dot_product_attention': staticmethod(spy),
                                                         'adaptive_avg_pool2d': F.adaptive_avg_pool2d}))
    model = timm.create_model(SMALL, embed_dim=96, num_heads=3, kv_stride=2).eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    # taps at 32, 16, 8 px -> patch stride 2 -> 16, 8, 4 px queries; keys at half that
    assert [tuple(q) for q, _ in calls] == [(1, 3, n * n, 32) for n in (16, 8, 4)]
    assert [tuple(k) for _, k in calls] == [(1, 3, (n // 2) ** 2, 32) for n in (16, 8, 4)]


def test_head_count_changes_the_attention():
    torch.manual_seed(0)
    one = ConvAttention(32, num_heads=1).eval()
    four = ConvAttention(32, num_heads=4).eval()
    four.load_state_dict(one.state_dict())
    x = torch.randn(1, 32, 6, 5)  # non-square map
    with torch.no_grad():
        assert not torch.allclose(one(x), four(x))


def test_eval_is_deterministic_with_dropout_configured():
    model = timm.create_model(SMALL, drop_rate=0.5, attn_drop_rate=0.5, drop_path_rate=0.2).eval()
    x = _input(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
    model.train()
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    assert not torch.allclose(a, model(x))


def test_non_square_input():
    model = timm.create_model(SMALL).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 48, 24)).shape == (1, 10)


def test_fct_convolutions_use_kaiming_normal_init():
    torch.manual_seed(0)
    model = timm.create_model('resnet50_fct_bn_cifar')
    w = model.fct[0].patch_embed.weight  # 96 x 256 x 3 x 3
    fan_out = w.shape[0] * w.shape[2] * w.shape[3]
    assert w.std().item() == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.05)
    assert abs(w.mean().item()) < 0.01


def test_torchscript_matches_eager():
    model = timm.create_model(SMALL).eval()
    x = _input(model)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x), rtol=1e-5, atol=1e-5)


def test_torch_compile_fullgraph_matches_eager():
    model = timm.create_model(SMALL).eval()
    x = _input(model)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


def test_grad_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    model = timm.create_model(SMALL).train()
    x = _input(model)
    grads = []
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        model.zero_grad()
        torch.manual_seed(0)
        model(x).sum().backward()
        grads.append(model.fct[0].patch_embed.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)


def test_prune_keeps_earlier_taps_and_resizes_the_head():
    model = timm.create_model(SMALL).eval()
    x = _input(model, 1)
    with torch.no_grad():
        taps = model.forward_intermediates(x, intermediates_only=True)
        kept = model.prune_intermediate_layers([1])
        pruned = model.forward_intermediates(x, indices=kept, intermediates_only=True)
        assert kept == [1] and len(model.fct) == 2
        torch.testing.assert_close(pruned[0], taps[1])
        assert model(x).shape == (1, model.num_features, 4, 4) == (1, 2 * 96, 4, 4)  # head pruned as in timm


def test_features_only_gives_fct_outputs():
    model = timm.create_model(SMALL, features_only=True, out_indices=(0, 2)).eval()
    with torch.no_grad():
        feats = model(torch.randn(2, 3, 32, 32))
    assert [tuple(f.shape) for f in feats] == [(2, 96, 16, 16), (2, 96, 4, 4)]
    assert model.feature_info.channels() == [96, 96]


def test_taps_are_configurable():
    model = timm.create_model(SMALL, taps=(2, 3)).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 2 * 96, 4, 4)
    assert model.num_features == 2 * 96


@pytest.mark.parametrize('shape,match', [
    ((3, 32, 32), r'4-D \(N, C, H, W\)'),
    ((2, 1, 32, 32), r'expected 3 input channels'),
    ((2, 3, 4, 4), r'too small .* at least 8'),
])
def test_bad_input_raises_clear_error(shape, match):
    model = timm.create_model(SMALL).eval()
    with pytest.raises(ValueError, match=match):
        model(torch.randn(*shape))


def test_too_small_for_imagenet_stem():
    model = timm.create_model('resnet18_fct_bn').eval()
    with pytest.raises(ValueError, match='at least 32'):
        model(torch.randn(1, 3, 24, 64))


@pytest.mark.parametrize('kwargs,match', [
    (dict(norm='gn'), r"norm must be one of \['bn', 'ln'\], got 'gn'"),
    (dict(taps=(1, 4)), 'taps must index stages before the last'),
    (dict(taps=(3, 1)), 'increasing'),
    (dict(taps=(1, 9)), 'index past the feature levels'),
    (dict(embed_dim=96, num_heads=5), r'embed_dim \(96\) must be divisible by num_heads \(5\)'),
])
def test_bad_arguments_raise_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        timm.create_model(SMALL, **kwargs)


def test_unknown_name_and_tag_raise():
    with pytest.raises(RuntimeError, match='Unknown model'):
        timm.create_model('resnet50_fct_gn')
    with pytest.raises(RuntimeError, match='Invalid pretrained tag'):
        timm.create_model('resnet50_fct_bn.no_such_tag')


def test_model_class_is_exported():
    assert isinstance(timm.create_model(SMALL), FctResNet)
