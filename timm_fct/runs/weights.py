"""A training checkpoint's entries, and which of its weights to use: one vocabulary for training, the report and
the export."""
from typing import Any, Mapping

from ..errors import FctError

WEIGHT_CHOICES = ('auto', 'ema', 'raw')  # auto: the EMA weights exactly when they evaluated better
# the entries of a timm CheckpointSaver checkpoint (timm.utils.CheckpointSaver._save), the only names used for them
RAW_KEY, EMA_KEY = 'state_dict', 'state_dict_ema'
TASK_STATE_KEY, TASK_STATE_EMA_KEY = 'task_state', 'task_state_ema'
ARCH_KEY, ARGS_KEY, EPOCH_KEY, VERSION_KEY = 'arch', 'args', 'epoch', 'version'
OPTIMIZER_KEY, SAVER_KEY = 'optimizer', 'saver'


def state_key(ckpt: Mapping[str, Any], weights: str, ema_evaluated_better: bool) -> str:
    """The checkpoint entry that `weights` names."""
    if weights not in WEIGHT_CHOICES:
        raise FctError(f'weights must be one of {WEIGHT_CHOICES}, got {weights!r}')
    has_ema = EMA_KEY in ckpt
    if weights == 'ema' and not has_ema:
        raise FctError('the checkpoint has no EMA weights (train with --model-ema)')
    ema = has_ema and ema_evaluated_better if weights == 'auto' else weights == 'ema'
    return EMA_KEY if ema else RAW_KEY
