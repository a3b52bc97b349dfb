"""The FCT modules compute what the saved reference file records: a faster forward must not change the function.

tests/models/fct_head_saved.safetensors holds, for a small model of each norm, the state dict, an input, and
what the code of commit b76b77d (before the fusion) gave for it: eval logits, train-mode logits, the FCT
parameters' gradients of a fixed loss on them, and the FCT norms' running statistics after that forward.
That code kept K's and V's weights apart; the current code stacks them (`attn.kv_conv`, `attn.kv`), loads the
old state dict through checkpoint_filter_fn and must give the same numbers.
`python -m tests.test_saved_head --write` rewrites the file from the code as it is, for a deliberate change
of the model's function only.
"""
import sys
from pathlib import Path
from typing import Dict, Sequence

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import timm_fct  # noqa: F401  registers the models

FIXTURE = Path(__file__).parent / 'fct_head_saved.safetensors'
# 36 px: patch grids 18x18 and 9x9 (K/V strided) and 5x5 (not), and FCT outputs whose sizes do not divide
INPUT_SHAPE = (2, 3, 36, 36)
NORMS = ('bn', 'ln')
ATOL = RTOL = 1e-5


# resnet18_cifar with one block a stage, 8-32 channels, and 16-wide two-head FCT modules
SMALL_MODEL_KWARGS = dict(backbone='resnet18_cifar', num_classes=10, embed_dim=16, num_heads=2,
                          backbone_kwargs=dict(layers=(1, 1, 1, 1), channels=(8, 16, 24, 32)))


def small_model(norm: str) -> torch.nn.Module:
    return timm.create_model(f'fct_{norm}', **SMALL_MODEL_KWARGS)


def randomized(model: torch.nn.Module) -> torch.nn.Module:
    """Fresh norms are the identity and fresh biases zero, which would hide a misplaced one: randomise them."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_((1.0 if 'norm' in name and name.endswith('.weight') else 0.0) + 0.3 * torch.randn_like(p))
        for name, buf in model.named_buffers():
            if name.endswith('running_mean'):
                buf.copy_(0.5 * torch.randn_like(buf))
            elif name.endswith('running_var'):
                buf.uniform_(0.3, 3.0)
    return model


def outputs(model: torch.nn.Module, x: torch.Tensor, probe: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Eval logits (fused and explicit attention), then one train-mode forward and backward."""
    out: Dict[str, torch.Tensor] = {}
    with torch.no_grad():
        out['logits_eval'] = model.eval()(x)
        with model.explicit_attention():
            out['logits_eval_explicit'] = model(x)
    model.train().zero_grad()
    logits = model(x)
    (logits * probe).sum().backward()
    out['logits_train'] = logits.detach()
    out.update({f'grad.{n}': p.grad for n, p in model.named_parameters() if n.startswith(('fct.', 'global_proj.'))})
    out.update({f'after_train.{n}': b for n, b in model.named_buffers() if n.startswith('fct.')})
    return out


def write_fixture() -> None:
    torch.manual_seed(0)
    x = torch.randn(INPUT_SHAPE)
    probe = torch.randn(INPUT_SHAPE[0], 10)
    tensors = {'x': x, 'probe': probe}
    for norm in NORMS:
        model = randomized(small_model(norm))
        tensors.update({f'{norm}.state.{k}': v.clone() for k, v in model.state_dict().items()})
        tensors.update({f'{norm}.{k}': v.clone() for k, v in outputs(model, x, probe).items()})
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(FIXTURE))


def part(saved: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in saved.items() if k.startswith(prefix)}


def unstacked(tensors: Dict[str, torch.Tensor], tap_chs: Sequence[int]) -> Dict[str, torch.Tensor]:
    """The stacked K/V tensors (`attn.kv_conv.*`, `attn.kv.*`: K's channels, then V's) and the rows of P for all
    taps (`global_proj.*`, `tap_chs` rows each, in tap order) under the separate names the reference file's
    code used (`attn.k_conv.*`, `attn.v_conv.*`, `attn.k.*`, `attn.v.*`, `fct.{i}.global_proj.*`)."""
    out = {}
    for name, value in tensors.items():
        if 'global_proj.' in name:  # e.g. grad.global_proj.weight -> grad.fct.0.global_proj.weight, ...
            for i, rows in enumerate(value.split(list(tap_chs))):
                out[name.replace('global_proj.', f'fct.{i}.global_proj.')] = rows
            continue
        for stacked, k_name, v_name in (('.attn.kv_conv.', '.attn.k_conv.', '.attn.v_conv.'),
                                        ('.attn.kv.', '.attn.k.', '.attn.v.')):
            if stacked in name:
                k, v = (value, value) if value.dim() == 0 else value.chunk(2)
                out[name.replace(stacked, k_name)], out[name.replace(stacked, v_name)] = k, v
                break
        else:
            out[name] = value
    return out


@pytest.mark.parametrize('norm', NORMS)
def test_model_saved_before_the_fusion_loads_and_gives_the_same_logits_and_gradients(norm, tmp_path):
    """The old checkpoint (K and V separate) loads as a user loads weights, through timm's pretrained path and
    checkpoint_filter_fn, into the model whose K and V are stacked."""
    saved = load_file(str(FIXTURE))
    state = part(saved, f'{norm}.state.')
    save_file(state, str(tmp_path / 'old.safetensors'))
    overlay = dict(file=str(tmp_path / 'old.safetensors'), num_classes=10)
    model = timm.create_model(f'fct_{norm}', pretrained=True, pretrained_cfg_overlay=overlay, **SMALL_MODEL_KWARGS)
    tap_chs = [state[f'fct.{i}.patch_embed.weight'].shape[1] for i in range(3)]  # P_l's rows: the tap's channels
    assert {k: tuple(v.shape) for k, v in unstacked(model.state_dict(), tap_chs).items()} == {
        k: tuple(v.shape) for k, v in state.items()}
    expected = {k: v for k, v in part(saved, f'{norm}.').items() if not k.startswith('state.')}
    # the model's decisions read the tap's height and width, never the batch: one image alone gives its row
    # of the batch's logits (first, since the train-mode forward moves BatchNorm's statistics)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(saved['x'][:1]), expected['logits_eval'][:1], atol=ATOL, rtol=RTOL)
    # and through load_state_dict itself, as --resume, run folders and torch.hub load weights
    direct = small_model(norm)
    direct.load_state_dict(state, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(direct.eval()(saved['x']), expected['logits_eval'], atol=ATOL, rtol=RTOL)
    actual = unstacked(outputs(model, saved['x'], saved['probe']), tap_chs)
    assert actual.keys() == expected.keys()
    for name, value in actual.items():
        torch.testing.assert_close(value, expected[name], atol=ATOL, rtol=RTOL, msg=lambda m: f'{name}: {m}')


if __name__ == '__main__' and sys.argv[1:] == ['--write']:
    write_fixture()
