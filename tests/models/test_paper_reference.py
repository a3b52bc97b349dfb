"""The FCT modules and head against an independent reference written from the paper's equations.

Mensah, Bah and Brink, "Learning to Pay Multiple Attention with Fully Convolutional Transformers",
Sec. 3.2-3.3, eqs. 1-9. The reference below is plain torch written the way the paper states the
equations (explicit norm formulas, a loop over the heads, einsum attention); it shares no code with
timm_fct and reads the model's weights by their state-dict names only. Where the paper is silent the
reference follows the documented design choices of the package, each marked "design choice" below:
the projection P_l of g to a tap's width, the 1x1 W_Q/W_K/W_V after CONVPROJ and the 1x1 output
projection, the K/V stride on large patch grids (as in CvT), the contiguous split of channels into
heads, and the average pool of each FCT output before the classifier.

Everything runs in float64, so a 1e-5 tolerance separates a wrong formula from rounding.
"""
import math
from typing import Dict, List

import pytest
import torch
import torch.nn.functional as F
import timm
from timm.layers import set_fused_attn, use_fused_attn

import timm_fct  # noqa: F401  registers the models
from timm_fct.train.args import build_parser, read_config, shipped_configs

EMBED_DIM = 32
NUM_HEADS = 4  # d_head = 8: 1/sqrt(d) and 1/d differ by 2.8x, and four heads make a scrambled split visible
BN_EPS = 1e-5  # torch's BatchNorm2d default
LN_EPS = 1e-6  # timm's LayerNorm2d default
PATCH_STRIDE = 2  # eq. 7: 3x3 kernel, stride 2, padding 1 (overlapping patches)
KV_STRIDE = 2  # design choice: K/V subsampled on large grids ...
KV_MIN_GRID = 8  # ... only when the shorter side of the patch grid exceeds this
ATOL = RTOL = 1e-5

Weights = Dict[str, torch.Tensor]


# ----------------------------------------------------------------------------------------------------
# the reference, from the equations
# ----------------------------------------------------------------------------------------------------

def ref_norm(x: torch.Tensor, w: Weights, name: str, kind: str) -> torch.Tensor:
    """Eq. 6, N(x) = (x - mu) / sigma * gamma + beta, per channel.

    BN (eval): mu and sigma^2 are the running statistics of each channel. LN: mu and sigma^2 are taken
    over the C channels at each position (channel LayerNorm of an NCHW map).
    """
    gamma = w[f'{name}.weight'][None, :, None, None]
    beta = w[f'{name}.bias'][None, :, None, None]
    if kind == 'bn':
        mu = w[f'{name}.running_mean'][None, :, None, None]
        var = w[f'{name}.running_var'][None, :, None, None]
        return (x - mu) / torch.sqrt(var + BN_EPS) * gamma + beta
    mu = x.mean(dim=1, keepdim=True)
    var = ((x - mu) ** 2).mean(dim=1, keepdim=True)  # biased variance, as LayerNorm
    return (x - mu) / torch.sqrt(var + LN_EPS) * gamma + beta


def ref_gelu(x: torch.Tensor) -> torch.Tensor:
    """The exact GELU of Hendrycks and Gimpel, sigma of eq. 5."""
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def ref_pointwise(x: torch.Tensor, w: Weights, name: str) -> torch.Tensor:
    """A position-wise linear map x W + b over the channels (eq. 2's W_Q, W_K, W_V), as a 1x1 conv stores it."""
    weight = w[f'{name}.weight'][:, :, 0, 0]
    return torch.einsum('oc,bchw->bohw', weight, x) + w[f'{name}.bias'][None, :, None, None]


def ref_kv_stride(grid_h: int, grid_w: int) -> int:
    """Design choice: K/V are strided only while the *shorter* side of the patch grid exceeds KV_MIN_GRID."""
    return KV_STRIDE if min(grid_h, grid_w) > KV_MIN_GRID else 1


