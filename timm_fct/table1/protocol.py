"""The paper's Table 1 in one command: every row from its config, for several seeds, then the table.

    python -m timm_fct.table1                 # the embedded digits at small settings: NOT CIFAR-10 numbers
    python -m timm_fct.table1 --dataset torch/cifar10 --data-dir data --dataset-download --device cuda

(`python reproduce.py ...` in a checkout, and the `timm-fct-table1` command, are the same.) Each run is
`python -m timm_fct.train` in a subprocess, in its own run folder OUT/runs/ROW-seedS (seeds 1..--seeds).
Run it again and it skips finished runs (every epoch in summary.csv) and resumes the others from their
newest checkpoint (--resume auto), so a killed invocation loses at most the epoch in flight. A run folder
trained with other settings (any setting that can change a result: timm_fct/train/identity.py) is refused
before anything trains: use another --out. Then it writes OUT/table.md, OUT/table.json and OUT/table1.png:
per row the mean and standard deviation over seeds of the last-epoch and best top-1, beside the paper's
number. A row that cannot run here (the pre-trained row without its ImageNet weights) is reported as not
run, with the reason, and the others go on.

Any flag not listed below goes to every training run unchanged (e.g. --img-size 8, -b 32, --workers 4).
Exit code 0 when every row finished or was not run for a reason stated, 1 when a run failed, 2 for bad input.
"""
import argparse
import contextlib
import copy
import io
import shlex
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import yaml

from ..cli import run_cli
from ..data.datasets import DIGITS
from ..errors import FctError
from ..runs.folder import RunFolder
from ..train.args import DIGITS_DEFAULTS, digits_flags
from ..train.command import resolved_settings
from ..train.identity import check_same_run
from .rows import DIGITS_EPOCHS, ROWS, Row, weights_unavailable
from .table import RowResult, distinguishing_settings, run_result, write_results

PROG = 'python -m timm_fct.table1'
TRAIN = [sys.executable, '-m', 'timm_fct.train']  # the installed package's loop, as a user starts it
RESERVED = ('-c', '--config', '--seed', '--output', '--experiment', '--resume')  # set per run here
NOT_CIFAR10 = 'These are NOT CIFAR-10 numbers'


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__, allow_abbrev=False,  # a prefix of a
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # training flag passes
    parser.add_argument('--dataset', default=None,
                        help=f"default {DIGITS} (the small digits setting); 'torch/cifar10' for the paper's table")
    parser.add_argument('--data-dir', default=None, metavar='DIR', help="the dataset's folder")
    parser.add_argument('--epochs', type=int, default=None,
                        help=f"every row's epochs (default: the configs' 200; {DIGITS_EPOCHS} on the digits)")
    parser.add_argument('--seeds', type=int, default=3, metavar='N', help='runs per row, seeds 1..N (default 3)')
    parser.add_argument('--rows', nargs='+', default=list(ROWS), metavar='ROW',
                        help=f'the rows to run, of {", ".join(ROWS)} (default: all)')
    parser.add_argument('--out', default=None, metavar='DIR',
                        help='results folder (default output/table1, output/table1-digits on the digits)')
    parser.add_argument('--device', default=None, help="training's --device (default: cuda when there is one)")
    parser.add_argument('--amp', action='store_true', default=False, help="training's --amp (mixed precision)")
    return parser


@dataclass
class Setting:
    """What this invocation runs."""
    digits: bool
    dataset: str  # for the table's headings
    out: Path
    seeds: List[int]
    rows: List[Row]
    common: List[str]  # training flags from this command line, for every row


