"""Behaviour of the FCT models that timm's own test file does not reach."""
import math

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from timm.utils import AttentionExtract

from timm_fct.models import ConvAttention, FctNet
from timm_fct.models.fct import GroupedLayerNorm2d
from tests.support.helpers import SMALL_MODEL, our_models
from tests.support.upstream import contracts

FCT_MODELS = timm.list_models('*_fct_*')


def _input(model: nn.Module, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, *model.pretrained_cfg['input_size'])


def test_registry_lists_the_family():
    names = set(our_models())
    for depth in ('18', '50'):
        for suffix in ('fct_bn', 'fct_ln', 'fct_bn_cifar', 'fct_ln_cifar', 'cifar'):
            assert f'resnet{depth}_{suffix}' in names
    for name in ('fct_bn', 'fct_ln', 'convnext_tiny_fct_bn', 'convnext_tiny_fct_ln', 'efficientnet_b0_fct_bn',
                 'efficientnet_b0_fct_ln'):
        assert name in names
    assert set(timm.list_pretrained('*fct*')) == {
        *(f'resnet{d}_fct_{n}.a1_in1k_backbone' for d in ('18', '50') for n in ('bn', 'ln')),
        *(f'resnet50_fct_{n}.tv_in1k_backbone' for n in ('bn', 'ln')),
        *(f'convnext_tiny_fct_{n}.fb_in1k_backbone' for n in ('bn', 'ln')),
        *(f'efficientnet_b0_fct_{n}.ra_in1k_backbone' for n in ('bn', 'ln'))}


@pytest.mark.parametrize('model_name', FCT_MODELS)
def test_forward_intermediates_and_prune_timm_contracts(model_name):
    """timm keys its forward_intermediates and prune tests to its own module names; run them on ours."""
    timm_tests = contracts()
    timm_tests.test_model_forward_intermediates(model_name, 1)
    timm_tests.test_model_forward_intermediates_features(model_name, 1)
    timm_tests.test_prune_intermediate_layers_contract(model_name)


@pytest.mark.parametrize('model_name,norm_type,kv_norm_type', [
    ('resnet18_fct_bn_cifar', nn.BatchNorm2d, nn.BatchNorm2d),
    ('resnet18_fct_ln_cifar', LayerNorm2d, GroupedLayerNorm2d),
])
def test_norm_variant_sets_fct_norms_and_keeps_backbone_batchnorm(model_name, norm_type, kv_norm_type):
    model = timm.create_model(model_name)
    fct_norms = {n: m for n, m in model.fct.named_modules() if n.endswith('norm')}
    assert len(fct_norms) == 3 * 3  # per module: Q's projection, K's and V's (stacked), the pre-focus norm
    assert all(type(m) is (kv_norm_type if '.kv_conv.' in n else norm_type) for n, m in fct_norms.items())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.backbone.modules())
    assert not any(isinstance(m, LayerNorm2d) for m in model.backbone.modules())


