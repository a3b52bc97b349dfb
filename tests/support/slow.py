"""The `slow` marker, set at collection on every test that launches a process (training, torchrun, a fresh
Python), trains in-process or compiles, so `pytest -m "not slow"` is the quick loop; and a guard that fails a
test left unmarked that starts a process anyway, naming the fix.

What makes a test slow is read from its source, the fixtures it uses and the helper functions of its module
it calls: no list of test names to keep in sync.
"""
import inspect
import subprocess
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator

import pytest

SLOW_FIXTURES = {'small_run', 'two_node_run', 'digits_run', 'table1_run'}  # session fixtures that train
SLOW_CALLS = ('run_train(', 'run_table1(', 'run_offline(', 'torchrun(', 'subprocess.', 'torch.multiprocessing',
              'mp.spawn', 'command.main(', 'train_from_args(', 'torch.compile(')


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


@contextmanager
def no_process_started(item: pytest.Item) -> Iterator[None]:
    """The quick loop's promise, kept: a test not marked slow that starts a process fails, naming the fix."""
    execute_child = subprocess.Popen._execute_child

    def refuse(self, args, *rest, **kwargs):
        raise AssertionError(f'{item.nodeid} starts a process ({args}) but is not marked slow: add what it '
                             f'calls to SLOW_CALLS in tests/support/slow.py, or mark it @pytest.mark.slow')
    subprocess.Popen._execute_child = refuse
    try:
        yield
    finally:
        subprocess.Popen._execute_child = execute_child
