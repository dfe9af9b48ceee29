"""`mia migrate`: a day rewritten into the writer's format keeps every event, every seq and its
segment metadata, and a day of chain pages gets its ChainSnapshots (in a `chains` stream) so it
replays without parsing JSON, to the same derived events; migrating again does nothing; a rewrite
not proved equal keeps its original; a segment being written is left alone; and a real process
killed with SIGKILL at any step leaves the day readable with every event."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import msgspec
import pytest
from helpers import PY, cli_run, write_events

from mia.data.polygon.models import chain_snapshot
from mia.engine.clock import ManualClock
from mia.engine.events import (
    ChainSnapshot,
    EventCodec,
    PolygonResponse,
    RecordingEnded,
    RecordingStarted,
)
from mia.engine.log import EventLog
from mia.engine.log.format import FORMAT_VERSION, Frame, open_segment
from mia.fold import LIVE_STREAMS, Fold
from mia.replay import migrate as migrate_mod
from mia.replay import replay_day
from mia.replay.check import check_chain_snapshots
from mia.replay.migrate import CHAINS_STREAM, MigrateError, migrate_day

DAY_V0 = Path(__file__).resolve().parent / "data" / "day-v0"
DATE = "2026-11-28"
CODEC = EventCodec()


@pytest.fixture
def day(tmp_path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(DAY_V0 / DATE, root / DATE)
    return root


def streams_of(root) -> dict[str, list[tuple[int, bytes]]]:
    """Every (seq, encoding) of each original stream of the day, in log order."""
    log = EventLog(root)
    return {s: [(seq, CODEC.encode(ev)) for seq, ev in log.read(DATE, streams=[s])]
            for s in ("live", "derived")}


def metadata_of(root) -> dict[str, dict]:
    return {Path(i.path).name: i.metadata for i in EventLog(root).segments(DATE) if i.stream != CHAINS_STREAM}


def derived_of(root, streams) -> list[bytes]:
    fold = Fold()
    out: list[bytes] = []
    for batch in fold.day_batches(EventLog(root), DATE, streams=streams):
        out.extend(CODEC.encode(ev) for ev in fold.on_batch(batch))
    return out


def chains_of(root) -> list:
    log = EventLog(root)
    if not any(i.stream == CHAINS_STREAM for i in log.segments(DATE)):
        return []
    return [ev for _, ev in log.read(DATE, streams=[CHAINS_STREAM])]


def test_migrate_keeps_every_event_and_adds_the_chains(day, monkeypatch):
    events, meta = streams_of(day), metadata_of(day)
    derived = derived_of(day, LIVE_STREAMS)
    summary = replay_day(str(day), DATE).json()
    res = cli_run("migrate", "--date", DATE, "--data-dir", str(day))
    assert res.exit_code == 0, res.output
    assert "3 ChainSnapshots written" in res.stdout
    assert streams_of(day) == events and metadata_of(day) == meta
    assert all(i.format_version == FORMAT_VERSION for i in EventLog(day).segments(DATE))

    chains = chains_of(day)
    assert isinstance(chains[0], RecordingStarted) and chains[0].chain_snapshots
    assert chains[0].stream == CHAINS_STREAM and isinstance(chains[-1], RecordingEnded)
    snaps = chains[1:-1]
    assert len(snaps) == 3 and all(isinstance(s, ChainSnapshot) for s in snaps)
    pages = [ev for _, ev in EventLog(day).read(DATE, kinds=[PolygonResponse], streams=["live"])
             if ev.final and ev.underlying]
    assert [s.ts_recv for s in snaps] == [p.ts_recv for p in pages]  # at each final page
    assert check_chain_snapshots(EventLog(day), DATE).snapshots == 3

    # the default replay folds the chains: the same derived events, without parsing JSON
    assert derived_of(day, ("live", CHAINS_STREAM)) == derived
    from test_chain_snapshots import _no_json_parsing

    with monkeypatch.context() as m:
        _no_json_parsing(m)
        after = replay_day(str(day), DATE).json()
    assert after["events"] == summary["events"] + len(chains)  # the chains' own rows
    assert msgspec.json.encode({**after, "events": 0}) == msgspec.json.encode({**summary, "events": 0})
    res = cli_run("replay", "--check", "--deep", "-q", "--date", DATE, "--data-dir", str(day),
                  "--config", str(DAY_V0 / "mia.toml"))
    assert res.exit_code == 0 and "check --deep: ok (3 chain snapshots" in res.stderr, res.output

    # again: nothing to do, and it says so
    files = sorted((p.name, p.stat().st_mtime_ns) for p in (day / DATE).iterdir())
    res = cli_run("migrate", "--date", DATE, "--data-dir", str(day))
    assert res.exit_code == 0 and "already migrated" in res.stdout, res.output
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (day / DATE).iterdir()) == files
    assert not (day / migrate_mod.STAGING_DIR).exists()


def test_forced_rewrite_is_the_writers_bytes(tmp_path):
    """A rewrite writes what the writer writes: a writer's segment comes back byte for byte."""
    events = [ev for _, ev in EventLog(DAY_V0).read(DATE, streams=["live"])
              if not isinstance(ev, (RecordingStarted, RecordingEnded))]
    for version in migrate_mod.FORMAT_VERSIONS:
        root = tmp_path / f"v{version}"
        kw = {} if version == FORMAT_VERSION else {"format_version": version}
        # frames cut by count alone: compact already, so compaction joins none of them
        path = write_events(root, events, frame_max_ms=1e9, **kw)
        before = path.read_bytes()
        result = migrate_day(root, DATE, target_format=version, force=True, chains=False)
        assert [s.action for s in result.segments] == ["rewritten"]
        assert path.read_bytes() == before, f"format {version}"