def ref_mhsa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Eqs. 3-4: softmax(Q K^T / sqrt(d)) V for each head over all positions, heads concatenated on channels.

    Head h owns the contiguous channels [h*d, (h+1)*d) (design choice: the usual split).
    """
    B, C, H, W = q.shape
    d = C // num_heads
    heads = []
    for h in range(num_heads):
        ch = slice(h * d, (h + 1) * d)
        qh = q[:, ch].flatten(2)  # (B, d, Nq)
        kh = k[:, ch].flatten(2)  # (B, d, Nk)
        vh = v[:, ch].flatten(2)  # (B, d, Nk)
        scores = torch.einsum('bdn,bdm->bnm', qh, kh) / math.sqrt(d)
        weights = torch.softmax(scores, dim=-1)
        heads.append(torch.einsum('bnm,bdm->bdn', weights, vh).reshape(B, d, H, W))
    return torch.cat(heads, dim=1)  # CONCAT(head_1, ..., head_n)


def per_module_weights(w: Weights) -> Weights:
    """The model stores K's and V's weights stacked along channels, K's first (`attn.kv_conv.*`, `attn.kv.*`), and
    every module's P_l as rows of one matrix, in tap order (`global_proj.*`); the reference reads them apart, as
    `attn.k_conv.*`, `attn.v_conv.*`, `attn.k.*`, `attn.v.*` and `fct.{i}.global_proj.*`."""
    out = dict(w)
    taps = sorted({int(k.split('.')[1]) for k in w if k.startswith('fct.')})
    rows = [w[f'fct.{i}.patch_embed.weight'].shape[1] for i in taps]  # P_l's rows: the tap's channels
    for name in ('weight', 'bias'):
        for i, part in zip(taps, w[f'global_proj.{name}'].split(rows)):
            out[f'fct.{i}.global_proj.{name}'] = part
    for name, value in w.items():
        for stacked, k_name, v_name in (('.attn.kv_conv.', '.attn.k_conv.', '.attn.v_conv.'),
                                        ('.attn.kv.', '.attn.k.', '.attn.v.')):
            if stacked in name and value.dim():
                out[name.replace(stacked, k_name)], out[name.replace(stacked, v_name)] = value.chunk(2)
    return out


def ref_fct(z_hat: torch.Tensor, g: torch.Tensor, w: Weights, prefix: str, kind: str,
            num_heads: int = NUM_HEADS) -> torch.Tensor:
    """One FCT module, eqs. 7-9, from a tapped map z_hat and the global descriptor g."""
    # Sec. 3.2: add g to the tap; design choice: a linear P_l matches g's width to the tap's
    w = per_module_weights(w)
    g_l = g @ w[f'{prefix}.global_proj.weight'].t() + w[f'{prefix}.global_proj.bias']
    x = z_hat + g_l[:, :, None, None]
    # eq. 7: z = PATCHEMBED(z_hat + g)
    z = F.conv2d(x, w[f'{prefix}.patch_embed.weight'], w[f'{prefix}.patch_embed.bias'],
                 stride=PATCH_STRIDE, padding=1)
    C, grid_h, grid_w = z.shape[1:]
    kv_stride = ref_kv_stride(grid_h, grid_w)

    # eq. 8: Q, K, V = W(N(CONVPROJ(z))), CONVPROJ a depth-wise 3x3 convolution

    def qkv(name: str, stride: int) -> torch.Tensor:
        y = F.conv2d(z, w[f'{prefix}.attn.{name}_conv.conv.weight'], None, stride=stride, padding=1, groups=C)
        y = ref_norm(y, w, f'{prefix}.attn.{name}_conv.norm', kind)
        return ref_pointwise(y, w, f'{prefix}.attn.{name}')

    attn = ref_mhsa(qkv('q', 1), qkv('k', kv_stride), qkv('v', kv_stride), num_heads)
    z = ref_pointwise(attn, w, f'{prefix}.attn.proj') + z  # design choice: 1x1 output projection
    # eq. 9: z + FL(N(z)), FL = GELU(CONV) (eq. 5)
    focus = F.conv2d(ref_norm(z, w, f'{prefix}.norm', kind), w[f'{prefix}.focus.conv.weight'],
                     w[f'{prefix}.focus.conv.bias'], padding=1)
    return z + ref_gelu(focus)


def ref_logits(levels: List[torch.Tensor], w: Weights, kind: str, num_heads: int = NUM_HEADS) -> torch.Tensor:
    """Sec. 3.2 and Fig. 1: FCT modules on ResNet stages 1-3, g the pooled last stage, pooled outputs concatenated."""
    assert len(levels) == 5, [t.shape for t in levels]  # stem, stages 1-4
    taps, last = levels[1:4], levels[4]
    g = last.mean(dim=(2, 3))  # the penultimate-layer descriptor of the ResNet
    pooled = [ref_fct(z_hat, g, w, f'fct.{i}', kind, num_heads).mean(dim=(2, 3)) for i, z_hat in enumerate(taps)]
    features = torch.cat(pooled, dim=1)
    return features @ w['head.fc.weight'].t() + w['head.fc.bias']


# ----------------------------------------------------------------------------------------------------
# models with weights that a wrong formula cannot hide behind
# ----------------------------------------------------------------------------------------------------

def build_model(kind: str, fused: bool, name: str = '', **kwargs) -> torch.nn.Module:
    """An FCT model (by default a small CIFAR ResNet-18 one) in float64 eval mode, built with timm's fused_attn
    switch as given.

    The module reads the switch at construction, so it is set around create_model and restored after.
    Fresh initialisation leaves biases at 0, norm weights at 1 and BN statistics at (0, 1), under which a
    misplaced bias or norm would go unnoticed, so all of them are randomised.
    """
    was_fused, was_experimental = use_fused_attn(), use_fused_attn(experimental=True)
    set_fused_attn(fused)
    try:
        model = (timm.create_model(name, **kwargs) if name else
                 timm.create_model(f'resnet18_fct_{kind}_cifar', embed_dim=EMBED_DIM, num_heads=NUM_HEADS))
    finally:
        set_fused_attn(was_fused, experimental=was_experimental)
    model = model.double().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith('backbone.') or p.dim() != 1:
                continue
            is_scale = 'norm' in name and name.endswith('.weight')
            p.copy_((1.0 if is_scale else 0.0) + 0.3 * torch.randn_like(p))
        for name, buf in model.named_buffers():
            if name.endswith('running_mean'):
                buf.copy_(0.5 * torch.randn_like(buf))
            elif name.endswith('running_var'):
                buf.copy_(torch.empty_like(buf).uniform_(0.3, 3.0))
    return model


KINDS = ['bn', 'ln']
PATHS = [pytest.param(True, id='fused'), pytest.param(False, id='explicit')]


@pytest.mark.parametrize('fused', PATHS)
@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('tap_hw', [
    pytest.param((16, 16), id='grid8x8-kv-full'),  # at the threshold: every position is a key
    pytest.param((18, 18), id='grid9x9-kv-strided'),
    pytest.param((12, 30), id='grid6x15-kv-full'),  # long side above, short side below: not strided
    pytest.param((30, 20), id='grid15x10-kv-strided'),
])
def test_one_fct_module_computes_eqs_7_to_9(kind: str, fused: bool, tap_hw):
    """One FCT module fed a tap map and g directly equals eqs. 7-9, on grids either side of the K/V threshold."""
    torch.manual_seed(0)
    model = build_model(kind, fused)
    block = model.fct['0']
    w = model.state_dict()
    tap_chs, global_chs = w['fct.0.patch_embed.weight'].shape[1], w['global_proj.weight'].shape[1]
    z_hat = torch.randn(2, tap_chs, *tap_hw, dtype=torch.float64)
    g = torch.randn(2, global_chs, dtype=torch.float64)
    with torch.no_grad():
        out = block(z_hat, model.global_proj(g)[:, :tap_chs])  # the module is fed P_0(g): the first rows
        expected = ref_fct(z_hat, g, w, 'fct.0', kind)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize('fused', PATHS)
@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('img_hw', [
    pytest.param((32, 32), id='32x32'),  # patch grids 16x16 (strided K/V), 8x8, 4x4
    pytest.param((40, 24), id='40x24'),  # 20x12 (strided), 10x6 (long side > 8, not strided), 5x3
    pytest.param((64, 48), id='64x48'),  # 32x24, 16x12 (both strided), 8x6
    # 18x14 (strided), 9x7, 5x4: grids that do not divide, so the model's area resampling before its pool must
    # keep each map's mean (its float32 resampling weights leave ~1e-7 here, in float64 elsewhere ~1e-15)
    pytest.param((36, 28), id='36x28'),
])
def test_logits_are_the_classifier_of_the_pooled_fct_outputs(kind: str, fused: bool, img_hw):
    """The whole model's logits equal the reference head on the backbone's maps: square and non-square inputs."""
    torch.manual_seed(0)
    model = build_model(kind, fused)
    x = torch.randn(2, 3, *img_hw, dtype=torch.float64)
    with torch.no_grad():
        logits = model(x)
        expected = ref_logits(model.backbone(x), model.state_dict(), kind)
    assert logits.shape == expected.shape == (2, 10)
    torch.testing.assert_close(logits, expected, atol=ATOL, rtol=RTOL)


def table1_fct_rows() -> List[tuple]:
    """(config, model, FCT norm, training size) of every shipped Table 1 config whose model has FCT modules."""
    rows = []
    for config in shipped_configs():
        cfg = read_config(config, build_parser())
        kind = cfg['model'].split('_fct_')[-1].split('_')[0] if '_fct_' in cfg['model'] else None
        if kind:
            rows.append(pytest.param(cfg['model'], kind, cfg.get('img_size', 32), id=config))
    return rows


@pytest.mark.parametrize('name,kind,size', table1_fct_rows())
def test_the_table1_rows_models_as_their_configs_name_them_compute_the_papers_equations(name, kind, size):
    """The rows' own ResNet-50 models (default width, heads and taps), at the size each row trains at: logits equal
    the reference on the backbone's maps; the CIFAR rows start with the 3x3 stride-1 stem and no max-pool, the
    pre-trained row with ResNet-50's own 7x7 stride-2 stem and max-pool."""
    torch.manual_seed(0)
    model = build_model(kind, fused=True, name=name, num_classes=10)
    x = torch.randn(1, 3, size, size, dtype=torch.float64)
    with torch.no_grad():
        logits = model(x)
        expected = ref_logits(model.backbone(x), model.state_dict(), kind, model.fct['0'].attn.num_heads)
    torch.testing.assert_close(logits, expected, atol=ATOL, rtol=RTOL)
    stem = model.backbone.conv1
    cifar = name.endswith('_cifar')
    assert (stem.kernel_size, stem.stride) == (((3, 3), (1, 1)) if cifar else ((7, 7), (2, 2)))
    assert isinstance(model.backbone.maxpool, torch.nn.Identity) == cifar
    assert [model.fct[str(i)].patch_embed.in_channels for i in range(3)] == [256, 512, 1024]  # ResNet-50 stages 1-3
