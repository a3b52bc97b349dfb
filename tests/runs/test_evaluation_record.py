"""The best epoch is chosen on the split it is scored on: the last epoch's top-1 must be visible beside it."""
from pathlib import Path

import pytest

from timm_fct.export.hub import metrics_section
from timm_fct.report.inputs import weights_line
from timm_fct.runs.folder import RunFolder, RunInfo
from timm_fct.runs.load import LoadedModel
from tests.support.helpers import QUICK, run_train, summary_rows

# top-1 per epoch: the best (epoch 1) is not the last (epoch 2)
TOP1 = [61.5, 72.25, 66.75]
EMA_TOP1 = [50.0, 55.5, 58.0]
INFO = RunInfo('resnet18_fct_bn_cifar', 10, [str(i) for i in range(10)], {}, dataset='sklearn/digits')


def doctored_folder(path: Path) -> RunFolder:
    path.mkdir()
    lines = ['epoch,train_loss,eval_loss,eval_top1,eval_top5,lr,epoch_time,eval_ema_loss,eval_ema_top1,eval_ema_top5']
    lines += [f'{e},1.0,1.0,{t},90.0,0.001,1.0,1.0,{m},80.0' for e, (t, m) in enumerate(zip(TOP1, EMA_TOP1))]
    (path / 'summary.csv').write_text('\n'.join(lines) + '\n')
    return RunFolder(path)


@pytest.mark.parametrize('weights, best, last', [('raw', (72.25, 1), 66.75), ('ema', (58.0, 2), 58.0)])
def test_report_line_gives_best_and_last_epoch_top1_and_says_the_best_was_chosen_on_that_split(
        tmp_path, weights, best, last):
    folder = doctored_folder(tmp_path / 'run')
    lm = LoadedModel(str(folder.path), model=None, info=INFO, folder=folder, checkpoint=folder.path / 'x.pth.tar',
                     weights=weights, epoch=best[1])
    line = weights_line(lm)
    assert f'best top-1 {best[0]:.2f} at epoch {best[1]}' in line
    assert f'last epoch (2) top-1 {last:.2f}' in line
    assert 'chosen on that same split' in line


def test_model_card_gives_last_epoch_beside_best_and_names_the_bias(tmp_path):
    folder = doctored_folder(tmp_path / 'run')
    lm = LoadedModel(str(folder.path), model=None, info=INFO, folder=folder, weights='raw', epoch=1)
    text = metrics_section(lm)
    assert '| raw (published) | 72.25 | 90.00 | 66.75 | 90.00 |' in text
    assert 'chosen on this same split' in text


def test_train_py_prints_last_epoch_top1_beside_the_best(tmp_path):
    proc = run_train('--epochs', '2', *QUICK, '--output', str(tmp_path), '--experiment', 'run')
    assert proc.returncode == 0, proc.stderr
    rows = summary_rows(tmp_path / 'run')
    top1 = [float(r['eval_top1']) for r in rows]
    best = max(range(len(top1)), key=lambda i: top1[i])
    final = proc.stdout.strip().splitlines()[-1]
    assert f'best top-1 {top1[best]:.2f} at epoch {best + 1} (chosen on this evaluation split)' in final
    assert f'last-epoch top-1 {top1[-1]:.2f}' in final
