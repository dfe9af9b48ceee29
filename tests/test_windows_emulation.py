"""mia as Windows would run it, emulated in a subprocess on this POSIX machine.

No Windows machine is at hand, so the child takes away what Windows lacks and then uses mia
end to end: `fcntl`, `termios`, `resource`, `pwd` and `grp` cannot be imported (a `sys.meta_path`
finder refuses them), `os.killpg`, `os.setsid`, `os.getpgid`, `os.writev`, `os.fdatasync`,
`os.fork` and `signal.SIGKILL`/`SIGHUP`/`SIGQUIT` are deleted, `loop.add_signal_handler`
raises NotImplementedError as on Windows' event loops, `sys.platform` is "win32" (so
engine.platform takes its Windows branch) and a fake `msvcrt` stands in for the C runtime's.
Third-party and stdlib modules are imported first, with the real platform (they are not
mia's to port). Then every module of the package is imported, `mia record --sim` runs until a
SIGINT (the Windows stop hook: signal.signal + call_soon_threadsafe), `mia verify`, `mia inspect`
and `mia replay --check` run on the day, the alert hook's timeout kill takes its Windows path,
and the levels file is replaced atomically.

What this cannot show (CreateFileW's sharing, real msvcrt locks, CTRL_BREAK_EVENT delivery,
console close) is listed in docs/windows.md.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = textwrap.dedent(r'''
    import sys, os, json, types, signal, errno, threading, time, importlib, pkgutil, io
    import contextlib
    import fcntl as _real_fcntl  # the fake msvcrt is built on it, before fcntl is taken away

    # stdlib and third-party modules first, with the real platform: not mia's to port
    import asyncio, asyncio.unix_events, subprocess, selectors, tempfile, shutil, socket
    import logging, logging.handlers, concurrent.futures, queue, ssl, zlib, uuid
    for name in ("numpy", "numba", "msgspec", "zstandard", "zmq", "zmq.asyncio", "httpx", "click",
                 "anyio", "h11", "certifi", "websockets", "scipy", "matplotlib", "pyarrow", "pandas"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass

    BLOCKED = {"fcntl", "termios", "resource", "pwd", "grp", "pty", "tty"}
    for name in BLOCKED:
        sys.modules.pop(name, None)

    class NoPosixOnly:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"No module named {name!r} (Windows emulation)")
            return None

    sys.meta_path.insert(0, NoPosixOnly())
    for name in ("killpg", "setsid", "getpgid", "setpgid", "writev", "fdatasync", "fork", "getuid"):
        if hasattr(os, name):
            delattr(os, name)
    for name in ("SIGKILL", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGALRM"):
        if hasattr(signal, name):
            delattr(signal, name)

    def no_signal_handlers(self, *args, **kwargs):
        raise NotImplementedError  # what Windows' event loops do
    asyncio.unix_events._UnixSelectorEventLoop.add_signal_handler = no_signal_handlers

    # a fake msvcrt with Windows' rules: one handle's lock excludes every other handle
    lock_positions = []
    msvcrt = types.ModuleType("msvcrt")
    msvcrt.LK_UNLCK, msvcrt.LK_LOCK, msvcrt.LK_NBLCK, msvcrt.LK_RLCK, msvcrt.LK_NBRLCK = 0, 1, 2, 3, 4

    def locking(fd, mode, nbytes):
        lock_positions.append(os.lseek(fd, 0, os.SEEK_CUR))
        if mode == msvcrt.LK_UNLCK:
            _real_fcntl.flock(fd, _real_fcntl.LOCK_UN)
            return
        try:
            _real_fcntl.flock(fd, _real_fcntl.LOCK_EX | _real_fcntl.LOCK_NB)
        except BlockingIOError:
            raise PermissionError(errno.EACCES, "locking violation") from None

    msvcrt.locking = locking
    msvcrt.open_osfhandle = lambda handle, flags: handle
    sys.modules["msvcrt"] = msvcrt
    subprocess.CREATE_NEW_PROCESS_GROUP = 0  # Windows' flag; a POSIX Popen accepts only 0
    sys.platform = "win32"

    # every module of the package
    T0 = time.monotonic()
    def lap(what):
        print(f"{time.monotonic() - T0:6.1f}s {what}", file=sys.stderr, flush=True)
    import mia
    from mia.engine import platform as plat
    assert plat.IS_WINDOWS, "engine.platform did not take its Windows branch"
    # CreateFileW is Windows' own (ctypes.WinDLL); here the fd comes from os.open
    created = []

    def create_file(path):
        created.append(path)
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND)

    plat._win_create_file = create_file
    imported = []
    for pkg_name in PACKAGES:
        pkg = importlib.import_module(pkg_name)
        imported.append(pkg_name)
        for info in pkgutil.iter_modules(pkg.__path__, pkg_name + "."):
            if not info.ispkg:
                importlib.import_module(info.name)
                imported.append(info.name)
    assert "fcntl" not in sys.modules
    lap("imported")

    from mia.cli import cli
    from mia.engine.log import EventLog
    from mia.engine.events import RecordingEnded, FeedStatus

    def run_cli(args):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.main(args, prog_name="mia", standalone_mode=False)
                code = 0
            except SystemExit as exc:
                code = exc.code or 0
            except Exception as exc:
                code = f"{type(exc).__name__}: {exc}"
        return code, out.getvalue(), err.getvalue()

    data = sys.argv[1]
    levels = os.path.join(data, "levels", "mia-levels.txt")
    os.makedirs(os.path.dirname(levels))

    # record until Ctrl+C: a thread waits (bounded) for the live segment to hold frames, then
    # sends SIGINT as the console would
    def interrupt():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            segs = [os.path.join(d, f) for d, _, fs in os.walk(data) for f in fs
                    if f.endswith("-live.mseg")] if os.path.isdir(data) else []
            if segs and os.path.getsize(segs[0]) > 60_000 and os.path.exists(levels):
                break
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    rec = run_cli(["record", "--sim", "--no-publish", "-q", "--data-dir", data, "--poll", "1",
                   "--levels-file", levels])
    lap("recorded")
    log = EventLog(data)
    date = log.dates()[-1]
    ends = [ev.reason for _, ev in log.read(date, kinds=[RecordingEnded])]
    verify = run_cli(["verify", "--data-dir", data, "--date", date, "--json"])
    inspect = run_cli(["inspect", "--data-dir", data, "--date", date, "--json"])
    replay = run_cli(["replay", "--data-dir", data, "--date", date, "--check", "--json", "-q"])

    lap("verified, inspected, replayed")
    # the alert hook's timeout kill on its Windows path (CTRL_BREAK_EVENT missing: terminate)
    from mia.recorder.alerts import AlertHook
    from mia.engine.events import Alert, ALERT_RAISED
    hook = AlertHook("sleep 30", timeout_s=0.3, workers=1)
    hook.submit(Alert(1, 1, "dtc:x", "disconnected", ALERT_RAISED, 5.0, 1.0, ""))
    hook_closed = hook.close(10.0)

    print(json.dumps({
        "imported": len(imported), "fcntl_loaded": "fcntl" in sys.modules,
        "record": rec[0], "record_err": rec[2][-500:], "ends": ends,
        "verify": verify[0], "inspect": inspect[0], "inspect_out": inspect[1][-2000:],
        "replay": replay[0], "replay_out": replay[1].strip().splitlines()[-1:] or [""],
        "levels": open(levels).read() if os.path.exists(levels) else None,
        "lock_positions": sorted(set(lock_positions)),
        "hook": [hook_closed, hook.timed_out, hook.failed], "created": len(created),
    }))
''')


def _packages() -> list[str]:
    import tomllib

    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]["packages"]


def test_mia_records_and_replays_with_windows_in_place_of_posix(tmp_path):
    # Arrange
    script = "PACKAGES = " + repr(_packages()) + "\n" + CHILD
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POLYGON_", "MIA_"))}
    # Act
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "data")], capture_output=True,
                          text=True, timeout=180, env=env, cwd=tmp_path)
    # Assert
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["imported"] > 30 and out["fcntl_loaded"] is False
    assert out["record"] == 0, out["record_err"]
    assert out["ends"] and all(r == "signal" for r in out["ends"]), out["ends"]
    assert out["verify"] == 0 and out["inspect"] == 0
    assert out["replay"] == 0 and json.loads(out["replay_out"][0])["check"] == "ok"
    assert out["levels"] and "," in out["levels"]
    # every lock sat on the one byte far past the data
    from mia.engine.platform import WIN_LOCK_OFFSET

    assert out["lock_positions"] == [WIN_LOCK_OFFSET]
    assert out["hook"] == [True, 1, 0]
    assert out["created"] >= 2  # the live and derived segments, opened the Windows way