def test_grouped_layer_norm_normalises_each_run_of_channels_of_each_position_on_its_own():
    """The LN variant's stacked K/V norm is timm's channel LayerNorm on K's channels and on V's, each with its
    own affine weights: computed here with F.layer_norm on each half of a channels_last map."""
    torch.manual_seed(0)
    norm = GroupedLayerNorm2d(2 * 6, 2)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = (3 * torch.randn(4, 12, 5, 7) + 2).contiguous(memory_format=torch.channels_last)
    expected = torch.cat([
        F.layer_norm(half.permute(0, 2, 3, 1), (6,), w, b, 1e-6).permute(0, 3, 1, 2)
        for half, w, b in zip(x.chunk(2, 1), norm.weight.chunk(2), norm.bias.chunk(2))], dim=1)
    torch.testing.assert_close(norm(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('norm', ['bn', 'ln'])
def test_stacked_k_and_v_projections_equal_two_separate_ones(norm):
    """K and V share one depth-wise convolution, one norm and one grouped 1x1 convolution: the same numbers as
    a depth-wise convolution, the variant's norm and a 1x1 convolution for each, from the same weights."""
    torch.manual_seed(0)
    attn = ConvAttention(8, 2, kv_stride=2, kv_min_grid=0, norm_layer=nn.BatchNorm2d if norm == 'bn' else LayerNorm2d)
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_()
    x = torch.randn(3, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    stacked = attn.kv(attn.kv_conv(x, 2))
    conv_w, fc_w, fc_b = attn.kv_conv.conv.weight, attn.kv.weight, attn.kv.bias
    norm_w, norm_b = attn.kv_conv.norm.weight, attn.kv_conv.norm.bias
    for part, out in enumerate(stacked.chunk(2, 1)):
        ch = slice(8 * part, 8 * (part + 1))
        y = F.conv2d(x, conv_w[ch], None, 2, 1, 1, 8)
        if norm == 'bn':
            y = F.batch_norm(y, None, None, norm_w[ch], norm_b[ch], training=True, eps=1e-5)
        else:
            y = F.layer_norm(y.permute(0, 2, 3, 1), (8,), norm_w[ch], norm_b[ch], 1e-6).permute(0, 3, 1, 2)
        torch.testing.assert_close(out, F.conv2d(y, fc_w[ch], fc_b[ch]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('size', [(32, 32), (9, 9), (36, 36), (33, 47), (61, 20)])
def test_head_pools_each_fct_output_and_concatenates(size):
    """The paper's head: average-pool every FCT output, concatenate, classify; at any input size."""
    model = timm.create_model(SMALL_MODEL).eval()
    x = torch.randn(2, 3, *size)
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


def test_forward_features_is_on_the_last_fct_grid_and_area_resampling_is_exact():
    model = timm.create_model(SMALL_MODEL).eval()
    with torch.no_grad():
        feats, outs = model.forward_intermediates(torch.randn(1, 3, 32, 32))
        # sizes divide at 32 px: exact area resampling is plain average pooling
        expected = torch.cat([F.adaptive_avg_pool2d(z, outs[-1].shape[-2:]) for z in outs], dim=1)
    assert feats.shape == (1, 3 * 96, 4, 4)
    torch.testing.assert_close(feats, expected, rtol=1e-5, atol=1e-6)


def test_global_descriptor_reaches_every_fct_module():
    """x_l = z_l + P_l(g): changing only the last backbone level, the source of g, changes each FCT output."""
    model = timm.create_model(SMALL_MODEL).eval()
    x = _input(model, 1)

    def shift_last_stage(module, args, feats):
        return [*feats[:-1], feats[-1] + 1.0]  # the taps stay as they are; g moves

    with torch.no_grad():
        before = model.forward_intermediates(x, intermediates_only=True)
        handle = model.backbone.register_forward_hook(shift_last_stage)
        after = model.forward_intermediates(x, intermediates_only=True)
        handle.remove()
    assert len(after) == 3
    assert all((b - a).abs().max() > 1e-3 for b, a in zip(before, after))


def test_attention_uses_fused_sdpa_with_requested_heads(monkeypatch):
    calls = []

    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        calls.append((q.shape, k.shape))
        return sdpa(q, k, v, **kwargs)

    monkeypatch.setattr(F, 'scaled_dot_product_attention', spy)
    model = timm.create_model(SMALL_MODEL, embed_dim=96, num_heads=3, kv_stride=2).eval()
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    # taps at 32, 16, 8 px -> patch stride 2 -> 16, 8, 4 px queries; K/V strided only above 8x8
    assert [tuple(q) for q, _ in calls] == [(1, 3, n * n, 32) for n in (16, 8, 4)]
    assert [tuple(k) for _, k in calls] == [(1, 3, n * n, 32) for n in (8, 8, 4)]


@pytest.mark.parametrize('model_name,size', [('resnet50_fct_bn_cifar', 32), ('resnet50_fct_bn', 224)])
def test_every_module_attends_over_at_least_16_keys_at_the_default_size(model_name, size):
    model = timm.create_model(model_name).eval()
    keys = []
    for block in model.fct.values():
        block.attn.kv.register_forward_hook(lambda m, a, out: keys.append(out.shape[-2] * out.shape[-1]))
    with torch.no_grad():
        model(torch.randn(1, 3, size, size))
    assert len(keys) == 3 and min(keys) >= 16, keys


def test_single_key_attention_warns():
    model = timm.create_model(SMALL_MODEL).eval()
    with pytest.warns(UserWarning, match='single key'), torch.no_grad():
        model(torch.randn(1, 3, 8, 8))  # the deepest patch grid is 1x1


def test_head_count_changes_the_attention():
    torch.manual_seed(0)
    one = ConvAttention(32, num_heads=1).eval()
    four = ConvAttention(32, num_heads=4).eval()
    four.load_state_dict(one.state_dict())
    x = torch.randn(1, 32, 6, 5)  # non-square map
    with torch.no_grad():
        assert not torch.allclose(one(x), four(x))


def explicit_attention(model: nn.Module) -> nn.Module:
    """Switch every FCT module to timm's explicit attention path, as timm does for its Attention."""
    for block in model.fct.values():
        block.attn.fused_attn = False
    return model


@pytest.mark.parametrize('height,width', [(32, 32), (32, 48)])
def test_explicit_attention_gives_what_the_fused_one_gives(height, width):
    """timm's fused_attn switch changes how attention is computed, not what; the first module strides its K/V."""
    torch.manual_seed(0)
    model = timm.create_model(SMALL_MODEL).eval()
    assert all(block.attn.fused_attn for block in model.fct.values())  # fused by default
    x = torch.randn(2, 3, height, width)
    with torch.no_grad():
        fused = model.forward_intermediates(x)
        explicit = explicit_attention(model).forward_intermediates(x)
    torch.testing.assert_close(explicit, fused, rtol=0, atol=1e-5)


def test_timm_attention_extract_finds_every_modules_weights_by_fx_and_by_hooks():
    """AttentionExtract's default names ('*attn.softmax' traced, '*attn_drop' hooked) reach the softmax."""
    torch.manual_seed(0)
    model = explicit_attention(timm.create_model(SMALL_MODEL).eval())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        traced = AttentionExtract(model)(x)
        hooked = AttentionExtract(model, method='hook')(x)
    assert list(traced) == [f'fct.{i}.attn.softmax' for i in range(3)]
    assert list(hooked) == [f'fct.{i}.attn.attn_drop' for i in range(3)]
    # (batch, heads, queries, keys): 16x16, 8x8 and 4x4 query grids, K/V strided on the first
    assert [tuple(w.shape) for w in traced.values()] == [(2, 2, 256, 64), (2, 2, 64, 64), (2, 2, 16, 16)]
    for weights, same in zip(traced.values(), hooked.values()):
        torch.testing.assert_close(same, weights, rtol=0, atol=0)
        torch.testing.assert_close(weights.sum(dim=-1), torch.ones(weights.shape[:-1]))


def test_eval_is_deterministic_with_dropout_configured():
    model = timm.create_model(SMALL_MODEL, drop_rate=0.5, attn_drop_rate=0.5, drop_path_rate=0.2).eval()
    x = _input(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
    model.train()
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    assert not torch.allclose(a, model(x))


def test_non_square_input():
    model = timm.create_model(SMALL_MODEL).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 48, 24)).shape == (1, 10)


def test_fct_layers_use_the_papers_kaiming_normal_init():
    """He et al.'s Kaiming normal: std sqrt(2 / fan_in), depth-wise convolutions too; g's projection gain 1."""
    torch.manual_seed(0)
    model = timm.create_model('resnet50_fct_bn_cifar')
    block = model.fct['0']
    cases = [
        (block.patch_embed.weight, math.sqrt(2.0 / (256 * 3 * 3))),  # 96 x 256 x 3 x 3
        (block.attn.kv_conv.conv.weight, math.sqrt(2.0 / (1 * 3 * 3))),  # depth-wise: 192 x 1 x 3 x 3
        (block.attn.kv.weight, math.sqrt(2.0 / 96)),  # K's and V's: 192 x 96 x 1 x 1
        (block.attn.q.weight, math.sqrt(2.0 / 96)),
        (block.focus.conv.weight, math.sqrt(2.0 / (96 * 3 * 3))),
        (model.global_proj.weight, math.sqrt(1.0 / 2048)),  # P_l of the three taps: (256 + 512 + 1024) x 2048
    ]
    for w, std in cases:
        assert w.std().item() == pytest.approx(std, rel=0.1)
        assert abs(w.mean().item()) < 0.1 * std
    assert not model.global_proj.bias.any() and not block.patch_embed.bias.any()


@pytest.mark.parametrize('fused', [True, False], ids=['fused', 'explicit'])
def test_torchscript_matches_eager(fused):
    model = timm.create_model(SMALL_MODEL).eval()
    if not fused:
        explicit_attention(model)
    x = _input(model)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x), rtol=1e-5, atol=1e-5)


def test_torch_compile_fullgraph_matches_eager():
    model = timm.create_model(SMALL_MODEL).eval()
    x = _input(model)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('name,kwargs,block', [
    (SMALL_MODEL, {}, 'layer1'),
    ('fct_bn', dict(backbone='convnext_atto', embed_dim=32), 'stages_1'),
    ('fct_ln', dict(backbone='efficientnet_b0', embed_dim=32), 'blocks.2'),
])
def test_grad_checkpointing_recomputes_in_backward_and_gives_same_gradients(name, kwargs, block):
    torch.manual_seed(0)
    model = timm.create_model(name, **kwargs).train()
    x = torch.randn(2, 3, 64, 64)
    calls = {'fct': 0, 'backbone block': 0}
    # pre-hooks: a recomputation in backward may stop early, before a forward hook would run
    model.fct['0'].register_forward_pre_hook(lambda *a: calls.__setitem__('fct', calls['fct'] + 1))
    model.backbone.get_submodule(block).register_forward_pre_hook(
        lambda *a: calls.__setitem__('backbone block', calls['backbone block'] + 1))
    grads, counts = [], []
    for enable in (False, True):
        model.set_grad_checkpointing(enable)
        model.zero_grad()
        calls.update({k: 0 for k in calls})
        torch.manual_seed(0)
        model(x).sum().backward()
        counts.append(dict(calls))
        grads.append(model.fct['0'].patch_embed.weight.grad.clone())
    assert counts[0] == {'fct': 1, 'backbone block': 1}
    assert counts[1]['fct'] == 2 and counts[1]['backbone block'] >= 2  # forward, then again in backward
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)


def test_prune_keeps_earlier_taps_and_resizes_the_head():
    model = timm.create_model(SMALL_MODEL).eval()
    x = _input(model, 1)
    with torch.no_grad():
        taps = model.forward_intermediates(x, intermediates_only=True)
        kept = model.prune_intermediate_layers([1])
        pruned = model.forward_intermediates(x, indices=kept, intermediates_only=True)
        assert kept == [1] and list(model.fct) == ['0', '1']
        torch.testing.assert_close(pruned[0], taps[1])
        # head pruned as in timm; the features are on the grid of the last kept FCT output (8x8 at 32 px)
        assert model(x).shape == (1, model.num_features, 8, 8) == (1, 2 * 96, 8, 8)
        with pytest.raises(ValueError, match=r'FCT outputs \[2\] were pruned'):
            model.forward_intermediates(x, indices=[2])


def test_prune_norm_keeps_only_the_requested_modules():
    model = timm.create_model(SMALL_MODEL).eval()
    x = _input(model, 1)
    with torch.no_grad():
        taps = model.forward_intermediates(x, intermediates_only=True)
        model.prune_intermediate_layers([1], prune_norm=True)
        assert list(model.fct) == ['1']
        assert model.global_proj.out_features == model.fct['1'].patch_embed.in_channels  # only its P_1
        torch.testing.assert_close(model.forward_features(x), taps[1])


def test_features_only_gives_fct_outputs():
    model = timm.create_model(SMALL_MODEL, features_only=True, out_indices=(0, 2)).eval()
    with torch.no_grad():
        feats = model(torch.randn(2, 3, 32, 32))
    assert [tuple(f.shape) for f in feats] == [(2, 96, 16, 16), (2, 96, 4, 4)]
    assert model.feature_info.channels() == [96, 96]


def test_taps_are_configurable():
    model = timm.create_model(SMALL_MODEL, taps=(2, 3)).eval()
    with torch.no_grad():
        assert model.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, 2 * 96, 4, 4)
    assert model.num_features == 2 * 96


