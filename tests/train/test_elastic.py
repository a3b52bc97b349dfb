"""The start-up of a distributed training run (timm_fct/train/distributed.py): each attempt of a torchrun worker group
forms its process group apart from the attempts before it, with --dist-timeout as the timeout of every wait, and a
start-up that cannot finish ends the process (exit code 4) instead of waiting.

The whole restart, launched by torchrun with a worker SIGKILLed, is tests/test_distributed.py's elastic test."""
import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta
from typing import Dict, List, Tuple

import pytest
import torch.distributed as dist

from tests.support.helpers import REPO, free_port
from timm_fct.cli import EXIT_DIST_TIMEOUT
from timm_fct.errors import FctError
from timm_fct.train import distributed
from timm_fct.train.args import parse_args
from timm_fct.train.distributed import attempt_prefix, init_distributed, join_attempt

STORE_TIMEOUT = timedelta(seconds=30)  # a safety net: each wait below ends in well under a second when it works


def join_in_threads(port: int, ranks: List[int], world_size: int) -> Tuple[Dict[int, threading.Thread], Dict[int, int]]:
    """Ranks of one attempt, each a thread with a client of the store at `port`; results[rank] once it joined."""
    results = {}

    def join(rank: int) -> None:
        store = dist.TCPStore('127.0.0.1', port, is_master=False, timeout=STORE_TIMEOUT)
        results[rank] = join_attempt(store, rank, world_size)

    threads = {rank: threading.Thread(target=join, args=(rank,), daemon=True) for rank in ranks}
    for thread in threads.values():
        thread.start()
    return threads, results


def wait_for_key(store: dist.Store, key: str) -> None:
    store.wait([key])  # the server's own store, whose timeout is STORE_TIMEOUT


@pytest.mark.parametrize('before', ['a complete attempt', 'an attempt whose rank 0 died before answering'])
def test_every_attempt_gets_a_new_number_that_keys_of_earlier_attempts_cannot_fake(before):
    """torchrun's agent keeps one store for the whole job. Ranks 1 and 2 of a restarted group start before its
    rank 0 and first read the number of the attempt before (whose keys are all still there); they must not take
    it, but wait for the number their own rank 0 draws, the same on every rank and new."""
    server = dist.TCPStore('127.0.0.1', 0, is_master=True, timeout=STORE_TIMEOUT)
    threads, results = join_in_threads(server.port, [0, 1, 2], 3)
    for thread in threads.values():
        thread.join(STORE_TIMEOUT.total_seconds())
    first = results[0]
    assert results == {0: first, 1: first, 2: first}
    earlier = first
    if before == 'an attempt whose rank 0 died before answering':
        earlier = server.add('timm_fct/start/attempts', 1)  # its rank 0 drew a number, then was killed

    threads, results = join_in_threads(server.port, [1, 2], 3)
    for rank in (1, 2):  # each has read the earlier number and said hello under it
        wait_for_key(server, f'timm_fct/start/{earlier}/hello/{rank}')
    assert not results, f'ranks took the number of an earlier attempt: {results}'
    rank0, results0 = join_in_threads(server.port, [0], 3)
    for thread in [*threads.values(), *rank0.values()]:
        thread.join(STORE_TIMEOUT.total_seconds())
    results.update(results0)
    assert set(results) == {0, 1, 2}, f'a rank never joined: {results}'
    assert len(set(results.values())) == 1, f'the ranks disagree: {results}'
    assert results[0] > earlier


def test_the_process_group_gets_the_timeout_and_its_attempt_s_namespace_under_the_watchdog(monkeypatch):
    """init_distributed as torchrun's rank 0 of 2 sees it (the agent's store, rank 1 played by a thread):
    --dist-timeout becomes the timeout of the store and of the process group, the group gets the attempt's
    prefix of the store, and all of it runs under the start-up watchdog of --dist-timeout."""
    server = dist.TCPStore('127.0.0.1', 0, is_master=True, timeout=STORE_TIMEOUT)
    for name, value in dict(RANK='0', LOCAL_RANK='0', WORLD_SIZE='2', MASTER_ADDR='127.0.0.1',
                            MASTER_PORT=str(server.port), TORCHELASTIC_USE_AGENT_STORE='True').items():
        monkeypatch.setenv(name, value)
    exits, watchdogs, calls = [], [], []
    monkeypatch.setattr(os, '_exit', exits.append)  # were the watchdog to fire, this test fails instead of pytest
    watchdog = distributed.startup_watchdog

    def recorded_watchdog(what, seconds):
        watchdogs.append(seconds)
        return watchdog(what, seconds)

    def init_process_group(backend, **kwargs):
        calls.append(('init_process_group', backend, kwargs, len(watchdogs)))

    monkeypatch.setattr(distributed, 'startup_watchdog', recorded_watchdog)
    monkeypatch.setattr(dist, 'init_process_group', init_process_group)
    monkeypatch.setattr(dist, 'barrier', lambda **kwargs: calls.append(('barrier',)))
    threads, results = join_in_threads(server.port, [1], 2)
    args = parse_args(['--device', 'cpu', '--dist-timeout', '45'])
    init_distributed(args)
    threads[1].join(STORE_TIMEOUT.total_seconds())

    assert (args.distributed, args.world_size, args.rank, args.local_rank, args.device) == (True, 2, 0, 0, 'cpu')
    assert [c[0] for c in calls] == ['init_process_group', 'barrier']
    _, backend, kwargs, watchdogs_then = calls[0]
    assert watchdogs == [45.0] and watchdogs_then == 1
    assert backend == 'gloo' and (kwargs['rank'], kwargs['world_size']) == (0, 2)
    assert kwargs['timeout'] == timedelta(seconds=45)
    store = kwargs['store']
    assert store.timeout == timedelta(seconds=45)
    store.set('seen', 'here')
    assert server.get(f'{attempt_prefix(results[1])}/seen') == b'here', "not the attempt's namespace"
    assert not exits


