"""Every difference between POSIX and Windows that mia meets, in one place.

The rest of the package calls these functions and never branches on the platform itself:

- **File locks** (`try_lock`, `unlock`): a log writer holds an exclusive, non-blocking lock on its
  segment; readers probe it to tell a segment being written from one whose writer died. POSIX:
  ``fcntl.flock``. Windows: ``msvcrt.locking`` on one byte far beyond the end of the file.
  Windows byte-range locks are mandatory (a locked byte cannot be read by another process), so
  the byte locked is never one a reader reads; locking past the end of a file is allowed.
  ``msvcrt`` has no shared lock (``LK_NBRLCK`` is ``LK_NBLCK``), so a shared probe is a brief
  exclusive lock taken and dropped at once; two probes meeting retry a few times before saying
  "locked", since a probe holds the byte for microseconds and a writer for hours.
- **Writing** (`write_parts`, `datasync`, `fsync_dir`, `open_append`): ``os.writev`` and
  ``os.fdatasync`` do not exist on Windows (one joined ``os.write``, ``os.fsync``); a directory
  cannot be opened to be synced there (NTFS journals its metadata: a no-op); a segment is opened
  with delete sharing so its temporary name can be removed while it is open.
- **Replacing a file** (`replace`): Windows refuses ``os.replace`` with ``PermissionError`` while
  another process (Sierra Chart reading its levels file) holds the target open; retried with a
  bounded backoff.
- **Child processes** (`new_group_kwargs`, `kill_group`): a command and everything it starts run
  in their own group; POSIX kills the session with ``SIGKILL``, Windows sends ``CTRL_BREAK_EVENT``
  to the ``CREATE_NEW_PROCESS_GROUP`` child, then terminates it.
- **A clean stop** (`install_stop_handler`): POSIX SIGINT/SIGTERM through
  ``loop.add_signal_handler``; Windows has no such loop method (``NotImplementedError``), so
  ``signal.signal`` for SIGINT (Ctrl+C), SIGBREAK (Ctrl+Break, and console close, which the C
  runtime reports as SIGBREAK) and SIGTERM hands the stop to the loop with
  ``call_soon_threadsafe``.
- **Reading while a writer writes**: on Windows Python's ``open`` shares read and write access
  (never delete), so a reader never stops a writer appending or truncating a torn tail; POSIX
  never denies anything. Readers therefore use plain ``open``.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import signal
import subprocess
import sys
import time
from typing import Callable, Final, Sequence

logger = logging.getLogger(__name__)

IS_WINDOWS: Final = sys.platform == "win32"

if not IS_WINDOWS:
    import fcntl

# The byte a Windows lock covers, far past any segment's end (UCRT's _locking seeks 64-bit).
WIN_LOCK_OFFSET: Final = 1 << 40  # 1 TiB: no segment grows that large
WIN_PROBE_RETRIES: Final = 3  # a failed Windows lock is retried this often (another probe)
WIN_PROBE_WAIT_S: Final = 0.01
REPLACE_ATTEMPTS: Final = 8  # os.replace tries on Windows: ~2.5 s in all at most
REPLACE_FIRST_WAIT_S: Final = 0.02
REPLACE_MAX_WAIT_S: Final = 0.5
KILL_GRACE_S: Final = 1.0  # Windows: after CTRL_BREAK_EVENT, before terminate


# --- file locks ---------------------------------------------------------------------------------

def try_lock(fd: int, *, shared: bool = False) -> bool:
    """Lock the open file `fd` without blocking: True when locked, False when another holds it.

    The lock goes with `fd`: closing it (or `unlock`) releases it.
    """
    if not IS_WINDOWS:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    import msvcrt

    for attempt in range(WIN_PROBE_RETRIES):
        try:
            _at_lock_byte(fd, lambda: msvcrt.locking(fd, msvcrt.LK_NBLCK, 1))
            return True
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EDEADLK):
                raise
        if attempt + 1 < WIN_PROBE_RETRIES:
            time.sleep(WIN_PROBE_WAIT_S)
    return False


def unlock(fd: int) -> None:
    """Release a lock `try_lock` took on `fd` (Windows wants it released before the close)."""
    if not IS_WINDOWS:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return
    import msvcrt

    _at_lock_byte(fd, lambda: msvcrt.locking(fd, msvcrt.LK_UNLCK, 1))


def probe_locked(fd: int) -> bool:
    """True when another holds a lock on `fd`'s file; takes and drops a shared lock to see."""
    if not try_lock(fd, shared=True):
        return True
    unlock(fd)
    return False


def _at_lock_byte(fd: int, op: Callable[[], None]) -> None:
    pos = os.lseek(fd, 0, os.SEEK_CUR)
    os.lseek(fd, WIN_LOCK_OFFSET, os.SEEK_SET)
    try:
        op()
    finally:
        os.lseek(fd, pos, os.SEEK_SET)


# --- writing ------------------------------------------------------------------------------------

def open_append(path: str | os.PathLike) -> int:
    """Create (or truncate) `path` for appending; the fd may be renamed or unlinked while open."""
    if not IS_WINDOWS:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    import msvcrt

    return msvcrt.open_osfhandle(_win_create_file(os.fspath(path)), os.O_WRONLY | os.O_APPEND)


