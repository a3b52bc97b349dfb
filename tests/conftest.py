"""Wires pytest: the inductor cache per CPU capability (before torch is imported), timm's own model tests, the
shared run folders, the slow marker and its guard. What each does lives in tests/support/."""
import os
from typing import Iterator, List, Optional

import tests.support.inductor_cache  # noqa: F401  first: it sets torch.compile's cache folder before torch loads
import pytest  # noqa: E402

from tests.support import slow, upstream  # noqa: E402

pytest_plugins = ['tests.support.runs']


def pytest_configure(config: pytest.Config) -> None:
    upstream.fetch()
    if os.environ.get('PYTEST_XDIST_WORKER'):
        # one core per worker: torch's default threads on top of another worker thrash (measured 10x slower);
        # the environment variable carries the setting into the subprocesses the tests start
        os.environ['OMP_NUM_THREADS'] = '1'
        import torch
        torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    keep, drop = upstream.select(items)
    if drop:
        config.hook.pytest_deselected(items=drop)
    for item in keep:
        if slow.is_slow(item):
            item.add_marker(pytest.mark.slow)
    # xdist hands tests out in this order: the ones that launch training and other processes first, so no
    # worker ends on a long one alone
    keep.sort(key=lambda item: item.get_closest_marker('slow') is None)
    items[:] = keep


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: Optional[pytest.Item]) -> Iterator[None]:
    if item.get_closest_marker('slow'):
        yield
        return
    with slow.no_process_started(item):
        yield
