"""The numba kernels, compiled ahead of time (`mia warmup`) or in the background (`mia record`).

Every kernel is `@njit(cache=True)`: the first process that calls one with a given signature
compiles it (seconds each, ~20 s for all of them on a cold cache) and writes the machine code to
numba's cache; later processes load it (milliseconds). The cache lives

- under ``$NUMBA_CACHE_DIR`` when it is set (one tree per source folder), else
- in ``__pycache__`` beside each kernel's module: mia is installed editable (`pip install -e`),
  so that is the repository's own ``analytics/__pycache__``, ``engine/__pycache__`` ... (git
  ignores them; a fresh clone starts cold). numba falls back to a per-user cache directory when
  that folder is not writable.

An entry is keyed by the kernel's signature and its module's modification time: editing a kernel
module makes its kernels compile again once. ``make`` (the install step of ``make test`` and
``make demo``) runs ``mia warmup`` so that a fresh clone starts warm.

`compile_kernels` reaches every kernel through the calls the live and replay paths make (the
log writer's column encoder, the frame decoders, `Fold.compile`, and the fold's rows through a
real log in a temporary folder), so the cache entries it writes are the ones those paths load:
a `mia record --sim` or `mia replay` after it compiles nothing (tests/test_startup.py checks
this with NUMBA_DEBUG_CACHE). It leaves a stamp beside the cache (the kernel modules' sizes and
times, numba's and Python's versions) that says "warm".

`KernelLoader` is the recorder's: a daemon thread started first thing. On a warm cache it loads
the kernels in-process (well under a second); on a cold one it runs the compile in a child
process (`python -m mia.warmup --stages`: another core, and no GIL shared with the recorder's
event loop, which would starve an in-process compile), loads the log writer's encoder as soon
as the child reports it compiled, and the rest when the child is done. Meanwhile the recorder
logs (its writers write msgpack frames until the encoder is ready) and its fold waits.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

logger = logging.getLogger(__name__)

__all__ = ["compile_kernels", "load_kernels", "load_writer_kernels", "kernels", "cache_is_warm",
           "KernelLoader", "WarmupReport", "main"]

STAMP_NAME = "mia-warmup.json"
_SKIP_DIRS = {"tests", "bench", "docs", "build", "__pycache__"}


def _package_root() -> Path:
    spec = importlib.util.find_spec("mia")
    return Path(spec.origin).parent


def _kernel_modules() -> list[str]:
    """Every mia module that defines a numba kernel (found by its source, without importing)."""
    root = _package_root()
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".")
                             and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            if not name.endswith(".py") or name == "warmup.py":
                continue
            path = Path(dirpath) / name
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            if "@njit" in text:
                rel = path.relative_to(root).with_suffix("")
                out.append(".".join(("mia", *rel.parts)))
    return out


def kernels() -> dict[str, Any]:
    """{module.name: numba dispatcher} of every kernel mia defines."""
    from numba.core.dispatcher import Dispatcher

    out = {}
    for modname in _kernel_modules():
        mod = importlib.import_module(modname)
        for name, obj in vars(mod).items():
            if isinstance(obj, Dispatcher) and getattr(obj.py_func, "__module__", None) == modname:
                out[f"{modname.removeprefix('mia.')}.{name}"] = obj
    return out


# --- what compiles ----------------------------------------------------------------------------

def load_writer_kernels() -> None:
    """The log writer's: the format-2 column encoder it runs on every frame it closes."""
    from mia.engine.events import EventCodec, Instrument, Quote, Trade
    from mia.engine.log import frame2

    rows = [Instrument(1, 1, 1, "ESZ6", "warm-up"), Trade(1, 2, 1, 1.5, 2.0, 1),
            Quote(1, 2, 1, 1.0, 2.0, 3.0, 4.0)]
    frame2.encode(EventCodec().encode_many(rows), len(rows))


def load_kernels(config=None, writer_ready: Callable[[], Any] | None = None) -> None:
    """Compile, or load from numba's cache, every kernel the live and replay paths call, with
    the signatures they call it with: the log writer's first (then `writer_ready()`), the
    reducers' and the log readers' after."""
    from mia.engine import fastdecode
    from mia.engine.log import frame2
    from mia.fold import Fold

    load_writer_kernels()
    if writer_ready is not None:
        writer_ready()
    fastdecode.warm_up()  # the format-1 walker: live ingest decodes the written rows with it
    frame2.warm_up()  # format-2 frames: encoder, decoder, index
    Fold.compile(config)  # the reducers: order flow, book, gamma, volatility, monitor, flow


