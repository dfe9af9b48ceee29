"""Object storage: `mia push` a recorded day to a real S3-compatible server on loopback (moto's
server mode), then read it back from s3:// with the reading commands and the Python API.

The server binds 127.0.0.1 on a free port; AWS_* are dummy values set per test, and
AWS_ENDPOINT_URL points at the server, so nothing here can reach the internet.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import assert_one_line_error, cli_run, last_json_line, write_events

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

BUCKET = "mia-test"


@pytest.fixture(scope="module")
def s3_endpoint():
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_endpoint, monkeypatch, request):
    """A fresh prefix in a bucket of the loopback server; returns its s3:// URL."""
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE",
                "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    import fsspec

    fs = fsspec.filesystem("s3", client_kwargs={"endpoint_url": s3_endpoint})
    if not fs.exists(BUCKET):
        fs.mkdir(BUCKET)
    fs.invalidate_cache()
    return f"s3://{BUCKET}/{request.node.name.replace('[', '_').replace(']', '')}"


def _push(root, date, url, *extra):
    res = cli_run("push", "--date", date, url, "--data-dir", root, "--json", *extra)
    assert res.exit_code == 0, res.output
    return last_json_line(res.stdout)


def _without_paths(inspect_json: dict) -> dict:
    out = dict(inspect_json)
    out.pop("data_dir")
    for day in out["days"]:
        for seg in day["segments"]:
            seg["path"] = seg["path"].replace("\\", "/").rsplit("/", 1)[-1]
    return out


def test_pushed_day_reads_back_identically(sim_day, s3, tmp_path):
    # Arrange: the simulators' day, pushed
    root, date = sim_day
    summary = _push(root, date, s3)
    assert summary["uploaded"] == len(summary["segments"]) >= 2 and summary["skipped"] == 0

    # Act / Assert: replay --check from S3 gives exactly the local result
    local = cli_run("replay", "--data-dir", root, "--date", date, "--check", "--json", "-q")
    remote = cli_run("replay", "--data-dir", s3, "--date", date, "--check", "--json", "-q")
    assert local.exit_code == 0 and remote.exit_code == 0, remote.output
    lj, rj = last_json_line(local.stdout), last_json_line(remote.stdout)
    for key in ("seconds", "events_per_s", "rate"):
        lj.pop(key, None)
        rj.pop(key, None)
    assert rj == lj and rj.get("check") == "ok"

    # export: the same bytes
    for kind in ("trades", "bars"):
        a, b = tmp_path / f"local-{kind}.csv", tmp_path / f"s3-{kind}.csv"
        assert cli_run("export", "--data-dir", root, "--date", date, "--kind", kind,
                       "-o", a, "-q").exit_code == 0
        res = cli_run("export", "--data-dir", s3, "--date", date, "--kind", kind, "-o", b, "-q")
        assert res.exit_code == 0, res.output
        assert a.read_bytes() == b.read_bytes() and a.stat().st_size > 100

    # inspect: the same figures (segment paths differ only by their root)
    li = cli_run("inspect", "--data-dir", root, "--date", date, "--json")
    ri = cli_run("inspect", "--data-dir", s3, "--date", date, "--json")
    assert ri.exit_code == 0, ri.output
    assert _without_paths(last_json_line(ri.stdout)) == _without_paths(last_json_line(li.stdout))
    assert last_json_line(ri.stdout)["data_dir"] == s3

    # verify (without --repair) reads every frame from S3
    res = cli_run("verify", "--data-dir", s3, "--date", date, "--json")
    assert res.exit_code == 0 and last_json_line(res.stdout)["ok"] is True

    # levels and report: the same figures
    for cmd in ("levels", "report"):
        out = ("-o", str(tmp_path / "report.html")) if cmd == "report" else ()
        a = cli_run(cmd, "--data-dir", root, "--date", date, "--json", "-q", *out)
        b = cli_run(cmd, "--data-dir", s3, "--date", date, "--json", "-q", *out)
        assert a.exit_code == 0 and b.exit_code == 0, b.output
        assert last_json_line(b.stdout) == last_json_line(a.stdout)

    # the researcher's API (open_range builds on open_day)
    from mia.replay import open_day, open_range

    assert open_range(s3, date, date).dates == [date]

    day_l, day_r = open_day(root, date), open_day(s3, date)
    assert day_r.symbols() == day_l.symbols()
    cl, cr = day_l.columns("Trade"), day_r.columns("Trade")
    assert cl.keys() == cr.keys() and all((cl[k] == cr[k]).all() for k in cl)


def test_push_is_idempotent(sim_day, s3):
    root, date = sim_day
    first = _push(root, date, s3)
    again = _push(root, date, s3)
    assert first["uploaded"] > 0
    assert again["uploaded"] == 0 and again["skipped"] == len(first["segments"])
    assert again["bytes_uploaded"] == 0


def _hours_of_trades(hours: int, per_hour: int):
    from mia.engine.events import Trade

    t0 = 1_795_000_000_000_000_000
    t0 -= t0 % (86_400 * 10**9)
    t0 += 3_600 * 10**9  # 01:00 UTC
    step = 3_600 * 10**9 // per_hour
    return t0, [Trade(ts_event=t0 + i * step, ts_recv=t0 + i * step, instrument=1,
                      price=5000.0 + (i % 40) * 0.25, size=1 + i % 3, side=1 - 2 * (i % 2))
                for i in range(hours * per_hour)]