def test_a_rewrite_not_proved_equal_keeps_the_original(day, monkeypatch):
    before = {p.name: p.read_bytes() for p in (day / DATE).iterdir()}
    real = migrate_mod._FrameEncoder.frame

    def off_by_one(self, events, first_seq):
        return real(self, events, first_seq + 1)

    monkeypatch.setattr(migrate_mod._FrameEncoder, "frame", off_by_one)
    res = cli_run("migrate", "--date", DATE, "--force", "--data-dir", str(day))
    assert res.exit_code == 1, res.output
    assert "skipped" in res.stdout and "frame 0 holds seqs" in res.stdout
    after = {p.name: p.read_bytes() for p in (day / DATE).iterdir() if p.name in before}
    assert after == before
    assert not list((day / DATE).glob(".*"))  # no temporary file left


def test_prove_equal_sees_a_changed_event(day, tmp_path):
    seg = next(Path(i.path) for i in EventLog(day).segments(DATE) if i.stream == "live")
    enc = migrate_mod._FrameEncoder(FORMAT_VERSION)
    with open_segment(seg) as s:
        meta = s.metadata
    frames = list(migrate_mod._frames(seg))
    other = tmp_path / "other.mseg"
    parts = [enc.header(meta)]
    for k, (frame, evs) in enumerate(frames):
        if k == 3:
            evs = [msgspec.structs.replace(evs[0], ts_event=evs[0].ts_event + 1), *evs[1:]]
        parts.append(enc.frame(evs, frame.first_seq))
    other.write_bytes(b"".join(parts))
    with pytest.raises(MigrateError, match=f"seq {frames[3][0].first_seq} differs"):
        migrate_mod._prove_equal(seg, other, FORMAT_VERSION)


def test_a_segment_being_written_is_left_alone(day):
    last = max(ev.ts_recv for _, ev in EventLog(day).read(DATE))
    clock = ManualClock(last)
    with EventLog(day).writer("live", clock=clock) as w:
        open_path = w.path
        result = migrate_day(day, DATE, force=True)
        actions = {s.segment: s.action for s in result.segments}
        assert actions.pop(open_path.name) == "open" and set(actions.values()) == {"rewritten"}
        assert result.chain_snapshots == 0 and "still being written" in result.chains_note
        assert not result.skipped
    assert migrate_day(day, DATE).chain_snapshots == 3  # once it is closed


