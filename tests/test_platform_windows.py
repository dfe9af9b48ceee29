"""engine/platform's Windows branch, run here with `sys.platform` patched to "win32" and a fake
`msvcrt` that keeps Windows' rules: byte-range locks belong to a handle, are mandatory, may lie
past the end of the file, fail with EACCES when another handle holds them, and must be unlocked
exactly as locked. What only a real Windows can show (CreateFileW, CTRL_BREAK_EVENT delivery,
console close) is listed in docs/windows.md as not verified."""

import asyncio
import errno
import importlib
import os
import signal
import subprocess
import sys

import pytest

from mia.engine import platform as plat


class FakeMsvcrt:
    LK_UNLCK, LK_LOCK, LK_NBLCK, LK_RLCK, LK_NBRLCK = 0, 1, 2, 3, 4

    def __init__(self) -> None:
        self.locks: dict[tuple, int] = {}  # (dev, ino, offset, nbytes) -> fd holding it
        self.calls: list[tuple] = []
        self.osfhandles: list[int] = []

    def locking(self, fd: int, mode: int, nbytes: int) -> None:
        st = os.fstat(fd)
        pos = os.lseek(fd, 0, os.SEEK_CUR)
        key = (st.st_dev, st.st_ino, pos, nbytes)
        self.calls.append((fd, mode, pos, nbytes))
        if mode == self.LK_UNLCK:
            if self.locks.get(key) != fd:
                raise PermissionError(errno.EACCES, "unlocking a region not locked")
            del self.locks[key]
            return
        assert mode in (self.LK_NBLCK, self.LK_NBRLCK), "mia never blocks on a lock"
        if key in self.locks:
            raise PermissionError(errno.EACCES, "locking violation")
        self.locks[key] = fd

    def open_osfhandle(self, handle: int, flags: int) -> int:
        assert flags & os.O_APPEND
        self.osfhandles.append(handle)
        return handle


@pytest.fixture
def win(monkeypatch):
    """engine.platform re-imported as on Windows; the POSIX module restored afterwards."""
    fake = FakeMsvcrt()
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setitem(sys.modules, "msvcrt", fake)
    mod = importlib.reload(plat)
    assert mod.IS_WINDOWS
    monkeypatch.setattr(mod, "_win_create_file",
                        lambda path: os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND))
    monkeypatch.setattr(mod.time, "sleep", lambda s: None)
    yield mod, fake
    monkeypatch.undo()
    importlib.reload(plat)
    assert not plat.IS_WINDOWS


def test_a_lock_is_one_byte_far_past_the_data_and_keeps_the_file_position(win, tmp_path):
    mod, fake = win
    path = tmp_path / "seg"
    path.write_bytes(b"0123456789")
    fd = os.open(path, os.O_RDWR)
    try:
        os.lseek(fd, 4, os.SEEK_SET)
        assert mod.try_lock(fd) is True
        assert os.lseek(fd, 0, os.SEEK_CUR) == 4
        (_, mode, pos, nbytes), = fake.calls
        assert mode == fake.LK_NBLCK and pos == mod.WIN_LOCK_OFFSET and nbytes == 1
        assert pos >= 1 << 40  # never a byte a reader reads: Windows locks are mandatory
        mod.unlock(fd)
        assert fake.locks == {}
    finally:
        os.close(fd)


def test_a_lock_held_by_another_handle_is_refused_after_a_few_quick_retries(win, tmp_path):
    mod, fake = win
    path = tmp_path / "seg"
    path.write_bytes(b"x")
    writer, reader = os.open(path, os.O_RDWR), os.open(path, os.O_RDONLY)
    try:
        assert mod.try_lock(writer)
        fake.calls.clear()
        assert mod.try_lock(reader) is False
        assert len(fake.calls) == mod.WIN_PROBE_RETRIES
        assert mod.probe_locked(reader) is True  # the writer is alive
        mod.unlock(writer)
        assert mod.probe_locked(reader) is False  # and the probe left no lock behind
        assert fake.locks == {}
        assert mod.try_lock(writer)
    finally:
        os.close(writer)
        os.close(reader)


def test_a_shared_probe_is_an_exclusive_lock_dropped_at_once(win, tmp_path):
    # msvcrt has no shared lock: LK_NBRLCK is LK_NBLCK
    mod, fake = win
    path = tmp_path / "seg"
    path.write_bytes(b"x")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert mod.try_lock(fd, shared=True)
        assert fake.calls[-1][1] == fake.LK_NBLCK
        mod.unlock(fd)
    finally:
        os.close(fd)