def _log_round_trip(config=None) -> None:
    """The fold's rows through a real log in a temporary folder, the way `mia record` writes
    and reduces them and `mia replay` reads them back: the kernels see the arrays those paths
    hand them (whatever the log format's decoder produces), so their cache entries match."""
    import tempfile

    from mia.analytics.book import BookReducer
    from mia.engine.clock import ManualClock, utc_day
    from mia.engine.log import EventLog
    from mia.engine.pipeline import Pipeline
    from mia.fold import Fold

    rows = Fold.compile_rows()
    clock = ManualClock(rows[0].ts_recv)
    with tempfile.TemporaryDirectory(prefix="mia-warmup-") as root:
        log = EventLog(root)
        live = Pipeline([Fold(config)])
        with log.writer("live", fsync="never", clock=clock,
                        on_write=live.on_input_written) as writer:
            live.input_writer = writer
            for ev in rows:
                clock.set(ev.ts_recv)
                live.ingest([ev])
        live.process_written()
        replay, book = Fold(config), BookReducer()
        for batch in replay.day_batches(log, utc_day(rows[0].ts_recv)):
            replay.on_batch(batch)
            book.on_batch(batch)  # the research API's standalone depth book


def _compiled(dispatcher) -> bool:
    """Compiled in this process, or found in numba's cache (loading a kernel from the cache
    does not load the kernels it calls: they are inside its machine code). A kernel inlined
    into its callers (`inline="always"`, numba IR) is compiled only inside them."""
    if dispatcher.signatures or dispatcher.targetoptions.get("inline") == "always":
        return True
    index = getattr(getattr(dispatcher._cache, "_cache_file", None), "_index_path", None)
    return bool(index) and os.path.exists(index)


# --- the stamp: "this cache is warm for these sources" ----------------------------------------

def _stamp_path() -> Path:
    """Where the stamp lives: $NUMBA_CACHE_DIR, else analytics/__pycache__ (beside the cache)."""
    cache_dir = os.environ.get("NUMBA_CACHE_DIR")
    if cache_dir:
        return Path(cache_dir) / STAMP_NAME
    return _package_root() / "analytics" / "__pycache__" / STAMP_NAME


def _fingerprint() -> str:
    """The kernel modules' paths, sizes and modification times, numba's and Python's versions:
    what numba's own cache entries are keyed by."""
    from importlib.metadata import version

    h = hashlib.sha256()
    h.update(f"{version('numba')}|{sys.version}|{sys.executable}".encode())
    root = _package_root()
    for modname in _kernel_modules():
        path = root.joinpath(*modname.split(".")[1:]).with_suffix(".py")
        st = path.stat()
        h.update(f"|{path}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def cache_is_warm() -> bool:
    """True when `mia warmup` (or a recorder's child) filled numba's cache for these very
    kernel sources. A partly deleted cache still reads warm: what is missing then compiles
    in the recorder's thread (slower, never wrong)."""
    try:
        return json.loads(_stamp_path().read_text()).get("fingerprint") == _fingerprint()
    except (OSError, ValueError, AttributeError):
        return False


def _write_stamp() -> None:
    path = _stamp_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"fingerprint": _fingerprint()}))
        os.replace(tmp, path)
    except OSError as exc:  # a read-only install: every cold-looking start compiles in a child
        logger.warning("cannot write the warm-cache stamp path=%s error=%s", path, exc)


# --- ahead of time ----------------------------------------------------------------------------

@dataclass
class WarmupReport:
    seconds: float
    kernels: int  # kernels mia defines
    signatures: int  # signatures loaded or compiled in this process
    uncalled: list[str] = field(default_factory=list)  # kernels no warm-up path reached
    cache_dirs: list[str] = field(default_factory=list)

    def json(self) -> dict:
        return {"seconds": round(self.seconds, 3), "kernels": self.kernels,
                "signatures": self.signatures, "uncalled": self.uncalled,
                "cache_dirs": self.cache_dirs}


