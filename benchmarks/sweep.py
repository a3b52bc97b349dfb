"""FCT heads on many timm backbones: does fct_bn / fct_ln build, run and train on each, and what does it cost?

For every architecture, at its default input size (timm's resolve_data_config of the plain model):

* the bare model, timm's own classifier `timm.create_model(arch, num_classes=1000)`: parameters and
  forward FLOPs (cost.py's count_flops: torch.utils.flop_counter, one image, eval, no_grad);
* `fct_bn` and `fct_ln` on it as backbone (`timm.create_model('fct_bn', backbone=arch, num_classes=1000)`):
  parameters, forward FLOPs and their ratio to the bare model's, the taps chosen by default, and one
  training step at batch 2 (train mode, cross-entropy, backward) that must give a finite loss and a
  gradient to every parameter outside the backbone (FCT modules and classifier).

Each failure is caught and recorded as `ErrorType: first line of the message`, so one architecture that
cannot work does not stop the sweep. One line of progress per architecture goes to stderr; the Markdown
tables go to stdout, and with --out to OUT.md beside the full results in OUT.json.

    python benchmarks/sweep.py                                   # the default list (DEFAULT_MODELS)
    python benchmarks/sweep.py --models 'resnet*,densenet201'  # globs over the default list, any timm names
    python benchmarks/sweep.py --models efficientnet_b0 --embed-dim 64          # another FCT width
    python benchmarks/sweep.py --out output/sweep --device cuda
    python benchmarks/sweep.py --table-from output/sweep.json     # the tables again, from saved results
"""
import argparse
import fnmatch
import json
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import timm
import torch
import torch.nn.functional as F
from timm.data import resolve_data_config

from cost import count_flops  # benchmarks/cost.py; also registers the FCT models (import timm_fct)

# A spread of timm families: plain and grouped/attention ResNets, NAS and mobile nets, CSP, dense and
# plain VGG-style nets, multi-resolution (HRNet), and hierarchical transformers / MetaFormers with NHWC
# maps (Swin, MambaOut), hybrids (MaxViT, CoaT, LeViT), two-branch CrossViT, LSTM-mixing Sequencer, and
# non-hierarchical ones (ViT, CaiT, an isotropic ConvMixer), whose levels timm takes from the last blocks.
DEFAULT_MODELS = [
    'resnet18', 'resnet50', 'resnext50_32x4d', 'seresnet50',
    'res2net50_26w_4s', 'resnest14d',
    'convnext_atto', 'convnext_tiny',
    'efficientnet_b0', 'efficientnet_b3', 'tf_efficientnetv2_b0', 'mnasnet_100',
    'mobilenetv3_small_100', 'mobilenetv3_large_100', 'mobilenetv4_conv_small',
    'ghostnet_100', 'rexnet_100',
    'regnetx_002', 'regnety_016',
    'cspresnet50', 'cspdarknet53',
    'densenet121', 'vgg11_bn', 'dla34', 'hrnet_w18_small',
    'inception_v3', 'legacy_xception', 'repvgg_a2', 'fastvit_t8',
    'efficientformer_l1', 'edgenext_small', 'poolformer_s12',
    'swin_tiny_patch4_window7_224', 'mambaout_femto',
    'maxvit_tiny_tf_224', 'coat_lite_tiny', 'levit_128',
    'crossvit_tiny_240', 'sequencer2d_s', 'cait_xxs24_224',
    'vit_tiny_patch16_224', 'convmixer_1024_20_ks9_p14',
]
VARIANTS = ('fct_bn', 'fct_ln')


def family_of(arch: str) -> str:
    """The timm module that defines the architecture (resnet, efficientnet, vision_transformer, ...)."""
    return timm.models.model_entrypoint(arch).__module__.rsplit('.', 1)[-1]


def error_text(e: BaseException, limit: int = 150) -> str:
    lines = str(e).strip().splitlines()
    text = f'{type(e).__name__}: {lines[0] if lines else ""}'
    return text if len(text) <= limit else text[:limit - 3] + '...'


def num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def train_step(model: torch.nn.Module, x: torch.Tensor) -> Optional[str]:
    """One forward and backward pass in train mode; None if it worked, else what went wrong."""
    model.train()
    model.zero_grad(set_to_none=True)
    target = torch.arange(x.shape[0], device=x.device) % model.num_classes
    loss = F.cross_entropy(model(x), target)
    if not torch.isfinite(loss):
        return f'loss is {loss.item()}'
    loss.backward()
    head = [(n, p) for n, p in model.named_parameters() if not n.startswith('backbone.') and p.requires_grad]
    missing = [n for n, p in head if p.grad is None]
    if missing:
        return f'{len(missing)} of {len(head)} FCT/head parameters got no gradient, e.g. {missing[:3]}'
    bad = [n for n, p in head if not torch.isfinite(p.grad).all()]
    if bad:
        return f'{len(bad)} FCT/head parameters got non-finite gradients, e.g. {bad[:3]}'
    return None


