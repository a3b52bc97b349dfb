"""The one error of timm-fct's library: a mistake the user can fix, with a message that says what was expected.

Library functions (datasets, run folders, loading, export, the Hub) raise it; the commands print it as one
line (cli.py). Its subclass DivergedError only marks a training run that stopped on a non-finite loss.
"""


class FctError(Exception):
    """Bad input or an unusable run, checkpoint, dataset or export; the message names the cause."""


class DivergedError(FctError):
    """The loss became NaN or infinite: the run stopped, keeping its last good checkpoint."""
