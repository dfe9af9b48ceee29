"""Event log under damage: SIGKILL mid-append, torn tails, flipped bytes, a followed writer."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import msgspec
import pytest

from mia.engine.clock import NS_PER_DAY, ManualClock, utc_day
from mia.engine.errors import LogCorruptError, LogFormatError
from mia.engine.events import Instrument, RecordingEnded, RecordingStarted, Trade
from mia.engine.log import FRAME_HEADER_SIZE, EventLog
from mia.engine.log.format import open_segment

DAY0 = 19_676 * NS_PER_DAY  # 2023-11-15 00:00 UTC
DATE = utc_day(DAY0)
PY = sys.executable


def enc(events) -> list[bytes]:
    """Events as bytes: equality that treats NaN fields as equal."""
    return [msgspec.msgpack.encode(e) for e in events]

# A child that appends Trade(price=i) at full speed and reports, each time append() returns,
# how many have returned: one pwrite() of 8 bytes at offset 0 of a counter file. Not stores
# through a shared mmap: on this machine (kernel 6.18 in a Firecracker VM), stores made through
# a MAP_SHARED mapping by a process that is then SIGKILLed were lost in 2-6 % of kills under
# load (read back as 0 by read() and by the parent's own mapping of the same file, after the
# child had run for 100 ms), whereas pwrite()s, like the log's own frames, always survived.
CHILD = textwrap.dedent("""
    import os, struct, sys
    from mia.engine.clock import ManualClock
    from mia.engine.events import Instrument, Trade
    from mia.engine.log import EventLog
    root, run, counter, fmax = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    base = {day0} + run * 10**12
    fd = os.open(counter, os.O_WRONLY)
    w = EventLog(root).writer(clock=ManualClock(base), fsync="never", frame_max_events=fmax,
                              recording_id="run%d" % run)
    w.append(Instrument(run, base, 1, "ESZ3", "dtc"))
    print("ready", flush=True)
    i = 0
    pack, pwrite = struct.Struct("<q").pack, os.pwrite
    while True:
        w.append(Trade(run, base + i, 1, float(i), 1.0, 1))
        i += 1
        pwrite(fd, pack(i), 0)
