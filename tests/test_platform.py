"""engine/platform on this (POSIX) machine: real locks across processes, the replace retry, the
group kill, the stop hook, and that a reader's open file never stops the writer."""

import asyncio
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from mia.engine import files
from mia.engine import platform as plat

pytestmark = pytest.mark.skipif(plat.IS_WINDOWS, reason="the POSIX branch")


def _holder(path, mode: str) -> subprocess.Popen:
    """A child that locks `path` (mode "ex" or "sh") with engine.platform and says "locked"."""
    code = textwrap.dedent(f"""
        import os, sys
        from mia.engine import platform as plat
        fd = os.open({str(path)!r}, os.O_RDWR)
        ok = plat.try_lock(fd, shared={mode == "sh"})
        print("locked" if ok else "busy", flush=True)
        sys.stdin.readline()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _release(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    proc.wait(10)
    proc.stdout.close()


def test_exclusive_lock_is_seen_by_another_process_and_released_on_close(tmp_path):
    # Arrange
    path = tmp_path / "seg"
    path.write_bytes(b"x")
    holder = _holder(path, "ex")
    fd = os.open(path, os.O_RDONLY)
    try:
        # Act / Assert: held elsewhere, neither an exclusive nor a shared lock is granted
        assert plat.try_lock(fd) is False
        assert plat.try_lock(fd, shared=True) is False
        assert plat.probe_locked(fd) is True
        _release(holder)
        assert plat.probe_locked(fd) is False
        assert plat.try_lock(fd) is True
        plat.unlock(fd)
    finally:
        os.close(fd)


def test_shared_locks_coexist_and_keep_a_writer_out(tmp_path):
    path = tmp_path / "seg"
    path.write_bytes(b"x")
    holder = _holder(path, "sh")
    fd = os.open(path, os.O_RDWR)
    try:
        assert plat.try_lock(fd, shared=True) is True
        plat.unlock(fd)
        assert plat.try_lock(fd) is False
    finally:
        os.close(fd)
        _release(holder)


def test_a_readers_open_file_never_stops_the_writer(tmp_path):
    # Readers use plain open(): on POSIX nothing is denied, on Windows read and write are shared
    path = tmp_path / "seg"
    fd = plat.open_append(path)
    try:
        assert plat.try_lock(fd)
        with open(path, "rb") as reader:
            plat.write_parts(fd, [b"ab", b"cd"])
            plat.datasync(fd)
            assert reader.read() == b"abcd"
            plat.write_parts(fd, [b"ef"])
            assert reader.read() == b"ef"
            os.ftruncate(fd, 2)  # recovery truncates a torn tail while readers may hold it
        os.link(path, tmp_path / "seg2")
        os.unlink(path)  # the writer's temporary name goes while the file is open
        plat.write_parts(fd, [b"gh"])
    finally:
        os.close(fd)
    assert (tmp_path / "seg2").read_bytes() == b"abgh"
    plat.fsync_dir(tmp_path)


def test_write_parts_without_writev(monkeypatch, tmp_path):
    monkeypatch.delattr(os, "writev")
    monkeypatch.delattr(os, "fdatasync")
    fd = plat.open_append(tmp_path / "f")
    try:
        assert plat.write_parts(fd, [b"a", b"bc"]) == 3
        plat.datasync(fd)
    finally:
        os.close(fd)
    assert (tmp_path / "f").read_bytes() == b"abc"


def test_replace_retries_a_refused_rename_on_windows_only(monkeypatch, tmp_path):
    # Arrange: os.replace refused twice (Sierra holds the levels file), then allowed
    src, dst = tmp_path / "new", tmp_path / "levels.txt"
    src.write_text("new")
    dst.write_text("old")
    real, calls, sleeps = os.replace, [], []

    def flaky(a, b):
        calls.append(1)
        if len(calls) <= 2:
            raise PermissionError(13, "The process cannot access the file")
        real(a, b)

    monkeypatch.setattr(os, "replace", flaky)
    # Act / Assert: POSIX does not retry (a refusal there is a real permission problem)
    with pytest.raises(PermissionError):
        plat.replace(src, dst, sleep=sleeps.append)
    assert len(calls) == 1 and sleeps == []
    # on Windows it retries with a growing, bounded wait
    monkeypatch.setattr(plat, "IS_WINDOWS", True)
    calls.clear()
    plat.replace(src, dst, sleep=sleeps.append)
    assert dst.read_text() == "new" and len(calls) == 3
    assert len(sleeps) == 2 and all(0 < s <= plat.REPLACE_MAX_WAIT_S for s in sleeps)


def test_replace_gives_up_after_bounded_attempts(monkeypatch, tmp_path):
    monkeypatch.setattr(plat, "IS_WINDOWS", True)
    monkeypatch.setattr(os, "replace", lambda a, b: (_ for _ in ()).throw(PermissionError(13, "held")))
    sleeps: list[float] = []
    with pytest.raises(PermissionError):
        plat.replace(tmp_path / "a", tmp_path / "b", sleep=sleeps.append)
    assert len(sleeps) == plat.REPLACE_ATTEMPTS - 1
    assert sum(sleeps) < 3.0


def test_write_atomically_survives_a_held_target_on_windows(monkeypatch, tmp_path):
    monkeypatch.setattr(plat, "IS_WINDOWS", True)
    monkeypatch.setattr(plat.time, "sleep", lambda s: None)
    real, calls = os.replace, []

    def held_once(a, b):
        calls.append(1)
        if len(calls) == 1:
            raise PermissionError(13, "held by Sierra Chart")
        real(a, b)

    monkeypatch.setattr(os, "replace", held_once)
    target = tmp_path / "mia-levels.txt"
    target.write_text("old")
    files.write_atomically(target, lambda tmp: pathlib.Path(tmp).write_text("new"))
    assert target.read_text() == "new" and len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mia-levels.txt"]


def test_kill_group_kills_the_child_and_what_it_started():
    # Arrange: a shell that starts a grandchild; both must die
    proc = subprocess.Popen("sleep 30 & echo $!; wait", shell=True, stdout=subprocess.PIPE, text=True,
                            **plat.new_group_kwargs())
    grandchild = int(proc.stdout.readline())
    # Act
    plat.kill_group(proc)
    proc.wait(10)
    proc.stdout.close()
    # Assert
    deadline = time.monotonic() + 10
    while True:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "grandchild survived"
        time.sleep(0.02)
    plat.kill_group(proc)  # a second kill of a dead group never raises


def test_stop_handler_turns_sigint_and_sigterm_into_one_callback_and_can_be_removed():
    async def go():
        loop = asyncio.get_running_loop()
        stopped = asyncio.Event()
        remove = plat.install_stop_handler(loop, stopped.set)
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                stopped.clear()
                os.kill(os.getpid(), sig)
                await asyncio.wait_for(stopped.wait(), 5)
        finally:
            remove()
        assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None)

    asyncio.run(go())


def test_windows_paths_pass_through_config_and_options_unchanged(tmp_path):
    # TOML literal strings (single quotes) keep backslashes; basic strings would need \\
    from mia.config import load_config

    cfg_file = tmp_path / "mia.toml"
    cfg_file.write_text("data_dir = 'D:\\mia-data'\n"
                        "levels_file = 'C:\\SierraChart\\Data\\mia-levels.txt'\n"
                        "[log]\nfsync = \"interval\"\n", encoding="utf-8")
    cfg = load_config(cfg_file)
    assert cfg.data_dir == "D:\\mia-data"
    assert cfg.levels_file == "C:\\SierraChart\\Data\\mia-levels.txt"
    import ntpath

    assert ntpath.dirname(cfg.levels_file) == "C:\\SierraChart\\Data"  # where the temp file goes
