"""How the commands end: a mistake the user can fix is one `error:` line and an exit code, never a traceback.

Training, the Table 1 protocol, the report and the export (`python -m timm_fct.train|table1|report|export`) share
this, so the same mistake reads and exits the same way in each: 2 (as argparse uses for a bad flag), 3 for a
training run that diverged. A distributed worker whose start-up did not finish within --dist-timeout ends with 4
(train/distributed.py), a message on stderr. A file system that refuses a read or write (no such folder, not a
folder, read-only, full) is one line too, exit code 5: the user can fix it, and every file the commands write is
written aside and renamed into place (runs/files.py), so nothing is left half-written.
"""
import sys
from typing import Callable, Optional, Sequence

from .errors import DivergedError, FctError

EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3
EXIT_DIST_TIMEOUT = 4
EXIT_FILE_SYSTEM = 5


def exit_code(error: FctError) -> int:
    return EXIT_DIVERGED if isinstance(error, DivergedError) else EXIT_USER_ERROR


def run_cli(main: Callable[[Optional[Sequence[str]]], int], argv: Optional[Sequence[str]] = None) -> int:
    """`main(argv)`'s exit code, or an FctError's (or the file system's) one line on stderr and its exit code."""
    try:
        return main(argv)
    except FctError as e:
        print(f'error: {e}', file=sys.stderr)
        return exit_code(e)
    except OSError as e:
        where = f': {e.filename}' if e.filename else ''
        print(f'error: {e.strerror or e}{where}', file=sys.stderr)
        return EXIT_FILE_SYSTEM
