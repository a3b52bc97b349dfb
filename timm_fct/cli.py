"""How the commands end: a mistake the user can fix is one `error:` line and an exit code, never a traceback.

Training, the Table 1 protocol, the report and the export (`python -m timm_fct.train|table1|report|export`) share
this, so the same mistake reads and exits the same way in each: 2 (as argparse uses for a bad flag), 3 for a
training run that diverged. A distributed worker whose start-up did not finish within --dist-timeout ends with 4
(train/distributed.py), a message on stderr.
"""
import sys
from typing import Callable, Optional, Sequence

from .errors import DivergedError, FctError

EXIT_USER_ERROR = 2
EXIT_DIVERGED = 3
EXIT_DIST_TIMEOUT = 4


def exit_code(error: FctError) -> int:
    return EXIT_DIVERGED if isinstance(error, DivergedError) else EXIT_USER_ERROR


def run_cli(main: Callable[[Optional[Sequence[str]]], int], argv: Optional[Sequence[str]] = None) -> int:
    """`main(argv)`'s exit code, or an FctError's one line on stderr and its exit code."""
    try:
        return main(argv)
    except FctError as e:
        print(f'error: {e}', file=sys.stderr)
        return exit_code(e)
