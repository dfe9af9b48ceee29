"""A failure that ends a recording (a full disk) is reported once, by `Recorder.run`, however
the drain that met it was scheduled; no asyncio future is left with an unretrieved exception
(which printed "Future exception was never retrieved" and a traceback under load)."""

import asyncio
import gc

import msgspec
import pytest

from mia.config import Config
from mia.engine.errors import DiskFullError
from mia.engine.log import EventLog
from mia.recorder.live import Recorder
from mia.recorder.sim import Simulators


def _writer_class():
    import mia.engine.log as log_module

    return log_module.LogWriter


@pytest.mark.parametrize("writes_before_full", [3, 40])
def test_disk_full_ends_the_run_with_one_error_and_nothing_unretrieved(tmp_path, monkeypatch,
                                                                       writes_before_full):
    writer_cls = _writer_class()
    real_write = writer_cls._write_frame
    calls = {"n": 0}

    def write_frame(self):
        calls["n"] += 1
        if calls["n"] > writes_before_full:
            raise DiskFullError(f"{self.path}: cannot write: File too large")
        return real_write(self)

    monkeypatch.setattr(writer_cls, "_write_frame", write_frame)
    cfg = Config()
    cfg = cfg.replace(bus=msgspec.structs.replace(cfg.bus, enabled=False))
    handled: list[dict] = []

    async def go():
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: handled.append(ctx))
        async with Simulators(seed=2, rate=20_000.0) as sims:
            rec = Recorder(sims.record_config(cfg, poll_s=1.0), str(tmp_path))
            with pytest.raises(DiskFullError, match="cannot write"):
                await asyncio.wait_for(rec.run(60.0), 60.0)
            assert rec._failure is not None
        gc.collect()  # an unretrieved future reports itself when collected

    asyncio.run(go())
    gc.collect()
    assert handled == [], handled
    assert calls["n"] > writes_before_full
    # what was written before the disk filled reads back
    log = EventLog(tmp_path)
    for date in log.dates():
        assert sum(1 for _ in log.read(date)) > 0
