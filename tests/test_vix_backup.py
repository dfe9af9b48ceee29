"""The VIX backup switch: DTC VIX silent -> Polygon I:VIX, recorded as SourceErrors, replayed."""

from __future__ import annotations

import asyncio
import json

import msgspec
from click.testing import CliRunner

from mia.cli import cli
from mia.config import Config
from mia.data.polygon.models import INDICES_PATH
from mia.data.vix_backup import VixBackup
from mia.engine.clock import ManualClock
from mia.engine.events import (
    FALLBACK_NONE,
    FALLBACK_OTHER_SOURCE,
    Instrument,
    PolygonResponse,
    SourceError,
    Trade,
)
from mia.engine.log import EventLog
from mia.recorder.live import Recorder
from mia.recorder.sim import Simulators

NS = 1_000_000_000
T0 = 1_790_000_000 * NS


def indices(t: int, vix: dict) -> PolygonResponse:
    body = msgspec.json.encode({"status": "OK", "request_id": "r", "results": [vix]})
    return PolygonResponse(t, t, "", INDICES_PATH, "ticker.any_of=I:VIX", 200, "r", 1, body)


def switches(events) -> list[tuple[str, str, int]]:
    return [(e.error, e.fallback, e.fallback_kind) for e in events
            if isinstance(e, SourceError) and e.source == "dtc" and e.underlying == "VIX"]


def test_switch_waits_for_silence_and_for_a_polygon_value():
    # Arrange
    clock = ManualClock(T0)
    out: list = []
    backup = VixBackup("$VIX", after_s=30.0, emit=out.append, clock=clock)
    emit = backup.tap(out.append)
    emit(Instrument(T0, T0, 7, "$VIX", "dtc:127.0.0.1:11099", kind="index"))
    emit(Trade(T0, T0, 7, 16.1, 1.0))
    # Act / Assert: silent 31 s but Polygon's row is NOT_ENTITLED: no switch
    clock.advance(31 * NS)
    emit(indices(clock.now_ns(), {"ticker": "I:VIX", "error": "NOT_ENTITLED", "message": "no"}))
    backup.check()
    assert switches(out) == []
    # Polygon has a value: switch
    emit(indices(clock.now_ns(), {"ticker": "I:VIX", "value": 16.4, "last_updated": clock.now_ns()}))
    assert switches(out) == [("no VIX from DTC for 30 s", "using Polygon I:VIX", FALLBACK_OTHER_SOURCE)]
    backup.check()  # once only
    # DTC sends again: back
    clock.advance(NS)
    emit(Trade(clock.now_ns(), clock.now_ns(), 7, 16.2, 1.0))
    assert switches(out)[1:] == [("DTC VIX back", "using DTC VIX", FALLBACK_NONE)]
    # another instrument's trades never count as VIX
    clock.advance(40 * NS)
    emit(Trade(clock.now_ns(), clock.now_ns(), 8, 6000.0, 1.0))
    backup.check()
    assert len(switches(out)) == 3


async def until(cond, timeout_s: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not cond():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def test_silent_dtc_vix_switches_to_polygon_and_replay_checks(tmp_path):
    # Arrange: the simulators with the DTC VIX index silent from the start; a 1 s threshold
    base = Config()
    base = msgspec.structs.replace(base, bus=msgspec.structs.replace(base.bus, enabled=False))

    async def go():
        async with Simulators(seed=4, rate=1500.0) as sims:
            sims.dtc.silent_symbols.add("VIX")
            cfg = sims.record_config(base, poll_s=30.0, volatility=True)
            cfg = cfg.replace(dtc=[msgspec.structs.replace(cfg.dtc[0], vix_backup_after_s=1.0)],
                              polygon=msgspec.structs.replace(cfg.polygon, indices_poll_s=0.3, underlyings=["SPX"]))
            rec = Recorder(cfg, str(tmp_path), status=None)
            run = asyncio.create_task(rec.run(30.0))
            dtc_source = f"dtc:{sims.host}:{sims.dtc.port}"

            def errors() -> int:
                st = rec.stats.get(dtc_source)
                return st.errors if st is not None else 0

            # Act: wait for the switch, let DTC VIX speak again, wait for the switch back
            switched = await until(lambda: errors() >= 1, 15.0)
            sims.dtc.silent_symbols.clear()
            back = await until(lambda: errors() >= 2, 10.0)
            rec.stop()
            result = await asyncio.wait_for(run, 15.0)
            return switched, back, result

    switched, back, result = asyncio.run(go())

    # Assert: both SourceErrors in the live log, the indices recorded, VIX trades after the switch back
    assert switched and back
    events = [ev for _, ev in EventLog(str(tmp_path)).read(result.date)]
    assert switches(events) == [("no VIX from DTC for 1 s", "using Polygon I:VIX", FALLBACK_OTHER_SOURCE),
                                ("DTC VIX back", "using DTC VIX", FALLBACK_NONE)]
    idx = [e for e in events if isinstance(e, PolygonResponse) and e.path == INDICES_PATH]
    assert idx and all(e.status == 200 and "I:VIX" in e.query for e in idx)
    vix_ids = {e.instrument for e in events if isinstance(e, Instrument) and e.symbol == "VIX"}
    # DTC VIX data after the switch back (whatever it was: a trade, a quote, a book level)
    assert any(not isinstance(e, Instrument) and getattr(e, "instrument", None) in vix_ids for e in events)
    # and the replay of that day reproduces what live computed
    res = CliRunner().invoke(cli, ["replay", "--data-dir", str(tmp_path), "--date", result.date,
                                   "--check", "--json", "-q"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["check"] == "ok"
