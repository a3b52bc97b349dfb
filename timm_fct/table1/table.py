"""The table of a Table 1 reproduction: per row, mean and standard deviation over seeds of the last-epoch and
best top-1 from each run's summary.csv, the paper's number beside; as Markdown, JSON and a figure.

The last-epoch column comes first: the best epoch is chosen on the split it reports, so it is biased upward.
"""
import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import yaml
from matplotlib.figure import Figure

from ..runs.files import replace_when_done
from ..runs.folder import RunFolder
from ..train.identity import identity


@dataclass
class RunResult:
    seed: int
    folder: str  # relative to the results folder
    epochs_done: int
    last_top1: Optional[float] = None  # set once the run has all its epochs
    best_top1: Optional[float] = None


@dataclass
class RowResult:
    row: str
    label: str
    model: str
    paper_top1: float
    command: str  # the row's training command line, seed and run folder left out
    seeds_requested: int
    status: str  # 'complete', or why not
    resolved: str = ''  # what training made of it (distinguishing_settings): a later flag overrides an earlier one
    runs: List[RunResult] = field(default_factory=list)
    curves: Dict[int, List[float]] = field(default_factory=dict)  # seed -> eval top-1 per epoch

    @property
    def finished(self) -> List[RunResult]:
        return [r for r in self.runs if r.last_top1 is not None]

    def stats(self, key: str) -> Dict[str, Optional[float]]:
        """Mean and sample standard deviation over the finished seeds (std needs two)."""
        values = [getattr(r, key) for r in self.finished]
        return dict(mean=statistics.mean(values) if values else None,
                    std=statistics.stdev(values) if len(values) > 1 else None)


def run_result(folder: Path, results: Path, seed: int, epochs: int) -> RunResult:
    """What a run folder holds so far; last and best top-1 only when every epoch is in its summary."""
    rows = RunFolder(folder).summary()
    result = RunResult(seed, str(folder.relative_to(results)), len(rows))
    if len(rows) == epochs:
        accuracy = RunFolder(folder).accuracy()
        result.last_top1, result.best_top1 = accuracy['last_top1'], accuracy['best_top1']
    return result


def distinguishing_settings(folders: Sequence[Path]) -> List[str]:
    """For each run folder, the model and the resolved settings (its args.yaml) in which the folders differ from one
    another: what tells the rows apart, as training resolved it. '' for a folder that has not started."""
    saved = [identity(yaml.safe_load(RunFolder(folder).args_text() or '{}') or {}) for folder in folders]
    started = [s for s in saved if s]
    differ = sorted({k for s in started for k in s if len({repr(t.get(k)) for t in started}) > 1} - {'model'})
    return [', '.join(f'{k} {s[k]}' for k in ['model', *differ] if k in s) for s in saved]


def row_json(row: RowResult) -> Dict[str, Any]:
    data = asdict(row)
    data.pop('curves')
    data.update(seeds_done=len(row.finished), last_top1=row.stats('last_top1'), best_top1=row.stats('best_top1'))
    return data


def _mean_std(stats: Dict[str, Optional[float]]) -> str:
    if stats['mean'] is None:
        return '-'
    return f"{stats['mean']:.2f} ± {stats['std']:.2f}" if stats['std'] is not None else f"{stats['mean']:.2f}"


def markdown(rows: Sequence[RowResult], header: Sequence[str], dataset: str) -> str:
    """The table with the lines that say what ran above it."""
    lines = [*header, '',
             f'| row | model | paper top-1 (CIFAR-10) | last-epoch top-1 on {dataset}, mean ± std | '
             f'best top-1 on {dataset}, mean ± std | seeds done | status |',
             '|---|---|---|---|---|---|---|']
    for row in rows:
        lines.append(f'| {row.label} | `{row.model}` | {row.paper_top1:.2f} | {_mean_std(row.stats("last_top1"))} | '
                     f'{_mean_std(row.stats("best_top1"))} | {len(row.finished)}/{row.seeds_requested} | '
                     f'{row.status} |')
    lines += ['', 'The training command of each row (each run adds `--seed S --output OUT/runs --experiment ROW-seedS '
              '--resume auto`):', '']
    lines += [f'- {row.label}: `{row.command}`' + (f' (resolved: {row.resolved})' if row.resolved else '')
              for row in rows]
    lines += ['', 'Best top-1 is the best epoch chosen on the split it is reported on, so it is biased upward; '
              'the last-epoch column is the unbiased one. std is the sample standard deviation over seeds.']
    return '\n'.join(lines) + '\n'


def figure(rows: Sequence[RowResult], dataset: str, paper_beside: bool) -> Figure:
    """Left: each row's last-epoch and best top-1, mean with std error bars (the paper's number on CIFAR-10);
    right: every run's eval top-1 per epoch, coloured by row."""
    fig = Figure(figsize=(12, 4.5), dpi=100, layout='constrained')
    bars, curves = fig.subplots(1, 2)
    xs = range(len(rows))
    for offset, key, label in ((-0.12, 'last_top1', 'last epoch'), (0.12, 'best_top1', 'best epoch')):
        stats = [row.stats(key) for row in rows]
        points = [(x + offset, s['mean'], s['std'] or 0.0) for x, s in zip(xs, stats) if s['mean'] is not None]
        if points:
            bars.errorbar(*zip(*points), fmt='o', capsize=4, label=f'{label}, mean ± std')
    if paper_beside:
        bars.plot(xs, [row.paper_top1 for row in rows], 'k*', markersize=10, label='paper')
    bars.set_xticks(list(xs), [row.label + ('' if row.finished else '\n(no finished run)') for row in rows], rotation=15)
    bars.set_ylabel(f'top-1 on {dataset} (%)')
    bars.grid(alpha=0.3)
    bars.legend()
    colours = [f'C{i}' for i in range(len(rows))]
    for row, colour in zip(rows, colours):
        for i, (seed, top1) in enumerate(sorted(row.curves.items())):
            curves.plot(range(1, len(top1) + 1), top1, color=colour, alpha=0.7, marker='o' if len(top1) < 30 else None,
                        label=row.label if i == 0 else None)
    curves.set_xlabel('epoch')
    curves.set_ylabel(f'eval top-1 on {dataset} (%)')
    curves.grid(alpha=0.3)
    if any(row.curves for row in rows):
        curves.legend()
    return fig


def write_results(out: Path, rows: Sequence[RowResult], header: Sequence[str], settings: Dict[str, Any],
                  dataset: str, paper_beside: bool) -> None:
    """table.md, table.json and table1.png, each whole or not at all."""
    out.mkdir(parents=True, exist_ok=True)  # no run may have made it: every row not run
    with replace_when_done(out / 'table.md') as tmp:
        tmp.write_text(markdown(rows, header, dataset))
    with replace_when_done(out / 'table.json') as tmp:
        tmp.write_text(json.dumps(dict(settings, rows=[row_json(r) for r in rows]), indent=2) + '\n')
    fig = figure(rows, dataset, paper_beside)
    with replace_when_done(out / 'table1.png') as tmp:
        fig.savefig(tmp, format='png')