def parse(argv: Optional[Sequence[str]]) -> Setting:
    args, passthrough = build_parser().parse_known_args(argv)
    unknown = [r for r in args.rows if r not in ROWS]
    if unknown:
        raise FctError(f'unknown row {", ".join(unknown)}; the rows are {", ".join(ROWS)}')
    if args.seeds < 1:
        raise FctError(f'--seeds is the number of runs per row: at least 1, got {args.seeds}')
    if args.epochs is not None and args.epochs < 1:
        raise FctError(f'--epochs must be at least 1, got {args.epochs}')
    reserved = [a for a in passthrough if a.split('=')[0] in RESERVED]
    if reserved:
        raise FctError(f'{", ".join(reserved)}: {PROG} sets the config, seed and run folder of each run; '
                       f'use --seeds and --out')
    digits = args.data_dir is None and args.dataset in (None, DIGITS)
    dataset = DIGITS if digits else (args.dataset or 'torch/cifar10')  # the configs' dataset
    common = [*(['--dataset', args.dataset] if args.dataset and not digits else []),
              *(['--data-dir', args.data_dir] if args.data_dir else []),
              *(['--epochs', str(args.epochs)] if args.epochs else []),
              *(['--device', args.device] if args.device else []),
              *(['--amp'] if args.amp else []), '--no-progress', *passthrough]
    out = Path(args.out or ('output/table1-digits' if digits else 'output/table1')).resolve()
    rows = [ROWS[name] for name in dict.fromkeys(args.rows)]
    return Setting(digits, dataset, out, list(range(1, args.seeds + 1)), rows, common)


def row_argv(setting: Setting, row: Row) -> List[str]:
    """The training flags of a row: its config, the digits setting there, then this command line's flags."""
    digits = [*digits_flags(epochs=DIGITS_EPOCHS), *row.digits_args] if setting.digits else []
    return ['-c', row.config, *digits, *setting.common]


def expected_settings(row: Row, argv: List[str]) -> argparse.Namespace:
    """What a run of these flags resolves to, as training resolves them; refused in one line naming the row if
    training rejects them (e.g. --img-size 8 for the pre-trained row, whose ImageNet stem needs 32 px)."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return resolved_settings(argv)
    except SystemExit:
        lines = stderr.getvalue().strip().splitlines() or ['']
        reason = lines[-1].split("error: ", 1)[-1]
    except FctError as e:
        reason = str(e)
    raise FctError(f'training rejects the flags of row {row.name}: {reason}')


@dataclass
class Run:
    row: Row
    seed: int
    argv: List[str]  # the training flags
    folder: Path
    epochs: int
    index: str = ''  # '[3/9]' in this invocation's progress lines

    @property
    def name(self) -> str:
        return f'{self.row.name} seed {self.seed}'

    def epochs_done(self) -> int:
        return len(RunFolder(self.folder).summary())

    def finished(self) -> bool:
        return self.epochs_done() >= self.epochs

    def check_settings(self, expected: argparse.Namespace) -> None:
        """A run folder left by an invocation with other settings is not this run: refuse, naming the difference."""
        text = RunFolder(self.folder).args_text()
        if text:
            check_same_run(yaml.safe_load(text) or {}, expected,
                           f'{self.folder} was trained with other settings (use another --out, or remove it)')


@dataclass
class RowPlan:
    row: Row
    argv: List[str]  # the row's training flags, before the seed and run folder
    model: str
    pretrained: bool
    runs: List[Run]


def plan(setting: Setting, row: Row) -> RowPlan:
    """The row's runs, one per seed, each in OUT/runs/ROW-seedS; checked against what their folders hold."""
    argv = row_argv(setting, row)
    resolved = expected_settings(row, argv)  # once per row: the seed changes nothing else that is resolved
    runs = []
    for seed in setting.seeds:
        name = f'{row.name}-seed{seed}'
        run = Run(row, seed, [*argv, '--seed', str(seed), '--output', str(setting.out / 'runs'),
                              '--experiment', name], setting.out / 'runs' / name, resolved.epochs)
        expected = copy.copy(resolved)
        expected.seed = seed
        run.check_settings(expected)
        runs.append(run)
    return RowPlan(row, argv, resolved.model, resolved.pretrained, runs)


