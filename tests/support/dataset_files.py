"""Datasets the tests write, for tests that must run offline: the digits in the streaming and Hub formats timm
reads, and a small ImageFolder tree of another dataset.

webdataset: tar shards of `<key>.png` + `<key>.cls` with timm's `_info.json` (each split's shard files and
their sample counts); Hugging Face: one parquet file per split under `data/`, the layout `push_to_hub` gives,
with an Image column and a ClassLabel column.
"""
import json
from pathlib import Path
from typing import Dict, Sequence

import torch
from PIL import Image

from timm_fct.data.datasets import DigitsDataset

SPLITS = ('train', 'validation')


def write_wds_digits(root: Path, shards: Dict[str, int] = None, info: bool = True) -> Path:
    """The digits' splits as webdataset shards `digits-<split>-NNNN.tar` in root, with `_info.json` unless told."""
    import io
    import webdataset as wds

    shards = shards or {'train': 4, 'validation': 2}
    root.mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, count in shards.items():
        ds = DigitsDataset(split)
        names, lengths = [], []
        for s in range(count):
            name = f'digits-{split}-{s:04d}.tar'
            indices = range(s, len(ds), count)
            with wds.TarWriter(str(root / name)) as sink:
                for i in indices:
                    img, target = ds[i]
                    png = io.BytesIO()
                    img.save(png, format='PNG')
                    sink.write({'__key__': f'{split}{i:05d}', 'png': png.getvalue(), 'cls': target})
            names.append(name)
            lengths.append(len(indices))
        splits[split] = dict(name=split, num_samples=sum(lengths), filenames=names, shard_lengths=lengths)
    if info:
        (root / '_info.json').write_text(json.dumps({'name': 'digits', 'splits': splits}, indent=1))
    return root


def write_parquet_digits(root: Path, splits: Sequence[str] = SPLITS, columns: Sequence[str] = ('image', 'label')) -> Path:
    """The digits as a Hugging Face dataset folder: data/<split>-00000-of-00001.parquet, an image and a label column
    (named as the Hub's datasets mostly name them, or as `columns` says)."""
    import datasets

    image, label = columns
    for split in splits:
        ds = DigitsDataset(split)
        features = datasets.Features({image: datasets.Image(), label: datasets.ClassLabel(names=ds.classes)})
        table = datasets.Dataset.from_dict(
            {image: [ds[i][0] for i in range(len(ds))], label: ds.targets}, features=features)
        table.to_parquet(str(root / 'data' / f'{split}-00000-of-00001.parquet'))
    return root


def write_image_folder(root: Path, per_class: dict, size: int = 8) -> None:
    """An ImageFolder tree of two classes, dark and bright squares: root/<split>/<class>/<i>.png."""
    gen = torch.Generator().manual_seed(0)
    for split, count in per_class.items():
        for label, base in (('dark', 40), ('bright', 200)):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = (base + torch.randint(-30, 31, (size, size, 3), generator=gen)).to(torch.uint8)
                Image.fromarray(pixels.numpy()).save(folder / f'{i}.png')