def test_batch_of_one_in_training_needs_more_than_one_value_per_batchnorm_channel():
    model = timm.create_model(SMALL_MODEL).train()
    with pytest.raises(ValueError, match='batch of 1 needs height and width of at least 9'):
        model(torch.randn(1, 3, 8, 8))
    assert model(torch.randn(1, 3, 9, 9)).shape == (1, 10)
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize('shape,match', [
    ((3, 32, 32), r'4-D \(N, C, H, W\)'),
    ((2, 1, 32, 32), r'expected 3 input channels'),
    ((2, 3, 4, 4), r'too small .* at least 8'),
])
def test_bad_input_raises_clear_error(shape, match):
    model = timm.create_model(SMALL_MODEL).eval()
    with pytest.raises(ValueError, match=match):
        model(torch.randn(*shape))


def test_too_small_for_imagenet_stem():
    model = timm.create_model('resnet18_fct_bn').eval()
    with pytest.raises(ValueError, match='at least 32'):
        model(torch.randn(1, 3, 24, 64))


@pytest.mark.parametrize('kwargs,match', [
    (dict(norm='gn'), r"norm must be one of \['bn', 'ln'\], got 'gn'"),
    (dict(taps=(1, 4)), r'levels of resnet18_cifar before its last, in 0\.\.3 \(5 levels'),
    (dict(taps=(3, 1)), r'increasing .* got \(3, 1\)'),
    (dict(taps=(1, 1)), r'increasing .* got \(1, 1\)'),  # one level tapped twice
    (dict(taps=(1, 2, 2, 3)), r'increasing .* got \(1, 2, 2, 3\)'),
    (dict(taps=(-1, 2)), r'in 0\.\.3 .* got \(-1, 2\)'),  # Python's last-level index is not a level before the last
    (dict(taps=(2, 4)), r'before its last, in 0\.\.3 .* got \(2, 4\)'),  # the last level gives g
    (dict(taps=()), r'in 0\.\.3 .* got \(\)'),
    (dict(taps=(1, 9)), r'levels of resnet18_cifar before its last, in 0\.\.3 \(5 levels'),
    (dict(embed_dim=96, num_heads=5), r'embed_dim \(96\) must be divisible by num_heads \(5\)'),
])
def test_bad_arguments_raise_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        timm.create_model(SMALL_MODEL, **kwargs)