""").format(day0=DAY0)


def _frames(path: Path):
    with open_segment(path) as seg:
        return list(seg.scan())


# the damage tests run on both frame formats: same header, CRCs and recovery rules
FORMATS = pytest.mark.parametrize("fmt", [1, 2])


def _write_day(root: Path, n: int = 200, frame_max: int = 16, fmt: int = 2) -> list:
    log = EventLog(root)
    events = [Instrument(DAY0, DAY0, 1, "ESZ3", "dtc")]
    events += [Trade(DAY0 + i, DAY0 + i, 1, float(i), 1.0, 1) for i in range(n)]
    with log.writer(clock=ManualClock(DAY0), frame_max_events=frame_max, fsync="never",
                    format_version=fmt) as w:
        w.append_many(events)
    return [e for _, e in log.read(DATE)]


def _appended(counter: Path) -> int:
    """How many append() calls the child reported as returned."""
    return int.from_bytes(counter.read_bytes(), "little", signed=True)


def test_sigkill_at_random_moments_loses_at_most_the_open_frame(tmp_path):
    root = tmp_path / "log"
    rng = random.Random(1234)
    fmax = 64
    # Each child is killed once it has reported `target` appends (and then wherever it got to in
    # the millisecond the parent takes to notice): before its first trade, inside the first frame,
    # at frame boundaries, and at random depths. A condition, not a sleep: on a loaded machine a
    # child may not run at all during a fixed sleep.
    targets = [0, 1, fmax - 2, fmax - 1, fmax, 3 * fmax]
    targets += [rng.randrange(4 * fmax, 40_000) for _ in range(14)]
    kills = len(targets)
    for run, target in enumerate(targets):
        counter = tmp_path / f"counter-{run}"  # a fresh file per child
        counter.write_bytes(b"\0" * 8)
        child = subprocess.Popen([PY, "-c", CHILD, str(root), str(run), str(counter), str(fmax)],
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "ready"
            deadline = time.monotonic() + 60
            while _appended(counter) < target:
                assert child.poll() is None, f"run {run}: the child died on its own"
                assert time.monotonic() < deadline, f"run {run}: {_appended(counter)} < {target}"
                time.sleep(0.001)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=60)
            child.stdout.close()
        assert child.returncode == -signal.SIGKILL
        appended = _appended(counter)
        # reopen: every run's events are a prefix of what it appended, short by < one frame
        # (+1: killed after append() wrote a frame but before the child reported it)
        log = EventLog(root)
        got = [(s, e) for s, e in log.read(DATE) if type(e) is Trade and e.ts_event == run]
        prices = [e.price for _, e in got]
        assert prices == [float(i) for i in range(len(prices))]
        assert appended >= target
        assert appended - fmax <= len(prices) <= appended + 1, (run, appended, len(prices))
    # a new writer recovers the last torn segment and starts cleanly beside the crashed ones
    log = EventLog(root)
    with log.writer(clock=ManualClock(DAY0 + kills * 10**12), recording_id="after") as w:
        seq = w.append(Trade(99, DAY0 + kills * 10**12, 1, 0.0, 1.0))
    everything = list(log.read(DATE, strict=True))
    seqs = [s for s, _ in everything]
    assert len(set(seqs)) == len(seqs) and seq == max(seqs) - 1
    assert log.verify(DATE).ok
    states = [s.state for s in log.inspect(DATE)]
    assert states == ["crashed"] * kills + ["clean"]


@FORMATS
def test_torn_tail_at_every_offset_recovers_to_last_whole_frame(tmp_path, fmt):
    src = tmp_path / "src"
    events = _write_day(src, n=40, frame_max=16, fmt=fmt)
    (seg,) = EventLog(src).segments(DATE)
    frames = _frames(seg.path)
    last = frames[-1]
    expected = events[: len(events) - last.count]  # every frame but the last
    data = seg.path.read_bytes()
    work = tmp_path / "work"
    for cut in range(last.offset + 1, len(data)):
        shutil.rmtree(work, ignore_errors=True)
        (work / DATE).mkdir(parents=True)
        torn = work / DATE / seg.path.name
        torn.write_bytes(data[:cut])
        log = EventLog(work)
        problems = []
        got = [e for _, e in log.read(DATE, on_problem=problems.append)]
        assert enc(got) == enc(expected)
        assert problems and problems[0].offset == last.offset
        report = log.verify(DATE, repair=True)
        assert report.torn_tails[0].offset == last.offset
        assert report.truncated_bytes == cut - last.offset
        assert torn.stat().st_size == last.offset
        assert log.verify(DATE).ok
        assert enc(e for _, e in log.read(DATE, strict=True)) == enc(expected)


@FORMATS
def test_new_writer_truncates_torn_tail(tmp_path, fmt):
    events = _write_day(tmp_path, n=40, frame_max=16, fmt=fmt)
    (seg,) = EventLog(tmp_path).segments(DATE)
    last = _frames(seg.path)[-1]
    with open(seg.path, "r+b") as f:
        f.truncate(last.offset + FRAME_HEADER_SIZE + 3)
    log = EventLog(tmp_path)
    with log.writer(clock=ManualClock(DAY0 + 10**9), format_version=fmt) as w:
        w.append(Trade(DAY0 + 10**9, DAY0 + 10**9, 1, 1.0, 1.0))
    assert seg.path.stat().st_size == last.offset
    assert log.verify(DATE).ok
    got = [e for _, e in log.read(DATE, strict=True)]
    kept = len(events) - last.count
    assert enc(got[:kept]) == enc(events[:kept])
    assert type(got[kept]) is RecordingStarted and got[kept + 1].ts_recv == DAY0 + 10**9


@FORMATS
def test_flipped_bytes_are_always_detected_and_skipped(tmp_path, fmt):
    src = tmp_path / "src"
    events = _write_day(src, n=300, frame_max=32, fmt=fmt)
    (seg,) = EventLog(src).segments(DATE)
    frames = _frames(seg.path)
    data = seg.path.read_bytes()
    first = frames[0].offset
    # the events of each frame, by frame offset
    per_frame, k = {}, 0
    for fr in frames:
        per_frame[fr.offset] = events[k : k + fr.count]
        k += fr.count
    rng = random.Random(99)
    work = tmp_path / "work"
    for trial in range(150):
        pos = rng.randrange(first, len(data))
        bad = bytearray(data)
        bad[pos] ^= 1 << rng.randrange(8)
        shutil.rmtree(work, ignore_errors=True)
        (work / DATE).mkdir(parents=True)
        path = work / DATE / seg.path.name
        path.write_bytes(bytes(bad))
        log = EventLog(work)
        problems = []
        got = [e for _, e in log.read(DATE, on_problem=problems.append)]
        # the damaged frame is reported, by path and offset, and only it is missing
        hit = max(o for o in per_frame if o <= pos)
        assert problems, f"flip at {pos} not detected"
        assert problems[0].path == str(path) and problems[0].offset == hit
        expected = [e for o, evs in per_frame.items() if o != hit for e in evs]
        assert enc(got) == enc(expected)
        with pytest.raises(LogCorruptError) as exc:
            list(log.read(DATE, strict=True))
        assert exc.value.offset == hit and str(path) in str(exc.value)
        report = log.verify(DATE)
        assert not report.ok


@FORMATS
def test_not_a_log_and_newer_format_are_rejected(tmp_path, fmt):
    _write_day(tmp_path, n=5, fmt=fmt)
    (seg,) = EventLog(tmp_path).segments(DATE)
    data = bytearray(seg.path.read_bytes())
    data[8] = 99  # format version
    seg.path.write_bytes(bytes(data))
    with pytest.raises(LogFormatError, match="newer"):
        list(EventLog(tmp_path).read(DATE))
    seg.path.write_bytes(b"hello, world" * 10)
    with pytest.raises(LogFormatError, match="not a mia log"):
        EventLog(tmp_path).segments(DATE)


FOLLOWED_WRITER = textwrap.dedent("""
    import sys, time
    from mia.engine.clock import ManualClock
    from mia.engine.events import Trade
    from mia.engine.log import EventLog
    root, n = sys.argv[1], int(sys.argv[2])
    clock = ManualClock({day0})
    with EventLog(root).writer(clock=clock, frame_max_events=50, fsync="never") as w:
        print("ready", flush=True)
        for i in range(n):
            w.append(Trade({day0} + i, {day0} + i, 1, float(i), 1.0, 1))
            if i % 37 == 0:
                w.flush()
                time.sleep(0.002)
