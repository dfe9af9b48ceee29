"""Whole-file writes that a reader never sees half done."""

from __future__ import annotations

import os
import tempfile
from typing import Callable

from . import platform as plat


def write_atomically(path: str | os.PathLike, write: Callable[[str], None], *, fsync: bool = True) -> None:
    """Call `write(tmp_path)` on a temporary file beside `path`, then rename it over `path`.

    The rename is atomic on one filesystem, so a reader (Sierra Chart polling its levels file,
    a notebook opening an export) sees the old file or the new one, never a part. On any error
    the temporary file is removed and the old file stays. On Windows the rename is refused while
    another process holds `path` open (Sierra Chart reading it): it is retried with a bounded
    backoff (`platform.replace`) before the error is raised.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        plat.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