def test_one_hour_fetches_a_bounded_number_of_bytes(tmp_path, s3, monkeypatch):
    # Arrange: four hours of trades in small frames, pushed
    import s3fs

    from mia.engine.log import EventLog

    t0, events = _hours_of_trades(4, 40_000)
    root = tmp_path / "data"
    write_events(root, events, frame_max_events=256, fsync="never")
    local = EventLog(root)
    (date,) = local.dates()
    size = sum(s.size for s in local.segments(date))
    _push(root, date, s3)

    fetched = {"bytes": 0, "requests": 0}
    fetch = s3fs.core.S3File._fetch_range

    def counting(self, start, end):
        data = fetch(self, start, end)
        fetched["bytes"] += len(data)
        fetched["requests"] += 1
        return data

    monkeypatch.setattr(s3fs.core.S3File, "_fetch_range", counting)
    hour = 3_600 * 10**9
    start, end = t0 + 2 * hour, t0 + 3 * hour

    # Act
    rows = list(EventLog(s3).read(date, start=start, end=end))

    # Assert: exactly the local rows, for about a quarter of the day's bytes (one hour of four,
    # plus one read-ahead block), in a handful of requests
    assert rows == list(local.read(date, start=start, end=end)) and len(rows) >= 40_000
    from mia.engine.storage import READ_BLOCK

    assert fetched["bytes"] <= size / 4 + READ_BLOCK + 64 * 1024, (fetched, size)
    assert fetched["requests"] <= 4 + size // 4 // READ_BLOCK, fetched


def test_without_index_the_header_walk_still_reads_right(tmp_path, s3):
    # a day copied by other tools (no frame index): same rows, by walking the headers
    import fsspec

    from mia.engine.log import EventLog

    t0, events = _hours_of_trades(2, 5_000)
    root = tmp_path / "data"
    seg = write_events(root, events, frame_max_events=300, fsync="never")
    (date,) = EventLog(root).dates()
    fs = fsspec.filesystem("s3", client_kwargs={"endpoint_url": os.environ["AWS_ENDPOINT_URL"]})
    fs.put_file(str(seg), f"{s3.removeprefix('s3://')}/{date}/{seg.name}")
    hour = 3_600 * 10**9
    got = list(EventLog(s3).read(date, start=t0 + hour, end=t0 + 2 * hour))
    assert got == list(EventLog(root).read(date, start=t0 + hour, end=t0 + 2 * hour))
    assert len(got) >= 5_000


def test_push_refuses_a_segment_being_written(tmp_path, s3):
    from mia.engine.clock import ManualClock
    from mia.engine.events import Trade
    from mia.engine.log import EventLog

    root = tmp_path / "data"
    t0, _ = _hours_of_trades(1, 1)
    with EventLog(root).writer(fsync="never", clock=ManualClock(t0)) as w:
        w.append(Trade(ts_event=t0, ts_recv=t0, instrument=1, price=1.0, size=1, side=1))
        w.flush()
        (date,) = EventLog(root).dates()
        res = cli_run("push", "--date", date, s3, "--data-dir", root)
        line = assert_one_line_error(res, 1)
        assert "being written" in line


def test_push_refuses_a_recent_crashed_segment(sim_day_copy, s3, tmp_path):
    # a segment without RecordingEnded, changed just now: perhaps a writer on another machine
    from mia.engine.log import EventLog

    root, date = sim_day_copy
    seg = EventLog(root).segments(date)[0].path
    data = seg.read_bytes()
    cut = data.rfind(b"MIAF")  # drop the last frame (it holds RecordingEnded)
    seg.write_bytes(data[:cut])
    res = cli_run("push", "--date", date, s3, "--data-dir", root)
    line = assert_one_line_error(res, 1)
    assert "no RecordingEnded" in line


def test_push_refuses_a_damaged_day(sim_day_copy, s3):
    from mia.engine.log import EventLog

    root, date = sim_day_copy
    seg = max(EventLog(root).segments(date), key=lambda s: s.size).path
    data = bytearray(seg.read_bytes())
    i = data.find(b"MIAF", len(data) // 2)
    data[i + 60] ^= 0xFF  # a payload byte of a frame in the middle
    seg.write_bytes(bytes(data))
    res = cli_run("push", "--date", date, s3, "--data-dir", root)
    line = assert_one_line_error(res, 1)
    assert "does not verify" in line


def test_writing_to_a_url_is_a_clear_error(s3):
    from mia.engine.errors import UsageError
    from mia.engine.log import EventLog

    with pytest.raises(UsageError, match="recording stays local"):
        EventLog(s3).writer()
    res = cli_run("verify", "--data-dir", s3, "--date", "2026-11-20", "--repair")
    assert "recording stays local" in assert_one_line_error(res, 2)


def test_missing_day_on_s3_is_one_line(s3):
    res = cli_run("inspect", "--data-dir", s3, "--date", "2026-11-20")
    assert s3 in assert_one_line_error(res, 2)


def test_local_reads_never_touch_fsspec(sim_day):
    # the local path is today's code path: plain files, no fsspec
    from mia.engine.log import EventLog
    from mia.engine.log.format import open_segment

    log = EventLog(sim_day.root)
    info = log.segments(sim_day.date)[0]
    with open_segment(info.path) as seg:
        assert type(seg.f).__module__ == "_io"
    assert isinstance(log.root, Path)
