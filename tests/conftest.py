"""Test setup: timm's own model test file for the installed timm, the slow marker, and the shared train.py runs.

Helpers live in tests/helpers.py; the `slow` marker is set here on every test that launches a process
(train.py, torchrun, a fresh Python), so `pytest -m "not slow"` is the quick loop.

timm's tests/test_models.py is not in the wheel; the source distribution on the package index ships it.
It is fetched with pip for exactly the installed timm version, cached under tests/upstream/ (ignored by
git), and collected like our own tests, keeping only the cases it parametrizes with our models.
"""
import inspect
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

if os.environ.get('ATEN_CPU_CAPABILITY'):
    # before torch is imported, which fixes the cache folder: torch.compile's on-disk cache does not key its
    # kernels on this variable, and kernels cached by a run without it gave NaN logits under
    # ATEN_CPU_CAPABILITY=avx2 (docs/development.md)
    os.environ.setdefault('TORCHINDUCTOR_CACHE_DIR', os.path.join(
        tempfile.gettempdir(), f'torchinductor-{os.environ["ATEN_CPU_CAPABILITY"]}'))

import pytest  # noqa: E402
import timm  # noqa: E402

from tests.helpers import (  # noqa: E402
    DISTRIBUTED_ARGS, RANK_STATES_WRAPPER, REPO, SMALL_RUN_ARGS, SMALL_RUN_UMASK, free_port, run_train, torchrun,
    upstream_models,
)

UPSTREAM_DIR = Path(__file__).parent / 'upstream'
UPSTREAM_FILE = 'test_models.py'
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
    for item in keep:
        if is_slow(item):
            item.add_marker(pytest.mark.slow)
    # xdist hands tests out in this order: the ones that launch train.py and other processes first, so no
    # worker ends on a long one alone
    keep.sort(key=lambda item: item.get_closest_marker('slow') is None)
    items[:] = keep


SLOW_FIXTURES = {'small_run', 'two_node_run', 'digits_run', 'table1_run'}  # session fixtures that run train.py
# what makes a test slow: it starts a process (train.py, torchrun, a fresh Python), trains in-process, or compiles
SLOW_CALLS = ('run_train(', 'run_reproduce(', 'run_offline(', 'torchrun(', 'subprocess.', 'torch.multiprocessing',
              'mp.spawn', 'train.main(', 'train.train_command(', 'torch.compile(')


def _sources(function: Callable, namespace: Dict[str, Any], depth: int = 3) -> Iterator[str]:
    """The source of `function` and of the functions of its test module it names, `depth` calls deep."""
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return
    yield source
    if depth:
        for name, value in namespace.items():
            if inspect.isfunction(value) and value is not function and f'{name}(' in source \
                    and value.__module__ == function.__module__:
                yield from _sources(value, namespace, depth - 1)


def is_slow(item: pytest.Item) -> bool:
    """A test is slow when it, a fixture it uses or a helper of its module does something in SLOW_CALLS."""
    if SLOW_FIXTURES & set(getattr(item, 'fixturenames', ())):
        return True
    function = getattr(item, 'function', None)
    if function is None:
        return False
    functions = [function] + [d.func for defs in item._fixtureinfo.name2fixturedefs.values() for d in defs
                              if d.func.__module__ == function.__module__]
    namespace = vars(item.module)
    return any(call in source for f in functions for source in _sources(f, namespace) for call in SLOW_CALLS)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: Optional[pytest.Item]) -> Iterator[None]:
    """The quick loop's promise, kept: a test not marked slow that starts a process fails, naming the fix."""
    if item.get_closest_marker('slow'):
        yield
        return
    execute_child = subprocess.Popen._execute_child

    def refuse(self, args, *rest, **kwargs):
        raise AssertionError(f'{item.nodeid} starts a process ({args}) but is not marked slow: add what it '
                             f'calls to SLOW_CALLS in tests/conftest.py, or mark it @pytest.mark.slow')
    subprocess.Popen._execute_child = refuse
    try:
        yield
    finally:
        subprocess.Popen._execute_child = execute_child


def made_once(tmp_path_factory: pytest.TempPathFactory, worker_id: str, name: str,
              make: Callable[[Path], None]) -> Path:
    """A folder that `make` fills once per session, in whichever xdist worker asks first, shared by all."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp() if worker_id == 'master' else tmp_path_factory.getbasetemp().parent
    folder, done = root / name, root / f'{name}.done'
    with FileLock(str(root / f'{name}.lock')):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # what a failed attempt left
            folder.mkdir()
            make(folder)
            done.touch()
    return folder


@pytest.fixture(scope='session')
def small_run(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A small real train.py run folder (resnet18_fct_bn_cifar on the digits), made once and shared by all workers."""
    def make(folder: Path) -> None:
        result = run_train(*SMALL_RUN_ARGS, '--output', str(folder), '--experiment', 'digits', umask=SMALL_RUN_UMASK)
        if result.returncode:
            pytest.fail(f'train.py failed:\n{result.stdout}\n{result.stderr}')

    return made_once(tmp_path_factory, worker_id, 'small_run', make) / 'digits'


TWO_NODES = ('--nnodes', '2', '--nproc-per-node', '1', '--rdzv-backend', 'c10d')


@pytest.fixture(scope='session')
def two_node_run(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """DISTRIBUTED_ARGS trained by torchrun started twice on this machine, two 'nodes' of one process each meeting at
    a c10d rendezvous, as on a cluster: the run folder `run`, and each rank's final parameters in rank<R>.pt beside
    it."""
    def make(folder: Path) -> None:
        wrapper = folder / 'ddp_train.py'
        wrapper.write_text(RANK_STATES_WRAPPER.format(repo=str(REPO), out=str(folder)))
        endpoint = f'localhost:{free_port()}'
        nodes = [torchrun(*TWO_NODES, '--rdzv-endpoint', endpoint, str(wrapper), '--no-progress', *DISTRIBUTED_ARGS,
                          '-b', '64', '--output', str(folder), '--experiment', 'run') for _ in range(2)]
        for node in nodes:
            out, err = node.communicate(timeout=900)
            if node.returncode:
                pytest.fail(f'a torchrun node failed:\n{out}\n{err[-3000:]}')

    return made_once(tmp_path_factory, worker_id, 'two_node_run', make)
