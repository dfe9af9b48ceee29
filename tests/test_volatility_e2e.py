"""The volatility reducers in the fold on a simulator day: `mia replay --check` stays ok and
`--json` carries the `volatility` entry."""

from __future__ import annotations

import asyncio
import json
import time

import msgspec
from click.testing import CliRunner

from mia.cli import cli
from mia.config import Config
from mia.engine.clock import utc_day
from mia.engine.events import EventCodec, IvSurface, TermStructure
from mia.engine.log import EventLog
from mia.recorder.live import Recorder
from mia.recorder.sim import Simulators

BOUND_S = 90.0  # the most the recording may take on a loaded machine


def record_until_volatility(root):
    """Record from fresh simulators until the derived stream holds a TermStructure with two VX
    contracts and an IvSurface (bounded), then stop cleanly."""

    def ready() -> bool:
        log = EventLog(root)
        got = [ev for d in log.dates()
               for _, ev in log.read(d, kinds=[TermStructure, IvSurface], streams=["derived"])]
        return (any(isinstance(e, IvSurface) for e in got)
                and any(isinstance(e, TermStructure) and len(e.symbols) >= 2 for e in got))

    async def go():
        async with Simulators(seed=3, rate=2000.0) as sims:
            base = Config()
            base = msgspec.structs.replace(base, bus=msgspec.structs.replace(base.bus, enabled=False))
            rec = Recorder(sims.record_config(base, poll_s=0.5), str(root))
            run = asyncio.create_task(rec.run())
            deadline = time.monotonic() + BOUND_S
            loop = asyncio.get_running_loop()
            try:
                await asyncio.sleep(2.0)
                while not await loop.run_in_executor(None, ready):
                    assert not run.done(), "the recorder stopped on its own"
                    assert time.monotonic() < deadline, "no volatility events in time"
                    await asyncio.sleep(0.5)
            finally:
                rec.stop()
            return await run

    return asyncio.run(go())


def replay_json(root, date):
    res = CliRunner().invoke(cli, ["replay", "--data-dir", str(root), "--date", date, "--check", "--json", "-q"])
    lines = res.stdout.strip().splitlines()
    return res, json.loads(lines[-1]) if lines else None


def test_sim_day_checks_ok_with_the_volatility_entry(tmp_path):
    # Arrange: the simulators' ES, NQ, VIX and VX curve over DTC and SPX/NDX chains, recorded
    # until the fold has emitted both volatility kinds
    result = record_until_volatility(tmp_path)
    # Act
    res, out = replay_json(tmp_path, result.date)
    # Assert
    assert res.exit_code == 0, res.output
    assert out["check"] == "ok"
    vol = out["volatility"]
    assert set(vol) == {"vix", "iv"}
    assert set(vol["vix"]) == {"spot", "vx", "contango_1_2", "cm30"}
    vx = vol["vix"]["vx"]
    assert vx and all(sym.startswith("VX") and price > 0 for sym, _, price in vx)
    expiries = [expiry for _, expiry, _ in vx]
    assert expiries == sorted(expiries) and all(len(e) == 10 and e[4] == "-" for e in expiries)
    if len(vx) >= 2:
        assert vol["vix"]["contango_1_2"] == vx[1][2] / vx[0][2] - 1
    assert vol["vix"]["spot"] > 0  # the simulator's VIX index over DTC
    assert vol["iv"] and set(vol["iv"]) <= {"SPX", "NDX"}  # the chains polled in those seconds
    for u, s in vol["iv"].items():
        assert set(s) == {"atm", "rr25", "bf25"}
        atm = [v for v in s["atm"].values() if v is not None]
        assert atm and all(0.01 < v < 3.0 for v in atm), (u, s["atm"])
    # export: one row per derived event, and the rows give the events back
    from mia.replay import open_day
    from mia.replay.export import events_from_table, export_day, export_table

    day = open_day(str(tmp_path), result.date)
    for kind, cls in (("term", TermStructure), ("iv", IvSurface)):
        logged = [ev for _, ev in day.log.read(result.date, kinds=[cls], streams=("derived",))]
        table = export_table(day, kind)
        assert table.num_rows == len(logged) > 0
        assert EventCodec().encode_many(events_from_table(kind, table)) == EventCodec().encode_many(logged)
        summary = export_day(str(tmp_path), result.date, kind, "csv", tmp_path / f"{kind}.csv")
        assert summary.rows == len(logged)
    # report: the VX curve through the day and each underlying's smiles; levels: VIX and VX 30d
    from mia.replay.outputs import levels_at, report_day

    report = report_day(str(tmp_path), result.date)
    curve = report.figures["vx-curve"]
    assert curve.points == len([ev for _, ev in day.log.read(result.date, kinds=[TermStructure],
                                                              streams=("derived",))])
    assert curve.last_cm30 == out["volatility"]["vix"]["cm30"] or out["volatility"]["vix"]["cm30"] is None
    for u in out["volatility"]["iv"]:
        smile = report.figures[f"smile-{u}"]
        surface = [ev for _, ev in day.log.read(result.date, kinds=[IvSurface], streams=("derived",))
                   if ev.underlying == u][-1]
        assert smile.smile_points == len(surface.smile_iv) > 0 and smile.expiries == len(surface.expiries)
        # keyed by date: an AM- and a PM-settled expiry of one date share a key (the PM one stays)
        assert len(out["volatility"]["iv"][u]["atm"]) == len({utc_day(e) for e in surface.expiries})
    assert 'id="vx-curve"' in report.html
    labels = {lv.label: lv.value for lv in levels_at(str(tmp_path), result.date)}
    vix = [v for label, v in labels.items() if label in ("VIX", "VIX (polygon)")]
    assert vix == [out["volatility"]["vix"]["spot"]]
    if out["volatility"]["vix"]["cm30"] is not None:
        assert labels["VX 30d"] == out["volatility"]["vix"]["cm30"]
