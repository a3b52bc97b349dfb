"""benchmarks/profile_head.py's FCT-modules-alone steps on a small model: they run the modules as the model does
(P(g) included), so a change to the modules' interface cannot leave the profiler behind unnoticed."""
import timm
import torch

from tests.support.helpers import REPO, SMALL_MODEL


def test_head_steps_run_every_module_and_reach_p_and_each_modules_weights(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / 'benchmarks'))
    import profile_head

    torch.manual_seed(0)
    model = timm.create_model(SMALL_MODEL)
    steps = profile_head.head_steps(model, torch.randn(2, 3, 32, 32))
    assert list(steps) == ['inference', 'forward + backward']
    steps['inference']()
    assert all(p.grad is None for p in model.parameters())
    steps['forward + backward']()
    assert model.global_proj.weight.grad is not None and model.global_proj.weight.grad.abs().sum() > 0
    for block in model.fct.values():
        assert block.patch_embed.weight.grad is not None and block.focus.conv.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.backbone.parameters())  # the backbone's maps are computed once, apart