@pytest.mark.parametrize('seconds', ['0', '-5'])
def test_a_dist_timeout_that_is_not_positive_is_refused(monkeypatch, seconds):
    """One `error:` line (exit code 2), not a watchdog that fires at once or a timeout PyTorch rejects."""
    for name, value in dict(RANK='0', LOCAL_RANK='0', WORLD_SIZE='2').items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(os, '_exit', lambda code: None)  # were the watchdog armed, this test fails, not pytest
    monkeypatch.setattr(dist, 'rendezvous', lambda *args, **kwargs: iter(()))  # no store: StopIteration
    with pytest.raises(FctError, match=f'--dist-timeout {seconds}: give the seconds'):
        init_distributed(parse_args(['--device', 'cpu', '--dist-timeout', seconds]))


WORKER = """
import os, sys, time
sys.path.insert(0, {repo!r})
from timm_fct.train.args import parse_args
from timm_fct.train.distributed import init_distributed, startup_watchdog
from timm_fct.train.resume import resolve_auto_resume
args = parse_args(['--device', 'cpu', '--dist-timeout', '600', '--resume', 'auto', '--output', {output!r},
                   '--experiment', 'run'])
if {case!r} == 'start-up':
    with startup_watchdog('the test start-up', {seconds}):
        init_distributed(args)
    sys.exit('the start-up finished')
init_distributed(args)
print('group formed', flush=True)
if args.rank == 0:
    time.sleep(600)  # the answer --resume auto waits for never comes
args.dist_timeout = {seconds}
resolve_auto_resume(args)
sys.exit('--resume auto finished')
"""


def start_worker(case: str, rank: int, world_size: int, port: int, output: str, seconds: float) -> subprocess.Popen:
    """A process as torchrun starts one, running WORKER; in a session of its own, to be killed whole."""
    env = {k: v for k, v in os.environ.items() if not k.startswith('TORCHELASTIC_')}
    env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR='127.0.0.1',
               MASTER_PORT=str(port), OMP_NUM_THREADS='1')
    code = WORKER.format(repo=str(REPO), output=output, case=case, seconds=seconds)
    return subprocess.Popen([sys.executable, '-c', code], env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)


def ended(worker: subprocess.Popen, timeout: float = 300) -> str:
    """The worker's stderr once it ended; past `timeout` (a safety net: each ends within seconds of its start-up)
    it is killed and the test fails."""
    try:
        return worker.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        pytest.fail(f'the worker did not end within {timeout} s:\n{worker.communicate()[1][-3000:]}')


def test_a_start_up_whose_peer_never_comes_is_ended_by_the_watchdog(tmp_path):
    """Rank 0 of 2, and rank 1 never comes: the start-up blocks (rank 0 hosts the store and waits for its
    clients, with the store's own timeout of 600 s). The watchdog of 3 s ends the process with exit code 4 and
    says so on stderr, naming where it waited."""
    worker = start_worker('start-up', 0, 2, free_port(), str(tmp_path), seconds=3)
    err = ended(worker)
    assert worker.returncode == EXIT_DIST_TIMEOUT, err[-3000:]
    assert err.startswith('error: distributed start-up: the test start-up did not finish within 3 s'), err[-3000:]
    assert 'torchrun can restart the group' in err and 'in init_distributed' in err


def test_a_rank_waiting_for_the_resume_answer_of_rank_0_is_ended_by_the_watchdog(tmp_path):
    """A real group of two (gloo, timeout 600 s) whose rank 0 never sends the answer of --resume auto: rank 1,
    in the broadcast, is ended by the watchdog of --dist-timeout (3 s here) with exit code 4."""
    port = free_port()
    workers = [start_worker('resume', rank, 2, port, str(tmp_path), seconds=3) for rank in (0, 1)]
    try:
        err = ended(workers[1])
    finally:
        os.killpg(workers[0].pid, signal.SIGKILL)
        workers[0].communicate()
    assert workers[1].returncode == EXIT_DIST_TIMEOUT, err[-3000:]
    assert err.startswith('error: distributed start-up: agreeing on the checkpoint of --resume auto did not finish '
                          'within 3 s'), err[-3000:]
    assert 'broadcast_object_list' in err
