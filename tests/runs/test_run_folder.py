"""The run folder's own rules: which checkpoint a run continues from, and a file rewritten whole or not at all."""
import csv
import os

import pytest

from timm_fct.runs.folder import RunFolder
from timm_fct.train.record import RunRecord


def test_a_run_continues_from_its_newest_numbered_checkpoint_by_epoch_not_by_name_or_time(tmp_path):
    """Killed between timm's unlink of last.pth.tar and its rename: the numbered checkpoints remain, epoch 10's
    the newest though 'checkpoint-9' sorts after it as text and was touched last; never tmp.pth.tar."""
    for epoch in (2, 10, 9):
        (tmp_path / f'checkpoint-{epoch}.pth.tar').write_bytes(b'x')
    (tmp_path / 'tmp.pth.tar').write_bytes(b'half')
    os.utime(tmp_path / 'checkpoint-9.pth.tar', (2e9, 2e9))
    assert RunFolder(tmp_path).latest_checkpoint() == tmp_path / 'checkpoint-10.pth.tar'
    (tmp_path / 'last.pth.tar').write_bytes(b'x')
    assert RunFolder(tmp_path).latest_checkpoint() == tmp_path / 'last.pth.tar'


def test_the_auto_resume_of_a_run_takes_that_checkpoint(tmp_path):
    from timm_fct.train.args import parse_args
    from timm_fct.train.resume import resolve_auto_resume
    run = tmp_path / 'run'
    run.mkdir()
    for epoch in (3, 12):
        (run / f'checkpoint-{epoch}.pth.tar').write_bytes(b'x')
    args = parse_args(['--resume', 'auto', '--output', str(tmp_path), '--experiment', 'run'])
    args.rank, args.distributed = 0, False
    resolve_auto_resume(args)
    assert args.resume == str(run / 'checkpoint-12.pth.tar')


def test_a_summary_rewrite_interrupted_half_way_keeps_the_last_whole_one(tmp_path, monkeypatch):
    """Ctrl-C (or any failure) while summary.csv is being rewritten after epoch 2: the file still holds epoch 1's
    row exactly as written, and no temporary file is left beside it."""
    record = RunRecord(RunFolder(tmp_path), model=None, label_names=[], data_config={})
    metrics = dict(loss=1.5, top1=40.0, top5=90.0)
    record.record_epoch(0, 2.0, metrics, lr=0.01, epoch_time=3.0)
    before = (tmp_path / RunFolder.SUMMARY).read_bytes()
    writer = csv.writer

    def half_a_file(f, *args, **kwargs):
        inner = writer(f, *args, **kwargs)

        class Interrupted:
            writerow = inner.writerow

            def writerows(self, rows):  # the header is written, no row yet
                raise KeyboardInterrupt

        return Interrupted()

    monkeypatch.setattr(csv, 'writer', half_a_file)
    with pytest.raises(KeyboardInterrupt):
        record.record_epoch(1, 1.0, metrics, lr=0.005, epoch_time=3.0)
    assert (tmp_path / RunFolder.SUMMARY).read_bytes() == before
    assert before.decode().splitlines()[1].startswith('0,2,1.5,40,90,0.01,3')
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([RunFolder.SUMMARY, RunFolder.LOSS_PLOT,
                                                                RunFolder.ACCURACY_PLOT])

