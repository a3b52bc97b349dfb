"""Start-up of a distributed train.py: a process group of its own in every attempt, and never a wait without end.

torchrun --max-restarts starts the whole worker group again when a worker dies. Its c10d rendezvous keeps one
TCPStore server for the whole job and gives every new group the same MASTER_ADDR:MASTER_PORT
(TORCHELASTIC_USE_AGENT_STORE=True), and init_process_group names its keys alike in every attempt: gloo's
listening addresses stay under `default_pg/0//cpu//0/<rank>`. A restarted worker could read the address of a
worker of the killed attempt before the new one overwrote it, and fail at once ("Connection refused") or wait
for a connection that never comes (docs/development.md, "Why a restarted worker group could not connect").

Here every attempt forms its group under a prefix of its own. Rank 0 draws the attempt's number from a counter
in the store; every other rank learns it from rank 0 in a handshake that a key left by an earlier attempt cannot
answer (`join_attempt`). torchrun's TORCHELASTIC_RESTART_COUNT would not do: each node's agent counts its own
restarts, and an agent that restarts its group because another node asked for it counts none.

Every step that waits for other processes is bounded by --dist-timeout: the store and the process group get it
as their timeout (so every collective, in training too, fails after it instead of PyTorch's default 30 minutes
for gloo), and `startup_watchdog` ends the process with exit code 4 and a message on stderr when the start-up has
not finished by then, whatever call it is stuck in. Either way the worker exits non-zero and torchrun restarts
the group, or ends the job when no restart is left.
"""
import argparse
import logging
import os
import sys
import threading
import time
import traceback
import uuid
from contextlib import contextmanager
from datetime import timedelta
from typing import Iterator

import torch
import torch.distributed as dist
from timm.utils import init_distributed_device, is_distributed_env, world_info_from_env

from ..cli import EXIT_DIST_TIMEOUT
from ..errors import FctError

_logger = logging.getLogger(__name__)

POLL_S = 0.2  # how often a rank other than 0 looks again for its attempt's number


@contextmanager
def startup_watchdog(what: str, seconds: float) -> Iterator[None]:
    """Run the block; if it has not finished after `seconds`, end the process with EXIT_DIST_TIMEOUT and a message
    on stderr naming `what` and where the main thread waits. A thread, so that a C++ call that releases the GIL but
    never returns (or honours only a timeout of its own) cannot keep the worker, and with it the job, alive."""
    done = threading.Event()
    main = threading.get_ident()

    def watch() -> None:
        if done.wait(seconds):
            return
        frame = sys._current_frames().get(main)
        where = ''.join(traceback.format_stack(frame)) if frame is not None else '(unknown)\n'
        message = (f'error: distributed start-up: {what} did not finish within {seconds:g} s (--dist-timeout); '
                   f'this worker exits with code {EXIT_DIST_TIMEOUT} so that torchrun can restart the group.\n'
                   f'The main thread was waiting in:\n{where}')
        os.write(2, message.encode(errors='replace'))  # not sys.stderr: the main thread may hold its lock
        os._exit(EXIT_DIST_TIMEOUT)

    watchdog = threading.Thread(target=watch, name='timm_fct-startup-watchdog', daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        done.set()


def join_attempt(store: dist.Store, rank: int, world_size: int) -> int:
    """This attempt's number, the same on every rank and new in every attempt: the prefix `attempt_prefix` gives
    its process group a namespace of `store` that no other attempt uses.

    Rank 0 draws the attempt's number from a counter kept in the store. Every other rank writes a nonce of its own
    under the number it reads, and takes that number once rank 0 has echoed the nonce back under it: a number read
    too early (an earlier attempt's, whose rank 0 is gone, or none yet) gets no echo, and the rank reads again.
    Bounded by the store's timeout."""
    ours = dist.PrefixStore('timm_fct/start', store)
    if rank == 0:
        attempt = ours.add('attempts', 1)
        others = range(1, world_size)
        if others:
            nonces = ours.multi_get([f'{attempt}/hello/{r}' for r in others])  # waits for every rank
            ours.multi_set([f'{attempt}/welcome/{r}' for r in others], nonces)
        return attempt
    return _wait_for_attempt(ours, rank, store.timeout.total_seconds())


def attempt_prefix(attempt: int) -> str:
    return f'timm_fct/attempt{attempt}'


def _wait_for_attempt(ours: dist.Store, rank: int, timeout_s: float) -> int:
    """Polls with check(), not wait(timeout): a TCPStore client whose wait timed out may read the late answer to
    it as the answer to its next request."""
    nonce = uuid.uuid4().hex
    deadline = time.monotonic() + timeout_s
    said_hello_in = 0
    while True:
        attempt = ours.add('attempts', 0)
        if attempt:
            if attempt != said_hello_in:
                ours.set(f'{attempt}/hello/{rank}', nonce)
                said_hello_in = attempt
            welcome = f'{attempt}/welcome/{rank}'
            if ours.check([welcome]) and ours.get(welcome).decode() == nonce:
                return attempt
        if time.monotonic() > deadline:
            raise dist.DistStoreError(f'rank {rank} waited {timeout_s:g} s for rank 0 to open an attempt '
                                      f'(last number read: {attempt})')
        time.sleep(POLL_S)


def init_distributed(args: argparse.Namespace) -> torch.device:
    """timm's `init_distributed_device` contract (sets args.distributed, world_size, rank, local_rank, device),
    with the process group formed under `join_attempt`'s prefix and bounded by args.dist_timeout.

    Outside a distributed launch it is timm's function itself: no process group, timm's device checks."""
    if not is_distributed_env():
        return init_distributed_device(args)
    if not args.dist_timeout > 0:
        raise FctError(f'--dist-timeout {args.dist_timeout:g}: give the seconds a process may wait for the others, '
                       f'more than 0')
    local_rank, rank, world_size = world_info_from_env()  # torchrun's variables, or Slurm's
    device_type = str(args.device).split(':')[0]
    backend = args.dist_backend or dist.Backend.default_device_backend_map.get(device_type, 'gloo')
    args.device = _local_device(device_type, local_rank)
    timeout = timedelta(seconds=args.dist_timeout)
    start = time.monotonic()
    with startup_watchdog(f'forming the process group (rank {rank} of {world_size}, {backend})', args.dist_timeout):
        store, rank, world_size = next(dist.rendezvous(args.dist_url or 'env://', rank, world_size, timeout=timeout))
        store.set_timeout(timeout)
        attempt = join_attempt(store, rank, world_size)
        dist.init_process_group(backend, store=dist.PrefixStore(attempt_prefix(attempt), store), rank=rank,
                                world_size=world_size, timeout=timeout)
        # the first collective: every rank connected and answering before any training code runs
        if device_type == 'cuda':
            dist.barrier(device_ids=[local_rank])
        else:
            dist.barrier()
    _logger.info('rank %d of %d: process group of attempt %d formed in %.1f s', rank, world_size, attempt,
                 time.monotonic() - start)
    args.distributed, args.world_size, args.rank, args.local_rank = True, world_size, rank, local_rank
    return torch.device(args.device)


def _local_device(device_type: str, local_rank: int) -> str:
    """This process's device: the one of its local rank, as timm assigns it (cpu stays cpu)."""
    if device_type == 'cpu':
        return 'cpu'
    module = getattr(torch, device_type, None)
    if module is None or not module.is_available():
        raise FctError(f'--device {device_type}: no {device_type} device is available to this process')
    device = f'{device_type}:{local_rank}'
    if hasattr(module, 'set_device'):
        module.set_device(device)
    return device
