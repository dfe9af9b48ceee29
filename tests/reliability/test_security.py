"""Secrets never leak, and the bus admits only key holders.

One full `mia -vv record` run (DTC + Polygon + bus with CURVE + levels file) with distinctive
credentials set through mia.toml and the environment; then every artefact is searched for them:
each file under the data dir (log frames decompressed too), the levels file, what the bus
carried, stdout and the -vv debug log on stderr, the outputs of replay/inspect/verify, the files
levels/report/export write, and the messages of the errors a wrong key or password produces.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import zstandard
from reliability_kit import clean_env, mia_cmd, record_figures

from mia.config import Config
from mia.data.dtc.server import DtcSimulator
from mia.data.polygon.server import PolygonSimulator
from mia.engine.bus import CurveConfig as CurveKeys
from mia.engine.bus import Subscriber, generate_curve_keys
from mia.engine.log import _Frame, _read_segment_header, _scan

POLYGON_KEY = "PGKEY-Zq7vX-secret-41b9e"
DTC_USER = "dtcuser-Hq83-secret"
DTC_PASSWORD = "dtcpass-Wm52-secret-7c1d"


class ThreadedDtcSim:
    """A DtcSimulator on its own event loop in a thread (the recorder runs in a child process)."""

    def __init__(self, **kw) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.sim = DtcSimulator(**kw)
        asyncio.run_coroutine_threadsafe(self.sim.start(), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.sim.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _segment_payloads(path: Path) -> list[bytes]:
    """Every frame of a segment, decompressed."""
    dctx = zstandard.ZstdDecompressor()
    with open(path, "rb") as f:
        _, _, _, pos = _read_segment_header(f, path)
        items = list(_scan(f, path, pos, path.stat().st_size))
    return [dctx.decompress(i.payload, max_output_size=i.ulen) for i in items if isinstance(i, _Frame)]


def _leaks(blob: bytes, secrets: list[str]) -> list[str]:
    return [s for s in secrets if s.encode() in blob]


def test_bus_binds_loopback_by_default():
    assert Config().bus.address.startswith("tcp://127.0.0.1:")


def test_no_secret_in_any_artefact_and_curve_bus_admits_key_holders_only(tmp_path):
    keys = generate_curve_keys()
    stranger = generate_curve_keys()
    secrets = [POLYGON_KEY, DTC_USER, DTC_PASSWORD, keys.server_secret, keys.client_secret]
    root = tmp_path / "data"
    levels = tmp_path / "levels.txt"
    bus_addr = f"tcp://127.0.0.1:{_free_port()}"
    dtc = ThreadedDtcSim(seed=4, rate=2000.0, credentials=(DTC_USER, DTC_PASSWORD))
    poly = PolygonSimulator(seed=4, api_key=POLYGON_KEY).start()
    config = tmp_path / "mia.toml"
    config.write_text(f"""
