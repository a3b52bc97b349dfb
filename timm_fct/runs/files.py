"""Writing files whole or not at all: readers never see half a file or folder."""
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union


@contextmanager
def replace_when_done(path: Union[str, Path]) -> Iterator[Path]:
    """A hidden sibling path to build a file or folder in, renamed onto `path` when the block succeeds.

    A failure or Ctrl-C removes what was built, and the caller creates what it builds, so it gets the
    usual permissions (the umask's), not mkstemp's 0600.
    """
    path = Path(path)
    tmp = path.parent / f'.{path.name}.{uuid.uuid4().hex[:12]}.tmp'
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def umask_mode(mode: int = 0o666) -> int:
    """The permissions a file created now gets: `mode` less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask
