"""A training run as a Hugging Face Hub model repository.

The export is the run's timm model folder (runs/model_folder.py, as training writes it into the run
folder, with the weights chosen by --weights), the run's plots, and a model card rendered by
huggingface_hub's ModelCard from templates/model_card.md, so `timm.create_model('hf-hub:org/name', pretrained=True)`
and `'local-dir:PATH'` rebuild the trained model once timm_fct is imported. Publishing sends that folder
as one commit with `HfApi.upload_folder`; every check that can be made locally is made before the first
network call.
"""
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple, Union

import timm
from huggingface_hub import HfApi, ModelCard, ModelCardData, get_token
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from safetensors import SafetensorError
from safetensors.torch import load_file
from timm.models import model_entrypoint

from .. import __version__
from ..errors import FctError
from ..models.fct import PAPER_AUTHORS, PAPER_NAME
from ..report.layout import CONFUSION_PNG
from ..runs.files import replace_when_done
from ..runs.folder import RunFolder
from ..runs.load import LoadedModel, load_model, load_state
from ..runs.model_folder import write_model_folder

CARD = 'README.md'
CARD_TEMPLATE = Path(__file__).parent / 'templates' / 'model_card.md'
PLOT_CAPTIONS = {RunFolder.ACCURACY_PLOT: 'Accuracy per epoch', CONFUSION_PNG: 'Confusion matrix on the evaluation split'}
DEFAULT_LICENSE = 'apache-2.0'  # for a model whose pretrained_cfg names none, as timm's own model cards do
TAGS = ['image-classification', 'timm', 'timm-fct', 'fully-convolutional-transformer']
MAX_LABELS_SHOWN = 20
NO_TOKEN = 'no Hugging Face token: set HF_TOKEN or run `hf auth login`'


