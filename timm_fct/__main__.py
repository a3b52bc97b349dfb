"""`python -m timm_fct SCRIPT.py [ARGS...]`: run any of timm's scripts with the FCT models registered.

Only timm's train.py can import a plugin (`--device-modules`); validate.py, benchmark.py, inference.py
and onnx_export.py would answer "Unknown model". Importing this package registers the models, then the
script runs as `python SCRIPT.py ARGS...` would: as `__main__`, with its own argv and its folder first
on sys.path (timm's scripts import siblings), its exit status passed through.
"""
import os
import runpy
import sys
from typing import List

import timm_fct  # noqa: F401  registers the models in timm

USAGE = 'usage: python -m timm_fct SCRIPT.py [ARGS...]\n\nRun SCRIPT.py with the FCT models registered in timm.'


def run_script(path: str, args: List[str]) -> None:
    """Run the file at `path` as the main program with `args`; its SystemExit and exceptions propagate.

    `__file__` is the path as given, where `python SCRIPT.py` would make it absolute (runpy sets `__file__`
    and `sys.argv[0]` from one value, and `sys.argv[0]` must stay as typed); timm's scripts read neither.
    """
    sys.argv = [path, *args]
    # `python SCRIPT.py` puts the script's real folder first on sys.path, in place of `-m`'s working folder
    sys.path[0] = os.path.dirname(os.path.realpath(path))
    runpy.run_path(path, run_name='__main__')


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1].startswith('-'):  # nothing to run, or -h / --help
        print(USAGE, file=sys.stderr)
        sys.exit(2)
    path, args = sys.argv[1], sys.argv[2:]
    if not os.path.isfile(path):
        print(f'error: no such file: {path}', file=sys.stderr)
        sys.exit(2)
    run_script(path, args)


if __name__ == '__main__':
    main()
