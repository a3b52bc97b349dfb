"""A train.py run as a Hugging Face Hub model repository, and a published repository as a timm tag.

The export is the run's timm model files (config.json and model.safetensors, written by RunFolder as
train.py writes them into the run folder, with the weights chosen by --weights), the run's plots, and a
model card made with huggingface_hub's ModelCard, so `timm.create_model('hf-hub:org/name', pretrained=True)`
and `'local-dir:PATH'` rebuild the trained model once timm_fct is imported. Publishing sends that folder
as one commit with `HfApi.upload_folder`; every check that can be made locally is made before the first
network call.
"""
import shutil
import sys
import warnings
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple, Union

import timm
from huggingface_hub import HfApi, ModelCard, ModelCardData, get_token
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from safetensors import SafetensorError
from safetensors.torch import load_file
from timm.models import get_arch_pretrained_cfgs, model_entrypoint, register_model

from . import __version__
from .runs import RunError, RunFolder, TrainedRun, load_run, load_state, replace_when_done

CARD = 'README.md'
PLOT_CAPTIONS = {RunFolder.ACCURACY_PLOT: 'Accuracy per epoch',
                 RunFolder.CONFUSION_PLOT: 'Confusion matrix on the evaluation split'}
LICENSE = 'apache-2.0'
TAGS = ['image-classification', 'timm', 'timm-fct', 'fully-convolutional-transformer']
PAPER = ('Learning to Pay Multiple Attention with Fully Convolutional Transformers',
         'Mensah, Bah and Brink')
MAX_LABELS_SHOWN = 20
NO_TOKEN = 'no Hugging Face token: set HF_TOKEN or run `hf auth login`'