# --- kill -9 --------------------------------------------------------------------------------------

KILLER = r"""
import os, signal, sys
from mia.engine import platform as plat
from mia.engine.log import LogWriter
from mia.replay import migrate as m

root, date, what, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
calls = [0]

def kill_at_call(real):
    def f(*a, **k):
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*a, **k)
    return f

if what == "write":  # the temporary segment's bytes, part by part
    m.os.write = kill_at_call(os.write)
elif what == "replace":  # the atomic swaps: each segment, then the chains segment
    plat.replace = kill_at_call(plat.replace)
elif what == "append":  # the chains segment being staged
    LogWriter.append = kill_at_call(LogWriter.append)
m.migrate_day(root, date, force=True)
print("finished")
"""

# the temporary file half written (compacted, the live segment is written in 3 parts: header,
# RecordingStarted's frame, the rest), the second segment's half written after the first was
# swapped; whole but not swapped in; one segment swapped, the other not; the chains segment
# half staged, then staged whole but not renamed into the day
KILL_POINTS = [("write", 2), ("write", 3), ("write", 6), ("replace", 1), ("replace", 2), ("append", 2),
               ("replace", 3)]


def test_kill_9_at_every_step_leaves_every_event(day):
    events, meta = streams_of(day), metadata_of(day)
    for what, n in KILL_POINTS:
        proc = subprocess.run([PY, "-c", KILLER, str(day), DATE, what, str(n)], capture_output=True,
                              timeout=300)
        where = f"killed at {what} #{n}: {proc.stderr.decode(errors='replace')[-1500:]}"
        assert proc.returncode == -signal.SIGKILL, where
        assert streams_of(day) == events and metadata_of(day) == meta, where
        assert EventLog(day).verify(DATE).ok, where
        chains = chains_of(day)
        assert chains == [] or (len(chains) == 5 and isinstance(chains[-1], RecordingEnded)), where
    # a finished run afterwards: the stale temporaries gone, the day migrated
    result = migrate_day(day, DATE)
    assert not result.skipped
    assert streams_of(day) == events and metadata_of(day) == meta
    assert len(chains_of(day)) == 5 and check_chain_snapshots(EventLog(day), DATE).snapshots == 3
    assert not [p for p in (day / DATE).iterdir() if p.name.startswith(".")]
    assert not migrate_day(day, DATE).changed


def test_chain_snapshot_written_is_the_pollers(day):
    migrate_day(day, DATE)
    pages: dict = {}
    for _, ev in EventLog(day).read(DATE, kinds=[PolygonResponse], streams=["live"]):
        if ev.underlying:
            pages.setdefault((ev.underlying, ev.snapshot_id), []).append(ev)
    snaps = [ev for ev in chains_of(day) if isinstance(ev, ChainSnapshot)]
    assert [CODEC.encode(s) for s in snaps] == [CODEC.encode(chain_snapshot(pages[(s.underlying, s.snapshot_id)]))
                                                for s in snaps]


def test_migrate_json_and_usage(day, tmp_path):
    from helpers import last_json_line

    res = cli_run("migrate", "--date", DATE, "--data-dir", str(day), "--json")
    out = last_json_line(res.stdout)
    assert res.exit_code == 0 and out["changed"] and out["chain_snapshots"] == 3 and out["date"] == DATE
    assert {s["action"] for s in out["segments"]} <= {"rewritten", "current"}
    again = last_json_line(cli_run("migrate", "--date", DATE, "--data-dir", str(day), "--json").stdout)
    assert not again["changed"] and again["chain_snapshots"] == 0
    res = cli_run("migrate", "--date", "2026-01-02", "--data-dir", str(day))
    assert res.exit_code != 0 and "no data" in res.output.lower()


# --- compaction -----------------------------------------------------------------------------------


def frames_of(path) -> list:
    with open_segment(path) as seg:
        return list(seg.scan(lo=1 << 62))  # headers only