def run_training(run: Run) -> Optional[str]:
    """One training run, resumed from its newest checkpoint when it has one, its lines streamed with the run's
    name. None when it finished, else why not (its last line)."""
    done = run.epochs_done()
    what = f'resuming after epoch {done}/{run.epochs}' if done else f'starting, {run.epochs} epochs'
    print(f'{run.index} {run.name}: {what} -> {run.folder}', flush=True)
    start = time.time()
    tail: deque = deque(maxlen=20)
    with subprocess.Popen([*TRAIN, *run.argv, '--resume', 'auto'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1) as proc:
        for line in proc.stdout:
            tail.append(line.rstrip())
            print(f'    {run.name} | {line.rstrip()}', flush=True)
    if proc.returncode == 0 and run.finished():
        print(f'{run.index} {run.name}: finished in {time.time() - start:.0f}s', flush=True)
        return None
    lines = [t for t in tail if t.strip()] or ['no output']
    error = next((t for t in reversed(lines) if t.startswith('error:')), lines[-1])
    print(f'{run.index} {run.name}: FAILED (exit code {proc.returncode}): {error}', flush=True)
    return f'training exited with code {proc.returncode}: {error}'


def run_row(plan: RowPlan) -> str:
    """Train the row's unfinished runs in seed order, skipping finished ones; the row's status."""
    todo = [r for r in plan.runs if not r.finished()]
    reason = weights_unavailable(plan.model) if todo and plan.pretrained else None
    if reason:
        print(f'{plan.row.name}: NOT RUN: {reason}', flush=True)
        return f'not run: {reason}'
    for run in plan.runs:
        if run not in todo:
            print(f'{run.index} {run.name}: skipped, finished earlier ({run.epochs} epochs in {run.folder})',
                  flush=True)
            continue
        failure = run_training(run)
        if failure:
            return f'failed at seed {run.seed}: {failure}'
    return 'complete'


def result(setting: Setting, plan: RowPlan, status: str) -> RowResult:
    """The row's runs as they stand, with the row's command as a user types it."""
    command = shlex.join(['python', '-m', 'timm_fct.train', *plan.argv])
    res = RowResult(plan.row.name, plan.row.label, plan.model, plan.row.paper_top1, command, len(plan.runs), status)
    for run in plan.runs:
        res.runs.append(run_result(run.folder, setting.out, run.seed, run.epochs))
        top1 = [r['eval_top1'] for r in RunFolder(run.folder).summary()]
        if top1:
            res.curves[run.seed] = top1
    return res


def header(setting: Setting, command: str) -> List[str]:
    lines = ["# The paper's Table 1, reproduced", '',
             f'`{command}` ({time.strftime("%Y-%m-%d %H:%M %Z")}), {len(setting.seeds)} seed(s) per row '
             f'({", ".join(map(str, setting.seeds))}), top-1 on {setting.dataset}.']
    if setting.digits:
        lines += ['', f"**{NOT_CIFAR10}.** This is the paper's protocol at small settings on scikit-learn's "
                  "handwritten digits (no download): each row keeps its config's recipe and runs the ResNet-18 "
                  f"counterpart of its model with a narrow FCT head (embed_dim 32), at {DIGITS_DEFAULTS['img_size']} px "
                  "(the pre-trained row at 32 px, with an ImageNet ResNet-18 backbone), batch "
                  f"{DIGITS_DEFAULTS['batch_size']}, {DIGITS_EPOCHS} epochs, unless this "
                  "command line says otherwise; the exact commands are below. The paper's column is CIFAR-10, "
                  "shown for reference."]
    return lines


def reproduce(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    setting = parse(argv)
    plans = [plan(setting, row) for row in setting.rows]  # every row checked before anything trains
    runs = [run for p in plans for run in p.runs]
    for i, run in enumerate(runs, 1):
        run.index = f'[{i}/{len(runs)}]'
    print(f"table1: {len(plans)} row(s) x {len(setting.seeds)} seed(s) on {setting.dataset} -> {setting.out}"
          + (f' ({NOT_CIFAR10}: the small digits setting)' if setting.digits else ''), flush=True)
    results = [result(setting, p, run_row(p)) for p in plans]
    for res, line in zip(results, distinguishing_settings([p.runs[0].folder for p in plans])):
        res.resolved = line
    command = shlex.join([*PROG.split(), *argv])
    settings = dict(command=command, dataset=setting.dataset, seeds=setting.seeds,
                    note=f'{NOT_CIFAR10}: the small digits setting' if setting.digits else None,
                    date=time.strftime('%Y-%m-%d %H:%M %Z'))
    write_results(setting.out, results, header(setting, command), settings, setting.dataset,
                  paper_beside=setting.dataset == 'torch/cifar10')
    print((setting.out / 'table.md').read_text())
    print(f'results: {setting.out}/table.md, table.json, table1.png and runs/', flush=True)
    return 1 if any(r.status.startswith('failed') for r in results) else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Bad input is one `error:` line and exit code 2; Ctrl-C keeps every finished epoch for the next invocation."""
    try:
        return run_cli(reproduce, argv)
    except KeyboardInterrupt:
        print('\ninterrupted: run the same command again to resume', file=sys.stderr)
        return 130
