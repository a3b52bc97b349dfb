"""Beyond one machine: training across two torchrun 'nodes', a worker group torchrun restarts after a worker dies
(`--resume auto`), and which checkpoint `--resume auto` continues from."""
import argparse
import io
import os
from pathlib import Path

import pytest
import torch
import yaml
from timm.utils import CheckpointSaver

from benchmarks import soak
from tests.support.helpers import DISTRIBUTED_ARGS, QUICK, SMALL_MODEL, assert_same_tensors, read_state
from timm_fct.runs.folder import read_checkpoint
from timm_fct.train.resume import resolve_auto_resume


def test_two_nodes_stay_in_sync_and_match_one_process_at_the_same_global_batch(two_node_run, tmp_path):
    """Two torchrun launches meeting at a c10d rendezvous, a process of -b 64 each, train as one process of -b 128."""
    ranks = [torch.load(two_node_run / f'rank{r}.pt') for r in (0, 1)]
    assert_same_tensors(ranks[0], ranks[1], 'rank 0 vs rank 1', exact=False)
    from timm_fct.train import command  # in this process: one interpreter start less than a launch
    assert command.train_from_args(['--no-progress', *DISTRIBUTED_ARGS, '-b', '128', '--output', str(tmp_path),
                                '--experiment', 'single']) == 0
    one = read_state(tmp_path / 'single' / 'last.pth.tar')['state_dict']
    for k, v in one.items():
        torch.testing.assert_close(ranks[0][k], v, rtol=1e-3, atol=1e-4, msg=k)
    args = yaml.safe_load((two_node_run / 'run' / 'args.yaml').read_text())
    assert args['world_size'] == 2 and args['lr'] == pytest.approx(0.01 * 2 * 64 / 128)  # linear in the global batch
    assert yaml.safe_load((tmp_path / 'single' / 'args.yaml').read_text())['lr'] == pytest.approx(args['lr'])


@pytest.mark.parametrize('kill', [
    dict(moment='mid-epoch', rank=1, epoch=1, update=5),
    dict(moment='checkpoint-write', rank=0, epoch=1, update=0),
], ids=lambda kill: kill['moment'])
def test_a_worker_killed_at_any_moment_costs_one_restart_and_the_run_ends_as_if_never_interrupted(two_node_run, tmp_path,
                                                                                                    kill):
    """The soak's short version (benchmarks/soak.py, whose N-cycle results are in docs/development.md): under
    torchrun --max-restarts 1 with --resume auto, a worker SIGKILLed half-way through epoch 2 of 3, or rank 0 while
    half of epoch 2's checkpoint is on disk; torchrun restarts both workers, which connect at their first try,
    continue after the last whole checkpoint (each epoch trained once) and end with the weights, EMA, optimizer,
    one-cycle position and metrics of the uninterrupted two-process run."""
    result = soak.run_cycle(tmp_path, two_node_run / 'run', kill, timeout=600)  # measured: 20-46 s a cycle
    assert result['passed'], result


def auto_resume(output: Path, experiment: str = 'run') -> str:
    """What `--resume auto --output OUTPUT --experiment EXPERIMENT` resumes from, as one process sees it."""
    args = argparse.Namespace(resume='auto', output=str(output), experiment=experiment, rank=0, distributed=False)
    resolve_auto_resume(args)
    return args.resume


def killed(*args, **kwargs) -> None:
    raise KeyboardInterrupt  # where the process would end


@pytest.mark.parametrize('killed_in', ['torch.save', 'os.replace'])
def test_auto_resume_never_takes_a_checkpoint_killed_while_being_written(tmp_path, monkeypatch, killed_in):
    """timm's saver writes tmp.pth.tar, unlinks last.pth.tar and renames tmp.pth.tar onto it. Killed while writing
    (half a file) or between the unlink and the rename, the run continues from the finished epoch's checkpoint."""
    run = tmp_path / 'run'
    run.mkdir()
    assert auto_resume(tmp_path) == '', 'a folder with no checkpoint starts fresh'
    model = torch.nn.Linear(2, 2)
    saver = CheckpointSaver(model, torch.optim.SGD(model.parameters(), lr=0.1), checkpoint_dir=str(run),
                            recovery_dir=str(run), max_history=1)
    saver.save_checkpoint(0, metric=1.0)
    save = torch.save

    def half_written(obj, f) -> None:
        buffer = io.BytesIO()
        save(obj, buffer)
        Path(f).write_bytes(buffer.getvalue()[:buffer.tell() // 2])
        killed()

    with monkeypatch.context() as m:
        if killed_in == 'torch.save':
            m.setattr(torch, 'save', half_written)
        else:
            m.setattr(os, 'replace', killed)
        with pytest.raises(KeyboardInterrupt):
            saver.save_checkpoint(1, metric=2.0)
    assert (run / 'tmp.pth.tar').is_file(), 'the checkpoint being written when the kill landed'
    resumed = auto_resume(tmp_path)
    assert resumed, 'no checkpoint found: the run would start over'
    assert read_checkpoint(resumed)['epoch'] == 0


@pytest.mark.parametrize('left', ['checkpoint', 'args.yaml only'])
def test_auto_resume_refuses_a_run_folder_of_other_settings_and_changes_nothing(tmp_path, capsys, left):
    """The folder's run was trained at 12 px (its checkpoint says so, or its args.yaml when killed before the first
    checkpoint); --resume auto at 8 px is refused with resume's one error line, naming the difference."""
    from timm_fct.train import command
    from timm_fct.train.identity import plain_settings
    run = tmp_path / 'run'
    run.mkdir()
    saved = plain_settings(command.resolved_settings([*QUICK, '--img-size', '12']))
    if left == 'checkpoint':
        torch.save({'state_dict': {}, 'arch': SMALL_MODEL, 'args': saved, 'epoch': 0}, run / 'last.pth.tar')
    else:
        (run / 'args.yaml').write_text(yaml.safe_dump(saved))
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert command.main([*QUICK, '--resume', 'auto', '--output', str(tmp_path), '--experiment', 'run']) == 2
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith('error:')] == err.splitlines()[:1]
    assert err.startswith('error: --resume ') and 'Traceback' not in err
    assert 'a resumed run keeps its settings, but --img-size 8 (the run has 12)' in err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


def test_auto_resume_needs_the_run_folder_named(tmp_path, capsys):
    from timm_fct.train import command
    assert command.main([*QUICK, '--resume', 'auto', '--output', str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith('error: --resume auto needs --experiment NAME')
    assert not any(tmp_path.iterdir())
