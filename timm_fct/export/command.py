"""Turn a training run into a Hugging Face Hub model repository (timm's layout plus a model card).

    python -m timm_fct.export RUN --out DIR                       export only
    python -m timm_fct.export RUN --repo-id org/name --dry-run    show what would be uploaded, no network
    python -m timm_fct.export RUN --repo-id org/name              export to a temporary folder and push
    python -m timm_fct.export RUN --out DIR --repo-id org/name    export to DIR, keep it, and push

(`python hub/publish.py ...` in a checkout, and the `timm-fct-export` command, are the same.) RUN is a run
folder or a checkpoint file. The token comes from HF_TOKEN or `hf auth login`.
Then `timm.create_model('hf-hub:org/name', pretrained=True)` loads it anywhere timm_fct is imported.
"""
import argparse
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

from ..cli import run_cli
from ..report.layout import CONFUSION_PNG
from ..runs.weights import WEIGHT_CHOICES
from .hub import check_repo_id, commit_message_for, export, push, require_token, upload_plan


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m timm_fct.export', description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('run', help='a run folder, or a checkpoint file')
    parser.add_argument('--out', type=Path, help='write the Hub folder here (must not exist yet)')
    parser.add_argument('--repo-id', help="push to this Hub model repo, 'org/name'")
    parser.add_argument('--weights', choices=WEIGHT_CHOICES, default='auto',
                        help='EMA or raw weights; auto takes EMA when it evaluated better (default)')
    parser.add_argument('--report', type=Path, help=f'report folder with a {CONFUSION_PNG} for the model card')
    parser.add_argument('--dry-run', action='store_true', help='list what would be uploaded; no network')
    parser.add_argument('--overwrite-card', action='store_true', help="replace the repo's existing README.md")
    parser.add_argument('--private', action='store_true', help='create the repo as private')
    return parser


def human_size(n: int) -> str:
    if n < 1000:
        return f'{n} B'
    return f'{n / 1e3:.1f} kB' if n < 1e6 else f'{n / 1e6:.1f} MB'


def describe_upload(folder: Path, repo_id: str) -> List[str]:
    """The dry run's report: target, commit message and every file with its size."""
    plan = upload_plan(folder)
    width = max(len(name) for name, _ in plan)
    lines = [f'dry run: would upload to https://huggingface.co/{repo_id} ({len(plan)} files, one commit '
             f'"{commit_message_for(folder)}"):']
    lines += [f'  {name:<{width}}  {human_size(size):>9}' for name, size in plan]
    lines.append('nothing was sent (a push refuses a repo that already has a README.md, unless --overwrite-card)')
    return lines


def publish(args: argparse.Namespace, folder: Path) -> None:
    """Export RUN to `folder`, then push it or describe the push."""
    export(args.run, folder, weights=args.weights, report_dir=args.report, repo_id=args.repo_id)
    if args.out:
        print(f'exported {args.run} to {folder}')
    if not args.repo_id:
        return
    if args.dry_run:
        print('\n'.join(describe_upload(folder, args.repo_id)))
        return
    commit = push(folder, args.repo_id, overwrite_card=args.overwrite_card, private=args.private)
    print(f'published {args.repo_id}: {getattr(commit, "commit_url", commit)}')


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Mistakes end with one `error:` line and exit code 2, as in training and the report."""
    return run_cli(export_and_publish, argv)


def export_and_publish(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.out and not args.repo_id:
        parser.error('give --out DIR to export, --repo-id org/name to publish, or both')
    if args.dry_run and not args.repo_id:
        parser.error('--dry-run needs --repo-id (it shows what would be uploaded there)')
    if args.repo_id:  # fail on these before minutes of export work
        check_repo_id(args.repo_id)
        if not args.dry_run:
            require_token()
    if args.out:
        publish(args, args.out)
    else:
        with tempfile.TemporaryDirectory(prefix='timm_fct_hub_') as tmp:
            publish(args, Path(tmp) / 'export')
    return 0
