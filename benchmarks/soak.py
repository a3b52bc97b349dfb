"""Kill-and-restart soak of elastic training: a lost worker must cost one restart, and the run end as if never killed.

Each cycle is `torchrun --standalone --nproc-per-node 2 --max-restarts 1` of training with `--resume auto`, in
which one worker is SIGKILLed once, in the group's first attempt, at a moment drawn at random: between epochs
(as an epoch is about to start), mid-epoch (before a given update) or while rank 0 writes an epoch's checkpoint
(half of it on disk). The worker kills itself at that point (a wrapper around training's command), so the moment
is exact however fast the machine is. A cycle passes when torchrun exits 0 after exactly one restart, each epoch was
trained once (the restart continues after the last whole checkpoint) and the run equals an uninterrupted one:
per-epoch metrics, weights, EMA and optimizer state (1e-5 relative). Every launch is bounded (--timeout) and killed whole, workers included, past it.

    python benchmarks/soak.py --cycles 10 --out /tmp/soak          # the uninterrupted reference run first
    python benchmarks/soak.py --cycles 10 --out /tmp/soak --seed 7  # other moments

Prints a line per cycle as it ends and writes OUT/soak.json (every cycle's moment, time and outcome) after each.
Exit code 0 when every cycle passed.
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

REPO = Path(__file__).resolve().parents[1]
# the run: 3 epochs of 10 updates per rank at -b 64 on two processes (the digits at 32 px, no augmentation), a model
# without BatchNorm (per-replica statistics would make replicas differ by design) and an EMA that moves
RUN_ARGS = ('--epochs', '3', '--model', 'test_convnext', '--img-size', '32', '--pad-crop', '0', '--pipeline',
            'memory', '--device', 'cpu', '--model-ema', '--model-ema-decay', '0.9')
BATCH = ('-b', '64')
EPOCHS, UPDATES_PER_EPOCH = 3, 10
MOMENTS = ('between-epochs', 'mid-epoch', 'checkpoint-write')
METRICS = ('train_loss', 'eval_loss', 'eval_top1', 'eval_ema_loss', 'eval_ema_top1', 'lr')

# training's command, with one worker killing itself at SOAK_MOMENT in the group's first attempt only (torchrun
# counts attempts in TORCHELASTIC_RESTART_COUNT); it touches SOAK_MARKER first, so a cycle knows the kill happened
KILLER = """
import os, signal, sys
sys.path.insert(0, {repo!r})  # the checkout under test
import torch
from timm_fct.train import command, loop

moment, rank = os.environ['SOAK_MOMENT'], os.environ['SOAK_RANK']
epoch, update = int(os.environ['SOAK_EPOCH']), int(os.environ['SOAK_UPDATE'])


def die():
    open(os.environ['SOAK_MARKER'], 'w').close()
    os.kill(os.getpid(), signal.SIGKILL)