class HubError(RunError):
    """An export, a repo id or a publish that cannot go ahead; the message names the cause."""


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
        raise HubError(f'{out} already exists: remove it or choose another --out')
    trained = load_run(run, weights)
    plots = trained.folder.card_plots(report_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    with replace_when_done(out) as tmp:
        tmp.mkdir()
        write_export(trained, tmp, plots, repo_id)
        validate_export(tmp)
    return out


def write_export(trained: TrainedRun, folder: Path, plots: List[Path], repo_id: Optional[str]) -> None:
    """The run's timm model files with the chosen weights, then the plots and the model card."""
    model_files = RunFolder(folder)
    model_files.write_config(trained.model, trained.info.label_names, trained.info.data_config)
    model_files.write_weights(trained.model.state_dict())
    for plot in plots:
        shutil.copyfile(plot, folder / plot.name)
    model_card(trained, [p.name for p in plots], repo_id).save(folder / CARD)


def validate_export(folder: Union[str, Path]) -> None:
    """Check that model.safetensors is exactly what config.json builds, as timm will build it when loading."""
    folder = Path(folder)
    config, weights = folder / RunFolder.CONFIG, folder / RunFolder.WEIGHTS
    for path in (config, weights):
        if not path.is_file():
            raise HubError(f'{folder} is not an exported model: {path.name} is missing')
    try:
        model = timm.create_model(f'local-dir:{folder}')
    except (ValueError, KeyError, TypeError, RuntimeError) as e:  # unparsable, incomplete, unknown architecture
        raise HubError(f'{config} does not build a timm model: {type(e).__name__}: {e}') from None
    try:
        state_dict = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise HubError(f'{weights} cannot be read (truncated or not safetensors): {e}') from None
    try:
        load_state(model, state_dict, str(weights))
    except RunError as e:
        raise HubError(f'{weights.name} does not match {config.name} (architecture '
                       f'{model.pretrained_cfg["architecture"]}): {e}') from None


def model_card(trained: TrainedRun, plots: List[str], repo_id: Optional[str]) -> ModelCard:
    """The README.md of the Hub repo: metadata through ModelCardData, the text filled from the run."""
    info = trained.info
    entrypoint_doc = (model_entrypoint(info.model).__doc__ or '').strip().splitlines()
    card_data = ModelCardData(library_name='timm', license=LICENSE, pipeline_tag='image-classification', tags=TAGS)
    return ModelCard.from_template(
        card_data,
        template_str=CARD_TEMPLATE,
        title=repo_id.split('/')[-1] if repo_id else info.model,
        architecture=info.model,
        summary=entrypoint_doc[0] if entrypoint_doc else info.model,
        dataset=info.dataset or 'an unnamed dataset',
        num_classes=info.num_classes,
        paper_title=PAPER[0],
        paper_authors=PAPER[1],
        training=training_section(trained),
        metrics=metrics_section(trained),
        plots=''.join(f'\n![{PLOT_CAPTIONS[name]}]({name})\n' for name in plots),
        repo_id=repo_id or '<org>/<name>',
    )


CARD_TEMPLATE = """---
{{ card_data }}
---
# {{ title }}

`{{ architecture }}`: {{ summary }} Trained on {{ dataset }} ({{ num_classes }} classes) with
timm-fct, the timm plugin for Fully Convolutional Transformer (FCT) heads on ResNets.

The architecture is from *{{ paper_title }}* ({{ paper_authors }}): intermediate ResNet feature maps, each
added to the global image descriptor, go through FCT modules (convolutional multi-head self-attention
and a focus layer), and the concatenation of their pooled outputs is classified.

## Training configuration
{{ training }}
## Metrics
{{ metrics }}{{ plots }}
## Usage

Install timm and timm-fct; importing `timm_fct` registers the FCT models with timm.

```python
import timm
import timm_fct  # noqa: F401  registers the FCT architectures
import torch
from PIL import Image

model = timm.create_model('hf-hub:{{ repo_id }}', pretrained=True).eval()
config = timm.data.resolve_data_config({}, model=model)
transform = timm.data.create_transform(**config)
labels = model.pretrained_cfg['label_names']

image = Image.open('image.png').convert('RGB')
with torch.no_grad():
    probs = model(transform(image).unsqueeze(0)).softmax(-1)[0]
print(labels[int(probs.argmax())], float(probs.max()))
```

A downloaded copy of this repository loads the same way with `timm.create_model('local-dir:PATH', pretrained=True)`.

## Citation

{{ paper_authors }}, *{{ paper_title }}*.

## License

{{ license }}
"""


def training_section(trained: TrainedRun) -> str:
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
        ('Published weights', f"{'EMA' if trained.ema else 'raw'} weights of `{trained.checkpoint.name}`"
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


def metrics_section(trained: TrainedRun) -> str:
    """Best and last top-1/top-5 of the raw and (when trained) EMA weights, from the run's summary."""
    epochs = len(trained.folder.summary())
    if not epochs:
        return '\nThe run has no summary, so no evaluation metrics were recorded.\n'
    lines = ['', '| Weights | Best top-1 | Best top-5 | Last top-1 | Last top-5 |', '|---|---|---|---|---|']
    for label, is_ema in (('raw', False), ('EMA', True)):
        accuracy = trained.folder.accuracy(ema=is_ema)
        if accuracy:
            name = f'{label} (published)' if is_ema == trained.ema else label
            cells = ['-' if v is None else f'{v:.2f}' for v in accuracy.values()]
            lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
    lines.append(f'\nTop-1 / top-5 accuracy (%) on the evaluation split, over the {epochs} epoch(s) recorded.\n')
    return '\n'.join(lines)


def check_repo_id(repo_id: str) -> None:
    """Refuse anything but 'org/name' with the Hub's own rules, before any work or network call."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise HubError(f'malformed repo id {repo_id!r}: {e}') from None
    if repo_id.count('/') != 1:
        raise HubError(f"malformed repo id {repo_id!r}: expected 'org/name' (the owner, a slash, the model name)")


def require_token() -> str:
    """The token huggingface_hub would use (HF_TOKEN or the saved login); never shown or stored by us."""
    token = get_token()
    if not token:
        raise HubError(NO_TOKEN)
    return token


def upload_plan(folder: Union[str, Path]) -> List[Tuple[str, int]]:
    """(path in repo, size in bytes) of every file an upload of `folder` sends."""
    folder = Path(folder)
    return [(p.name, p.stat().st_size) for p in sorted(folder.iterdir()) if p.is_file()]


def commit_message_for(folder: Union[str, Path]) -> str:
    return f'Add {RunFolder(folder).info().model} weights trained with timm-fct {__version__}'


@contextmanager
def _hub_call(repo_id: str) -> Iterator[None]:
    """Turn a network or Hub failure into one HubError naming the repo; the token is never part of it."""
    try:
        yield
    except Exception as e:  # huggingface_hub raises HTTP, connection and offline errors of several types
        raise HubError(f'publishing to {repo_id} failed: {type(e).__name__}: {e}') from e


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
        raise HubError(f'{repo_id} already has a model card ({CARD}); pass --overwrite-card to replace it')
    with _hub_call(repo_id):
        api.create_repo(repo_id, exist_ok=True, private=private)
        return api.upload_folder(repo_id=repo_id, folder_path=folder,
                                 commit_message=commit_message or commit_message_for(folder))


def register_pretrained_tag(model_name: str, tag: str, hf_hub_id: str, **cfg: Any) -> str:
    """Make `model_name.tag` load the weights published at `hf_hub_id`, as a default_cfgs entry would.

    For repos not (yet) listed in the model module's generate_default_cfgs. The new cfg starts from the
    model's default one; `cfg` overrides its fields (num_classes, mean, std, input_size, label_names...).
    The tag is added to the module's default_cfgs and the model registered again with timm's register_model,
    the public call that reads them. Returns the tagged name, e.g. 'resnet18_fct_bn_cifar.digits'.
    """
    if not timm.is_model(model_name):
        raise HubError(f'unknown model {model_name!r}: import timm_fct first, or check the name')
    check_repo_id(hf_hub_id)
    name = f'{model_name}.{tag}'
    if name in get_arch_pretrained_cfgs(model_name):
        raise HubError(f'{name} is already registered')
    entrypoint = model_entrypoint(model_name)
    default_cfg = getattr(sys.modules[entrypoint.__module__], 'default_cfgs', {}).get(model_name)
    if default_cfg is None:
        raise HubError(f'{model_name} has no default_cfgs entry in {entrypoint.__module__} to add a tag to')
    default_cfg.cfgs[tag] = replace(timm.get_pretrained_cfg(model_name), hf_hub_id=hf_hub_id, hf_hub_filename=None,
                                    url=None, file=None, source=None, **cfg)
    default_cfg.tags.append(tag)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # register_model warns that it replaces the existing registration
        register_model(entrypoint)
    return name