def export(
        run: Union[str, Path],
        out: Union[str, Path],
        weights: str = 'auto',
        report_dir: Optional[Union[str, Path]] = None,
        repo_id: Optional[str] = None,
) -> Path:
    """Write the Hub folder for a run at `out`, whole or not at all.

    Everything is written and validated in a hidden sibling folder, which is then renamed into place,
    so an interrupted or failed export never leaves a folder that looks usable.
    """
    out = Path(out)
    if out.exists():
        raise FctError(f'{out} already exists: remove it or choose another --out')
    trained = load_model(run, weights)
    if trained.folder is None:
        raise FctError(f'{run} is not a training run or checkpoint: the export publishes a run folder')
    plots = card_plots(trained.folder, report_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with replace_when_done(out) as tmp:
        tmp.mkdir()
        write_export(trained, tmp, plots, repo_id)
        validate_export(tmp)
    return out


def card_plots(run: RunFolder, report_dir: Optional[Union[str, Path]] = None) -> List[Path]:
    """The plots a model card shows, from the run and a report folder (searched first) when given."""
    if report_dir and not Path(report_dir).is_dir():
        raise FctError(f'report folder {report_dir} does not exist')
    folders = ([Path(report_dir)] if report_dir else []) + [run.path]
    found = (next((f / name for f in folders if (f / name).is_file()), None) for name in PLOT_CAPTIONS)
    return [path for path in found if path]


def write_export(trained: LoadedModel, folder: Path, plots: List[Path], repo_id: Optional[str]) -> None:
    """The run's timm model folder with the chosen weights, then the plots and the model card."""
    write_model_folder(folder, trained.model, trained.info.label_names, trained.info.data_config)
    for plot in plots:
        shutil.copyfile(plot, folder / plot.name)
    model_card(trained, [p.name for p in plots], repo_id).save(folder / CARD)


def validate_export(folder: Union[str, Path]) -> None:
    """Load the folder as a user will, `timm.create_model('local-dir:FOLDER', pretrained=True)`: config.json
    must build a model and model.safetensors must be exactly its weights."""
    folder = Path(folder)
    config, weights = folder / RunFolder.CONFIG, folder / RunFolder.WEIGHTS
    for path in (config, weights):
        if not path.is_file():
            raise FctError(f'{folder} is not an exported model: {path.name} is missing')
    try:
        model = timm.create_model(f'local-dir:{folder}')
    except (ValueError, KeyError, TypeError, RuntimeError) as e:  # unparsable, incomplete, unknown architecture
        raise FctError(f'{config} does not build a timm model: {type(e).__name__}: {e}') from None
    mismatch = f'{weights.name} does not match {config.name} (architecture {model.pretrained_cfg["architecture"]})'
    try:
        model = timm.create_model(f'local-dir:{folder}', pretrained=True)
        # timm keeps a fresh classifier, silently, when config.json's num_classes differs from the weights': the
        # export must hold exactly the model's weights, so they are loaded again, strictly
        load_state(model, load_file(str(weights)), str(weights))
    except (SafetensorError, OSError) as e:
        raise FctError(f'{weights} cannot be read (truncated or not safetensors): {e}') from None
    except (RuntimeError, FctError) as e:  # missing, unexpected or mis-shaped tensors
        raise FctError(f'{mismatch}: {e}') from None


def model_card(trained: LoadedModel, plots: List[str], repo_id: Optional[str]) -> ModelCard:
    """The README.md of the Hub repo: metadata through ModelCardData, the text filled from the run."""
    info = trained.info
    entrypoint_doc = (model_entrypoint(info.model).__doc__ or '').strip().splitlines()
    cfg = trained.model.pretrained_cfg  # the paper and licence, read as timm's model cards read them
    paper = cfg.get('paper_name')
    card_data = ModelCardData(library_name='timm', license=cfg.get('license') or DEFAULT_LICENSE, pipeline_tag='image-classification', tags=TAGS)
    return ModelCard.from_template(
        card_data,
        template_path=str(CARD_TEMPLATE),
        title=repo_id.split('/')[-1] if repo_id else info.model,
        architecture=info.model,
        summary=entrypoint_doc[0] if entrypoint_doc else info.model,
        dataset=info.dataset or 'an unnamed dataset',
        num_classes=info.num_classes,
        paper_title=paper,
        paper_authors=PAPER_AUTHORS if paper == PAPER_NAME else None,
        training=training_section(trained),
        metrics=metrics_section(trained),
        plots=''.join(f'\n![{PLOT_CAPTIONS[name]}]({name})\n' for name in plots),
        repo_id=repo_id or '<org>/<name>',
    )


def training_section(trained: LoadedModel) -> str:
    """What the run was: data, preprocessing, model arguments, and the full args.yaml when present."""
    info = trained.info
    cfg = info.data_config
    rows = [
        ('Architecture', f'`{info.model}`'),
        ('Model arguments', f'`{info.model_args}`' if info.model_args else 'defaults'),
        ('Dataset', info.dataset or 'not recorded'),
        ('Classes', f'{info.num_classes}: ' + ', '.join(str(n) for n in info.label_names[:MAX_LABELS_SHOWN])
                    + (', ...' if len(info.label_names) > MAX_LABELS_SHOWN else '')),
        ('Input size', ' x '.join(str(s) for s in cfg.get('input_size') or ()) or 'not recorded'),
        ('Normalisation', f"mean {_floats(cfg.get('mean'))}, std {_floats(cfg.get('std'))}"),
        ('Crop / interpolation', f"crop_pct {cfg.get('crop_pct')}, {cfg.get('interpolation')}"),
        ('Epochs', str(len(trained.folder.summary()) or 'not recorded')),
        ('Published weights', f"{'EMA' if trained.weights == 'ema' else 'raw'} weights of `{trained.checkpoint.name}`"
                              + (f' (epoch {trained.epoch})' if trained.epoch is not None else '')),
    ]
    text = '\n| Setting | Value |\n|---|---|\n' + ''.join(f'| {k} | {v} |\n' for k, v in rows)
    args = trained.folder.args_text().rstrip()
    if args:
        text += (f'\n<details><summary>All training arguments ({RunFolder.ARGS})</summary>\n\n```yaml\n'
                 f'{args}\n```\n</details>\n')
    return text


def _floats(values: Optional[Any]) -> str:
    return '(' + ', '.join(f'{v:.4f}' for v in values) + ')' if values else 'not recorded'


def metrics_section(trained: LoadedModel) -> str:
    """Best and last top-1/top-5 of the raw and (when trained) EMA weights, from the run's summary."""
    epochs = len(trained.folder.summary())
    if not epochs:
        return '\nThe run has no summary, so no evaluation metrics were recorded.\n'
    lines = ['', '| Weights | Best top-1 | Best top-5 | Last top-1 | Last top-5 |', '|---|---|---|---|---|']
    for label, is_ema in (('raw', False), ('EMA', True)):
        accuracy = trained.folder.accuracy(ema=is_ema)
        if accuracy:
            name = f'{label} (published)' if is_ema == (trained.weights == 'ema') else label
            cells = ['-' if accuracy[k] is None else f'{accuracy[k]:.2f}'
                     for k in ('best_top1', 'best_top5', 'last_top1', 'last_top5')]
            lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    lines.append(f'\nTop-1 / top-5 accuracy (%) on the evaluation split, over the {epochs} epoch(s) recorded. '
                 f'The best epoch, and so the published checkpoint, was chosen on this same split, so the best '
                 f'columns are biased upwards; the last epoch\'s involve no such choice.\n')
    return '\n'.join(lines)


def check_repo_id(repo_id: str) -> None:
    """Refuse anything but 'org/name' with the Hub's own rules, before any work or network call."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise FctError(f'malformed repo id {repo_id!r}: {e}') from None
    if repo_id.count('/') != 1:
        raise FctError(f"malformed repo id {repo_id!r}: expected 'org/name' (the owner, a slash, the model name)")


def require_token() -> str:
    """The token huggingface_hub would use (HF_TOKEN or the saved login); never shown or stored by us."""
    token = get_token()
    if not token:
        raise FctError(NO_TOKEN)
    return token


def upload_plan(folder: Union[str, Path]) -> List[Tuple[str, int]]:
    """(path in repo, size in bytes) of every file an upload of `folder` sends."""
    folder = Path(folder)
    return [(p.name, p.stat().st_size) for p in sorted(folder.iterdir()) if p.is_file()]


def commit_message_for(folder: Union[str, Path]) -> str:
    return f'Add {RunFolder(folder).info().model} weights trained with timm-fct {__version__}'


@contextmanager
def _hub_call(repo_id: str) -> Iterator[None]:
    """Turn a network or Hub failure into one FctError naming the repo; the token is never part of it."""
    try:
        yield
    except Exception as e:  # huggingface_hub raises HTTP, connection and offline errors of several types
        raise FctError(f'publishing to {repo_id} failed: {type(e).__name__}: {e}') from e


def push(
        folder: Union[str, Path],
        repo_id: str,
        overwrite_card: bool = False,
        private: bool = False,
        commit_message: Optional[str] = None,
) -> Any:
    """Upload an exported folder to `repo_id` as one commit, creating the repo if needed.

    Refuses, before anything is sent, a malformed repo id, a folder whose weights do not match its config,
    a missing token, and a repo that already has a model card unless `overwrite_card`.
    """
    folder = Path(folder)
    check_repo_id(repo_id)
    validate_export(folder)
    api = HfApi(token=require_token(), library_name='timm_fct', library_version=__version__)
    with _hub_call(repo_id):
        has_card = api.file_exists(repo_id, CARD)
    if has_card and not overwrite_card:
        raise FctError(f'{repo_id} already has a model card ({CARD}); pass --overwrite-card to replace it')
    with _hub_call(repo_id):
        api.create_repo(repo_id, exist_ok=True, private=private)
        return api.upload_folder(repo_id=repo_id, folder_path=folder,
                                 commit_message=commit_message or commit_message_for(folder))
