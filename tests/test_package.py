"""The plugin as users get it: the wheel alone, unpacked outside the checkout, trains the main job and exports the run.

Only the files the wheel is built from are copied out (pyproject.toml, README.md, LICENSE, timm_fct/), so a module,
config or template the package needs but the wheel leaves out fails here; the checkout is never on sys.path.
"""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.support.helpers import REPO

SOURCES = ('pyproject.toml', 'README.md', 'LICENSE', 'timm_fct')


def build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / 'source'
    source.mkdir()
    for name in SOURCES:
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, source / name, **({'ignore': shutil.ignore_patterns('__pycache__')}
                                            if (REPO / name).is_dir() else {}))
    result = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '--quiet',
                             '-w', str(tmp_path / 'dist'), str(source)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    wheel, = (tmp_path / 'dist').glob('timm_fct-*.whl')
    return wheel


def test_the_wheel_alone_trains_the_main_job_and_exports_it(tmp_path):
    site = tmp_path / 'site'
    with zipfile.ZipFile(build_wheel(tmp_path)) as wheel:
        wheel.extractall(site)
        assert {n for n in wheel.namelist() if n.startswith('timm_fct/configs/')} == {
            f'timm_fct/configs/{p.name}' for p in (REPO / 'timm_fct' / 'configs').glob('*.yaml')}
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    env = {**os.environ, 'PYTHONPATH': str(site)}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=elsewhere, env=env, capture_output=True, text=True,
                              timeout=1200)

    where = run('-c', 'import sys, timm_fct, timm_fct.train.args as a; print(timm_fct.__file__); '
                      f'print(a.config_path("cifar10_resnet50_fct_bn")); print({str(REPO)!r} in sys.path)')
    assert where.returncode == 0, where.stderr[-3000:]
    module, config, checkout_on_path = where.stdout.split()
    assert module.startswith(str(site)) and config.startswith(str(site)) and checkout_on_path == 'False'

    trained = run('-m', 'timm_fct.train', '--epochs', '1', '--img-size', '8', '-b', '64', '--model-kwargs',
                  'embed_dim=32', '--no-progress', '--output', 'runs', '--experiment', 'main')
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert 'epoch 1/1' in trained.stdout and (elsewhere / 'runs' / 'main' / 'model.safetensors').is_file()

    exported = run('-m', 'timm_fct.export', 'runs/main', '--out', 'export')
    assert exported.returncode == 0, exported.stderr[-3000:]
    loaded = run('-c', 'import timm, timm_fct; m = timm.create_model("local-dir:export", pretrained=True); '
                       'print(type(m).__name__, m.num_classes)')
    assert loaded.returncode == 0 and loaded.stdout.split() == ['FctNet', '10'], loaded.stderr[-3000:]
