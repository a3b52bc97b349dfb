"""The one-cycle schedule against a bare torch OneCycleLR with the same arguments, both shapes, and across a resume."""
import pytest
import torch
import yaml

from timm_fct.train.args import parse_args
from tests.support.helpers import QUICK, plain_one_cycle, run_train

MAX_LR, TOTAL = 0.01, 40
SHAPES = {  # flag -> OneCycleLR's own arguments for that shape
    (): dict(),  # OneCycleLR's defaults: two phases, cosine
    ('--onecycle-three-phase',): dict(three_phase=True, anneal_strategy='linear'),
}


def bare_one_cycle(total: int, **kwargs) -> list:
    return plain_one_cycle(MAX_LR, total, **kwargs)


def ours(flags, total: int = TOTAL, start: int = 0) -> list:
    """(lr, beta1) before each update from `start` on, as train.py drives the scheduler (a resume at `start`)."""
    args = parse_args(list(flags) + ['--epochs', str(total)])  # one update per epoch: total updates
    args.lr = MAX_LR
    from timm_fct.train import build
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=MAX_LR)
    scheduler = build.build_scheduler(args, opt, updates_per_epoch=1)
    scheduler.step(start)
    scheduler.step_update(num_updates=start)  # as build_training positions a resumed run
    out = []
    for n in range(start, total):
        out += [opt.param_groups[0]['lr'], opt.param_groups[0]['betas'][0]]
        opt.step()
        scheduler.step_update(num_updates=n + 1)
    return out


@pytest.mark.parametrize('flags', list(SHAPES), ids=['two-phase-cos', 'three-phase-linear'])
def test_learning_rates_equal_torchs_one_cycle_with_the_same_arguments(flags):
    expected = bare_one_cycle(TOTAL, **SHAPES[flags])
    assert ours(flags) == pytest.approx(expected, rel=1e-12)


def test_the_two_shapes_differ():
    """Three phases come back down to max_lr / div_factor at 2 x pct_start, before annihilation; two do not."""
    two = bare_one_cycle(TOTAL)[0::2]
    three = bare_one_cycle(TOTAL, three_phase=True, anneal_strategy='linear')[0::2]
    peak = round(0.3 * TOTAL) - 1  # OneCycleLR's end of warm-up: step pct_start * total - 1
    assert two[peak] == pytest.approx(MAX_LR) and three[peak] == pytest.approx(MAX_LR)
    assert three[2 * peak] == pytest.approx(MAX_LR / 25) and two[2 * peak] > 2 * MAX_LR / 25


@pytest.mark.parametrize('flags', list(SHAPES), ids=['two-phase-cos', 'three-phase-linear'])
@pytest.mark.parametrize('start', [7, 13, 29])
def test_resume_mid_schedule_lands_on_the_same_learning_rate(flags, start):
    expected = bare_one_cycle(TOTAL, **SHAPES[flags])
    assert ours(flags, start=start) == pytest.approx(expected[2 * start:], rel=1e-12)


@pytest.mark.slow
def test_three_phase_flag_is_recorded_and_drives_the_run(tmp_path):
    """args.yaml records the shape; the lr after epoch 1 is three-phase OneCycleLR's after its 21 updates."""
    proc = run_train('--epochs', '2', *QUICK, '--onecycle-three-phase', '--output', str(tmp_path),
                     '--experiment', 'run')
    assert proc.returncode == 0, proc.stderr
    args = yaml.safe_load((tmp_path / 'run' / 'args.yaml').read_text())
    assert args['onecycle_three_phase'] is True and args['sched'] == 'onecycle'
    from tests.support.helpers import summary_rows
    rows = summary_rows(tmp_path / 'run')
    lr = 0.01 * 64 / 128
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=42, three_phase=True,
                                                anneal_strategy='linear')
    for _ in range(21):
        opt.step()
        sched.step()
    assert float(rows[0]['lr']) == pytest.approx(opt.param_groups[0]['lr'], rel=1e-5)  # summary.csv keeps 6 digits
