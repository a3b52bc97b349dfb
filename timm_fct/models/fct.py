"""CNNs with Fully Convolutional Transformer heads.

Mensah, Bah and Brink feed intermediate ResNet-50 feature maps, each added to the global image
descriptor g, through Fully Convolutional Transformer (FCT) modules, and classify the concatenation of
their pooled outputs. The backbone here is any timm model with feature maps (backbones.py), ResNet-50
the paper's.

Words, defined in docs/README.md#words: a level is an index into the backbone's feature_info (the last one
supplies g); a tap is a level that feeds an FCT module (`taps`); an FCT index is an FCT module's position among
the taps, 0-based: the index of `forward_intermediates`, `fct_indices`, `fct_module(i)` and the `fct.{i}`
state-dict keys.

Where each equation of the paper lives:

* x_l = z_l + P_l(g) (Sec. 3.2: "we add z_l to g", "assuming equal dimensions"; P_l, our own, matches g's
  width to the tap's) ......................................... `FctNet.global_proj` (its rows of tap l)
* eq. 7, PATCHEMBED(z_l + g) ...................................................... `FctBlock.patch_embed`
* eqs. 2-4 and 6, MHSA(N(CONVPROJ(z))) .................................................. `ConvAttention`
* eq. 8, residual around the attention ............................................... `FctBlock.forward`
* eqs. 5 and 9, FL(N(z)) + z with FL = GELU(CONV) ......................................... `FocusLayer`
* concatenation of the pooled FCT outputs, then the classifier ... `FctNet.forward_features` / `head`

Paper: S. O. Mensah, B. Bah and W. Brink, "Learning to Pay Multiple Attention with Fully Convolutional
Transformers" (African Institute for Mathematical Sciences; Stellenbosch University).
"""
import math
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Dict, Final, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import (
    ClassifierHead, DropPath, LayerNorm2d, get_device_dtype, register_notrace_function, use_fused_attn,
)
from timm.models import (
    build_model_with_cfg, checkpoint, generate_default_cfgs, get_pretrained_cfg, register_model, resolve_pretrained_cfg,
)
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models._features import feature_take_indices

from .backbones import (
    backbone_group_matcher, backbone_pretrained_cfg, check_feature_maps, check_taps, create_backbone, default_taps,
    features_key,
)
from .resnet_cifar import cifar_cfg

__all__ = ['FctNet', 'FctBlock', 'ConvAttention', 'FocusLayer']

NORM_LAYERS: Dict[str, Callable[..., nn.Module]] = {
    'bn': nn.BatchNorm2d,
    'ln': LayerNorm2d,  # channel LayerNorm: normalises the C values of each position
}


@register_notrace_function  # FX keeps the call as one node (autowrap skips _private names)
def check_image_batch(x: torch.Tensor, in_chans: int, min_size: int, training: bool) -> None:
    """Fail early with the expected shape; convolutions would accept a 3-D tensor and go wrong later."""
    if x.dim() != 4:
        raise ValueError(f'expected a 4-D (N, C, H, W) image batch, got a {x.dim()}-D tensor of shape {x.shape}')
    if x.shape[1] != in_chans:
        raise ValueError(f'expected {in_chans} input channels (N, {in_chans}, H, W), got shape {x.shape}')
    if x.shape[2] < min_size or x.shape[3] < min_size:
        raise ValueError(
            f'input {x.shape[2]}x{x.shape[3]} is too small for the taps: height and width must be '
            f'at least {min_size}, the total stride of the backbone')
    if training and x.shape[0] == 1 and (x.shape[2] <= min_size or x.shape[3] <= min_size):
        raise ValueError(
            f'training on a batch of 1 needs height and width of at least {min_size + 1} (got '
            f'{x.shape[2]}x{x.shape[3]}): at {min_size} the deepest maps are 1x1 and BatchNorm sees one value '
            f'per channel; use a larger batch or input')