levels_file = "{levels}"
[[dtc]]
host = "127.0.0.1"
port = {dtc.sim.port}
symbols = ["ESZ6", "NQZ6"]
username = "{DTC_USER}"
heartbeat_s = 1.0
[polygon]
base_url = "{poly.url}"
plan = "business"
underlyings = ["SPX"]
poll_s = 1.0
expiry_days = 10
strike_window = 0.03
[bus]
address = "{bus_addr}"
[bus.curve]
server_public = "{keys.server_public}"
server_secret = "{keys.server_secret}"
client_public = "{keys.client_public}"
""")
    env = clean_env(POLYGON_API_KEY=POLYGON_KEY, MIA_DTC_PASSWORD=DTC_PASSWORD)
    holder = Subscriber(bus_addr, curve=keys)
    keyless = Subscriber(bus_addr)
    wrong = Subscriber(bus_addr, curve=CurveKeys(server_public=keys.server_public,
                                                 client_public=stranger.client_public,
                                                 client_secret=stranger.client_secret))
    got = {"holder": [], "keyless": 0, "wrong": 0}
    try:
        proc = subprocess.Popen(mia_cmd("-vv", "record", "--config", str(config), "--duration", "7s",
                                        "--data-dir", str(root)),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            raw = holder.recv_raw(0.01)
            if raw is not None:
                got["holder"].append(raw.topic + raw.stream.encode() + bytes(raw.payload))
            got["keyless"] += keyless.recv_raw(0.005) is not None
            got["wrong"] += wrong.recv_raw(0.005) is not None
        out, err = proc.communicate(timeout=60)
    finally:
        for s in (holder, keyless, wrong):
            s.close()
        poly.stop()
        dtc.close()
    assert proc.returncode == 0, err.decode()[-3000:]
    assert b" DEBUG " in err  # -vv really logged at debug level
    assert got["holder"], "the key holder received nothing"
    assert got["keyless"] == 0 and got["wrong"] == 0

    date = next(p.name for p in root.iterdir() if p.is_dir())
    outputs = tmp_path / "outputs"  # exports, report and levels written from the recorded day
    outputs.mkdir()
    commands = [("replay", "--date", date, "--check", "--json"), ("inspect", "--json"), ("verify",),
                ("levels", "--date", date, "-o", str(outputs / "levels.txt")),
                ("report", "--date", date, "-o", str(outputs / "report.html"))]
    commands += [("export", "--date", date, "--kind", kind, "-o", str(outputs / f"{kind}.csv"))
                 for kind in ("trades", "levels", "chains")]
    after = [subprocess.run(mia_cmd(*args, "--data-dir", str(root)), capture_output=True, env=env,
                            timeout=180)
             for args in commands]
    assert [r.returncode for r in after] == [0] * len(commands), [r.stderr[-2000:] for r in after]
    written = [p for p in outputs.iterdir() if p.is_file()]
    assert len(written) == 5 and all(p.stat().st_size > 0 for p in written)

    checked: dict[str, list[str]] = {}
    files = [p for p in root.rglob("*") if p.is_file()]
    assert any(p.suffix == ".mseg" for p in files)
    for p in files:
        checked[str(p)] = _leaks(p.read_bytes(), secrets)
        if p.suffix == ".mseg":
            for i, payload in enumerate(_segment_payloads(p)):
                checked[f"{p} frame {i}"] = _leaks(payload, secrets)
    assert levels.exists() and levels.stat().st_size > 0
    checked["levels file"] = _leaks(levels.read_bytes(), secrets)
    for p in written:
        checked[f"output {p.name}"] = _leaks(p.read_bytes(), secrets)
    checked["bus"] = _leaks(b"".join(got["holder"]), secrets)
    checked["record stdout+stderr (-vv)"] = _leaks(out + err, secrets)
    for r in after:
        checked[" ".join(r.args[3:6])] = _leaks(r.stdout + r.stderr, secrets)
    # the recorded data really went through the secret-bearing paths
    all_frames = b"".join(b for p in files if p.suffix == ".mseg" for b in _segment_payloads(p))
    assert b"/v3/snapshot/options/" in all_frames and b"ESZ6" in all_frames
    leaked = {where: s for where, s in checked.items() if s}
    assert leaked == {}
    record_figures("secrets", trials=1, faults="-", artefacts_checked=len(checked),
                   bus_messages_to_key_holder=len(got["holder"]), bus_messages_to_keyless=got["keyless"],
                   bus_messages_to_wrong_key=got["wrong"], leaks=0, crashes=0)


def test_error_messages_never_carry_credentials():
    from mia.data.dtc.client import DtcClient
    from mia.data.polygon.client import PolygonClient
    from mia.engine.clock import SystemClock
    from mia.engine.errors import MiaError
    from mia.engine.instruments import InstrumentRegistry

    async def go() -> list[str]:
        messages = []
        with PolygonSimulator(api_key="another-key") as poly:
            async with PolygonClient(poly.url, api_key=POLYGON_KEY, max_retries=0) as client:
                with pytest.raises(MiaError) as exc:
                    await client.fetch_chain("SPX")
                messages.append(str(exc.value))
        # the server echoes what it was sent in its rejection text
        async with DtcSimulator(credentials=(DTC_USER, "the-right-one")) as sim:
            sim.reject_logons(text=f"bad logon for {DTC_USER}/{DTC_PASSWORD}")
            client = DtcClient("127.0.0.1", sim.port, ["ESZ6"], emit=lambda ev: messages.append(repr(ev)),
                               clock=SystemClock(), registry=InstrumentRegistry(), username=DTC_USER,
                               password=DTC_PASSWORD, max_attempts=1, reconnect_initial_s=0.01)
            with pytest.raises(MiaError) as exc:
                await asyncio.wait_for(client.run(), 10)
            messages.append(str(exc.value))
        return messages

    messages = asyncio.run(go())
    assert any("401" in m for m in messages) and any("rejected" in m for m in messages), messages
    assert [m for m in messages if _leaks(m.encode(), [POLYGON_KEY, DTC_USER, DTC_PASSWORD])] == []
