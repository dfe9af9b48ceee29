"""The embedded simulators: a DTC exchange server and a Polygon API server on loopback.

Used by `mia sim` (serve until stopped), `mia record --sim` and `mia demo`. Both follow one
seeded price path (mia.data.market_path), so the Polygon SPX spot moves with the DTC ES.
"""

from __future__ import annotations

import logging

from mia.config import Config
from mia.data.dtc.config import DtcConfig
from mia.data.polygon.config import PolygonConfig
from mia.data.polygon.server import SIM_API_KEY  # the simulator's own key, not a secret
from mia.engine.clock import Clock

logger = logging.getLogger(__name__)

SIM_SYMBOLS = ["ESZ6", "NQZ6", "VXZ6"]
SIM_VIX_SYMBOL = "VIX"
SIM_VX_MONTHS = 6


SIM_CALLS_PER_MINUTE = 6000.0  # Polygon's own ceiling for paid plans (100 a second)
SIM_STREAM_RATE = 200.0  # option trades and quotes a second on the simulated /options stream
SIM_STREAM_QUOTES = 200  # contracts quoted when recording from the simulator


class Simulators:
    """Start with `await sims.start()`, stop with `await sims.stop()`, or `async with`."""

    def __init__(self, *, seed: int = 0, dtc_port: int = 0, polygon_port: int = 0,
                 rate: float = 2000.0, host: str = "127.0.0.1",
                 polygon_calls_per_minute: float | None = None, clock: Clock | None = None,
                 dtc_historical_port: int | None = 0, polygon_ws_port: int = 0,
                 polygon_ws_rate: float = SIM_STREAM_RATE, api_key: str = SIM_API_KEY) -> None:
        from mia.data.dtc.server import DtcSimulator
        from mia.data.polygon.server import PolygonSimulator
        from mia.data.polygon.stream_server import PolygonStreamSimulator

        # one clock for both servers and (in tests) the recorder, e.g. one set near midnight
        # the DTC server's historical data port (backfill) serves the ticks it generated
        self.dtc = DtcSimulator(host, dtc_port, seed=seed, rate=rate, clock=clock,
                                historical_port=dtc_historical_port)
        self.api_key = api_key  # the Polygon simulators' key (tests give a secret-looking one)
        self.polygon = PolygonSimulator(host, polygon_port, seed=seed, api_key=api_key,
                                        calls_per_minute=polygon_calls_per_minute, clock=clock)
        # the WebSocket clusters (/options, /indices): trades and quotes priced off the same chains
        self.polygon_ws = PolygonStreamSimulator(host, polygon_ws_port, seed=seed, rate=polygon_ws_rate,
                                                 clock=clock, chains=self.polygon, api_key=api_key)
        self.host = host

    async def start(self) -> "Simulators":
        await self.dtc.start()
        self.polygon.start()
        await self.polygon_ws.start()
        logger.info("simulators dtc=%s:%d polygon=%s polygon_ws=%s", self.host, self.dtc.port, self.polygon.url,
                    self.polygon_ws.url)
        return self

    @property
    def dtc_historical(self) -> str | None:
        """HOST:PORT of the DTC simulator's historical data port (`mia backfill --dtc-historical`)."""
        port = self.dtc.historical_port
        return None if port is None else f"{self.host}:{port}"

    async def stop(self) -> None:
        try:
            await self.dtc.stop()
        finally:
            try:
                await self.polygon_ws.stop()
            finally:
                self.polygon.stop()

    async def __aenter__(self) -> "Simulators":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    def record_config(self, base: Config, *, symbols: list[str] | None = None,
                      poll_s: float = 5.0, volatility: bool = True, stream: bool = True) -> Config:
        """`base` pointed at the simulators: one DTC connection, Polygon with the sim key (and its
        WebSocket streams unless `stream` is False)."""
        import msgspec

        # volatility: the VIX index and the front 6 VX futures too (contango on the shared path)
        vol = dict(vix_symbol=SIM_VIX_SYMBOL, vx_months=SIM_VX_MONTHS) if volatility else {}
        dtc = [DtcConfig(host=self.host, port=self.dtc.port, symbols=symbols or SIM_SYMBOLS,
                         heartbeat_s=2.0, **vol)]
        polygon = msgspec.structs.replace(
            base.polygon if base.polygon.enabled else PolygonConfig(),
            # the simulator is on loopback: no reason to keep capacity free for other programs
            base_url=self.polygon.url, api_key=self.api_key, plan="business", poll_s=poll_s,
            calls_per_minute=SIM_CALLS_PER_MINUTE, stream=stream, stream_url=self.polygon_ws.url,
            stream_quotes=min(base.polygon.stream_quotes, SIM_STREAM_QUOTES),
            expiry_days=min(base.polygon.expiry_days, 30), strike_window=min(base.polygon.strike_window, 0.06))
        return msgspec.structs.replace(base, dtc=dtc, polygon=polygon)
