"""Test setup: register the models, and bring timm's own model test file for the installed timm.

timm's tests/test_models.py is not in the wheel; the source distribution on the package index ships it.
It is fetched with pip for exactly the installed timm version, cached under tests/upstream/ (ignored by
git), and collected like our own tests, keeping only the cases it parametrizes with our models.
"""
import csv
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import List, Optional

import pytest
import timm

import timm_fct  # noqa: F401  registers the models before timm's test file lists them
from timm_fct.models.fct import GENERIC_MODELS

REPO = Path(__file__).parent.parent
UPSTREAM_DIR = Path(__file__).parent / 'upstream'
UPSTREAM_FILE = 'test_models.py'
OUR_MODULES = ('fct', 'resnet_cifar')
DOWNLOAD_TESTS = {
    # these fetch weights from the Hugging Face Hub, which the test machines cannot reach; the ImageNet
    # backbone path is covered offline by tests/test_pretrained.py
    'test_model_inference', 'test_model_load_pretrained', 'test_model_features_pretrained',
}


def _fetch_upstream_tests() -> None:
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


def our_models(include_tags: bool = False) -> List[str]:
    return timm.list_models(module=list(OUR_MODULES), include_tags=include_tags)


def upstream_models() -> set:
    """Ours that timm's tests run on. The generic fct_bn / fct_ln build resnet50_fct_bn / _ln by default,
    the same networks, on which timm's tests run; tests/test_backbones.py covers them on other backbones."""
    return set(our_models()) - set(GENERIC_MODELS)


def pytest_configure(config: pytest.Config) -> None:
    _fetch_upstream_tests()
    if os.environ.get('PYTEST_XDIST_WORKER'):
        # one core per worker: torch's default threads on top of another worker thrash (measured 10x slower);
        # the environment variable carries the setting into the train.py / report subprocesses
        os.environ['OMP_NUM_THREADS'] = '1'
        import torch
        torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    """In timm's file keep only the cases run on our models; skip the ones that need the internet."""
    ours = upstream_models()
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
    if drop:
        config.hook.pytest_deselected(items=drop)
    # xdist hands tests out in this order: the long train.py runs go first, so no worker ends on one alone
    keep.sort(key=lambda item: FIRST.index(item.originalname) if item.originalname in FIRST else len(FIRST))
    items[:] = keep


FIRST = [  # the longest tests, longest first (durations measured with -n 2)
    'test_main_job_reaches_97_percent_on_digits_and_leaves_a_complete_run',
    'test_sigkill_then_resume_ends_like_an_uninterrupted_run_on_the_same_one_cycle',
    'test_resume_with_other_preprocessing_is_refused_and_changes_nothing',
    'test_two_gloo_processes_stay_in_sync_and_match_one_process_at_the_same_global_batch',
    'test_nan_loss_stops_within_one_log_interval_and_keeps_the_last_good_run',
    'test_sharded_evaluation_counts_every_image_once',
]


HUB_CACHE_COMMIT = '0123456789abcdef0123456789abcdef01234567'


def write_hub_cache(hf_home: Path, repo_id: str, files: dict) -> Path:
    """Lay files out as huggingface_hub's cache does after a download of repo_id at HUB_CACHE_COMMIT."""
    repo_dir = hf_home / 'hub' / ('models--' + repo_id.replace('/', '--'))
    snapshot = repo_dir / 'snapshots' / HUB_CACHE_COMMIT
    snapshot.mkdir(parents=True)
    (repo_dir / 'refs').mkdir()
    (repo_dir / 'refs' / 'main').write_text(HUB_CACHE_COMMIT)
    for name, writer in files.items():
        writer(snapshot / name)
    return snapshot


def run_offline(hf_home: Path, code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HOME=str(hf_home), HF_HUB_OFFLINE='1', HF_HUB_DISABLE_TELEMETRY='1')
    return subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=300)


def run_train(*args: str, cwd: Optional[Path] = None, timeout: int = 600, umask: Optional[int] = None,
              **env: str) -> subprocess.CompletedProcess:
    """Run train.py as a user would, in a subprocess (under `umask` when given)."""
    cmd = [sys.executable, str(REPO / 'train.py'), '--no-progress', *args]
    return subprocess.run(cmd, cwd=cwd or REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env}, preexec_fn=None if umask is None else lambda: os.umask(umask))


# a cheap setting for the tests about the training machinery, not the accuracy: the digits at their native 8 px
QUICK = ('--img-size', '8', '--model-kwargs', 'embed_dim=32', '-b', '64')


def summary_rows(run_dir: Path) -> list:
    """summary.csv as written, one dict of strings per epoch."""
    with open(run_dir / 'summary.csv', newline='') as f:
        return list(csv.DictReader(f))


# the smallest real run that has what the hub and report tests read: 2 epochs on the digits at 12 px (every
# FCT module attends over several keys), a narrow FCT head, and an EMA whose decay lets it move in 42 updates;
# trained under this umask, which the files it leaves must follow
SMALL_RUN_UMASK = 0o002
SMALL_RUN_ARGS = ('--epochs', '2', '--img-size', '12', '-b', '64', '--model-kwargs', 'embed_dim=32',
                  '--model-ema', '--model-ema-decay', '0.9')


@pytest.fixture(scope='session')
def small_run(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A small real train.py run folder (resnet18_fct_bn_cifar on the digits), made once and shared by all workers."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp() if worker_id == 'master' else tmp_path_factory.getbasetemp().parent
    run_dir = root / 'small_run' / 'digits'
    with FileLock(str(root / 'small_run.lock')):
        if not (run_dir / 'model_best.pth.tar').exists():
            result = run_train(*SMALL_RUN_ARGS, '--output', str(run_dir.parent), '--experiment', run_dir.name,
                               umask=SMALL_RUN_UMASK)
            if result.returncode:
                pytest.fail(f'train.py failed:\n{result.stdout}\n{result.stderr}')
    return run_dir