def test_a_format_2_day_of_small_frames_is_compacted(day, monkeypatch):
    """A format-2 day recorded live (small frames) is compacted: far fewer frames, every event
    and seq and the metadata unchanged, the chains stream's frames left alone, `replay --check`
    ok; migrating again does nothing."""
    with monkeypatch.context() as m:  # format 2 with the recording's own frames, as live
        m.setattr(migrate_mod, "_compaction", lambda stream: False)
        migrate_day(day, DATE)
    segs = {Path(i.path).name: (i.stream, Path(i.path)) for i in EventLog(day).segments(DATE)}
    before = {name: frames_of(p) for name, (_, p) in segs.items()}
    assert all(i.format_version == FORMAT_VERSION for i in EventLog(day).segments(DATE))
    live = next(name for name, (s, _) in segs.items() if s == "live")
    assert len(before[live]) > 50
    chains = next(p for s, p in segs.values() if s == CHAINS_STREAM)
    chain_bytes = chains.read_bytes()
    events, meta = streams_of(day), metadata_of(day)
    assert not migrate_mod.is_compact(segs[live][1], "live")

    result = migrate_day(day, DATE)
    done = {s.segment: s for s in result.segments}
    assert done[live].action == "rewritten" and done[live].frames_before == len(before[live])
    after = {name: frames_of(p) for name, (_, p) in segs.items()}
    assert len(after[live]) == done[live].frames < len(before[live]) // 10
    assert done[chains.name].action == "current" and chains.read_bytes() == chain_bytes
    for name, frames in after.items():
        assert all(isinstance(f, Frame) and f.count <= migrate_mod.COMPACT_EVENTS for f in frames)
        assert frames[0].count == 1  # RecordingStarted alone, as the writer writes it
        seqs = [(f.first_seq, f.count) for f in frames]
        assert all(a + n == b for (a, n), (b, _) in zip(seqs, seqs[1:]))  # seqs follow on
    assert streams_of(day) == events and metadata_of(day) == meta
    assert chains_of(day)[0].chain_snapshots and len(chains_of(day)) == 5
    res = cli_run("replay", "--check", "--deep", "-q", "--date", DATE, "--data-dir", str(day),
                  "--config", str(DAY_V0 / "mia.toml"))
    assert res.exit_code == 0 and "check --deep: ok" in res.stderr, res.output

    files = sorted((p.name, p.stat().st_mtime_ns) for p in (day / DATE).iterdir())
    res = cli_run("migrate", "--date", DATE, "--data-dir", str(day))
    assert res.exit_code == 0 and "already migrated" in res.stdout, res.output
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (day / DATE).iterdir()) == files


def test_compaction_keeps_to_its_bounds(day, monkeypatch):
    """Joined frames hold at most COMPACT_EVENTS events, and stop at COMPACT_BYTES of payload;
    a compacted day is compact (a second run does nothing)."""
    events = streams_of(day)
    monkeypatch.setattr(migrate_mod, "COMPACT_EVENTS", 100)
    migrate_day(day, DATE, chains=False)
    live = next(Path(i.path) for i in EventLog(day).segments(DATE) if i.stream == "live")
    counts = [f.count for f in frames_of(live)]
    assert max(counts) <= 100 and len(counts) >= 1_833 // 100 and streams_of(day) == events
    assert all(migrate_mod.is_compact(Path(i.path), i.stream) for i in EventLog(day).segments(DATE))
    assert not migrate_day(day, DATE, chains=False).changed

    monkeypatch.setattr(migrate_mod, "COMPACT_EVENTS", 4096)
    monkeypatch.setattr(migrate_mod, "COMPACT_BYTES", 8_000)
    migrate_day(day, DATE, chains=False)
    frames = frames_of(live)
    big = [f for f in frames[1:] if f.ulen > 8_000]
    assert len(frames) > 10 and streams_of(day) == events  # 2 with the default bound
    assert all(f.count <= 100 for f in big)  # joined past the byte bound never: only alone
    assert not migrate_day(day, DATE, chains=False).changed