def test_unknown_name_and_tag_raise():
    with pytest.raises(RuntimeError, match='Unknown model'):
        timm.create_model('resnet50_fct_gn')
    with pytest.raises(RuntimeError, match='Invalid pretrained tag'):
        timm.create_model('resnet50_fct_bn.no_such_tag')


def test_model_class_is_exported():
    assert isinstance(timm.create_model(SMALL_MODEL), FctNet)


def _assert_kaiming_normal_classifier(fc: nn.Linear, what: str) -> None:
    """Kaiming normal, fan-in, gain 1: std 1/sqrt(fan_in), a normal's kurtosis (3), bias zero; not PyTorch's
    default U(-1/sqrt(fan_in), 1/sqrt(fan_in)), whose std is 1/sqrt(3 fan_in), kurtosis 1.8 and max |w| the bound."""
    w = fc.weight.detach().double().flatten()
    fan_in = fc.weight.shape[1]
    expected_std = 1.0 / math.sqrt(fan_in)  # gain 1 * sqrt(1 / fan_in)
    # the sample std of n normal draws has relative standard error 1/sqrt(2n): 0.13% at n = 288,000
    assert w.std().item() == pytest.approx(expected_std, rel=0.02), what
    assert abs(w.mean().item()) < 0.02 * expected_std, what
    kurtosis = (((w - w.mean()) / w.std()) ** 4).mean().item()
    assert kurtosis == pytest.approx(3.0, abs=0.1), what  # uniform: 1.8
    bound = 1.0 / math.sqrt(fan_in)
    assert (w.abs() > bound).double().mean().item() == pytest.approx(math.erfc(1 / math.sqrt(2)), abs=0.01), what
    assert not fc.bias.any(), what


