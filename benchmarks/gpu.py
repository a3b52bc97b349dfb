"""GPU training throughput and peak memory of the four Table 1 models at 32 px, and the input pipelines.

For each Table 1 row's model (from its config; the pre-trained row's model with fresh weights, at 32 px
like the others) and each batch size, times training steps in several settings ("combos" of bf16
autocast, channels_last and torch.compile), then divides each FCT model's images/s by the vanilla
ResNet-50's in the same setting. Then times one epoch of CIFAR-shaped data through train.py's two input
pipelines (benchmarks/pipeline.py). Prints one Markdown table; writes JSON after every measurement (whole
or not at all), so a run cut short still leaves what it measured. A setting that fails (out of memory, a
compile error) is recorded with its error and the run goes on; settings not started within
--time-budget seconds are recorded as skipped. With --profile-batch-size, each model's training step is then
profiled (torch.profiler; CUDA kernels on a GPU, aten operators on a CPU): time and launches per step and the
top kernels, so that an FCT step's extra kernels can be read beside the baseline's.

    python benchmarks/gpu.py --out gpu.json           # one datacenter GPU, under 5 minutes
    python benchmarks/gpu.py --models resnet50 fct_bn --batch-sizes 128 --combos bf16+channels_last+compile \
        --compile-mode reduce-overhead --profile-batch-size 128 --pipeline-images 0 --out graphs.json
                                                      # CUDA graphs, and each model's top kernels beside the baseline's
    python benchmarks/gpu.py --device cpu --batch-sizes 2 --warmup 1 --steps 1 --combos fp32 channels_last \\
        --pipeline-images 512 --workers 0 --out cpu.json   # seconds: what tests/test_gpu_benchmark.py runs
"""
import argparse
import gc
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import timm
import torch
import yaml
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

import timm_fct  # noqa: F401  registers the models
from timm_fct.runs.files import replace_when_done
from timm_fct.table1.rows import ROWS
from timm_fct.train.args import config_path

from cost import timed, train_step
from pipeline import RandomImages, measure as measure_pipeline

BASELINE_ROW = 'resnet50'  # the vanilla ResNet-50 row: every ratio is over it
IMG_SIZE = 32
NUM_CLASSES = 10
FACTORS = ('bf16', 'channels_last', 'compile')
FP32 = 'fp32'  # the combo with every factor off
# each factor on and off against a neighbour: bf16 and channels_last alone and together, compile on top of both
DEFAULT_COMBOS = (FP32, 'bf16', 'channels_last', 'bf16+channels_last', 'bf16+channels_last+compile')
# the JSON records' keys, in order (docs/benchmarks.md lists them)
TRAINING_FIELDS = ('row', 'model', 'batch_size', 'combo', *FACTORS, 'status', 'error', 'img_per_s', 'step_ms',
                   'peak_mem_gib', 'first_step_s', 'vs_baseline')
PIPELINE_FIELDS = ('data', 'pipeline', 'batch_size', 'img_per_s', 'vs_pil')
PROFILE_FIELDS = ('row', 'model', 'batch_size', 'combo', 'events', 'ms_per_step', 'launches_per_step', 'top')


def row_model(row: str) -> str:
    """The model a Table 1 row trains, as its config names it."""
    return yaml.safe_load(config_path(ROWS[row].config).read_text())['model']


def create_row_model(row: str) -> torch.nn.Module:
    """A row's model with fresh weights (the pre-trained row's too: its ImageNet weights change no timing)."""
    return timm.create_model(row_model(row), pretrained=False, num_classes=NUM_CLASSES)


def parse_combo(combo: str) -> Dict[str, bool]:
    """'fp32' or factors joined by '+' (e.g. 'bf16+channels_last') to {factor: on}."""
    on = [] if combo == FP32 else combo.split('+')
    unknown = sorted(set(on) - set(FACTORS))
    if unknown or not on and combo != FP32:
        raise argparse.ArgumentTypeError(
            f'combo {combo!r}: expected {FP32!r} or factors from {", ".join(FACTORS)} joined by "+"')
    return {factor: factor in on for factor in FACTORS}


def combo_arg(combo: str) -> str:
    parse_combo(combo)
    return combo


