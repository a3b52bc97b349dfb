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
    first = model.global_proj.weight.grad.clone()
    steps['forward + backward']()  # a training step's fresh gradients, not the sum of two steps'
    torch.testing.assert_close(model.global_proj.weight.grad, first)


def test_op_times_by_shape_names_each_kernels_input_shape(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / 'benchmarks'))
    import profile_head

    x, weight = torch.randn(1, 3, 8, 8), torch.randn(4, 3, 3, 3)
    step = lambda: torch.nn.functional.conv2d(x, weight, padding=1)  # noqa: E731
    plain, shaped = profile_head.op_times(step, 2), profile_head.op_times(step, 2, by_shape=True)
    assert 'aten::conv2d' in plain and not any('[' in key for key in plain)
    assert 'aten::conv2d [[1, 3, 8, 8], [4, 3, 3, 3], [], [], [], [], []]' in shaped
    assert shaped['total'] > 0


def test_time_share_is_the_modules_time_over_the_baselines_round_by_round(monkeypatch):
    """A clock the steps advance: the baseline 4 ticks a step, the modules 1 then 3, so the rounds' shares
    are 1/4 and 3/4 exactly."""
    monkeypatch.syspath_prepend(str(REPO / 'benchmarks'))
    import profile_head

    clock = {'now': 0.}
    head_ticks = iter([1., 1., 3., 3.])

    def base() -> None:
        clock['now'] += 4.

    def head() -> None:
        clock['now'] += next(head_ticks)

    monkeypatch.setattr(profile_head.time, 'perf_counter', lambda: clock['now'])
    assert profile_head.time_share(head, base, rounds=2, iters=2) == [0.25, 0.75]
    line = profile_head.share_line('resnet50_fct_bn', 'inference', [0.25, 0.75, 0.1], 1.1)
    # median 0.25: a model costing the baseline plus its modules runs at 1 / 1.25 of its rate; x FLOPs 1.1 = 0.88
    assert 'resnet50 time 0.250 (median of 3 rounds, 0.100-0.750)' in line and 'ratio 0.88 if' in line


def test_steps_0_prints_only_each_kinds_time_share(monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(REPO / 'benchmarks'))
    import profile_head

    monkeypatch.setattr('sys.argv', ['profile_head.py', '--models', SMALL_MODEL, '--batch-size', '2', '--steps', '0',
                                     '--share-rounds', '2', '--share-iters', '1'])
    profile_head.main()
    out = capsys.readouterr().out
    assert '| operator |' not in out
    for kind in ('inference', 'forward + backward'):
        line = next(line for line in out.splitlines() if line.startswith(f'{SMALL_MODEL}, {kind}: modules / '))
        assert 'resnet18_cifar time' in line and '(median of 2 rounds' in line