""").format(day0=DAY0)


@pytest.mark.parametrize("columnar", [False, True], ids=["rows", "columns"])
def test_follow_sees_every_event_once_in_order(tmp_path, columnar):
    n = 3000
    child = subprocess.Popen([PY, "-c", FOLLOWED_WRITER, str(tmp_path), str(n)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        log = EventLog(tmp_path)
        if columnar:  # format-2 frames checked in bulk while the writer appends
            batches = list(log.read_batches(DATE, follow=True, poll_s=0.005,
                                            idle_timeout_s=20))
            got = [(int(b.seq[i]), b.event(i)) for b in batches for i in range(len(b))]
        else:
            got = list(log.read(DATE, follow=True, poll_s=0.005, idle_timeout_s=20))
    finally:
        child.wait(timeout=30)
        child.stdout.close()
    assert child.returncode == 0
    kinds = [type(e) for _, e in got]
    assert kinds[0] is RecordingStarted and kinds[-1] is RecordingEnded
    assert [s for s, _ in got] == list(range(n + 2))
    assert [e.price for _, e in got[1:-1]] == [float(i) for i in range(n)]


def test_follow_stops_when_told(tmp_path):
    log = EventLog(tmp_path)
    w = log.writer(clock=ManualClock(DAY0))
    w.append(Trade(DAY0, DAY0, 1, 1.0, 1.0))
    w.flush()
    t0 = time.monotonic()
    stop_at = t0 + 0.3
    got = list(log.read(DATE, follow=True, poll_s=0.01, stop=lambda: time.monotonic() > stop_at))
    assert 0.25 < time.monotonic() - t0 < 5
    assert [type(e) for _, e in got] == [RecordingStarted, Trade]
    w.close()


@FORMATS
def test_a_frame_with_invalid_utf8_is_a_reported_bad_frame_not_a_crash(tmp_path, fmt):
    """The CRC is right (the writer wrote the bytes), but a string is not UTF-8: msgspec raises
    UnicodeDecodeError there, which readers must treat like any undecodable frame."""
    from mia.engine.clock import ManualClock
    from mia.engine.errors import LogCorruptError
    from mia.engine.events import EventCodec, Instrument, Trade
    from mia.engine.log import EventLog

    def mangling_encode(event) -> bytes:  # what the writer encodes is what the frame holds
        return EventCodec().encode(event).replace(b"BADSYM", b"\xff\xfe\xfd\xfc\xfb\xfa")

    t = 1_800_000_000 * 10**9
    log = EventLog(tmp_path)
    w = log.writer("live", clock=ManualClock(t), format_version=fmt)
    w.append(Trade(t, t, 1, 1.0, 1.0, 1))
    w.flush()
    encode, w._encode = w._encode, mangling_encode
    w.append(Instrument(t + 1, t + 1, 2, "BADSYM", "test"))
    w.flush()
    w._encode = encode
    w.append(Trade(t + 2, t + 2, 1, 3.0, 1.0, 1))
    w.close()
    date = log.dates()[0]
    problems = []
    got = [ev for _, ev in log.read(date, on_problem=problems.append)]
    assert [e.price for e in got if isinstance(e, Trade)] == [1.0, 3.0]
    assert len(problems) == 1 and "decode" in problems[0].reason
    batches = list(log.read_batches(date))
    assert sum(len(b) for b in batches) == len(got)
    with pytest.raises(LogCorruptError):
        list(log.read(date, strict=True))