class Results:
    """Everything measured so far, written whole to --out after every measurement."""

    def __init__(self, out: Optional[Path], meta: Dict[str, Any]):
        self.out = out
        self.meta = meta
        self.start = time.perf_counter()
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
        self.training: List[Dict[str, Any]] = []
        self.pipeline: List[Dict[str, Any]] = []
        self.profiles: List[Dict[str, Any]] = []

    def add_training(self, record: Dict[str, Any]) -> None:
        self.training.append(record)
        self.write()

    def with_ratios(self) -> List[Dict[str, Any]]:
        """Training records with vs_baseline: img/s over the baseline row's at the same batch size and combo."""
        base = {(r['batch_size'], r['combo']): r['img_per_s'] for r in self.training if r['row'] == BASELINE_ROW}
        rows = []
        for r in self.training:
            ref = base.get((r['batch_size'], r['combo']))
            rows.append({**r, 'vs_baseline': r['img_per_s'] / ref if r['img_per_s'] and ref else None})
        return rows

    def write(self, finished: bool = False) -> None:
        self.meta.update(finished=finished, elapsed_s=self.elapsed())
        if self.out is None:
            return
        data = dict(meta=self.meta, training=self.with_ratios(), pipeline=self.pipeline, profiles=self.profiles)
        with replace_when_done(self.out) as tmp:
            tmp.write_text(json.dumps(data, indent=1) + '\n')

    def elapsed(self) -> float:
        return round(time.perf_counter() - self.start, 1)


def sync_for(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)