def _win_create_file(path: str) -> int:
    """CreateFileW for writing, sharing read, write and delete (Python's os.open never shares
    delete, which would stop the writer removing the segment's temporary name)."""
    import ctypes
    from ctypes import wintypes

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    create = kernel32.CreateFileW
    create.argtypes = [wintypes.LPCWSTR, wintypes.DWORD, wintypes.DWORD, wintypes.LPVOID,
                       wintypes.DWORD, wintypes.DWORD, wintypes.HANDLE]
    create.restype = wintypes.HANDLE
    generic_write, share_all, create_always, attr_normal = 0x40000000, 0x7, 2, 0x80
    handle = create(path, generic_write, share_all, None, create_always, attr_normal, None)
    if handle is None or handle == wintypes.HANDLE(-1).value:
        raise ctypes.WinError(ctypes.get_last_error())
    return handle


def write_parts(fd: int, parts: Sequence[bytes]) -> int:
    """Write `parts` in one system call where the platform has one (writev); bytes written."""
    writev = getattr(os, "writev", None)
    if writev is not None:
        return writev(fd, parts)
    return os.write(fd, b"".join(parts))


def datasync(fd: int) -> None:
    """fdatasync where it exists, else fsync (Windows: FlushFileBuffers)."""
    sync = getattr(os, "fdatasync", None) or os.fsync
    sync(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a directory's entries durable. POSIX: fsync the directory; Windows cannot open a
    directory this way and NTFS journals metadata, so nothing to do."""
    if IS_WINDOWS:
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace(src: str | os.PathLike, dst: str | os.PathLike, *,
            attempts: int = REPLACE_ATTEMPTS, sleep: Callable[[float], None] = time.sleep) -> None:
    """``os.replace(src, dst)``; on Windows a ``PermissionError`` (another process holds `dst`
    open: Sierra Chart reading its levels file, an antivirus scan) is retried with a capped,
    jittered backoff, then raised. POSIX never refuses a rename for an open file: one try."""
    tries = attempts if IS_WINDOWS else 1
    wait = REPLACE_FIRST_WAIT_S
    for attempt in range(1, tries + 1):
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            if attempt >= tries:
                raise
            logger.debug("replace refused, retrying dst=%s attempt=%d", dst, attempt)
            sleep(random.uniform(wait / 2, wait))
            wait = min(REPLACE_MAX_WAIT_S, wait * 2)


# --- child processes ----------------------------------------------------------------------------

def new_group_kwargs() -> dict:
    """``subprocess.Popen`` arguments that start the child in a group of its own."""
    if IS_WINDOWS:
        return {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200)}
    return {"start_new_session": True}


def kill_group(proc: subprocess.Popen, *, grace_s: float = KILL_GRACE_S) -> None:
    """Stop `proc` (started with `new_group_kwargs`) and what it started; never raises.

    POSIX: SIGKILL to its process group. Windows: CTRL_BREAK_EVENT to its group (every process
    of the group sharing our console gets it), `grace_s` to exit, then TerminateProcess on the
    child (its own children that ignored Ctrl+Break are not reached: Windows has no group kill).
    """
    if not IS_WINDOWS:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
            return
        except (ProcessLookupError, PermissionError):
            pass
    else:
        try:
            proc.send_signal(signal.CTRL_BREAK_EVENT)
            proc.wait(grace_s)
            return
        except (OSError, ValueError, AttributeError, subprocess.TimeoutExpired):
            pass  # no console to send it on, or still running
        try:
            proc.terminate()
            return
        except OSError:
            pass
    try:
        proc.kill()
    except OSError:
        pass


# --- a clean stop -------------------------------------------------------------------------------

def install_stop_handler(loop, callback: Callable[[], None]) -> Callable[[], None]:
    """Call `callback()` on `loop` when the user asks the process to stop: Ctrl+C (SIGINT) and
    SIGTERM on POSIX; Ctrl+C, Ctrl+Break and console close (SIGINT, SIGBREAK) and SIGTERM on
    Windows. Call from the loop's (main) thread; returns a function that removes the handlers
    (and restores the previous ones)."""
    if not IS_WINDOWS:
        added = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, callback)
                added.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
                pass

        def remove_posix() -> None:
            for sig in added:
                loop.remove_signal_handler(sig)

        return remove_posix

    def on_signal(signum, frame) -> None:  # runs in the main thread between bytecodes
        loop.call_soon_threadsafe(callback)

    previous = {}
    for name in ("SIGINT", "SIGBREAK", "SIGTERM"):
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        try:
            previous[sig] = signal.signal(sig, on_signal)
        except (ValueError, OSError):  # not the main thread
            pass

    def remove_windows() -> None:
        for sig, old in previous.items():
            try:
                signal.signal(sig, old if old is not None else signal.SIG_DFL)
            except (ValueError, OSError, TypeError):
                pass

    return remove_windows


__all__ = [
    "IS_WINDOWS", "try_lock", "unlock", "probe_locked", "open_append", "write_parts", "datasync",
    "fsync_dir", "replace", "new_group_kwargs", "kill_group", "install_stop_handler",
]
