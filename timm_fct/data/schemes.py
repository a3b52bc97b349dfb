"""timm's reader-backed datasets (hfds/, hfids/, wds/, tfds/), created by timm's create_dataset with the meaning
timm's train.py gives each name, and their mistakes turned into one clear line.

The streaming ones (hfids/, wds/, tfds/) are IterableDatasets: timm's readers shard them by process and loader
worker and announce each worker's sample count up front (rounded up to whole batches in training), which is
what an epoch's number of updates, the one-cycle schedule and the progress bar are computed from.
"""
import importlib.util
from pathlib import Path
from typing import List, Optional

from timm.data import create_dataset
from torch.utils.data import Dataset, IterableDataset

from ..errors import FctError

EXTRA = 'data'  # the pyproject extra that installs the libraries of hfds/, hfids/ and wds/
INSTALL_EXTRA = f"pip install 'timm-fct[{EXTRA}]'"
# each scheme: the Python modules it needs, and how to install them
LIBRARIES = {
    'hfds': (('datasets',), INSTALL_EXTRA),
    'hfids': (('datasets',), INSTALL_EXTRA),
    'wds': (('webdataset',), INSTALL_EXTRA),
    'tfds': (('tensorflow', 'tensorflow_datasets'), 'pip install tensorflow tensorflow-datasets (not tested here)'),
}
SCHEMES = tuple(LIBRARIES)
WDS_INFO_FILES = ('_info.json', 'info.json')  # where timm's wds reader looks for the splits' shards and counts


def scheme(name: str) -> str:
    """The part before the first '/', lower-cased as timm reads it; '' for names without one."""
    prefix, sep, _ = name.partition('/')
    return prefix.lower() if sep else ''


def is_streaming(dataset: Dataset) -> bool:
    return isinstance(dataset, IterableDataset)


def build_scheme_dataset(
        name: str,
        data_dir: Optional[str],
        split: str,
        download: bool = False,
        is_training: bool = False,
        batch_size: int = 1,
        seed: int = 42,
        num_samples: Optional[int] = None,
        input_key: Optional[str] = None,
        target_key: Optional[str] = None,
) -> Dataset:
    """One split of a hfds/, hfids/, wds/ or tfds/ dataset through timm's create_dataset (None: timm's default)."""
    kind = scheme(name)
    modules, install = LIBRARIES[kind]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise FctError(f'{kind}/ datasets need {", ".join(missing)}: {install}')
    if kind == 'wds':
        _check_wds_root(data_dir, split)
    if kind == 'hfids':
        _check_hfids_split(name, data_dir, split)
    try:
        dataset = create_dataset(name, root=data_dir, split=split, download=download, is_training=is_training,
                                 batch_size=batch_size, seed=seed, num_samples=num_samples, input_key=input_key,
                                 target_key=target_key)
    except (RuntimeError, ValueError, KeyError, FileNotFoundError, ConnectionError) as e:
        raise FctError(f'{name} split {split!r}{f" in {data_dir}" if data_dir else ""}: {_first_line(e)}'
                       f'{_hint(kind, e)}') from None
    return dataset


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _hint(kind: str, error: Exception) -> str:
    """What to do about the errors timm's readers raise in their own words."""
    text = str(error)
    if 'num_samples' in text:
        return ("; give the split's number of samples (training: --train-num-samples / --val-num-samples, the "
                'report: --num-samples)' +
                (' (or --dataset-download to prepare it, which counts them)' if kind == 'hfids' else ''))
    return ''


def _check_wds_root(data_dir: Optional[str], split: str) -> None:
    """A local shard folder must exist and, unless the split names its shards, hold timm's info file."""
    if not data_dir:
        raise FctError('wds/ datasets need --data-dir: the folder (or URL) holding the shards and _info.json')
    if '://' in data_dir:  # object storage or HTTP: timm's reader opens it through webdataset, unchecked here
        return
    root = Path(data_dir)
    if not root.is_dir():
        raise FctError(f'data folder {root} does not exist')
    names_shards = 'tar' in split or '..' in split  # timm's test for a brace-expanded shard pattern
    if not names_shards and not any((root / n).is_file() for n in WDS_INFO_FILES):
        raise FctError(f"{root} has no {' or '.join(WDS_INFO_FILES)}: timm's wds reader takes each split's shard "
                       f"files and sample counts from it (or name the shards in the split, e.g. "
                       f"--train-split 'NAME-train-{{0000..0009}}.tar|COUNT')")


def _check_hfids_split(name: str, data_dir: Optional[str], split: str) -> None:
    """timm's streaming reader finds a missing split only when the first epoch starts; refuse it up front."""
    import datasets

    try:
        builder = datasets.load_dataset_builder(name.partition('/')[2], cache_dir=data_dir)
    except (ValueError, FileNotFoundError, ConnectionError) as e:
        raise FctError(f'{name}: {_first_line(e)}') from None
    data_files = getattr(builder.config, 'data_files', None) or {}
    if data_files and split not in data_files:
        raise FctError(f'{name} has no split {split!r} (it has {", ".join(map(repr, data_files))})')


def check_streaming_shards(dataset: Dataset, world_size: int, workers: int) -> None:
    """timm's wds reader hands whole shards to each (process, loader worker): one without a shard would end its
    epoch early and leave the other processes waiting."""
    from timm.data.readers.reader_wds import ReaderWds

    reader = getattr(dataset, 'reader', None)
    if not isinstance(reader, ReaderWds):
        return
    filenames = reader.split_info.filenames
    if len(filenames) < world_size * max(1, workers):
        raise FctError(f'{len(filenames)} shards cannot feed {world_size} processes x {max(1, workers)} loader '
                       f'workers: each reads whole shards; use fewer workers (-j) or more shards')


def hfids_class_names(dataset: Dataset) -> List[str]:
    """A streamed Hugging Face dataset's ClassLabel names, which timm's reader learns only when it was prepared
    (--dataset-download): read from the stream's features (the parquet files' metadata, no example decoded)."""
    reader = getattr(dataset, 'reader', None)
    if type(reader).__name__ != 'ReaderHfids':
        return []
    features = reader.builder.as_streaming_dataset(split=reader.split).features or {}
    return list(getattr(features.get(reader.target_key), 'names', None) or [])
