"""The run folders several tests read, each made once per session by whichever xdist worker asks first (a pytest
plugin, registered by conftest.py)."""
import shutil
from pathlib import Path
from typing import Callable

import pytest

from tests.support.helpers import (
    DISTRIBUTED_ARGS, RANK_STATES_WRAPPER, REPO, SMALL_RUN_ARGS, SMALL_RUN_UMASK, free_port, run_train, torchrun,
)

TWO_NODES = ('--nnodes', '2', '--nproc-per-node', '1', '--rdzv-backend', 'c10d')


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
    """A small real training run folder (resnet18_fct_bn_cifar on the digits), made once and shared by all workers."""
    def make(folder: Path) -> None:
        result = run_train(*SMALL_RUN_ARGS, '--output', str(folder), '--experiment', 'digits', umask=SMALL_RUN_UMASK)
        if result.returncode:
            pytest.fail(f'training failed:\n{result.stdout}\n{result.stderr}')

    return made_once(tmp_path_factory, worker_id, 'small_run', make) / 'digits'


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
