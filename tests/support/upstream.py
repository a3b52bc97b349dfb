"""timm's own model tests (its tests/test_models.py) for every model we register.

The file is not in timm's wheel; the source distribution on the package index ships it. It is fetched with
pip for exactly the installed timm version, cached under tests/upstream/ (ignored by git), and collected like
our own tests, keeping only the cases it parametrizes with a name we register (generic fct_bn / fct_ln included).
"""
import importlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType
from typing import List, Tuple

import pytest
import timm

from tests.support.helpers import our_models

UPSTREAM_DIR = Path(__file__).parents[1] / 'upstream'
UPSTREAM_FILE = 'test_models.py'
DOWNLOAD_TESTS = {
    # these fetch weights from the Hugging Face Hub, which the test machines cannot reach; the ImageNet
    # backbone path is covered offline by tests/models/test_pretrained.py
    'test_model_inference', 'test_model_load_pretrained', 'test_model_features_pretrained',
}


def fetch() -> None:
    """Write tests/upstream/test_models.py from the timm sdist of the installed version (once per version)."""
    version_file = UPSTREAM_DIR / 'TIMM_VERSION'
    target = UPSTREAM_DIR / UPSTREAM_FILE
    if target.exists() and version_file.exists() and version_file.read_text().strip() == timm.__version__:
        return
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, '-m', 'pip', 'download', '--quiet', '--no-deps', '--no-binary', ':all:',
               f'timm=={timm.__version__}', '-d', tmp]
        result = subprocess.run(cmd, capture_output=True, text=True)
        sdists = list(Path(tmp).glob('timm-*.tar.gz'))
        if result.returncode or not sdists:
            pytest.exit(f'could not fetch the timm {timm.__version__} source distribution for its model tests '
                        f'({" ".join(cmd)}):\n{result.stderr}', returncode=3)
        with tarfile.open(sdists[0]) as tar:
            member = tar.getmember(f'timm-{timm.__version__}/tests/{UPSTREAM_FILE}')
            source = tar.extractfile(member).read()
    UPSTREAM_DIR.mkdir(exist_ok=True)
    partial = target.with_suffix('.part')
    partial.write_bytes(source)
    os.replace(partial, target)
    (UPSTREAM_DIR / '__init__.py').touch()
    version_file.write_text(timm.__version__)


def select(items: List[pytest.Item]) -> Tuple[List[pytest.Item], List[pytest.Item]]:
    """(kept, dropped): in timm's file keep only the cases run on a name we register, skipping those that need the
    internet; every item of our own files is kept."""
    ours = set(our_models())
    keep, drop = [], []
    for item in items:
        if UPSTREAM_DIR not in Path(item.fspath).parents:
            keep.append(item)
            continue
        params = getattr(item, 'callspec', None)
        model_name = params.params.get('model_name') if params else None
        if not isinstance(model_name, str) or model_name.split('.')[0] not in ours:
            drop.append(item)
            continue
        if item.originalname in DOWNLOAD_TESTS:
            item.add_marker(pytest.mark.skip(reason='downloads weights from the Hugging Face Hub'))
        keep.append(item)
    return keep, drop


def contracts() -> ModuleType:
    """timm's test module itself, for the contract checks it parametrizes over names of its own choosing
    (forward_intermediates, prune_intermediate_layers), which our model tests call with ours."""
    fetch()
    return importlib.import_module('tests.upstream.test_models')
