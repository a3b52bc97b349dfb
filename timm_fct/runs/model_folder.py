"""The one writer of a timm model folder: config.json and model.safetensors as timm's `save_for_hf` writes them.

Training writes one into every run folder, the Hub export writes one for the chosen weights, and
`timm.create_model('local-dir:PATH', pretrained=True)` (or 'hf-hub:' once pushed) reads it back, as does
transformers' `AutoModelForImageClassification.from_pretrained(PATH)` (TimmWrapper) once timm_fct is imported.
"""
import copy
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn
from timm.models import clean_state_dict
from timm.models._hub import save_for_hf

from .files import umask_mode

CONFIG = 'config.json'  # architecture, model_args, label_names, pretrained_cfg with the training preprocessing
WEIGHTS = 'model.safetensors'


def write_model_folder(
        folder: Union[str, Path],
        model: nn.Module,
        label_names: Sequence[str],
        data_config: Mapping[str, Any],
        state_dict: Optional[Mapping[str, torch.Tensor]] = None,
) -> None:
    """Write config.json and model.safetensors of `model` (with `state_dict` in place of its own) into `folder`.

    save_for_hf writes into a temporary folder; each file is then renamed into place, so a reader sees
    the old file or the new one, never half of one. Weights are saved in the standard layout (safetensors
    refuses channels_last tensors), and files get the umask's permissions (safetensors makes them 0600).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if state_dict is not None or _has_strided_weights(model):
        model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
        if state_dict is not None:
            model.load_state_dict(clean_state_dict(dict(state_dict)))
    mode = umask_mode()
    with tempfile.TemporaryDirectory(dir=folder, prefix='.model_folder.') as tmp:
        save_for_hf(model, tmp, model_config={'label_names': list(label_names)}, safe_serialization=True,
                    data_config=dict(data_config))
        _num_classes_at_root_only(Path(tmp) / CONFIG)
        for name in (WEIGHTS, CONFIG):
            os.chmod(Path(tmp) / name, mode)
            os.replace(Path(tmp) / name, folder / name)


def _has_strided_weights(model: nn.Module) -> bool:
    return any(not t.is_contiguous() for t in model.state_dict().values())


def _num_classes_at_root_only(config: Path) -> None:
    """timm writes num_classes both at the root and in model_args; transformers' TimmWrapper passes both to
    timm.create_model and fails ('multiple values for num_classes', any timm model, transformers 5.24). timm
    reads the root's, so the copy in model_args goes, and the folder loads in both libraries."""
    data = json.loads(config.read_text())
    data.get('model_args', {}).pop('num_classes', None)
    config.write_text(json.dumps(data, indent=2) + '\n')