@register_notrace_function
def area_resize(z: torch.Tensor, size: List[int]) -> torch.Tensor:
    """Exact area resampling to `size`: each output cell averages the input area it covers, fractions included.

    Unlike adaptive average pooling, whose cells overlap when sizes do not divide, every input pixel
    contributes exactly its area, so the mean over the output equals the mean over the input at any size.
    """
    if [z.shape[-2], z.shape[-1]] == size:
        return z
    if z.shape[-2] % size[0] == 0 and z.shape[-1] % size[1] == 0 and not torch.jit.is_tracing():
        # cells of whole pixels: one pooling kernel. Not when traced (TorchScript's ONNX export), where the
        # kernel size, computed from the shape, would be a graph value that ONNX's pooling cannot take
        return F.avg_pool2d(z, [z.shape[-2] // size[0], z.shape[-1] // size[1]])
    rows = _area_weights(z.shape[-2], size[0], z)
    cols = _area_weights(z.shape[-1], size[1], z)
    return torch.matmul(torch.matmul(rows, z), cols.t())


def _area_weights(src: int, dst: int, like: torch.Tensor) -> torch.Tensor:
    """(dst, src) matrix: overlap of source pixel s with output cell d, divided by the cell's width."""
    scale = src / dst
    edges = torch.arange(dst + 1, device=like.device, dtype=torch.float32) * scale
    pos = torch.arange(src, device=like.device, dtype=torch.float32)
    lo = torch.maximum(edges[:-1].unsqueeze(1), pos.unsqueeze(0))
    hi = torch.minimum(edges[1:].unsqueeze(1), pos.unsqueeze(0) + 1)
    return ((hi - lo).clamp_min(0) / scale).to(like.dtype)


def _concat_on_grid(outs: List[torch.Tensor]) -> torch.Tensor:
    """Area-resample every FCT output to the last one's grid and stack them along channels."""
    grid = [outs[-1].shape[-2], outs[-1].shape[-1]]
    return torch.cat([area_resize(z, grid) for z in outs], dim=1)


def _to_tokens(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, heads, H*W, C // heads), the layout scaled_dot_product_attention expects.

    Head h takes channels [h*d, (h+1)*d). From a channels_last map this is a view whose last dimension is
    contiguous, which PyTorch's fused CPU attention kernel needs (else it falls back to its slower math path).
    """
    B, C, H, W = x.shape
    return x.permute(0, 2, 3, 1).reshape(B, H * W, num_heads, C // num_heads).transpose(1, 2)


def _from_tokens(x: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """(B, heads, H*W, d) -> (B, heads*d, H, W), heads concatenated along channels (eq. 4): channels_last
    without a copy when the heads' outputs lie position by position, as the fused kernel returns them."""
    B, heads, N, d = x.shape
    return x.transpose(1, 2).reshape(B, H, W, heads * d).permute(0, 3, 1, 2)


@register_notrace_function
def kv_stride_for(x: torch.Tensor, kv_stride: int, kv_min_grid: int) -> int:
    """The K/V stride for this patch grid: strided only while the strided grid keeps enough keys."""
    if min(x.shape[-2], x.shape[-1]) > kv_min_grid:
        return kv_stride
    if x.shape[-2] == 1 and x.shape[-1] == 1 and not torch.compiler.is_compiling():
        # eager and TorchScript warn; Dynamo cannot trace warnings.warn (fullgraph=True stops there), so graphs
        # that torch.compile and torch.export trace from this model run without the warning
        warnings.warn(
            'an FCT module attends over a single key (1x1 patch grid): the attention returns V unchanged and '
            'Q and K get no gradient; use a larger input')
    return 1


@register_notrace_function
def conv_same(
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: Optional[torch.Tensor],
        stride: int = 1,
        groups: int = 1,
) -> torch.Tensor:
    """k x k convolution padded by k // 2 (odd k): the size-keeping convolution of the FCT module.

    On a 1x1 map only the kernel's centre tap meets the input, every other tap meets zero padding, so the
    convolution is the 1x1 convolution of the centre tap: the same numbers and the same gradients (zero for the
    other taps), computed as what it is. A decision on the spatial size, never on the batch: the pre-trained
    row's model at 32 px gives its last FCT module a 1x1 grid, and a padded 3x3 backward on a 1x1 map is where
    inductor failed a stride assertion on an H200 (docs/benchmarks.md; there in a 512-channel weight, which is
    the backbone's, not this module's).
    """
    k = weight.shape[-1]
    if x.shape[-2] == 1 and x.shape[-1] == 1:
        return F.conv2d(x, weight[:, :, k // 2:k // 2 + 1, k // 2:k // 2 + 1], bias, 1, 0, 1, groups)
    return F.conv2d(x, weight, bias, stride, k // 2, 1, groups)


@register_notrace_function
def depthwise_conv(x: torch.Tensor, weight: torch.Tensor, stride: int) -> torch.Tensor:
    """3x3 depth-wise convolution (`conv_same`); strided ones run in float32 under CPU autocast.

    On a CPU, the bf16 backward of a strided depth-wise convolution on 1x1 maps returned non-finite
    gradients from finite inputs, inconsistently (it depends on the heap: docs/benchmarks.md, bf16 on CPU), and
    training diverged. The float32 path costs little on the small grids that are strided.
    """
    if not torch.jit.is_scripting():
        if stride > 1 and x.device.type == 'cpu' and torch.is_autocast_enabled('cpu'):
            with torch.autocast('cpu', enabled=False):
                return conv_same(x.float(), weight.float(), None, stride, weight.shape[0])
    return conv_same(x, weight, None, stride, weight.shape[0])


def _strided_like_its_gradient(conv: nn.Conv2d) -> nn.Conv2d:
    """`conv` with its weight given channels_last strides, those of the gradient a channels_last input gives it.

    The FCT module runs channels_last, where convolutions return channels_last weight gradients. For a
    depth-wise (C, 1, k, k) or a 1x1 (C_out, C_in, 1, 1) weight that layout orders memory exactly as the
    default one and differs only in the strides of size-1 dimensions, so values and state dict stay as they
    are; but DistributedDataParallel compares every stride of a gradient with its bucket view's and, where they
    differ, warns and copies the gradient each step. Other weights keep their layout: there the two layouts
    order memory differently.
    """
    weight = conv.weight
    conv.weight = nn.Parameter(torch.empty_like(weight, memory_format=torch.channels_last).copy_(weight),
                               requires_grad=weight.requires_grad)
    return conv


def _stacked(x: torch.Tensor, parts: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, parts * C, H, W): `parts` copies of x along channels, channels_last.

    One copy feeds one depth-wise convolution for several projections; its backward is one sum. Written on
    the NHWC view so that the result is channels_last (torch.cat of channels_last maps would be too, but its
    backward adds the parts' gradients one by one).
    """
    B, C, H, W = x.shape
    nhwc = x.permute(0, 2, 3, 1).unsqueeze(3).expand(B, H, W, parts, C)
    return nhwc.reshape(B, H, W, parts * C).permute(0, 3, 1, 2)


class GroupedLayerNorm2d(nn.Module):
    """timm's LayerNorm2d applied to each of `groups` runs of channels: the channel LayerNorm of K and of V
    stacked into one kernel.

    The channels of one position and one run are normalised together, which is GroupNorm with one group per
    run over the (B * H * W, C) view of the map (each position a sample, no spatial extent).
    """

    def __init__(self, num_channels: int, groups: int, eps: float = 1e-6, device=None, dtype=None):
        super().__init__()
        if num_channels % groups:
            raise ValueError(f'num_channels ({num_channels}) must be divisible by groups ({groups})')
        self.groups = groups
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(num_channels, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        y = F.group_norm(x.permute(0, 2, 3, 1).reshape(B * H * W, C), self.groups, self.weight, self.bias, self.eps)
        return y.reshape(B, H, W, C).permute(0, 3, 1, 2)


def stacked_norm(norm_layer: Callable[..., nn.Module], dim: int, parts: int, **kwargs: Any) -> nn.Module:
    """`parts` norms of `dim` channels, stacked along channels as one module: one kernel for K and V.

    BatchNorm is per channel, so the stacked norm is BatchNorm over all the channels; the channel LayerNorm
    normalises each part's channels of a position on their own (GroupedLayerNorm2d).
    """
    if parts == 1 or norm_layer is nn.BatchNorm2d:
        return norm_layer(dim * parts, **kwargs)
    if norm_layer is LayerNorm2d:
        return GroupedLayerNorm2d(dim * parts, parts, **kwargs)
    raise ValueError(f'no stacked form of {norm_layer} for {parts} parts; expected nn.BatchNorm2d or LayerNorm2d')


class ConvProjection(nn.Module):
    """CONVPROJ then N (eq. 6) for `parts` of Q, K and V that share a stride, stacked along channels.

    One depth-wise 3x3 convolution over `parts` copies of the map and one norm of the stacked channels do for
    K and V together what two convolutions and two norms did (parts=2); Q, computed at the map's own grid while
    K and V may be strided, is a projection of its own (parts=1). The output holds the parts one after the
    other along channels, each normalised as its own norm would.
    """

    def __init__(self, dim: int, norm_layer: Callable[..., nn.Module], parts: int = 1, device=None, dtype=None):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.parts = parts
        chs = dim * parts
        self.conv = _strided_like_its_gradient(nn.Conv2d(chs, chs, 3, padding=1, groups=chs, bias=False, **dd))
        self.norm = stacked_norm(norm_layer, dim, parts, **dd)

    def forward(self, x: torch.Tensor, stride: int = 1) -> torch.Tensor:
        if self.parts > 1:
            x = _stacked(x, self.parts)
        return self.norm(depthwise_conv(x, self.conv.weight, stride))


class ConvAttention(nn.Module):
    """Multi-head self-attention over convolutional Q, K and V (eqs. 2-4 with CONVPROJ, eq. 8).

    On patch grids larger than kv_min_grid, K and V are computed at kv_stride: each query still sees the
    whole map at a fraction of the cost. Smaller grids keep every position as a key, so that attention
    has real keys to choose between (at the paper's 32 px the deepest grid is 4x4: 16 keys, not 4).

    Attention runs through PyTorch's fused scaled_dot_product_attention unless timm's fused_attn switch
    is off (timm.layers.set_fused_attn, exportable models): then the weights are written out as in timm's
    Attention, so timm's AttentionExtract finds them ('*attn.softmax' by FX, '*attn_drop' by hooks).
    """
    fused_attn: Final[bool]

    def __init__(
            self,
            dim: int,
            num_heads: int,
            kv_stride: int = 1,
            kv_min_grid: int = 8,
            norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
            attn_drop: float = 0.,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if dim % num_heads:
            raise ValueError(f'embed_dim ({dim}) must be divisible by num_heads ({num_heads})')
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.fused_attn = use_fused_attn()
        self.kv_stride = kv_stride
        self.kv_min_grid = kv_min_grid
        self.q_conv = ConvProjection(dim, norm_layer, **dd)
        self.kv_conv = ConvProjection(dim, norm_layer, parts=2, **dd)  # K's channels, then V's
        self.q = _strided_like_its_gradient(nn.Conv2d(dim, dim, 1, **dd))  # W_Q of eq. 2, a 1x1 convolution
        # W_K and W_V as one 1x1 convolution of two groups: K's channels to K, V's to V
        self.kv = _strided_like_its_gradient(nn.Conv2d(2 * dim, 2 * dim, 1, groups=2, **dd))
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = _strided_like_its_gradient(nn.Conv2d(dim, dim, 1, **dd))
        # a state dict saved with K and V apart loads through any path (resume, load_state_dict, torch.hub)
        self.register_load_state_dict_pre_hook(_load_separate_kv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2], x.shape[-1]
        stride = kv_stride_for(x, self.kv_stride, self.kv_min_grid)
        q = _to_tokens(self.q(self.q_conv(x)), self.num_heads)
        k, v = self.kv(self.kv_conv(x, stride)).chunk(2, dim=1)
        k, v = _to_tokens(k, self.num_heads), _to_tokens(v, self.num_heads)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            attn = attn.softmax(dim=-1)
            attn = self.attn_drop(attn)
            x = attn @ v
        return self.proj(_from_tokens(x, H, W))


def _load_separate_kv(module: nn.Module, state_dict: Dict[str, torch.Tensor], prefix: str, *args: Any) -> None:
    stack_kv(state_dict, prefix)


class FocusLayer(nn.Module):
    """FL(x) = GELU(CONV(x)), eq. 5: a 3x3 convolution that aggregates the attended features."""

    def __init__(self, dim: int, device=None, dtype=None):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1, device=device, dtype=dtype)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(conv_same(x, self.conv.weight, self.conv.bias))


class FctBlock(nn.Module):
    """One FCT module: a tap's feature map plus the projected global descriptor in, an attended map out (eqs. 7-9)."""

    def __init__(
            self,
            in_chs: int,
            embed_dim: int,
            num_heads: int,
            patch_size: int = 3,
            patch_stride: int = 2,
            kv_stride: int = 2,
            kv_min_grid: int = 8,
            norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d,
            attn_drop: float = 0.,
            drop_path: float = 0.,
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        self.patch_embed = nn.Conv2d(  # overlapping patches: kernel larger than stride
            in_chs, embed_dim, patch_size, stride=patch_stride, padding=patch_size // 2, **dd)
        self.attn = ConvAttention(embed_dim, num_heads, kv_stride, kv_min_grid, norm_layer, attn_drop, **dd)
        self.norm = norm_layer(embed_dim, **dd)
        self.focus = FocusLayer(embed_dim, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor, g_proj: torch.Tensor) -> torch.Tensor:
        """x: the tap's map (B, in_chs, H, W); g_proj: P_l(g), the global descriptor projected to the tap's
        channels (B, in_chs), which FctNet computes for all its modules in one matrix product."""
        # eq. 7; the rest runs channels_last, where the depth-wise and 1x1 convolutions are faster on a CPU
        # and the heads are views of the Q, K and V maps (a copy of the small embedded map buys both)
        z = self.patch_embed(x + g_proj[:, :, None, None])
        z = z.contiguous(memory_format=torch.channels_last)
        z = z + self.drop_path(self.attn(z))  # eq. 8
        z = z + self.drop_path(self.focus(self.norm(z)))  # eq. 9
        return z


class FctNet(nn.Module):
    """A timm backbone whose taps go through FCT modules; their pooled outputs are classified.

    The backbone is timm's features_only model of any architecture (CNNs, and hierarchical transformers
    whose NHWC maps are permuted); its own pretrained weights load through timm by name and tag, and its
    group_matcher orders layer-wise learning rates.

    forward_features returns the FCT outputs concatenated along channels on the last module's grid (each
    map area-averaged down to it, exact when sizes divide as they do at the default resolutions), so the
    head's global average pool yields exactly the concatenation of each FCT output's average, as in the
    paper, while the features stay a plain NCHW map that timm's tooling expects.
    """

    def __init__(
            self,
            backbone: str = 'resnet50',
            taps: Optional[Sequence[int]] = None,
            norm: str = 'bn',
            embed_dim: int = 96,
            num_heads: int = 2,
            patch_size: int = 3,
            patch_stride: int = 2,
            kv_stride: int = 2,
            kv_min_grid: int = 8,
            num_classes: int = 1000,
            in_chans: int = 3,
            global_pool: str = 'avg',
            drop_rate: float = 0.,
            attn_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            pretrained_backbone: bool = False,
            img_size: Optional[Union[int, Tuple[int, int]]] = None,
            backbone_kwargs: Optional[Dict[str, Any]] = None,
            kaiming_classifier: bool = False,
            device=None,
            dtype=None,
    ):
        """
        Args:
            backbone: timm model name of the backbone, optionally with a pretrained tag ('convnext_tiny.fb_in1k').
            taps: backbone feature levels (indices into its feature_info) fed to FCT modules; the last level
                always supplies the global descriptor g. None: the last three levels before the last.
            norm: 'bn' (BatchNorm) or 'ln' (channel LayerNorm) inside the FCT modules.
            embed_dim: FCT embedding width D.
            num_heads: attention heads per FCT module.
            patch_size: PATCHEMBED kernel size (larger than patch_stride, so patches overlap).
            patch_stride: PATCHEMBED stride.
            kv_stride: stride of the K and V depth-wise projections on patch grids larger than kv_min_grid.
            kv_min_grid: patch grids whose smaller side is at most this keep every position as a key.
            num_classes: classifier outputs, 0 for none.
            in_chans: input image channels.
            global_pool: timm pooling type for the head, '' for none.
            drop_rate: dropout before the classifier.
            attn_drop_rate: dropout on the attention weights.
            drop_path_rate: stochastic depth for the FCT residual branches, and the backbone's blocks where
                the backbone takes it.
            pretrained_backbone: load the backbone's own pretrained weights through timm (name and tag).
            img_size: input size for backbones built for one size (timm passes it where the backbone's
                pretrained_cfg has fixed_input_size, e.g. Swin).
            backbone_kwargs: further keyword arguments for the backbone's timm.create_model.
            kaiming_classifier: the paper's Kaiming normal for the classifier too; off by default, PyTorch's
                uniform init, which trained the digits main job better (docs/decisions.md).
        """
        super().__init__()
        dd = {'device': device, 'dtype': dtype}
        if norm not in NORM_LAYERS:
            raise ValueError(f"norm must be one of {sorted(NORM_LAYERS)}, got {norm!r}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.kaiming_classifier = kaiming_classifier

        self.backbone = create_backbone(
            backbone, pretrained_backbone, drop_path_rate,
            **(backbone_kwargs or {}), in_chans=in_chans, img_size=img_size, **dd)
        info = self.backbone.feature_info
        levels = [info.info[i] for i in info.out_indices]
        self.taps = check_taps(backbone, levels, default_taps(len(levels)) if taps is None else taps)
        self.read_levels = [*self.taps, len(levels) - 1]  # the taps, then the last level, which gives g
        self.backbone_name = backbone
        first_conv = self.backbone.pretrained_cfg.get('first_conv')
        if isinstance(first_conv, str):  # declared for timm (in_chans adaptation, config.json), by our key names
            self._traits = {'first_conv': f'backbone.{features_key(first_conv, dict(self.backbone.named_modules()))}'}
        self.backbone_nhwc = getattr(self.backbone, 'output_fmt', 'NCHW') == 'NHWC'
        self.level_chs = [levels[i]['num_chs'] for i in self.read_levels]
        tap_reductions = [levels[i]['reduction'] for i in self.taps]
        self.min_input_size = levels[-1]['reduction']

        norm_layer = NORM_LAYERS[norm]
        # P_l of every tap as one linear map (ours: the paper adds g to the tap "assuming equal dimensions"):
        # its rows of tap l, in tap order, give P_l(g), so one matrix product projects g for every module
        self.global_proj = nn.Linear(self.level_chs[-1], sum(self.level_chs[:-1]), **dd)
        self.global_proj_chs: List[int] = list(self.level_chs[:-1])
        # keyed by position among the taps, so that pruning can drop any module and the others keep their key
        self.fct = nn.ModuleDict({
            str(i): FctBlock(
                chs, embed_dim, num_heads,
                patch_size=patch_size,
                patch_stride=patch_stride,
                kv_stride=kv_stride,
                kv_min_grid=kv_min_grid,
                norm_layer=norm_layer,
                attn_drop=attn_drop_rate,
                drop_path=drop_path_rate,
                **dd,
            )
            for i, chs in enumerate(self.level_chs[:-1])
        })
        self.fct_indices: List[int] = list(range(len(self.fct)))
        self.feature_info = [
            dict(num_chs=embed_dim, reduction=r * patch_stride, module=f'fct.{i}')
            for i, r in enumerate(tap_reductions)
        ]
        self.num_features = embed_dim * len(self.fct)
        self.head = ClassifierHead(self.num_features, num_classes, pool_type=global_pool, drop_rate=drop_rate, **dd)
        self.head_hidden_size = self.head.num_features
        _init_fct(self)
        if self.kaiming_classifier:
            _init_classifier(self.head.fc)
        # checkpoints saved with a P_l in each module load through any path (resume, load_state_dict, torch.hub)
        self.register_load_state_dict_pre_hook(_load_separate_global_proj)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Callable[[str], Tuple]:
        """Layer-decay groups: the backbone's own (stem, stages or blocks), then the FCT modules and head."""
        return backbone_group_matcher(self.backbone_name, list(self.backbone.state_dict()), coarse)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        self.backbone.set_grad_checkpointing(enable)

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False) -> Union[str, nn.Module]:
        return 'head.fc' if name_only else self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, pool_type=global_pool, **get_device_dtype(self))
        self.head_hidden_size = self.head.num_features
        if self.kaiming_classifier:
            _init_classifier(self.head.fc)

    @torch.jit.ignore
    def fct_taps(self) -> Dict[int, int]:
        """The level each kept FCT module reads, by FCT index."""
        return {i: self.taps[i] for i in self.fct_indices}

    @torch.jit.ignore
    def fct_module(self, index: int) -> 'FctBlock':
        """The FCT module at an FCT index; its output is FCT output `index`."""
        if index not in self.fct_indices:
            raise ValueError(f'no FCT module at FCT index {index}; this model keeps {self.fct_indices}')
        return self.fct[str(index)]

    @torch.jit.ignore
    def attention_names(self) -> Dict[int, str]:
        """By FCT index, the name under which timm's AttentionExtract finds the module's attention weights
        on the explicit path (`explicit_attention`): softmax(QK^T / sqrt(d)), (B, heads, queries, keys)."""
        return {i: f'fct.{i}.attn.softmax' for i in self.fct_indices}

    @torch.jit.ignore
    @contextmanager
    def explicit_attention(self) -> Iterator[None]:
        """Every FCT module on timm's explicit attention path, which materialises the weights; restored after."""
        modules = [self.fct_module(i).attn for i in self.fct_indices]
        fused = [m.fused_attn for m in modules]
        for m in modules:
            m.fused_attn = False
        try:
            yield
        finally:
            for m, was_fused in zip(modules, fused):
                m.fused_attn = was_fused

    def _attend(self, x: torch.Tensor, indices: List[int]) -> List[torch.Tensor]:
        """Backbone, global descriptor g, and the outputs of the FCT modules at `indices`, in tap order."""
        check_image_batch(x, self.in_chans, self.min_input_size, self.training)
        levels = self.backbone(x)
        feats = [levels[i].permute(0, 3, 1, 2) if self.backbone_nhwc else levels[i] for i in self.read_levels]
        check_feature_maps(feats, self.level_chs, self.backbone_name)
        g = feats[-1].mean((2, 3))  # global image descriptor: the pooled last level
        g_projs = self.global_proj(g).split(self.global_proj_chs, dim=1)  # P_l(g) of every kept module
        outs: List[torch.Tensor] = []
        for key, block in self.fct.items():
            i = int(key)
            if i in indices:
                g_proj = g_projs[self.fct_indices.index(i)]
                if self.grad_checkpointing and not torch.jit.is_scripting():
                    outs.append(checkpoint(block, feats[i], g_proj))
                else:
                    outs.append(block(feats[i], g_proj))
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return _concat_on_grid(self._attend(x, self.fct_indices))

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """The FCT module outputs (one per tap) as intermediates; `norm` is a no-op, there is no final norm.

        Args:
            x: Input image tensor.
            indices: Take last n FCT outputs if int, all kept ones if None, select matching indices if sequence.
            norm: Unused, for API compatibility.
            stop_early: Skip the FCT modules after the last requested one (the backbone always runs whole,
                since every module needs the global descriptor).
            output_fmt: Only 'NCHW'.
            intermediates_only: Only return the intermediates.
        """
        if output_fmt != 'NCHW':
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices = self._kept_indices(indices)
        run = [i for i in self.fct_indices if i <= max(take_indices)] if stop_early else self.fct_indices
        outs = self._attend(x, run)
        intermediates = [outs[run.index(i)] for i in take_indices]
        if intermediates_only:
            return intermediates
        return _concat_on_grid(outs), intermediates

    def _kept_indices(self, indices: Optional[Union[int, List[int]]]) -> List[int]:
        if indices is None:
            return list(self.fct_indices)
        take_indices, _ = feature_take_indices(len(self.feature_info), indices)
        pruned = [i for i in take_indices if i not in self.fct_indices]
        if pruned:
            raise ValueError(f'FCT outputs {pruned} were pruned; this model keeps {self.fct_indices}')
        return take_indices

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the FCT modules the requested taps do not need; the head goes if pruned or its input changed.

        The FCT modules run side by side, so only the concatenation ties them together: it plays the
        part of a final norm. With prune_norm=False the modules after the last index are dropped and
        forward_features stays a concatenation; with prune_norm=True (features_only) only the modules
        at `indices` are kept, so forward_features ends at the requested tap itself.
        """
        take_indices = self._kept_indices(indices)
        max_index = max(take_indices)
        keep = take_indices if prune_norm else [i for i in self.fct_indices if i <= max_index]
        changed = keep != self.fct_indices
        self._keep_global_proj_rows(keep)
        for i in self.fct_indices:
            if i not in keep:
                del self.fct[str(i)]
        self.fct_indices = list(keep)
        self.num_features = self.feature_info[0]['num_chs'] * len(keep)
        if prune_head or changed:
            self.num_classes = 0
            self.head.reset(0, '', in_features=self.num_features)
            self.head_hidden_size = self.head.num_features
        return take_indices

    @torch.jit.ignore
    def _keep_global_proj_rows(self, keep: List[int]) -> None:
        """global_proj with the rows of the FCT modules in `keep` only (weights copied, trainable as before)."""
        kept = [n for n, i in enumerate(self.fct_indices) if i in keep]
        old = self.global_proj
        weights, biases = old.weight.split(self.global_proj_chs), old.bias.split(self.global_proj_chs)
        weight, bias = torch.cat([weights[n] for n in kept]), torch.cat([biases[n] for n in kept])
        self.global_proj = nn.Linear(old.in_features, weight.shape[0], device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            self.global_proj.weight.copy_(weight)
            self.global_proj.bias.copy_(bias)
        self.global_proj.requires_grad_(old.weight.requires_grad)
        self.global_proj_chs = [self.global_proj_chs[n] for n in kept]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_features(x)
        x = self.forward_head(x)
        return x


def _init_fct(model: 'FctNet') -> None:
    """Kaiming normal for P (global_proj) and the FCT modules, drawn module by module: each module's rows of P,
    then the module, the order in which a seed drew them when every module held its own P_l, so that a seed
    gives the same weights. P is variance-preserving (fan-in, gain 1), so the descriptor adds to the tap at
    the scale it has; biases zero."""
    for rows, block in zip(model.global_proj.weight.split(model.global_proj_chs), model.fct.values()):
        nn.init.kaiming_normal_(rows, mode='fan_in', nonlinearity='linear')
        block.apply(_init_fct_weights)
    nn.init.zeros_(model.global_proj.bias)


def _init_fct_weights(module: nn.Module) -> None:
    """The paper's Kaiming normal initialiser, as we read it (He et al. 2015: fan-in, ReLU gain), for every
    FCT convolution; the mode and gains are ours (docs/decisions.md).

    Fan-in keeps the forward variance of each layer, depth-wise ones included (fan-in 9, where fan-out
    would shrink their weights by the channel count).
    """
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode='fan_in', nonlinearity='relu')
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _init_classifier(fc: nn.Module) -> None:
    """The paper's Kaiming normal for the classifier too ("we initialise the model using the Kaiming normal
    initialiser"), with kaiming_classifier=True: fan-in, gain 1 (no ReLU follows the logits;
    docs/decisions.md), bias zero. Identity (no classifier) is left alone."""
    if isinstance(fc, nn.Linear):
        nn.init.kaiming_normal_(fc.weight, mode='fan_in', nonlinearity='linear')
        if fc.bias is not None:
            nn.init.zeros_(fc.bias)


# the separate K and V weights of checkpoints saved before they were stacked, and where they go (K's channels first)
_KV_SEPARATE = (('k_conv.', 'v_conv.', 'kv_conv.'), ('k.', 'v.', 'kv.'))


def stack_kv(state_dict: Dict[str, torch.Tensor], prefix: str) -> None:
    """In place: one FCT module's separate K and V weights (`{prefix}k_conv.*`, `v_conv.*`, `k.*`, `v.*`, as saved
    before they were stacked; prefix ends in `attn.`) as the stacked `{prefix}kv_conv.*` and `kv.*`. The
    BatchNorm's batch counter is one number for both (K's and V's count the same batches): K's is kept."""
    for k_part, v_part, stacked in _KV_SEPARATE:
        for key in [k for k in state_dict if k.startswith(prefix + k_part)]:
            name = key[len(prefix + k_part):]
            v_key = prefix + v_part + name
            if v_key not in state_dict:
                raise RuntimeError(f'the checkpoint has {key} but not {v_key}: K and V weights come in pairs')
            k_value, v_value = state_dict.pop(key), state_dict.pop(v_key)
            state_dict[prefix + stacked + name] = k_value if k_value.dim() == 0 else torch.cat([k_value, v_value])


def stack_global_proj(state_dict: Dict[str, torch.Tensor], prefix: str, indices: Sequence[int]) -> None:
    """In place: the P_l of each FCT module at `indices` (`{prefix}fct.{i}.global_proj.*`, as saved before they
    were stacked) as the rows of `{prefix}global_proj.*`, in the order of `indices`."""
    for name in ('weight', 'bias'):
        keys = [f'{prefix}fct.{i}.global_proj.{name}' for i in indices]
        if keys and all(k in state_dict for k in keys):
            state_dict[f'{prefix}global_proj.{name}'] = torch.cat([state_dict.pop(k) for k in keys])


def _load_separate_global_proj(module: nn.Module, state_dict: Dict[str, torch.Tensor], prefix: str, *args: Any) -> None:
    stack_global_proj(state_dict, prefix, module.fct_indices)


def stack_kv_weights(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """An FctNet checkpoint with every module's K and V weights stacked (`stack_kv`); one already stacked comes
    back as it is."""
    out = dict(state_dict)
    for prefix in {k[:k.index('.attn.k_conv.')] + '.attn.' for k in state_dict
                   if k.startswith('fct.') and '.attn.k_conv.' in k}:
        stack_kv(out, prefix)
    return out


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: FctNet) -> Dict[str, torch.Tensor]:
    """Accept FctNet checkpoints, those with separate K and V weights and a P_l in each module too, and the plain
    backbone's own as backbone-only weights.

    A plain checkpoint's keys go under timm's features_only names (stem.0 -> backbone.stem_0), its
    classifier is dropped, and the FCT modules and head keep their fresh initialisation. Every weight
    outside the classifier must be in the checkpoint: timm loads non-strictly when num_classes differs
    from the checkpoint's, so a missing key is caught here.
    """
    if any(k.startswith('fct.') for k in state_dict):
        out = stack_kv_weights(state_dict)
        stack_global_proj(out, '', model.fct_indices)
    else:
        backbone_keys = set(model.backbone.state_dict())
        renamed = {features_key(k, backbone_keys): v for k, v in state_dict.items()}
        out = {f'backbone.{k}': v for k, v in renamed.items() if k in backbone_keys}
        missing = sorted(backbone_keys - set(renamed))
        if missing:
            raise RuntimeError(f'the backbone checkpoint lacks {len(missing)} weights of the backbone {model.backbone_name}, '
                               f'e.g. {missing[:3]}; is it a checkpoint of another architecture?')
        out.update({k: v for k, v in model.state_dict().items() if not k.startswith('backbone.')})
    classifier = model.get_classifier(name_only=True)
    missing = sorted(k for k in model.state_dict() if k not in out and not k.startswith(classifier + '.'))
    if missing:
        raise RuntimeError(f'the checkpoint lacks {len(missing)} weights of {type(model).__name__}, '
                           f'e.g. {missing[:3]}')
    return out


GENERIC_MODELS = ('fct_bn', 'fct_ln')
DEFAULT_BACKBONE = 'resnet50'  # the paper's


def _names_weights(cfg: Dict[str, Any]) -> bool:
    return any(cfg.get(k) for k in ('url', 'file', 'state_dict', 'hf_hub_id'))


def _create_fct(variant: str, pretrained: bool = False, **kwargs: Any) -> FctNet:
    """Build an FCT model. On the generic models, pretrained=True means the backbone's own weights.

    A generic model whose pretrained_cfg names weights (a local-dir: or hf-hub: FCT checkpoint) loads them
    as any timm model does; otherwise its backbone loads through timm by name and tag, and the model's
    pretrained_cfg carries the backbone's preprocessing.
    """
    if variant in GENERIC_MODELS:
        cfg = resolve_pretrained_cfg(variant, kwargs.get('pretrained_cfg'), kwargs.get('pretrained_cfg_overlay'))
        if not _names_weights(cfg.to_dict()):
            kwargs['pretrained_backbone'] = pretrained
            kwargs['pretrained_cfg_overlay'] = {
                **backbone_pretrained_cfg(kwargs.setdefault('backbone', DEFAULT_BACKBONE)),
                **(kwargs.get('pretrained_cfg_overlay') or {}),
            }
            pretrained = False
    model = build_model_with_cfg(
        FctNet,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls='getter', out_indices=None),  # every FCT output; the model knows how many
        **kwargs,
    )
    if variant in GENERIC_MODELS and isinstance(model, FctNet):  # not features_only's wrapper: the registered cfg
        # describes the default backbone, this model any backbone
        model.pretrained_cfg = model.default_cfg = {**model.pretrained_cfg, **_network_cfg(model)}
    return model


def _network_cfg(model: FctNet) -> Dict[str, Any]:
    """The pretrained_cfg entries that describe the built network rather than its weights: the grid the head pools
    at the cfg's input size (the last FCT module's), the smallest input and the first convolution."""
    last = model.fct_indices[-1]
    embed = model.fct[str(last)].patch_embed
    tap_reduction = model.feature_info[last]['reduction'] // embed.stride[0]
    grid = [(math.ceil(size / tap_reduction) + 2 * pad - k) // stride + 1
            for size, pad, k, stride in zip(model.pretrained_cfg['input_size'][1:], embed.padding, embed.kernel_size,
                                            embed.stride)]
    return dict(pool_size=tuple(grid), min_input_size=(model.in_chans, model.min_input_size, model.min_input_size),
                first_conv=getattr(model, '_traits', {}).get('first_conv'))


PAPER_NAME = 'Learning to Pay Multiple Attention with Fully Convolutional Transformers'  # pretrained_cfg's paper_name
PAPER_AUTHORS = 'Mensah, Bah and Brink'  # which timm's pretrained_cfg has no field for


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    return {
        'url': '',
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7), 'min_input_size': (3, 32, 32),
        'crop_pct': 0.95, 'interpolation': 'bicubic',
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'backbone.conv1', 'classifier': 'head.fc',
        'license': 'apache-2.0', 'paper_name': PAPER_NAME,
        **kwargs,
    }


def _cifar_cfg() -> Dict[str, Any]:
    return cifar_cfg(first_conv='backbone.conv1', classifier='head.fc', paper_name=PAPER_NAME)


def _backbone_cfg(backbone: str, **kwargs: Any) -> Dict[str, Any]:
    """ImageNet weights for the backbone only, from timm's own pretrained tag; FCT modules and classifier fresh.

    Read from timm's registry, so a tag can only name weights timm publishes (an unknown tag fails at import).
    """
    source = get_pretrained_cfg(backbone, allow_unregistered=False)
    return _cfg(hf_hub_id=source.hf_hub_id, origin_url=source.origin_url,
                **{**backbone_pretrained_cfg(backbone), **kwargs})


default_cfgs = generate_default_cfgs({
    'fct_bn': _cfg(),  # the default backbone's (ResNet-50); another brings its own when built (_network_cfg)
    'fct_ln': _cfg(),
    'resnet18_fct_bn.a1_in1k_backbone': _backbone_cfg('resnet18.a1_in1k'),
    'resnet18_fct_ln.a1_in1k_backbone': _backbone_cfg('resnet18.a1_in1k'),
    'resnet50_fct_bn.a1_in1k_backbone': _backbone_cfg('resnet50.a1_in1k'),
    'resnet50_fct_ln.a1_in1k_backbone': _backbone_cfg('resnet50.a1_in1k'),
    # torchvision's original ImageNet ResNet-50 weights (bilinear, crop 0.875): the pre-trained row's alternative
    'resnet50_fct_bn.tv_in1k_backbone': _backbone_cfg('resnet50.tv_in1k'),
    'resnet50_fct_ln.tv_in1k_backbone': _backbone_cfg('resnet50.tv_in1k'),
    'convnext_tiny_fct_bn.fb_in1k_backbone': _backbone_cfg('convnext_tiny.fb_in1k', first_conv='backbone.stem_0'),
    'convnext_tiny_fct_ln.fb_in1k_backbone': _backbone_cfg('convnext_tiny.fb_in1k', first_conv='backbone.stem_0'),
    'efficientnet_b0_fct_bn.ra_in1k_backbone': _backbone_cfg('efficientnet_b0.ra_in1k', first_conv='backbone.conv_stem'),
    'efficientnet_b0_fct_ln.ra_in1k_backbone': _backbone_cfg('efficientnet_b0.ra_in1k', first_conv='backbone.conv_stem'),
    'resnet18_fct_bn_cifar': _cifar_cfg(),
    'resnet18_fct_ln_cifar': _cifar_cfg(),
    'resnet50_fct_bn_cifar': _cifar_cfg(),
    'resnet50_fct_ln_cifar': _cifar_cfg(),
})


@register_model
def fct_bn(pretrained: bool = False, **kwargs: Any) -> FctNet:
    """BatchNorm FCT modules on any timm backbone: `backbone='convnext_tiny.fb_in1k'`; pretrained loads its weights."""
    model_args = dict(norm='bn')
    return _create_fct('fct_bn', pretrained, **dict(model_args, **kwargs))


@register_model
def fct_ln(pretrained: bool = False, **kwargs: Any) -> FctNet:
    """LayerNorm FCT modules on any timm backbone: `backbone='convnext_tiny.fb_in1k'`; pretrained loads its weights."""
    model_args = dict(norm='ln')
    return _create_fct('fct_ln', pretrained, **dict(model_args, **kwargs))


@register_model
def convnext_tiny_fct_bn(pretrained: bool = False, **kwargs: Any) -> FctNet:
    """ConvNeXt-Tiny with BatchNorm FCT modules on levels 0-2 (strides 4-16), 224x224."""
    model_args = dict(backbone='convnext_tiny', norm='bn')
    return _create_fct('convnext_tiny_fct_bn', pretrained, **dict(model_args, **kwargs))


@register_model
def convnext_tiny_fct_ln(pretrained: bool = False, **kwargs: Any) -> FctNet:
    """ConvNeXt-Tiny with LayerNorm FCT modules on levels 0-2 (strides 4-16), 224x224."""
    model_args = dict(backbone='convnext_tiny', norm='ln')
    return _create_fct('convnext_tiny_fct_ln', pretrained, **dict(model_args, **kwargs))


@register_model
def efficientnet_b0_fct_bn(pretrained: bool = False, **kwargs: Any) -> FctNet:
    """EfficientNet-B0 with BatchNorm FCT modules 64 wide on levels 1-3 (strides 4-16), 224x224.

    Narrower than the default 96 to keep the head's cost in proportion to this light backbone (docs/benchmarks.md).
    """
    model_args = dict(backbone='efficientnet_b0', norm='bn', embed_dim=64)
    return _create_fct('efficientnet_b0_fct_bn', pretrained, **dict(model_args, **kwargs))


@register_model
def efficientnet_b0_fct_ln(pretrained: bool = False, **kwargs: Any) -> FctNet:
    """EfficientNet-B0 with LayerNorm FCT modules 64 wide on levels 1-3 (strides 4-16), 224x224.

    Narrower than the default 96 to keep the head's cost in proportion to this light backbone (docs/benchmarks.md).
    """
    model_args = dict(backbone='efficientnet_b0', norm='ln', embed_dim=64)
    return _create_fct('efficientnet_b0_fct_ln', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet18_fct_bn(pretrained: bool = False, **kwargs: Any) -> FctNet:
    """ResNet-18 with BatchNorm FCT modules on levels 1-3 (stages 1-3), ImageNet stem, 224x224."""
    model_args = dict(backbone='resnet18', norm='bn')
    return _create_fct('resnet18_fct_bn', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet18_fct_ln(pretrained: bool = False, **kwargs: Any) -> FctNet:
    """ResNet-18 with LayerNorm FCT modules on levels 1-3 (stages 1-3), ImageNet stem, 224x224."""
    model_args = dict(backbone='resnet18', norm='ln')
    return _create_fct('resnet18_fct_ln', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet50_fct_bn(pretrained: bool = False, **kwargs: Any) -> FctNet:
    """ResNet-50 (ImageNet stem) with BatchNorm FCT modules: our model for the paper's 'ours (pre-trained)' row.

    The from-scratch 'ours (with BN)' row is resnet50_fct_bn_cifar (CIFAR stem, our choice; docs/decisions.md).
    """
    model_args = dict(backbone='resnet50', norm='bn')
    return _create_fct('resnet50_fct_bn', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet50_fct_ln(pretrained: bool = False, **kwargs: Any) -> FctNet:
    """ResNet-50 (ImageNet stem) with LayerNorm FCT modules; the 'ours (with LN)' row is resnet50_fct_ln_cifar."""
    model_args = dict(backbone='resnet50', norm='ln')
    return _create_fct('resnet50_fct_ln', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet18_fct_bn_cifar(pretrained: bool = False, **kwargs: Any) -> FctNet:
    """ResNet-18 with the CIFAR stem and BatchNorm FCT modules, for 32x32 inputs."""
    model_args = dict(backbone='resnet18_cifar', norm='bn')
    return _create_fct('resnet18_fct_bn_cifar', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet18_fct_ln_cifar(pretrained: bool = False, **kwargs: Any) -> FctNet:
    """ResNet-18 with the CIFAR stem and LayerNorm FCT modules, for 32x32 inputs."""
    model_args = dict(backbone='resnet18_cifar', norm='ln')
    return _create_fct('resnet18_fct_ln_cifar', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet50_fct_bn_cifar(pretrained: bool = False, **kwargs: Any) -> FctNet:
    """The 'ours (with BN)' row of Table 1: CIFAR stem (our choice, docs/decisions.md), BatchNorm FCT modules."""
    model_args = dict(backbone='resnet50_cifar', norm='bn')
    return _create_fct('resnet50_fct_bn_cifar', pretrained, **dict(model_args, **kwargs))


@register_model
def resnet50_fct_ln_cifar(pretrained: bool = False, **kwargs: Any) -> FctNet:
    """The 'ours (with LN)' row of Table 1: CIFAR stem (our choice, docs/decisions.md), LayerNorm FCT modules."""
    model_args = dict(backbone='resnet50_cifar', norm='ln')
    return _create_fct('resnet50_fct_ln_cifar', pretrained, **dict(model_args, **kwargs))