def training_step(model: torch.nn.Module, forward: Callable, batch_size: int, factors: Dict[str, bool],
                  args: argparse.Namespace) -> Callable[[], None]:
    """One training step of `forward` (the model or its compiled form) on a fixed random batch, in `factors`."""
    device = torch.device(args.device)
    layout = torch.channels_last if factors['channels_last'] else torch.contiguous_format
    model.to(memory_format=layout).train()
    x = torch.randn(batch_size, 3, IMG_SIZE, IMG_SIZE, device=device).contiguous(memory_format=layout)
    if factors['compile']:
        torch._dynamo.maybe_mark_dynamic(x, 0)  # one compilation serves every batch size
    target = torch.randint(0, NUM_CLASSES, (batch_size,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    amp_dtype = torch.bfloat16 if factors['bf16'] else None

    def step() -> None:
        train_step(forward, optimizer, x, target, amp_dtype)
    return step


def measure_training(model: torch.nn.Module, forward: Callable, batch_size: int, factors: Dict[str, bool],
                     args: argparse.Namespace) -> Dict[str, Any]:
    """Warm-up steps (the first one timed on its own: it includes any compilation), then timed steps."""
    device = torch.device(args.device)
    sync = sync_for(device)
    step = training_step(model, forward, batch_size, factors, args)
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats(device)
    first = timed(step, 1, sync)
    if args.warmup > 1:
        timed(step, args.warmup - 1, sync)
    seconds = timed(step, args.steps, sync)
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == 'cuda' else None
    return dict(img_per_s=batch_size * args.steps / seconds, step_ms=1000 * seconds / args.steps,
                peak_mem_gib=peak, first_step_s=first)


def profile_training(model: torch.nn.Module, forward: Callable, batch_size: int, factors: Dict[str, bool],
                     args: argparse.Namespace) -> Dict[str, Any]:
    """--profile-steps training steps under torch.profiler after --warmup untimed ones: device time and launches
    per step, and the --top events by time. On a GPU the events are CUDA kernels (self device time), on a CPU
    aten operators (self CPU time), the closest a CPU has to kernels."""
    device = torch.device(args.device)
    sync = sync_for(device)
    step = training_step(model, forward, batch_size, factors, args)
    timed(step, args.warmup, sync)
    cuda = device.type == 'cuda'
    with profile(activities=[ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]) as prof:
        timed(step, args.profile_steps, sync)
    if cuda:
        events = [(e.key, e.count, e.self_device_time_total) for e in prof.key_averages()
                  if e.device_type == DeviceType.CUDA and e.self_device_time_total > 0]
    else:
        events = [(e.key, e.count, e.self_cpu_time_total) for e in prof.key_averages() if e.key.startswith('aten::')]
    n = args.profile_steps
    total_us = sum(us for _, _, us in events)
    top = sorted(events, key=lambda e: -e[2])[:args.top]
    return dict(events='CUDA kernels' if cuda else 'aten operators (CPU)', ms_per_step=total_us / 1e3 / n,
                launches_per_step=sum(count for _, count, _ in events) / n,
                top=[dict(name=name, calls_per_step=count / n, ms_per_step=us / 1e3 / n, share=us / total_us)
                     for name, count, us in top])


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.empty_cache()


def compiled(model: torch.nn.Module, args: argparse.Namespace) -> Callable:
    """torch.compile in --compile-mode ('reduce-overhead': CUDA graphs, one launch for a step's kernels)."""
    return torch.compile(model, mode=None if args.compile_mode == 'default' else args.compile_mode)


def run_profiles(args: argparse.Namespace, results: Results) -> None:
    """Each model's training step at --profile-batch-size in --profile-combo, profiled (profile_training)."""
    device = torch.device(args.device)
    factors = parse_combo(args.profile_combo)
    for row in args.models:
        torch._dynamo.reset()
        model = create_row_model(row).to(device)
        forward = compiled(model, args) if factors['compile'] else model
        record = dict(row=row, model=row_model(row), batch_size=args.profile_batch_size, combo=args.profile_combo)
        print(f'[{results.elapsed():6.1f} s] profiling {record["model"]} batch {args.profile_batch_size} '
              f'{args.profile_combo} ...', flush=True)
        record.update(profile_training(model, forward, args.profile_batch_size, factors, args))
        results.profiles.append({k: record[k] for k in PROFILE_FIELDS})
        results.write()
        del model, forward
        free_memory(device)


def run_training(args: argparse.Namespace, results: Results) -> None:
    """Every combo without compile first, for every model and batch size, then the compiled ones (slow to start)."""
    device = torch.device(args.device)
    models = {row: create_row_model(row).to(device) for row in args.models}
    ordered = sorted(args.combos, key=lambda c: parse_combo(c)['compile'])
    for combo in ordered:
        factors = parse_combo(combo)
        for row, model in models.items():
            forward = model
            if factors['compile']:
                torch._dynamo.reset()
                forward = compiled(model, args)
            for batch_size in sorted(args.batch_sizes):
                record = dict.fromkeys(TRAINING_FIELDS)
                record.update(row=row, model=row_model(row), batch_size=batch_size, combo=combo, **factors,
                              status='skipped')
                if results.elapsed() < args.time_budget:
                    print(f'[{results.elapsed():6.1f} s] {record["model"]} batch {batch_size} {combo} ...', flush=True)
                    try:
                        record.update(measure_training(model, forward, batch_size, factors, args), status='ok')
                    except Exception as e:  # out of memory, a compile error: recorded, and on to the next one
                        record.update(status='error', error=f'{type(e).__name__}: {str(e).strip()[:300]}')
                    free_memory(device)
                    print(f'           {summary(record)}', flush=True)
                else:
                    record['error'] = f'not started within --time-budget {args.time_budget:g} s'
                results.add_training(record)


def summary(record: Dict[str, Any]) -> str:
    if record['status'] != 'ok':
        return f'{record["status"]}: {record["error"]}'
    peak = 'n/a' if record['peak_mem_gib'] is None else f'{record["peak_mem_gib"]:.2f} GiB'
    return (f'{record["img_per_s"]:,.0f} img/s, peak {peak}, first step {record["first_step_s"]:.1f} s')


def run_pipelines(args: argparse.Namespace, results: Results) -> None:
    """benchmarks/pipeline.py's measurement on CIFAR-shaped data, one epoch per pipeline."""
    settings = argparse.Namespace(device=args.device, batch_size=args.pipeline_batch_size, pad=4,
                                  workers=args.workers, rounds=1)
    name = f'CIFAR-shaped {args.pipeline_images:,}, {IMG_SIZE} px'
    print(f'[{results.elapsed():6.1f} s] pipelines on {name} ...', flush=True)
    rows = measure_pipeline(name, RandomImages(args.pipeline_images), IMG_SIZE, settings)
    base = rows[0][2]  # the first PIL setting
    results.pipeline = [dict(zip(PIPELINE_FIELDS, (data, pipeline, args.pipeline_batch_size, rate, rate / base)))
                        for data, pipeline, rate in rows]
    results.write()
    free_memory(torch.device(args.device))


def fmt(value: Optional[float], spec: str) -> str:
    return '-' if value is None else format(value, spec)


def table(results: Results) -> str:
    """One Markdown table: training rows (x = over the baseline), then pipeline rows (x = over the first PIL one)."""
    lines = ['| part | model / data | batch | setting | img/s | x | peak GiB | first step s | status |',
             '|---|---|---|---|---|---|---|---|---|']
    for r in results.with_ratios():
        status = r['status'] if r['status'] == 'ok' else f'{r["status"]}: {r["error"]}'.replace('|', '/')
        lines.append(f'| training | {r["model"]} | {r["batch_size"]} | {r["combo"]} | {fmt(r["img_per_s"], ",.0f")} '
                     f'| {fmt(r["vs_baseline"], ".2f")} | {fmt(r["peak_mem_gib"], ".2f")} '
                     f'| {fmt(r["first_step_s"], ".1f")} | {status} |')
    for r in results.pipeline:
        lines.append(f'| pipeline | {r["data"]} | {r["batch_size"]} | {r["pipeline"]} | {r["img_per_s"]:,.0f} '
                     f'| {r["vs_pil"]:.2f} | - | - | ok |')
    return '\n'.join(lines)


def profile_table(results: Results) -> str:
    """Per profiled model: time and launches per step, then its top events, each with its share of the step."""
    lines = ['| model | batch | setting | events | ms/step | launches/step | top events: ms/step (calls/step, share) |',
             '|---|---|---|---|---|---|---|']
    for r in results.profiles:
        top = '; '.join(f'{e["name"][:60]} {e["ms_per_step"]:.2f} ({e["calls_per_step"]:g}, {e["share"]:.0%})'
                        for e in r['top'])
        lines.append(f'| {r["model"]} | {r["batch_size"]} | {r["combo"]} | {r["events"]} | {r["ms_per_step"]:.2f} '
                     f'| {r["launches_per_step"]:g} | {top.replace("|", "/")} |')
    return '\n'.join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--models', nargs='+', choices=list(ROWS), default=list(ROWS),
                        help=f'Table 1 rows (default: all; ratios need {BASELINE_ROW!r})')
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[128, 512])
    parser.add_argument('--combos', type=combo_arg, nargs='+', default=list(DEFAULT_COMBOS),
                        help=f'{FP32!r} or factors from {", ".join(FACTORS)} joined by "+" '
                             f'(default: {" ".join(DEFAULT_COMBOS)})')
    parser.add_argument('--warmup', type=int, default=3, help='untimed steps, the first includes compilation')
    parser.add_argument('--steps', type=int, default=10, help='timed steps')
    parser.add_argument('--pipeline-images', type=int, default=50000, help='CIFAR-shaped images, one epoch (0: none)')
    parser.add_argument('--pipeline-batch-size', type=int, default=128)
    parser.add_argument('--workers', type=int, nargs='+', default=[0, 8], help='DataLoader workers of the PIL pipeline')
    parser.add_argument('--time-budget', type=float, default=240,
                        help='seconds from the start: training settings not started by then are skipped')
    parser.add_argument('--compile-mode', default='default',
                        choices=['default', 'reduce-overhead', 'max-autotune', 'max-autotune-no-cudagraphs'],
                        help="torch.compile's mode for the compile factor (reduce-overhead: CUDA graphs)")
    parser.add_argument('--profile-batch-size', type=int,
                        help='profile each model\'s training step at this batch size (default: no profile)')
    parser.add_argument('--profile-combo', type=combo_arg, default='bf16+channels_last',
                        help='the setting profiled (default: bf16+channels_last)')
    parser.add_argument('--profile-steps', type=int, default=3, help='profiled steps, after --warmup untimed ones')
    parser.add_argument('--top', type=int, default=12, help='events listed per profiled model')
    parser.add_argument('--out', type=Path, help='JSON file, rewritten after every measurement')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1 or args.profile_steps < 1 or args.top < 1:
        parser.error('--warmup, --steps, --profile-steps and --top take 1 or more')
    if args.profile_batch_size is not None and args.profile_batch_size < 1:
        parser.error('--profile-batch-size takes 1 or more')
    device = torch.device(args.device)
    meta = dict(
        command=' '.join(['python', 'benchmarks/gpu.py', *(sys.argv[1:] if argv is None else argv)]),
        started=datetime.now(timezone.utc).isoformat(timespec='seconds'),
        device=torch.cuda.get_device_name(device) if device.type == 'cuda' else platform.machine() or 'cpu',
        torch=torch.__version__, timm=timm.__version__, python=platform.python_version(),
        img_size=IMG_SIZE, num_classes=NUM_CLASSES, warmup=args.warmup, steps=args.steps,
        baseline=row_model(BASELINE_ROW), optimizer='SGD lr 1e-3, cross-entropy (benchmarks/cost.py train_step)',
        compile=f'torch.compile mode {args.compile_mode}, batch dimension marked dynamic: one compilation per model')
    results = Results(args.out, meta)
    if args.pipeline_images:
        run_pipelines(args, results)
    run_training(args, results)
    if args.profile_batch_size:
        run_profiles(args, results)
    results.write(finished=True)
    print(f'\n{meta["device"]}, torch {torch.__version__}, timm {timm.__version__}, {IMG_SIZE} px, '
          f'{args.warmup} warm-up + {args.steps} timed steps, {meta["elapsed_s"]} s in all\n')
    print(table(results))
    if results.profiles:
        print(f'\nprofiled: {args.profile_steps} steps after {args.warmup} warm-up\n')
        print(profile_table(results))
    return 0


if __name__ == '__main__':
    sys.exit(main())