if os.environ['RANK'] == rank and os.environ['TORCHELASTIC_RESTART_COUNT'] == '0':
    if moment == 'between-epochs':
        set_epoch_seed = loop.set_epoch_seed
        def set_epoch_seed_or_die(loader, at, *args, **kwargs):
            if at == epoch:
                die()
            return set_epoch_seed(loader, at, *args, **kwargs)
        loop.set_epoch_seed = set_epoch_seed_or_die
    elif moment == 'mid-epoch':
        step, updates = torch.optim.Adam.step, [0]
        def step_or_die(self, *args, **kwargs):
            updates[0] += 1
            if updates[0] == epoch * {updates_per_epoch} + update:
                die()
            return step(self, *args, **kwargs)
        torch.optim.Adam.step = step_or_die
    else:  # checkpoint-write: timm's saver writes tmp.pth.tar, then renames it onto last.pth.tar
        import io
        save, saves = torch.save, [0]
        def save_or_die(obj, f, *args, **kwargs):
            if str(f).endswith('tmp.pth.tar'):
                saves[0] += 1
                if saves[0] == epoch + 1:
                    buffer = io.BytesIO()
                    save(obj, buffer)
                    with open(f, 'wb') as half:
                        half.write(buffer.getvalue()[:buffer.tell() // 2])
                    die()
            return save(obj, f, *args, **kwargs)
        torch.save = save_or_die
sys.exit(command.main(sys.argv[1:]))
"""


def draw(rng: random.Random, cycle: int) -> Dict[str, object]:
    """A kill at a random moment of the cycle's kind (the kinds in turn, so that N >= 3 cycles cover each): the
    worker, the epoch (0-based) and, mid-epoch, the update before which it dies."""
    moment = MOMENTS[cycle % len(MOMENTS)]
    return dict(moment=moment,
                rank=0 if moment == 'checkpoint-write' else rng.randrange(2),  # only rank 0 writes checkpoints
                epoch=rng.randrange(1 if moment == 'between-epochs' else 0, EPOCHS),
                update=rng.randrange(1, UPDATES_PER_EPOCH + 1) if moment == 'mid-epoch' else 0)


def descendants(pid: int) -> List[int]:
    """Every process below `pid` (torchrun starts each worker in a session of its own, so a process group kill
    misses them)."""
    children: Dict[int, List[int]] = {}
    for stat in Path('/proc').glob('[0-9]*/stat'):
        try:
            fields = stat.read_text().rsplit(')', 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def launch(argv: Sequence[str], env: Dict[str, str], timeout: float) -> Tuple[Optional[int], str, str]:
    """torchrun ARGV: (exit code, stdout, stderr); exit code None when it ran past `timeout` and was killed whole."""
    proc = subprocess.Popen([sys.executable, '-m', 'torch.distributed.run', *argv], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                            env={**os.environ, 'OMP_NUM_THREADS': '1', **env})
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        for pid in [*descendants(proc.pid), proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        out, err = proc.communicate()
        return None, out, err


def group_args(script: str, output: Path, experiment: str) -> List[str]:
    return ['--standalone', '--nproc-per-node', '2', '--max-restarts', '1', script, '--no-progress', *RUN_ARGS,
            *BATCH, '--resume', 'auto', '--output', str(output), '--experiment', experiment]


def differences(run: Path, reference: Path) -> List[str]:
    """How `run` differs from the uninterrupted `reference` run folder: [] when it ended as if never killed."""
    from timm_fct.runs.folder import RunFolder  # the checkout's, as imported by the caller

    rows, expected = RunFolder(run).summary(), RunFolder(reference).summary()
    if [r['epoch'] for r in rows] != [r['epoch'] for r in expected]:
        return [f'summary.csv epochs {[r["epoch"] for r in rows]}, expected {[r["epoch"] for r in expected]}']
    found = [f'epoch {int(r["epoch"])} {key} {r[key]} != {want[key]}' for r, want in zip(rows, expected)
             for key in METRICS if abs(r[key] - want[key]) > 1e-9 + 1e-5 * abs(want[key])]
    x = torch.load(reference / RunFolder.LAST, map_location='cpu', weights_only=False)
    y = torch.load(run / RunFolder.LAST, map_location='cpu', weights_only=False)
    if x['epoch'] != y['epoch'] or x['optimizer']['param_groups'] != y['optimizer']['param_groups']:
        found.append(f"checkpoint epoch {y['epoch']} or lr/beta1 differ from the reference's ({x['epoch']})")
    tensors = {**{f'model {k}': (v, x['state_dict'][k]) for k, v in y['state_dict'].items()},
               **{f'EMA {k}': (v, x['state_dict_ema'][k]) for k, v in y['state_dict_ema'].items()},
               **{f'optimizer {i} {k}': (v, x['optimizer']['state'][i][k])
                  for i, state in y['optimizer']['state'].items() for k, v in state.items()}}
    found += [name for name, (a, b) in tensors.items() if not torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-6)]
    return found


def run_cycle(folder: Path, reference: Path, kill: Dict[str, object], timeout: float) -> Dict[str, object]:
    """One kill-and-restart cycle in `folder`: the kill, torchrun's outcome, the restarts and the differences."""
    folder.mkdir(parents=True, exist_ok=True)
    script, marker = folder / 'killer.py', folder / 'killed'
    script.write_text(KILLER.format(repo=str(REPO), updates_per_epoch=UPDATES_PER_EPOCH))
    env = {'SOAK_MOMENT': str(kill['moment']), 'SOAK_RANK': str(kill['rank']), 'SOAK_EPOCH': str(kill['epoch']),
           'SOAK_UPDATE': str(kill['update']), 'SOAK_MARKER': str(marker)}
    start = time.monotonic()
    code, out, err = launch(group_args(str(script), folder, 'run'), env, timeout)
    epochs = [line.split(':')[0] for line in out.splitlines() if line.startswith('epoch ')]
    result = dict(kill, seconds=round(time.monotonic() - start, 1), exit_code=code, killed=marker.exists(),
                  starts=out.count('training test_convnext'), epochs=epochs)
    problems = []
    if code is None:
        problems.append(f'still running after {timeout:g} s, killed')
    elif code != 0:
        problems.append(f'torchrun exited with {code}: {err.strip().splitlines()[-1:] or "no output"}')
    if not result['killed']:
        problems.append('the worker was not killed')
    if result['starts'] != 2:
        problems.append(f"the group started {result['starts']} time(s), expected 2 (one restart)")
    if code == 0 and epochs != [f'epoch {e}/{EPOCHS}' for e in range(1, EPOCHS + 1)]:
        problems.append(f'epochs trained {epochs}: the restart must continue after the last checkpoint, each once')
    if code == 0:
        problems += differences(folder / 'run', reference)
    result.update(passed=not problems, problems=problems[:5], stderr_tail=err[-2000:] if problems else '')
    return result


def reference_run(out: Path, timeout: float) -> Path:
    """The uninterrupted run every cycle must equal (made once per results folder)."""
    reference = out / 'reference'
    if not (reference / 'last.pth.tar').is_file():
        script = out / 'train.py'
        script.write_text(f'import sys\nsys.path.insert(0, {str(REPO)!r})\nfrom timm_fct.train import command\n'
                          'sys.exit(command.main(sys.argv[1:]))\n')
        code, _, err = launch(group_args(str(script), out, 'reference'), {}, timeout)
        if code != 0:
            raise SystemExit(f'error: the uninterrupted reference run failed ({code}): {err[-2000:]}')
    return reference


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--cycles', type=int, default=10)
    parser.add_argument('--out', type=Path, required=True, help='results folder (made if missing)')
    parser.add_argument('--seed', type=int, default=0, help='draws the moments')
    parser.add_argument('--timeout', type=float, default=900, help='seconds a launch may run before it is killed')
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    reference = reference_run(args.out, args.timeout)
    rng = random.Random(args.seed)
    results = []
    for i in range(1, args.cycles + 1):
        kill = draw(rng, i - 1)
        result = run_cycle(args.out / f'cycle{i}', reference, kill, args.timeout)
        results.append(dict(cycle=i, **result))
        print(f"cycle {i}/{args.cycles}: rank {kill['rank']} killed {kill['moment']} (epoch {kill['epoch'] + 1}"
              + (f", before update {kill['update']}" if kill['moment'] == 'mid-epoch' else '')
              + f"): {'PASSED' if result['passed'] else 'FAILED ' + '; '.join(result['problems'])} "
              f"({result['seconds']} s)", flush=True)
        (args.out / 'soak.json').write_text(json.dumps(dict(seed=args.seed, cycles=results), indent=2) + '\n')
    passed = sum(r['passed'] for r in results)
    print(f'{passed} of {len(results)} cycles passed; {args.out / "soak.json"}')
    return 0 if passed == len(results) else 1


if __name__ == '__main__':
    sys.exit(main())
