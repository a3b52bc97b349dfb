"""The FCT modules compute what the saved reference file records: a faster forward must not change the function.

tests/models/fct_head_saved.safetensors holds, for a small model of each norm, the state dict, an input, and
what the code of commit b76b77d (before the fusion) gave for it: eval logits, train-mode logits, the FCT
parameters' gradients of a fixed loss on them, and the FCT norms' running statistics after that forward.
The current code loads the old state dict strictly (same keys and shapes) and must give the same numbers.
`python -m tests.test_saved_head --write` rewrites the file from the code as it is, for a deliberate change
of the model's function only.
"""
import sys
from pathlib import Path
from typing import Dict

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


def small_model(norm: str) -> torch.nn.Module:
    """resnet18_cifar with one block a stage, 8-32 channels, and 16-wide two-head FCT modules."""
    return timm.create_model(f'fct_{norm}', backbone='resnet18_cifar', num_classes=10, embed_dim=16, num_heads=2,
                             backbone_kwargs=dict(layers=(1, 1, 1, 1), channels=(8, 16, 24, 32)))


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
    out.update({f'grad.{n}': p.grad for n, p in model.named_parameters() if n.startswith('fct.')})
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


@pytest.mark.parametrize('norm', NORMS)
def test_model_saved_before_the_fusion_loads_and_gives_the_same_logits_and_gradients(norm):
    saved = load_file(str(FIXTURE))
    model = small_model(norm)
    state = part(saved, f'{norm}.state.')
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {k: tuple(v.shape) for k, v in state.items()}
    model.load_state_dict(state, strict=True)
    expected = {k: v for k, v in part(saved, f'{norm}.').items() if not k.startswith('state.')}
    # how the patch embedding adds P(g) depends on the tap's size (embed_with_global), never the batch: one image
    # alone gives its row of the batch's logits (first, since the train-mode forward moves BatchNorm's statistics)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(saved['x'][:1]), expected['logits_eval'][:1], atol=ATOL, rtol=RTOL)
    actual = outputs(model, saved['x'], saved['probe'])
    assert actual.keys() == expected.keys()
    for name, value in actual.items():
        torch.testing.assert_close(value, expected[name], atol=ATOL, rtol=RTOL, msg=lambda m: f'{name}: {m}')


if __name__ == '__main__' and sys.argv[1:] == ['--write']:
    write_fixture()