def compile_kernels(config=None) -> WarmupReport:
    """`mia warmup`: every kernel into numba's cache; what was compiled and where it lives.

    A kernel no warm-up path reached (`uncalled`) is one a new reducer added without teaching
    `Fold.compile` to call it: it would compile on its first live batch."""
    t0 = time.perf_counter()
    load_kernels(config)
    _log_round_trip(config)
    seconds = time.perf_counter() - t0
    found = kernels()
    uncalled = sorted(name for name, d in found.items() if not _compiled(d))
    dirs = sorted({d._cache.cache_path for d in found.values()})
    _write_stamp()
    return WarmupReport(seconds, len(found), sum(len(d.signatures) for d in found.values()),
                        uncalled, dirs)


# --- in the background ------------------------------------------------------------------------

CHILD_TIMEOUT_S = 600.0


class KernelLoader:
    """The kernels for a recorder, in a daemon thread started at once (module docstring);
    `future` holds `then()`'s result (e.g. the fold's warm-up through the log) or the error;
    `writer_ready` is set once the log writer's encoder is loaded."""

    def __init__(self, config=None, then: Callable[[], Any] | None = None, *,
                 defer_s: float = 0.0) -> None:
        self.config = config
        self.then = then
        # the thread starts its work when `begin` is set or `defer_s` passed, whichever first:
        # a recorder sets it once its sources are up, so its start has the CPU to itself
        self.begin = threading.Event()
        self.defer_s = defer_s
        self.future: concurrent.futures.Future = concurrent.futures.Future()
        self.writer_ready = threading.Event()
        self.cold: bool | None = None  # the cache was cold: compiled in a child process
        self.seconds: float | None = None
        self._thread = threading.Thread(target=self._run, name="mia-kernels", daemon=True)

    def start(self) -> KernelLoader:
        self._thread.start()
        return self

    def _run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        self.begin.wait(self.defer_s)
        t0 = time.perf_counter()
        try:
            # module globals, looked up now: tests put a gate in front of them
            self.cold = not cache_is_warm()
            if self.cold:
                _compile_in_child(on_writer=self._writer_from_cache)
            load_kernels(self.config, writer_ready=self.writer_ready.set)
            result = self.then() if self.then is not None else None
        except BaseException as exc:
            self.writer_ready.set()  # the writer compiles inline, or fails, on its own
            self.seconds = time.perf_counter() - t0
            logger.error("kernels failed after %.1fs: %r", self.seconds, exc)
            self.future.set_exception(exc)
            return
        self.seconds = time.perf_counter() - t0
        logger.info("kernels ready seconds=%.2f cold=%s", self.seconds, self.cold)
        self.future.set_result(result)

    def _writer_from_cache(self) -> None:
        load_writer_kernels()
        self.writer_ready.set()

    def done(self) -> bool:
        return self.future.done()

    def wait(self, timeout: float | None = None) -> Any:
        """Block until ready; `then()`'s result, or raise its (or the compile's) error."""
        return self.future.result(timeout)


def _compile_in_child(on_writer: Callable[[], None]) -> None:
    """`python -m mia.warmup --stages` into the same cache; `on_writer()` when it reports the
    writer's encoder compiled. A child that fails is logged, not raised: the kernels then
    compile in this process."""
    argv = [sys.executable, "-m", "mia.warmup", "--stages"]
    t0 = time.perf_counter()
    # stderr to a file, not a pipe: a child writing more than a pipe holds while this thread
    # reads its stdout would block both
    with tempfile.TemporaryFile("w+") as errf, subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errf,
            text=True) as proc:
        timer = threading.Timer(CHILD_TIMEOUT_S, proc.kill)
        timer.start()
        try:
            for line in proc.stdout:
                if line.strip() == "writer":
                    on_writer()
            rc = proc.wait()
        finally:
            timer.cancel()
        errf.seek(0)
        err = errf.read()
    if rc != 0:
        logger.warning("kernel compile child failed rc=%s stderr=%s", rc, err.strip()[-2000:])
    else:
        logger.info("kernels compiled in a child process seconds=%.1f", time.perf_counter() - t0)


def _stages() -> int:
    """The child of `_compile_in_child`: one line on stdout per stage."""
    load_kernels(None, writer_ready=lambda: print("writer", flush=True))
    _log_round_trip(None)
    _write_stamp()
    print("done", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m mia.warmup`: the same as `mia warmup`."""
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--stages"]:
        return _stages()
    from mia.cli import cli

    return cli.main(["warmup", *argv])


if __name__ == "__main__":
    sys.exit(main())