def attempt(row: Dict[str, Any], variant: str, stage: str, fn: Callable[[], Any]) -> Any:
    """fn(), or None with the failure recorded in row['failures']."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001  a sweep reports every failure and goes on
        row['failures'].append(dict(variant=variant, stage=stage, error=error_text(e)))
        return None


def measure(arch: str, device: torch.device, fct_args: Dict[str, Any]) -> Dict[str, Any]:
    """Bare model, then fct_bn and fct_ln on it; every failure recorded, none raised.

    A failed FLOP count does not stop the rest: the models are still built and trained.
    """
    row: Dict[str, Any] = dict(arch=arch, family=family_of(arch), failures=[], warnings=[])
    torch.manual_seed(0)
    bare = attempt(row, 'bare', 'build', lambda: timm.create_model(arch, num_classes=1000).to(device).eval())
    if bare is None:
        return row
    input_size = tuple(resolve_data_config({}, model=bare)['input_size'])
    x = torch.randn(2, *input_size, device=device)
    row.update(input_size=list(input_size), bare_params=num_params(bare))
    row['bare_flops'] = attempt(row, 'bare', 'FLOPs', lambda: count_flops(bare, x))
    bare = None  # free it before the FCT models
    for variant in VARIANTS:
        res: Dict[str, Any] = dict(train_ok=False)
        row[variant] = res
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            model = attempt(row, variant, 'build',
                            lambda: timm.create_model(variant, backbone=arch, num_classes=1000, **fct_args).to(device))
            if model is not None:
                info = model.backbone.feature_info
                res.update(params=num_params(model), taps=list(model.taps), levels=len(info.out_indices),
                           tap_reductions=[info.info[info.out_indices[t]]['reduction'] for t in model.taps])
                model.eval()
                res['flops'] = attempt(row, variant, 'FLOPs', lambda: count_flops(model, x))
                # the features_only backbone alone: what the FCT modules and their head add on top of it
                if res['flops']:
                    res['backbone_flops'] = attempt(row, variant, 'FLOPs', lambda: count_flops(model.backbone, x))
                    if row['bare_flops']:
                        res['flops_ratio'] = res['flops'] / row['bare_flops']
                problem = attempt(row, variant, 'train step', lambda: train_step(model, x) or '')
                res['train_ok'] = problem == ''
                if problem:
                    row['failures'].append(dict(variant=variant, stage='train step', error=problem))
            model = None
        for w in caught:
            text = f'{variant}: {w.category.__name__}: {str(w.message).splitlines()[0][:150]}'
            if text not in row['warnings']:
                row['warnings'].append(text)
    return row


def progress_line(row: Dict[str, Any]) -> str:
    if 'input_size' not in row:
        return f"{row['arch']}: bare model FAILED: {row['failures'][0]['error']} ({row['seconds']:.0f} s)"
    parts = [f"{row['arch']} ({row['family']}, {row['input_size'][1]}x{row['input_size'][2]}): "
             f"bare {scaled(row['bare_flops'], 1e9, '.2f')} GFLOPs"]
    for v in VARIANTS:
        res = row[v]
        parts.append(f"{v} x{scaled(res.get('flops_ratio'), 1, '.3f')} train {'ok' if res['train_ok'] else 'FAILED'}")
    fails = '; '.join(f"{f['variant']} {f['stage']}: {f['error']}" for f in row['failures'])
    return ', '.join(parts) + (f' [{fails}]' if fails else '') + f" ({row['seconds']:.0f} s)"


def scaled(value: Optional[float], unit: float, spec: str) -> str:
    return '-' if value is None else format(value / unit, spec)


def markdown(rows: List[Dict[str, Any]]) -> str:
    out = ['| architecture | family | input | levels | taps (strides) | bare params M | bare GFLOPs '
           '| fct_bn params M | fct_bn GFLOPs | fct_bn FLOPs x | fct_ln FLOPs x | fct_bn / trunk x | train step |',
           '|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        bn, ln = r.get('fct_bn', {}), r.get('fct_ln', {})
        size = f"{r['input_size'][1]}x{r['input_size'][2]}" if 'input_size' in r else '-'
        taps = (f"{','.join(map(str, bn['taps']))} ({','.join(map(str, bn['tap_reductions']))})"
                if 'taps' in bn else '-')
        ok = [v.removeprefix('fct_') for v in VARIANTS if r.get(v, {}).get('train_ok')]
        train = 'ok' if len(ok) == len(VARIANTS) else ('only ' + ', '.join(ok) if ok else 'failed')
        trunk_ratio = f"{bn['flops'] / bn['backbone_flops']:.3f}" if bn.get('backbone_flops') else '-'
        out.append(
            f"| {r['arch']} | {r['family']} | {size} | {bn.get('levels', '-')} | {taps} "
            f"| {scaled(r.get('bare_params'), 1e6, '.2f')} | {scaled(r.get('bare_flops'), 1e9, '.3f')} "
            f"| {scaled(bn.get('params'), 1e6, '.2f')} | {scaled(bn.get('flops'), 1e9, '.3f')} "
            f"| {scaled(bn.get('flops_ratio'), 1, '.3f')} | {scaled(ln.get('flops_ratio'), 1, '.3f')} "
            f"| {trunk_ratio} | {train} |")
    failures = [(r['arch'], f) for r in rows for f in r['failures']]
    out += ['', 'Failures:', '']
    if failures:
        out += ['| architecture | variant | stage | error |', '|---|---|---|---|']
        out += [f"| {a} | {f['variant']} | {f['stage']} | `{f['error'].replace('|', '/')}` |" for a, f in failures]
    else:
        out.append('none')
    noted = [(r['arch'], w) for r in rows for w in r['warnings']]
    if noted:
        out += ['', 'Warnings:', '', '| architecture | warning |', '|---|---|']
        out += [f"| {a} | `{w.replace('|', '/')}` |" for a, w in noted]
    return '\n'.join(out)


def select(spec: Optional[str]) -> List[str]:
    """Comma-separated names or globs: a glob picks from DEFAULT_MODELS, a plain name may be any timm model."""
    if not spec:
        return list(DEFAULT_MODELS)
    names: List[str] = []
    for item in filter(None, (s.strip() for s in spec.split(','))):
        if any(c in item for c in '*?['):
            matched = [m for m in DEFAULT_MODELS if fnmatch.fnmatch(m, item)]
            if not matched:
                raise SystemExit(f'--models: {item!r} matches nothing in the default list')
            names += matched
        elif item in timm.list_models():
            names.append(item)
        else:
            raise SystemExit(f'--models: {item!r} is not a timm model name')
    return list(dict.fromkeys(names))


def report(meta: Dict[str, Any], rows: List[Dict[str, Any]]) -> str:
    families = {r['family'] for r in rows}
    passed = sum(all(r.get(v, {}).get('train_ok') for v in VARIANTS) for r in rows)
    args = ''.join(f', {k}={v}' for k, v in meta.get('fct_args', {}).items())
    header = (f"{len(rows)} architectures from {len(families)} families; fct_bn and fct_ln built, ran and trained "
              f"on {passed}{args}. Device {meta['device']}, {meta['threads']} threads, {meta['seconds'] / 60:.1f} min; "
              f"torch {meta['torch']}, timm {meta['timm']}")
    return f'{header}\n\n{markdown(rows)}\n'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', default=None,
                        help='comma-separated timm names or globs over the default list (default: all of it)')
    parser.add_argument('--out', default=None, help='write OUT.json (every result) and OUT.md (the tables)')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: leave as is)')
    parser.add_argument('--embed-dim', type=int, default=None,
                        help="FCT width D for fct_bn / fct_ln (default: FctNet's, 96)")
    parser.add_argument('--table-from', default=None, metavar='JSON',
                        help='measure nothing: print the tables of an earlier --out JSON file')
    args = parser.parse_args()
    if args.table_from:
        saved = json.loads(Path(args.table_from).read_text())
        print(report(saved['meta'], saved['results']), end='')
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    names = select(args.models)
    device = torch.device(args.device)
    fct_args = {} if args.embed_dim is None else dict(embed_dim=args.embed_dim)
    print(f'{len(names)} architectures from {len({family_of(n) for n in names})} families on {device} '
          f'({torch.get_num_threads()} threads)', file=sys.stderr, flush=True)

    rows: List[Dict[str, Any]] = []
    start = time.perf_counter()
    for i, arch in enumerate(names, 1):
        t0 = time.perf_counter()
        row = measure(arch, device, fct_args)
        row['seconds'] = time.perf_counter() - t0
        rows.append(row)
        print(f'[{i}/{len(names)}] {progress_line(row)}', file=sys.stderr, flush=True)
    meta = dict(device=str(device), threads=torch.get_num_threads(), seconds=time.perf_counter() - start,
                torch=torch.__version__, timm=timm.__version__, python=platform.python_version(),
                machine=platform.machine(), fct_args=fct_args)
    text = report(meta, rows)
    print(f'\n{text}', end='')
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix('.json').write_text(json.dumps(dict(meta=meta, results=rows), indent=1) + '\n')
        out.with_suffix('.md').write_text(text)
        print(f'wrote {out.with_suffix(".json")} and {out.with_suffix(".md")}', file=sys.stderr)


if __name__ == '__main__':
    main()
