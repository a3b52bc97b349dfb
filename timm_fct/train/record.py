"""The training record of a run folder: args.yaml once, a summary.csv row and the curves per epoch, and the
timm model folder of the best weights. Only training writes it; the rest reads it through RunFolder.
"""
import csv
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch.nn as nn
import yaml

from ..runs.files import replace_when_done
from ..runs.folder import RunFolder, read_checkpoint
from ..runs.model_folder import write_model_folder
from ..runs.weights import state_key
from .plots import curves_figure

LOSS_CURVES = (('train_loss', 'train'), ('eval_loss', 'eval'), ('eval_ema_loss', 'eval (EMA)'))
ACCURACY_CURVES = (('eval_top1', 'top-1'), ('eval_top5', 'top-5'),
                   ('eval_ema_top1', 'top-1 (EMA)'), ('eval_ema_top5', 'top-5 (EMA)'))


class RunRecord:
    """Writes one run folder as training goes; every file whole or not at all."""

    def __init__(self, folder: RunFolder, model: nn.Module, label_names: Sequence[str],
                 data_config: Mapping[str, Any]):
        self.folder = folder
        self.model = model
        self.label_names = list(label_names)
        self.data_config = dict(data_config)
        self._rows: List[Dict[str, float]] = []
        self._weights_key: Optional[Tuple[int, bool]] = None

    @property
    def path(self) -> Path:
        return self.folder.path

    def _write(self, name: str, write) -> None:
        with replace_when_done(self.path / name) as tmp:
            write(tmp)

    def start(self, args: Mapping[str, Any], resume_epoch: Optional[int] = None) -> None:
        """args.yaml and config.json when the run starts; a resumed run keeps them and forgets the summary rows
        of the epochs it trains again."""
        self.path.mkdir(parents=True, exist_ok=True)
        if resume_epoch is not None:
            self._rows = [r for r in self.folder.summary() if r['epoch'] < resume_epoch]
        if (self.path / RunFolder.CONFIG).is_file():
            return
        self._write(RunFolder.ARGS, lambda p: p.write_text(yaml.safe_dump(dict(args), sort_keys=True)))
        write_model_folder(self.path, self.model, self.label_names, self.data_config)

    def record_epoch(self, epoch: int, train_loss: float, metrics: Mapping[str, float], lr: float,
                     epoch_time: float, ema_metrics: Optional[Mapping[str, float]] = None) -> None:
        """Add an epoch's row to summary.csv and redraw the curves; metrics are loss, top1, top5."""
        row = dict(epoch=epoch, train_loss=train_loss, **{f'eval_{k}': v for k, v in metrics.items()}, lr=lr,
                   epoch_time=epoch_time, **{f'eval_ema_{k}': v for k, v in (ema_metrics or {}).items()})
        self._rows.append(row)
        columns = RunFolder.COLUMNS + (RunFolder.EMA_COLUMNS if ema_metrics else ())

        def write_csv(path: Path) -> None:
            with open(path, 'w', newline='') as f:
                writer = csv.writer(f)
                writer.writerow(columns)
                writer.writerows([str(int(r[c])) if c == 'epoch' else f'{r[c]:.6g}' for c in columns]
                                 for r in self._rows)

        self._write(RunFolder.SUMMARY, write_csv)
        for name, curves, ylabel in ((RunFolder.LOSS_PLOT, LOSS_CURVES, 'loss'),
                                     (RunFolder.ACCURACY_PLOT, ACCURACY_CURVES, 'accuracy (%)')):
            figure = curves_figure(self._rows, [c for c in curves if c[0] in row], ylabel)
            self._write(name, lambda p: figure.savefig(p, format='png'))

    def update_weights(self, best_epoch: int) -> None:
        """The model folder's weights from the best checkpoint, rewritten when it or the EMA-or-raw choice changes."""
        ema_better = self.folder.ema_evaluated_better()
        if (best_epoch, ema_better) != self._weights_key:
            ckpt = read_checkpoint(self.path / RunFolder.BEST)
            write_model_folder(self.path, self.model, self.label_names, self.data_config,
                               state_dict=ckpt[state_key(ckpt, 'auto', ema_better)])
            self._weights_key = (best_epoch, ema_better)
