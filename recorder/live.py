"""`mia record`: run the sources, append to the log, publish, run the reducers live.

Sources call `emit(event)` from the one asyncio loop. The first event queued after a drain
schedules the next drain with `call_soon`, so what one packet carried is logged, published and
reduced as soon as the packet has been handled (no timer wait); a drain takes at most
MAX_DRAIN_EVENTS and schedules itself again for the rest, so it never holds the loop for long. A
timer task every few milliseconds keeps the recorder's heartbeat, the writers' frame timers and
the status line going. On start the reducers are warmed up from what the log already
holds for today, so a restart mid-day continues cumulative delta, VWAP and profiles instead of
starting them again, and a replay of the whole day reproduces what live computed.

The sources and the log never wait for numba: a thread (mia.warmup.KernelLoader) loads the
kernels (compiles them in a child process on a cold cache), builds the fold and warms it up;
until then the pipeline holds the rows it logged, and the fold then folds them in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from mia.config import Config
from mia.data.dtc.config import dtc_credentials
from mia.data.polygon.config import polygon_api_key
from mia.data.polygon.models import NEW_YORK
from mia.engine.clock import Clock, SystemClock, utc_datetime, utc_day
from mia.engine.config import fingerprint
from mia.engine.errors import ConnectionLostError
from mia.engine.events import (
    DERIVED_KINDS,
    FEED_DISCONNECTED,
    Event,
    FeedStatus,
    Gap,
    Heartbeat,
    SourceError,
)
from mia.engine.instruments import InstrumentRegistry
from mia.engine.log import EventLog
from mia.engine.pipeline import Pipeline
from mia.fold import Fold
from mia.recorder.alerts import AlertHook, format_alerts
from mia.recorder.sinks import LevelsSink
from mia.warmup import KernelLoader

logger = logging.getLogger(__name__)

DRAIN_INTERVAL_S = 0.005  # the timer task: heartbeats, frame timers, status
MAX_DRAIN_EVENTS = 2048  # events one scheduled drain takes before letting the loop run
HEARTBEAT_INTERVAL_S = 1.0
SOURCE_STOP_S = 3.0  # a stopped source has this long to end its run before it is cancelled
FIRST_LOGON_TIMEOUT_S = 5.0  # the old fixed limit; now only what --exit-if-unreachable gives
FIRST_LOGON_GRACE_S = 1.0  # a DTC server not logged on by then is shown and recorded as awaited
KERNELS_DEFER_S = 2.0  # the kernels load once the sources are up, or after this at the latest


@dataclass
class SourceStats:
    events: int = 0
    last_count: int = 0
    rate: float = 0.0
    lag_ns: int = 0  # ts_recv - ts_event of the last event that had a source time
    gaps: int = 0
    errors: int = 0


@dataclass
class RecordResult:
    recording_id: str
    date: str
    events: int
    derived: int
    sources: dict[str, SourceStats] = field(default_factory=dict)
    reason: str = "stopped"


class Recorder:
    """Records every configured source into `data_dir` until stopped or `duration_s` passes."""

    def __init__(
        self,
        config: Config,
        data_dir: str,
        *,
        clock: Clock | None = None,
        status: Callable[[str], None] | None = None,
        exit_if_unreachable_s: float | None = None,
    ) -> None:
        self.config = config
        self.data_dir = data_dir
        self.clock = clock or SystemClock()
        self.status = status
        # None: wait for a DTC server that is not up yet (Sierra Chart started after mia); a
        # number: give up after that many seconds with one line (scripts)
        self.exit_if_unreachable_s = exit_if_unreachable_s
        self._waiting: dict[str, str] = {}  # source -> its "waiting for DTC ..." note
        self.registry = InstrumentRegistry()
        self.stats: dict[str, SourceStats] = {}
        self._queue: list[Event] = []
        self._stop = asyncio.Event()
        self._stop_reason = "stopped"
        self._monitor = None
        self._pipeline: Pipeline | None = None  # set while events may be drained
        self._drain_scheduled = False
        self._failure: BaseException | None = None  # the first error that ended the run
        self.publisher = None  # the bus publisher while running (its .addr: the bound address)

    def stop(self, reason: str = "stopped") -> None:
        self._stop_reason = reason
        self._stop.set()

    def _emitter(self, source: str) -> Callable[[Event], None]:
        stats = self.stats.setdefault(source, SourceStats())
        queue = self._queue

        def emit(event: Event) -> None:
            queue.append(event)
            if not self._drain_scheduled:
                self._schedule_drain()
            stats.events += 1
            if isinstance(event, Gap):
                stats.gaps += 1
            elif isinstance(event, SourceError):
                stats.errors += 1
            elif event.ts_event % 1_000_000_000:
                # a whole-second source time (DTC's 4-byte DateTime of BidAsk 108/117, compact
                # trades) says nothing below the second: it would show up to 1 s of false lag
                stats.lag_ns = event.ts_recv - event.ts_event

        return emit

    # --- sources -----------------------------------------------------------------------------

    def _make_sources(self) -> list:
        from mia.data.dtc.client import DtcClient

        sources = []
        pcfg = self.config.polygon
        backup = None  # the VIX backup switch: the first [[dtc]] with a vix_symbol, when Polygon polls I:VIX
        today = utc_datetime(self.clock.now_ns()).astimezone(NEW_YORK).date()
        for cfg in self.config.dtc:
            user, password = dtc_credentials(cfg)
            emit = self._emitter(f"dtc:{cfg.host}:{cfg.port}")
            if (cfg.vix_symbol and backup is None and pcfg.enabled and pcfg.underlyings
                    and "I:VIX" in pcfg.index_tickers):
                from mia.data.vix_backup import VixBackup

                backup = VixBackup(cfg.vix_symbol, after_s=cfg.vix_backup_after_s, emit=emit, clock=self.clock)
                emit = backup.tap(emit)
            client = DtcClient(
                cfg.host,
                cfg.port,
                cfg.all_symbols(today),
                emit=emit,
                clock=self.clock,
                registry=self.registry,
                encoding=cfg.encoding,
                depth_levels=cfg.depth,
                heartbeat_interval_s=cfg.heartbeat_s,
                username=user,
                password=password,
                client_name=cfg.client_name,
            )
            sources.append(client)
        for scfg in self.config.sierra:
            from mia.analytics.calendar import trade_date_start_ns
            from mia.data.sierra.follower import SierraFollower

            def cme_open(ts_ns: int) -> bool:  # Globex: 23 h from the trade date's 17:00 CT
                return ts_ns - trade_date_start_ns(ts_ns) < 23 * 3_600_000_000_000

            sources.append(SierraFollower(
                scfg.data_dir,
                scfg.symbols,
                emit=self._emitter(f"sierra:{scfg.data_dir}"),
                clock=self.clock,
                registry=self.registry,
                depth=scfg.depth,
                poll_s=scfg.poll_s,
                silence_s=scfg.silence_s,
                rollover_grace_s=scfg.rollover_grace_s,
                market_open=cme_open,
                tick_sizes=scfg.tick_sizes,
                point_values=scfg.point_values,
                log_root=self.data_dir,  # a restart continues where today's log ends
            ))
        streams: list = []  # the Polygon WebSocket clients; the options one picks quotes from chains
        if pcfg.stream:
            from mia.data.polygon.stream import stream_roots
            from mia.data.polygon.stream_client import stream_clients

            streams = stream_clients(pcfg.stream_url, api_key=polygon_api_key(pcfg), clock=self.clock,
                                     emitter=self._emitter, underlyings=pcfg.underlyings,
                                     quote_limit=pcfg.stream_quotes, quote_expiries=pcfg.stream_quote_expiries,
                                     index_tickers=pcfg.stream_index_tickers,
                                     roots=stream_roots(pcfg.underlyings))
        if pcfg.enabled and pcfg.underlyings:
            from mia.data.polygon.client import PolygonClient
            from mia.data.polygon.poller import PolygonPoller

            client = PolygonClient(
                pcfg.base_url,
                api_key=polygon_api_key(pcfg),
                plan=pcfg.plan,
                calls_per_minute=pcfg.calls_per_minute,
                timeout_s=pcfg.timeout_s,
                clock=self.clock,
            )
            sources.append(
                PolygonPoller(
                    client,
                    pcfg.underlyings,
                    interval_s=pcfg.poll_s,
                    emit=self._polygon_emit(backup, streams),
                    clock=self.clock,
                    expiry_days=pcfg.expiry_days,
                    strike_window=pcfg.strike_window,
                    snapshot_times=pcfg.snapshot_times,
                    index_tickers=pcfg.index_tickers,
                    indices_interval_s=pcfg.indices_poll_s,
                )
            )
        if backup is not None:
            sources.append(backup)
        sources.extend(streams)
        return sources

    def _polygon_emit(self, backup, streams: list) -> Callable[[Event], None]:
        """The poller's emit: through the VIX backup switch and the stream's quote choice, if any."""
        emit = self._emitter("polygon")
        if backup is not None:
            emit = backup.tap(emit)
        return streams[0].tap(emit) if streams else emit

    # --- run ---------------------------------------------------------------------------------

    async def run(self, duration_s: float | None = None) -> RecordResult:
        cfg = self.config
        log = EventLog(self.data_dir)
        # The log is the truth: the sources and the log start now, and the fold when its
        # kernels are compiled (or loaded from numba's cache) in a thread started here, which
        # also builds the fold (that imports numba). Until then the pipeline holds the rows it
        # wrote; the fold then folds them in order (_fold_ready).
        # A restart continues today's state (what the log held before this recording, `end`):
        # the same days, in the same order, that a replay of today folds before its first row.
        start_ns = self.clock.now_ns()

        def warmed_up_fold() -> Fold:
            fold = Fold(cfg)
            fold.warm_up(log, utc_day(start_ns), through_date=True, end=start_ns)
            return fold

        kernels = KernelLoader(cfg, then=warmed_up_fold, defer_s=KERNELS_DEFER_S).start()
        self._waiting["kernels"] = "reducers starting (compiling kernels) \u2026"

        publisher = None
        if cfg.bus.enabled:
            from mia.engine.bus import Publisher

            publisher = Publisher(cfg.bus.address, curve=cfg.bus.curve)
            self.publisher = publisher
        sinks: list = []  # the levels file's sink joins with the fold (_attach_fold)
        hook = AlertHook(cfg.monitor.on_alert) if cfg.monitor.on_alert else None
        if hook is not None:
            sinks.append(hook)
        pipeline = Pipeline([], publisher=publisher, sinks=sinks)
        pipeline.hold()  # until the kernels and the fold are ready (_fold_ready)

        sources = self._make_sources()
        names = [getattr(s, "source", type(s).__name__) for s in sources]
        common = dict(
            config_fingerprint=fingerprint(cfg),
            fsync=cfg.log.fsync,
            fsync_interval_s=cfg.log.fsync_interval_s,
            frame_max_events=cfg.log.frame_max_events,
            frame_max_ms=cfg.log.frame_max_ms,
            format_version=cfg.log.format_version,
            clock=self.clock,
            columns_ready=kernels.writer_ready.is_set,  # msgpack frames until it is compiled
        )
        snapshots = any(getattr(s, "chain_snapshots", False) for s in sources)  # the Polygon poller
        writer = log.writer("live", sources=names, on_write=pipeline.on_input_written,
                            chain_snapshots=snapshots, **common)
        derived = log.writer("derived", recording_id=writer.recording_id, sources=names,
                             derived_kinds=DERIVED_KINDS, **common)
        pipeline.input_writer = writer
        pipeline.derived_writer = derived
        pipeline.process_written()  # RecordingStarted reaches the reducers as it will in replay
        self._pipeline = pipeline
        loop = asyncio.get_running_loop()
        kernels.future.add_done_callback(
            lambda fut: _call_soon_threadsafe(loop, self._fold_ready, pipeline, fut))

        tasks = [asyncio.create_task(s.run(), name=f"source {n}") for n, s in zip(names, sources)]
        drain = asyncio.create_task(self._drain(pipeline, writer, derived))
        reason = "stopped"
        try:
            await self._await_first_logon(sources, tasks)
            kernels.begin.set()  # the sources are up: the kernels may have the CPU
            waiters = [asyncio.create_task(self._stop.wait())]
            if duration_s is not None:
                waiters.append(asyncio.create_task(asyncio.sleep(duration_s)))
            done, _ = await asyncio.wait(waiters + tasks + [drain],
                                         return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
            for t in done:
                if (t in tasks or t is drain) and not t.cancelled() and t.exception() is not None:
                    self._fail(t.exception())
            reason = self._stop_reason if self._stop.is_set() else "duration"
        except BaseException as exc:  # the first logon failed, or we were cancelled
            self._fail(exc)
            raise
        finally:
            self._pipeline = None  # from here on the queue is flushed below, not scheduled
            if self._failure is not None:
                reason = f"error: {self._failure}"
            await self._stop_sources(sources, tasks, drain)
            # what the sources emitted up to here, then the end marker, go through reducers too;
            # after a failure (a full disk) each step is tried and its own error kept back, so
            # the first failure is the one reported, once
            self._shutdown_step(self._flush_queue, pipeline)
            self._shutdown_step(writer.close, reason=reason)
            self._shutdown_step(pipeline.process_written)
            self._shutdown_step(self._finish_fold, pipeline, kernels)
            self._shutdown_step(derived.close, reason=reason)
            if hook is not None:
                hook.close(5.0)
            if publisher is not None:
                publisher.close()
        if self._failure is not None:
            raise self._failure
        return RecordResult(
            recording_id=writer.recording_id,
            date=str(writer.date),
            events=writer.events_written,
            derived=derived.events_written,
            sources=self.stats,
            reason=reason,
        )

    def _fold_ready(self, pipeline: Pipeline, fut) -> None:
        """The kernels are ready (loop thread): the fold catches up on the held rows, a bounded
        step at a time, while the sources go on (their rows queue behind)."""
        if self._pipeline is not pipeline:  # the run is ending: _finish_fold folds the rest
            return
        self._waiting.pop("kernels", None)
        exc = fut.exception()
        if exc is not None:
            self._pipeline = None
            self._fail(exc)
            return
        self._attach_fold(pipeline, fut.result())
        if pipeline.held_rows:
            logger.info("reducers ready: folding rows=%d held while compiling", pipeline.held_rows)
        self._catch_up()

    def _catch_up(self) -> None:
        pipeline = self._pipeline
        if pipeline is None or not pipeline.holding:
            return
        try:
            pipeline.release(MAX_DRAIN_EVENTS)
        except Exception as exc:
            self._pipeline = None
            self._fail(exc)
            return
        if pipeline.holding:
            asyncio.get_running_loop().call_soon(self._catch_up)

    def _attach_fold(self, pipeline: Pipeline, fold: Fold) -> None:
        if fold in pipeline.reducers:
            return
        pipeline.reducers.append(fold)
        if self.config.levels_file:
            pipeline.sinks.insert(0, LevelsSink(self.config.levels_file, fold.orderflow))
        self._monitor = fold.monitor

    def _finish_fold(self, pipeline: Pipeline, kernels: KernelLoader) -> None:
        """At the end of the run: a run shorter than a cold compile waits for the kernels, so
        every row it logged is folded and the derived stream is whole (not after a failure:
        that is reported at once)."""
        if not pipeline.holding or self._failure is not None:
            return
        if not kernels.done():
            logger.info("stopping: waiting for the kernels to fold rows=%d", pipeline.held_rows)
        self._attach_fold(pipeline, kernels.wait())
        pipeline.release()

    def _fail(self, exc: BaseException) -> None:
        """Keep the first error that ends the run and stop; later ones are consequences."""
        if self._failure is None:
            self._failure = exc
            self._stop_reason = f"error: {exc}"
        else:
            logger.debug("after the first failure: %r", exc)
        self._stop.set()

    def _shutdown_step(self, step: Callable, *args, **kwargs) -> None:
        try:
            step(*args, **kwargs)
        except Exception as exc:
            if self._failure is None:
                self._failure = exc
            else:
                logger.debug("shutdown step %s failed after %r: %r", step, self._failure, exc)

    async def _stop_sources(self, sources, tasks, drain) -> None:
        for s in sources:
            try:
                await asyncio.wait_for(s.stop(), 5.0)
            except Exception:
                logger.exception("source stop failed")
        # a stopped source ends its run by itself: taking what was already flushed (Sierra's
        # files), closing its files and sockets; cancelled only if it has not within the bound
        pending = [t for t in tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=SOURCE_STOP_S)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for s in sources:  # the Polygon poller's HTTP client holds pooled sockets
            http = getattr(s, "client", None)
            if http is not None and hasattr(http, "aclose"):
                await http.aclose()
        drain.cancel()
        await asyncio.gather(drain, return_exceptions=True)

    async def _await_first_logon(self, sources, tasks) -> None:
        """The first logon of each DTC source.

        By default a DTC server that is not up yet (the recorder started before Sierra Chart) is
        waited for: after FIRST_LOGON_GRACE_S a status line "waiting for DTC host:port ..." and a
        FeedStatus(FEED_DISCONNECTED) with the reason are recorded, the client keeps retrying with
        its capped, jittered backoff, and the run goes on (other sources record, --duration and
        a stop apply). With `exit_if_unreachable_s` a server not logged on by then fails the run
        with one line, as scripts expect.
        """
        limit = self.exit_if_unreachable_s
        timeout = FIRST_LOGON_GRACE_S if limit is None else limit
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout  # one deadline for all sources: they connect at once
        for source, task in zip(sources, tasks):
            logged_on = getattr(source, "logged_on", None)
            if logged_on is None:
                continue
            wait = asyncio.ensure_future(logged_on)
            done, _ = await asyncio.wait({wait, task}, timeout=max(0.0, deadline - loop.time()),
                                         return_when=asyncio.FIRST_COMPLETED)
            if wait in done and wait.exception() is None:
                continue
            if task in done and task.exception() is not None:
                wait.cancel()
                raise task.exception()
            where = source.source.removeprefix("dtc:")
            if limit is not None:
                wait.cancel()
                raise ConnectionLostError(
                    f"cannot reach the DTC server at {where} within {limit:g}s "
                    f"(is Sierra Chart's DTC server enabled?)")
            self._wait_for_logon(source, where, wait)

    def _wait_for_logon(self, source, where: str, logged_on: asyncio.Future) -> None:
        """Record and show that `source` waits for its server; clear the note at its logon."""
        reason = getattr(source, "last_error", "") or "not logged on yet"
        note = f"waiting for DTC {where} \u2026"
        self._waiting[source.source] = note
        now = self.clock.now_ns()
        self._emitter(source.source)(FeedStatus(now, now, source.source, FEED_DISCONNECTED,
                                                detail=f"waiting for the DTC server: {reason}"))
        logger.warning("waiting for the DTC server host=%s reason=%s", where, reason)
        if self.status is not None:
            self.status(f"{note} (start Sierra Chart's DTC server; Ctrl+C stops)")

        def done(fut: asyncio.Future) -> None:
            self._waiting.pop(source.source, None)
            if not fut.cancelled() and fut.exception() is None:
                logger.info("dtc server up host=%s", where)

        logged_on.add_done_callback(done)

    def _flush_queue(self, pipeline: Pipeline, limit: int | None = None) -> None:
        queue = self._queue
        if queue:
            if limit is None or len(queue) <= limit:
                events = queue[:]
                queue.clear()
            else:
                events = queue[:limit]
                del queue[:limit]
            pipeline.ingest(events)

    def _schedule_drain(self) -> None:
        if self._pipeline is not None:
            self._drain_scheduled = True
            asyncio.get_running_loop().call_soon(self._drain_soon)

    def _drain_soon(self) -> None:
        """The scheduled drain: what the sources emitted since the last one, bounded."""
        self._drain_scheduled = False
        pipeline = self._pipeline
        if pipeline is None:
            return
        try:
            self._flush_queue(pipeline, MAX_DRAIN_EVENTS)
        except Exception as exc:  # e.g. a full disk: ends the run, reported once by run()
            self._pipeline = None
            self._fail(exc)
            return
        if self._queue:
            self._schedule_drain()

    async def _drain(self, pipeline: Pipeline, writer, derived) -> None:
        last_status = last_beat = time.monotonic()
        while self._failure is None:
            await asyncio.sleep(DRAIN_INTERVAL_S)
            now = time.monotonic()
            if now - last_beat >= HEARTBEAT_INTERVAL_S:
                # time passes in event time even when every source is silent
                ts = self.clock.now_ns()
                self._queue.append(Heartbeat(ts, ts, "recorder", queued=len(self._queue)))
                last_beat = now
            self._flush_queue(pipeline)
            writer.tick()
            derived.tick()
            if now - last_status >= self.config.status_interval_s:
                self._report_status(now - last_status)
                last_status = now

    def _report_status(self, elapsed: float) -> None:
        parts = []
        for name, st in self.stats.items():
            st.rate = (st.events - st.last_count) / elapsed if elapsed > 0 else 0.0
            st.last_count = st.events
            parts.append(f"{name} {st.rate:,.0f}/s lag {st.lag_ns / 1e6:.1f}ms gaps {st.gaps}"
                         + (f" errors {st.errors}" if st.errors else ""))
        line = " | ".join(list(self._waiting.values()) + parts) or "no sources"
        alerts = format_alerts(self._monitor.active_alerts()) if self._monitor is not None else ""
        if alerts:
            line += " | ALERTS: " + alerts
        if self.status is not None:
            self.status(line)


def _call_soon_threadsafe(loop: asyncio.AbstractEventLoop, fn: Callable, *args) -> None:
    """From the kernel thread; a loop already closed (the run ended first) is not an error."""
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:
        pass


__all__ = ["Recorder", "RecordResult", "SourceStats"]
