"""Random byte flips across a recorded day. `mia verify` reports every damaged frame; a lenient
read or replay skips exactly those frames and says so; a strict read fails at the first one."""

from __future__ import annotations

import asyncio
import random
import shutil
import subprocess

import pytest
from reliability_kit import clean_env, mia_cmd, record_figures

from mia.config import Config
from mia.data.dtc.config import DtcConfig
from mia.data.dtc.server import DtcSimulator
from mia.data.polygon.config import PolygonConfig
from mia.engine.bus import BusConfig
from mia.engine.errors import LogCorruptError
from mia.engine.log import (
    FRAME_HEADER_SIZE,
    EventLog,
    LogConfig,
    _Frame,
    _read_segment_header,
    _scan,
)
from mia.recorder.live import Recorder


async def _record(root, seconds: float, fmt: int) -> None:
    async with DtcSimulator(seed=9, rate=4000.0) as sim:
        cfg = Config(dtc=[DtcConfig(host="127.0.0.1", port=sim.port, symbols=["ESZ6", "NQZ6"])],
                     polygon=PolygonConfig(enabled=False), bus=BusConfig(enabled=False),
                     log=LogConfig(format_version=fmt))
        await Recorder(cfg, str(root)).run(seconds)


# the suite runs on both frame formats (format 1 days stay readable forever)
@pytest.fixture(scope="module", params=[1, 2], ids=["format1", "format2"])
def recorded_day(tmp_path_factory, request):
    root = tmp_path_factory.mktemp("pristine") / "data"
    asyncio.run(_record(root, 3.0, request.param))
    (seg, *_) = EventLog(root).segments(EventLog(root).dates()[0])
    assert seg.format_version == request.param
    return root


def _frames_of(path) -> list[_Frame]:
    with open(path, "rb") as f:
        _, _, _, pos = _read_segment_header(f, path)
        items = list(_scan(f, path, pos, path.stat().st_size))
    assert all(isinstance(i, _Frame) for i in items)
    return items


def _flip(root, rng: random.Random, flips: int) -> dict[tuple[str, int], int]:
    """Flip one byte in each of `flips` frames (never two neighbours, never a segment header);
    returns {(path, frame offset): events in that frame}."""
    frames = [(str(p), fr) for p in sorted(root.glob("*/*.mseg")) for fr in _frames_of(p)]
    chosen: dict[tuple[str, int], int] = {}
    candidates = list(range(len(frames)))
    rng.shuffle(candidates)
    taken: set[int] = set()
    for i in candidates:
        if len(chosen) == flips:
            break
        if {i - 1, i, i + 1} & taken:  # neighbours would be reported as one damaged run
            continue
        path, fr = frames[i]
        at = fr.offset + rng.randrange(FRAME_HEADER_SIZE + fr.clen)
        with open(path, "r+b") as f:
            f.seek(at)
            byte = f.read(1)[0]
            f.seek(at)
            f.write(bytes([byte ^ rng.randrange(1, 256)]))
        taken.add(i)
        chosen[(path, fr.offset)] = fr.count
    return chosen


def _trial(recorded_day, tmp_path, seed: int, flips: int) -> dict:
    root = tmp_path / f"day-{seed}"
    shutil.copytree(recorded_day, root)
    log = EventLog(root)
    (date,) = log.dates()
    total = sum(1 for _ in log.read(date))
    damaged = _flip(root, random.Random(seed), flips)

    # verify names every damaged frame, and nothing else. A damaged *last* frame of a segment
    # is reported as a torn tail (Kafka's rule: nothing valid follows, so --repair may cut it).
    report = log.verify(date)
    assert not report.ok
    found = [(p.path, p.offset) for p in report.bad_frames] + \
        [(t.path, t.offset) for t in report.torn_tails]
    assert sorted(found) == sorted(damaged)

    # lenient read: skips exactly those frames and reports each one
    problems = []
    events = sum(1 for _ in log.read(date, on_problem=problems.append))
    assert {(p.path, p.offset) for p in problems} == set(damaged)
    assert events == total - sum(damaged.values())

    # strict read: fails, naming the first damaged frame of a segment
    with pytest.raises(LogCorruptError) as err:
        for _ in log.read(date, strict=True):
            pass
    assert (err.value.path, err.value.offset) in damaged
    return {"damaged": damaged, "root": root, "date": date, "events_skipped": sum(damaged.values()),
            "total": total, "as_tail": len(report.torn_tails)}


def test_byte_flips_reported_skipped_and_strict_fails(recorded_day, tmp_path):
    t = _trial(recorded_day, tmp_path, seed=1, flips=6)
    root, date = t["root"], t["date"]
    # the command line: verify exits 1 listing each bad frame; a (lenient) replay runs to the end
    # and reports each damaged live frame on stderr
    v = subprocess.run(mia_cmd("verify", "--date", date, "--data-dir", str(root)),
                       capture_output=True, text=True, env=clean_env(), timeout=120)
    assert v.returncode == 1
    listed = [ln for ln in v.stdout.splitlines()
              if ln.strip().startswith(("bad frame:", "torn tail:"))]
    assert len(listed) == len(t["damaged"])
    for path, offset in t["damaged"]:
        assert any(path in ln and f"at byte {offset}:" in ln for ln in listed), (path, offset)
    r = subprocess.run(mia_cmd("replay", "--date", date, "--data-dir", str(root), "-q"),
                       capture_output=True, text=True, env=clean_env(), timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    live_damaged = [k for k in t["damaged"] if k[0].endswith("-live.mseg")]
    reported = [ln for ln in r.stderr.splitlines() if "log damage" in ln]
    assert len(reported) == len(live_damaged), r.stderr[-3000:]
    record_figures("corruption_short", trials=1, faults=f"{len(t['damaged'])} byte flips",
                   frames_reported=len(t["damaged"]), reported_as_torn_tail=t["as_tail"],
                   frames_missed=0,
                   events_skipped=t["events_skipped"], events_total=t["total"], crashes=0)


@pytest.mark.slow
def test_byte_flips_many_trials(recorded_day, tmp_path):
    flips = skipped = as_tail = 0
    for seed in range(100, 130):
        t = _trial(recorded_day, tmp_path, seed=seed, flips=1 + seed % 8)
        flips += len(t["damaged"])  # _trial asserted each one was reported
        skipped += t["events_skipped"]
        as_tail += t["as_tail"]
        shutil.rmtree(t["root"])
    record_figures("corruption_long", trials=30, faults=f"{flips} byte flips",
                   frames_reported=flips, reported_as_torn_tail=as_tail, frames_missed=0,
                   events_skipped=skipped, crashes=0)
