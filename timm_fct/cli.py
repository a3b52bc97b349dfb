"""How the command-line programs end: a mistake the user can fix is one `error:` line, never a traceback.

train.py, `python -m timm_fct.report` and hub/publish.py share this, so the same mistake reads and exits
the same way in each (exit code 2, as argparse uses for a bad flag).
"""
import sys
from typing import Callable, Optional, Sequence

EXIT_USER_ERROR = 2


class CliError(Exception):
    """Ends a command with `error: <message>` on stderr and `exit_code`; the message says what to change."""
    exit_code = EXIT_USER_ERROR


def run_cli(main: Callable[[Optional[Sequence[str]]], int], argv: Optional[Sequence[str]] = None) -> int:
    """`main(argv)`'s exit code, or a CliError's one line on stderr and its exit code."""
    try:
        return main(argv)
    except CliError as e:
        print(f'error: {e}', file=sys.stderr)
        return e.exit_code