def test_classifier_takes_the_papers_kaiming_normal_init_when_asked_also_after_reset_classifier():
    torch.manual_seed(0)
    model = timm.create_model(SMALL_MODEL, num_classes=1000, kaiming_classifier=True)  # 288 features x 1000 classes
    keys = set(model.state_dict())
    _assert_kaiming_normal_classifier(model.head.fc, 'at creation')
    model.reset_classifier(700)
    assert model.head.fc.out_features == 700
    _assert_kaiming_normal_classifier(model.head.fc, 'after reset_classifier')
    model.reset_classifier(1000)
    assert set(model.state_dict()) == keys  # same keys: existing checkpoints still load
    model.reset_classifier(0)
    assert isinstance(model.head.fc, nn.Identity)


def test_classifier_keeps_pytorchs_default_init_unless_asked():
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): std 1/sqrt(3 fan_in), every weight within the bound."""
    torch.manual_seed(0)
    fc = timm.create_model(SMALL_MODEL, num_classes=1000).head.fc
    w = fc.weight.detach().double()
    bound = 1.0 / math.sqrt(w.shape[1])
    assert w.abs().max().item() <= bound and w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)


@pytest.mark.parametrize('groups', [1, 8], ids=['full', 'depthwise'])
@pytest.mark.parametrize('stride', [1, 2])
def test_a_1x1_map_is_convolved_by_the_centre_tap_with_the_padded_convolutions_values_and_gradients(groups, stride):
    """On a 1x1 map the FCT module's 3x3 convolutions (padding 1) run as the 1x1 convolution of the kernel's centre
    tap: compared with PyTorch's padded 3x3 convolution, outputs and gradients (the weight's outer taps get zero)."""
    from timm_fct.models.fct import conv_same
    torch.manual_seed(0)
    x = torch.randn(4, 8, 1, 1, requires_grad=True)
    weight = torch.randn(8, 8 // groups, 3, 3, requires_grad=True)
    bias = torch.randn(8, requires_grad=True)
    grads = []
    for conv in (lambda: conv_same(x, weight, bias, stride, groups),
                 lambda: F.conv2d(x, weight, bias, stride, 1, 1, groups)):
        out = conv()
        grads.append((out,) + torch.autograd.grad((out * torch.arange(8.).view(1, 8, 1, 1)).sum(), (x, weight, bias)))
    for ours, torchs in zip(*grads):
        torch.testing.assert_close(ours, torchs)
    assert grads[0][2][:, :, 1, 1].abs().sum() > 0 and grads[0][2][:, :, 0].abs().sum() == 0


@pytest.mark.parametrize('norm', ['bn', 'ln'])
@pytest.mark.parametrize('channels_last', [False, True], ids=['contiguous', 'channels_last'])
def test_every_gradient_has_its_parameters_strides_as_ddp_buckets_need(norm, channels_last):
    """DistributedDataParallel lays each bucket view out like its parameter; a gradient with other strides (even of
    a size-1 dimension) makes it warn and copy that gradient every step. Checked in training's two layouts: the
    default and --channels-last (model and batch channels_last)."""
    torch.manual_seed(0)
    model = timm.create_model(f'resnet18_fct_{norm}_cifar', embed_dim=16).train()
    x = torch.randn(2, 3, 16, 16)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model(x).sum().backward()
    mismatched = {n: (p.stride(), p.grad.stride()) for n, p in model.named_parameters() if p.grad.stride() != p.stride()}
    assert not mismatched, f'(parameter strides, gradient strides): {mismatched}'