def test_other_locking_errors_are_not_taken_for_a_held_lock(win, tmp_path, monkeypatch):
    mod, fake = win

    def bad(fd, mode, nbytes):
        raise OSError(errno.EBADF, "bad file descriptor")

    monkeypatch.setattr(fake, "locking", bad)
    path = tmp_path / "seg"
    path.write_bytes(b"x")
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as exc:
            mod.try_lock(fd)
        assert exc.value.errno == errno.EBADF
    finally:
        os.close(fd)


def test_writing_without_writev_fdatasync_or_a_directory_fsync(win, tmp_path, monkeypatch):
    mod, fake = win
    monkeypatch.delattr(os, "writev")
    monkeypatch.delattr(os, "fdatasync")
    path = tmp_path / "seg"
    fd = mod.open_append(path)
    try:
        assert fake.osfhandles == [fd]
        assert mod.write_parts(fd, [b"head", b"frame"]) == 9
        mod.datasync(fd)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"headframe"
    mod.fsync_dir(tmp_path / "no such directory")  # a no-op on Windows


def test_replace_retries_while_the_target_is_held(win, tmp_path, monkeypatch):
    mod, _ = win
    src, dst = tmp_path / "tmp", tmp_path / "mia-levels.txt"
    src.write_text("new")
    real, calls = os.replace, []

    def held(a, b):
        calls.append(1)
        if len(calls) < 4:
            raise PermissionError(13, "[WinError 32] used by another process")
        real(a, b)

    monkeypatch.setattr(os, "replace", held)
    mod.replace(src, dst)
    assert dst.read_text() == "new" and len(calls) == 4


def test_a_child_gets_its_own_process_group(win):
    mod, _ = win
    assert mod.new_group_kwargs() == {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200)}


class FakeProc:
    def __init__(self, *, exits_on_break=True, no_console=False) -> None:
        self.sent, self.terminated, self.killed = [], False, False
        self.exits_on_break, self.no_console = exits_on_break, no_console

    def send_signal(self, sig):
        if self.no_console:
            raise OSError(6, "The handle is invalid")
        self.sent.append(sig)

    def wait(self, timeout=None):
        if not self.exits_on_break:
            raise subprocess.TimeoutExpired("cmd", timeout)
        return 0

    def terminate(self):
        self.terminated = True

    def kill(self):
        self.killed = True


@pytest.mark.parametrize("proc, terminated", [
    (FakeProc(), False),                       # the group left on Ctrl+Break
    (FakeProc(exits_on_break=False), True),    # it ignored Ctrl+Break: terminated
    (FakeProc(no_console=True), True),         # no console to send it on: terminated
])
def test_kill_group_sends_ctrl_break_then_terminates(win, monkeypatch, proc, terminated):
    mod, _ = win
    monkeypatch.setattr(signal, "CTRL_BREAK_EVENT", 1, raising=False)
    monkeypatch.delattr(os, "killpg")  # Windows has none; it must not be needed
    mod.kill_group(proc, grace_s=0.01)
    assert proc.sent == ([] if proc.no_console else [1])
    assert proc.terminated is terminated and proc.killed is False


def test_stop_handler_uses_signal_signal_and_call_soon_threadsafe(win, monkeypatch):
    mod, _ = win
    # Windows has SIGBREAK (Ctrl+Break, console close); stand it in with SIGUSR1 here
    monkeypatch.setattr(signal, "SIGBREAK", signal.SIGUSR1, raising=False)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGUSR1, signal.SIGTERM)}

    async def go():
        loop = asyncio.get_running_loop()

        def not_on_windows(*a):
            raise NotImplementedError

        monkeypatch.setattr(loop, "add_signal_handler", not_on_windows)
        stops = []
        got = asyncio.Event()

        def stop():
            stops.append(1)
            got.set()

        remove = mod.install_stop_handler(loop, stop)
        try:
            for sig in (signal.SIGINT, signal.SIGUSR1, signal.SIGTERM):
                got.clear()
                os.kill(os.getpid(), sig)
                await asyncio.wait_for(got.wait(), 5)
        finally:
            remove()
        return stops

    assert asyncio.run(go()) == [1, 1, 1]
    assert {s: signal.getsignal(s) for s in before} == before
