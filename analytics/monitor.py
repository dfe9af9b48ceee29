"""Data-quality monitoring from the events alone: metrics, a quality score and alerts.

`MonitorReducer` is a pure fold over the input rows. Time is *event time*: the monitor's clock
is the running maximum of `ts_recv` (the recorder's one-per-second `Heartbeat` keeps it moving
when every source is silent), so a replay of a day gives the metrics and alerts of the live run,
bit for bit, wherever the batches were cut. Definitions (docs/quality-score.md explains them):

- Sources: DTC rows name "dtc:HOST:PORT" (FeedStatus, Gap, SourceError, Instrument.source; a
  market row belongs to its instrument's source); Polygon rows are "polygon" (PolygonResponse
  has no source field). A source is observed from its first row on.
- Up/down: connection-level FeedStatus (instrument -1) connected / logged_on / feed_available /
  subscribed mean up; disconnected / heartbeat_timeout / feed_unavailable mean down. Data (a
  market row of the source, a 2xx PolygonResponse) also means up: a source that delivers is
  alive. Uptime = connected time / observed time.
- Gaps: Gap events, overlaps merged per source; gap fraction = gap time / observed time.
  Completeness = 1 - max(gap fraction, 1 - uptime): the larger of two views of the same loss.
- Latency: DTC: ts_recv - ts_event of market rows; Polygon: PolygonResponse.elapsed_ns. Kept as
  log-linear histograms (64 sub-bins per power of two, <= 1.6 % relative error) with the exact
  max; a quantile is its bin's upper edge, capped at the exact max.
- Requests (Polygon): each PolygonResponse is one request (an error when its status is not 2xx);
  each failed poll (SourceError with a status other than 200) is one more request and one error.
  A SourceError whose fallback_kind is not FALLBACK_NONE counts as a fallback.
- Windows: tumbling, `window_s` long, aligned on multiples of window_s since the epoch. When
  event time reaches a window's end the window is scored and its alerts decided, at the row
  that reached it. Sync = spread of the DTC sources' p50 latencies in the window (how far apart
  their clocks are, seen at the same receive time); 0 with fewer than two DTC sources.
- Window score = 0.3 up + 0.3 complete + 0.2 latency + 0.1 errors + 0.1 sync, each 1 when the
  window met its threshold, else 0 (a threshold with nothing to judge counts as met). Quality =
  observed-time-weighted mean of the window scores.
- Alerts (raised once, cleared once; ts = ts_recv of the row that caused them):
  "disconnected" down for more than disconnect_alert_s (cleared when up again); "gap" raised on
  a Gap, cleared by the source's next data; "latency" a window's p99 over the threshold (cleared
  by a window at or under it); "api_errors" a window's error rate over the threshold (cleared by
  a window with requests at or under it); "quality" the quality of the trailing quality_span_s
  under min_quality (cleared when back at or over it).
- RecordingEnded pauses observation; RecordingStarted resumes it with every source unseen (the
  time the recorder was off is nobody's downtime) and clears the disconnected and gap alerts.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from typing import Final

import numpy as np

from ..engine.clock import NS_PER_HOUR, NS_PER_MS, NS_PER_S
from ..engine.columns import ColumnBatch
from ..engine.config import ConfigBase
from ..engine.events import (
    ALERT_CLEARED,
    ALERT_RAISED,
    FALLBACK_NONE,
    FEED_AVAILABLE,
    FEED_CONNECTED,
    FEED_DISCONNECTED,
    FEED_HEARTBEAT_TIMEOUT,
    FEED_LOGGED_ON,
    FEED_STATUS_NAMES,
    FEED_SUBSCRIBED,
    FEED_SUBSCRIPTION_REJECTED,
    FEED_UNAVAILABLE,
    Alert,
    DtcRaw,
    Event,
    FeedStatus,
    Gap,
    Heartbeat,
    Instrument,
    PolygonResponse,
    RecordingEnded,
    RecordingStarted,
    SessionStat,
    SourceError,
)
from ..engine.lazy import lazy_module
from .health import (
    ActiveAlert,
    AlertsHealth,
    HealthMetrics,
    HealthThresholds,
    HourHealth,
    LatencySummary,
    OverallHealth,
    SourceHealth,
    UnattributedHealth,
    hour_label,
    window_label,
)

_mk = lazy_module("mia.analytics._monitor_kernels")  # numba: imported at the first kernel call

POLYGON = "polygon"
UNATTRIBUTED = "unattributed"  # market rows whose instrument no Instrument event declared

UP_STATUSES = frozenset({FEED_CONNECTED, FEED_LOGGED_ON, FEED_AVAILABLE, FEED_SUBSCRIBED})
DOWN_STATUSES = frozenset({FEED_DISCONNECTED, FEED_HEARTBEAT_TIMEOUT, FEED_UNAVAILABLE})

# Window score weights (docs/quality-score.md).
W_UP, W_COMPLETE, W_LATENCY, W_ERRORS, W_SYNC = 0.3, 0.3, 0.2, 0.1, 0.1

# Latency histogram: bin 0 holds latencies <= 0; a positive v = m * 2**e (m in [0.5, 1)) goes
# to e * SUB + floor((m - 0.5) * 2 * SUB). frexp is exact, so binning is too.
SUB = 64
NBINS = 65 * SUB
_MAX_WINDOW_STEPS = 1_000_000  # a jump of more windows than this skips the empty ones


class MonitorConfig(ConfigBase):
    """Data-quality thresholds (the trader's defaults) and the alert hook."""

    dtc_latency_ms: float = 10.0
    dtc_uptime: float = 0.999
    dtc_max_gap_fraction: float = 0.001
    polygon_latency_ms: float = 50.0
    polygon_uptime: float = 0.995
    polygon_max_error_rate: float = 0.01
    min_completeness: float = 0.998
    max_sync_ms: float = 100.0
    min_quality: float = 0.95
    disconnect_alert_s: float = 30.0
    window_s: float = 60.0
    on_alert: str = ""  # a command run with the alert as JSON on stdin
    quality_span_s: float = 600.0  # the quality alert looks at the windows of this trailing span


DEFAULT_CONFIG: Final = MonitorConfig()


def latency_bins(values: np.ndarray) -> np.ndarray:
    """Histogram bin of each int64 latency (ns)."""
    m, e = np.frexp(values.astype(np.float64))
    sub = ((m - 0.5) * (2 * SUB)).astype(np.int64)
    bins = e.astype(np.int64) * SUB + sub
    bins[values <= 0] = 0
    return bins


def latency_bin(value: int) -> int:
    if value <= 0:
        return 0
    m, e = math.frexp(float(value))
    return e * SUB + int((m - 0.5) * (2 * SUB))


def bin_upper_edge(b: int) -> float:
    if b < SUB:
        return 0.0
    e, sub = divmod(b, SUB)
    return (SUB + sub + 1) * 2.0 ** (e - 1) / SUB


class _Acc:
    """Counters of one source over one span (the day, one hour or one window). Integers are
    exact ns or counts; the histograms are allocated on first use."""

    __slots__ = ("obs_ns", "conn_ns", "gap_ns", "gaps", "down", "msgs", "lat_hist", "lat_n",
                 "lat_sum", "lat_max", "req_hist", "req_n", "req_sum", "req_max", "requests",
                 "errors", "fallbacks", "source_errors", "rejections", "score_sum", "score_obs",
                 "windows", "good_windows", "peak_rate", "worst_sync_ns")

    def __init__(self) -> None:
        self.obs_ns = self.conn_ns = self.gap_ns = self.gaps = self.down = self.msgs = 0
        self.lat_hist: np.ndarray | None = None
        self.lat_n = self.lat_sum = 0
        self.lat_max: int | None = None
        self.req_hist: np.ndarray | None = None
        self.req_n = self.req_sum = 0
        self.req_max: int | None = None
        self.requests = self.errors = self.fallbacks = self.source_errors = self.rejections = 0
        self.score_sum = 0.0
        self.score_obs = 0
        self.windows = self.good_windows = 0
        self.peak_rate = 0.0
        self.worst_sync_ns = 0

    def add_latency(self, hist: np.ndarray, n: int, total: int, vmax: int) -> None:
        if self.lat_hist is None:
            self.lat_hist = np.zeros(NBINS, dtype=np.int64)
        self.lat_hist += hist
        self.lat_n += n
        self.lat_sum += total
        self.lat_max = vmax if self.lat_max is None else max(self.lat_max, vmax)

    def add_request_latency(self, b: int, value: int) -> None:
        if self.req_hist is None:
            self.req_hist = np.zeros(NBINS, dtype=np.int64)
        self.req_hist[b] += 1
        self.req_n += 1
        self.req_sum += value
        self.req_max = value if self.req_max is None else max(self.req_max, value)


def quantile_ns(hist: np.ndarray | None, n: int, vmax: int | None, percent: int) -> float:
    """The `percent` quantile (nearest rank) of a latency histogram, capped at the exact max."""
    if hist is None or n == 0 or vmax is None:
        return math.nan
    rank = max(1, (percent * n + 99) // 100)
    b = int(np.searchsorted(np.cumsum(hist), rank, side="left"))
    return min(bin_upper_edge(b), float(max(vmax, 0)))


class _Source:
    """One source's state and its day, hour and window counters."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.kind = POLYGON if name.startswith(POLYGON) else "dtc"
        self.timed = name != UNATTRIBUTED
        self.seen = False
        self.up = True
        self.down_since = 0
        self.down_reason = ""
        self.gap_watermark = 0
        self.day = _Acc()
        self.window = _Acc()
        self.hours: dict[int, _Acc] = {}
        self.recent: deque[tuple[int, float]] = deque()

    def hour(self, hour: int) -> _Acc:
        acc = self.hours.get(hour)
        if acc is None:
            acc = self.hours[hour] = _Acc()
        return acc


class MonitorReducer:
    """Metrics, quality score and alerts of every source, folded from the input rows."""

    def __init__(self, settings: MonitorConfig = DEFAULT_CONFIG) -> None:
        self.settings = settings
        self.window_ns = max(1, int(round(settings.window_s * NS_PER_S)))
        self.disconnect_ns = int(round(settings.disconnect_alert_s * NS_PER_S))
        self.quality_windows = max(1, int(math.ceil(settings.quality_span_s / settings.window_s)))
        self.now: int | None = None
        self.start_ns: int | None = None
        self.window_start = 0
        self.hour_start = 0
        self.paused = False
        self.sources: dict[str, _Source] = {}
        self._inst_src = np.full(16, -1, dtype=np.int64)
        self._by_index: list[_Source] = []
        self.active: dict[tuple[str, str], Alert] = {}
        self.alert_counts: dict[str, int] = {}
        self.max_queued = 0
        self.recordings = 0

    # --- the fold ----------------------------------------------------------------------------

    def on_batch(self, batch: ColumnBatch) -> list[Event]:
        out: list[Event] = []
        n = len(batch)
        if n == 0:
            return out
        plumbing = np.flatnonzero(batch.obj >= 0)
        start = 0
        for p in plumbing.tolist():
            if p > start:
                self._market(batch, start, p, out)
            self._plumbing(batch.objects[int(batch.obj[p])], int(batch.ts_recv[p]), out)
            start = p + 1
        if start < n:
            self._market(batch, start, n, out)
        return out

    def _source(self, name: str) -> _Source:
        src = self.sources.get(name)
        if src is None:
            src = self.sources[name] = _Source(name)
            self._by_index.append(src)
        return src

    def _index(self, name: str) -> int:
        src = self._source(name)
        return self._by_index.index(src)

    def _see(self, src: _Source) -> None:
        if not src.seen:
            src.seen = True
            src.up = True

    def _begin(self, ts: int) -> None:
        self.now = self.start_ns = ts
        self.window_start = ts - ts % self.window_ns
        self.hour_start = ts - ts % NS_PER_HOUR

    def _market(self, batch: ColumnBatch, lo: int, hi: int, out: list[Event]) -> None:
        ts_recv = batch.ts_recv[lo:hi]
        ts_event = batch.ts_event[lo:hi]
        if self.now is None:
            self._begin(int(ts_recv[0]))
        # one pass: the clock, each row's source, latency, its bin and whether it has one
        clock, src, lat, bins, valid, unknown = _mk.market_rows(
            ts_recv, ts_event, batch.instrument[lo:hi], self._inst_src, self.now, SUB)
        if unknown:
            src[src < 0] = self._index(UNATTRIBUTED)
        m = hi - lo
        positions: dict[int, np.ndarray] = {}
        i = 0
        while i < m:
            self._advance(int(clock[i]), int(ts_recv[i]), out)
            s = self._by_index[int(src[i])]
            if self._needs_data(s):
                self._on_data(s, int(ts_recv[i]), out)
            j = m
            bound = min(self.window_start + self.window_ns, self.hour_start + NS_PER_HOUR)
            j = min(j, int(np.searchsorted(clock, bound, side="left")))
            deadline = self._next_deadline()
            if deadline is not None:
                j = min(j, int(np.searchsorted(clock, deadline, side="right")))
            for k, other in enumerate(self._by_index):
                if self._needs_data(other):
                    pos = positions.get(k)
                    if pos is None:
                        pos = positions[k] = np.flatnonzero(src == k)
                    nxt = int(np.searchsorted(pos, i, side="right"))
                    if nxt < pos.shape[0]:
                        j = min(j, int(pos[nxt]))
            j = max(j, i + 1)
            self._count_rows(src[i:j], lat[i:j], bins[i:j], valid[i:j])
            i = j
        self._advance(int(clock[-1]), int(ts_recv[-1]), out)

    def _count_rows(self, src: np.ndarray, lat: np.ndarray, bins: np.ndarray, valid: np.ndarray) -> None:
        first, last = int(src[0]), int(src[-1])
        if first == last and (src == first).all():
            groups = [(first, -1)]
        else:
            groups = [(int(k), int(k)) for k in np.unique(src)]
        for k, only in groups:
            s = self._by_index[k]
            hist = np.zeros(NBINS, dtype=np.int64)
            count, n, total, vmax = _mk.count_latency(src, lat, bins, valid, only, hist)
            accs = (s.day, s.window, s.hour(self.hour_start))
            for acc in accs:
                acc.msgs += int(count)
            if n == 0:
                continue
            total, vmax = int(total), int(vmax)
            for acc in accs:
                acc.add_latency(hist, n, total, vmax)

    def _plumbing(self, ev: Event, ts: int, out: list[Event]) -> None:
        if self.now is None:
            self._begin(ts)
        t = max(ts, self.now)
        if isinstance(ev, RecordingStarted):
            # the time the recorder was off is nobody's downtime
            self.paused = True
            self._advance(t, ts, out)
            self.paused = False
            self.recordings += 1
            for src in self._by_index:
                for name in ("disconnected", "gap"):
                    self._clear(src, name, ts, 0.0, "recording restarted", out)
                src.seen = False
                src.up = True
            return
        self._advance(t, ts, out)
        if isinstance(ev, Heartbeat):
            self.max_queued = max(self.max_queued, ev.queued)
        elif isinstance(ev, Instrument):
            k = self._index(ev.source)
            self._see(self._by_index[k])
            if ev.instrument >= 0:
                if ev.instrument >= self._inst_src.shape[0]:
                    grown = np.full(max(ev.instrument + 1, 2 * self._inst_src.shape[0]), -1, dtype=np.int64)
                    grown[: self._inst_src.shape[0]] = self._inst_src
                    self._inst_src = grown
                self._inst_src[ev.instrument] = k
        elif isinstance(ev, FeedStatus):
            self._feed_status(ev, ts, out)
        elif isinstance(ev, Gap):
            self._gap(ev, ts, out)
        elif isinstance(ev, PolygonResponse):
            src = self._source(POLYGON)
            self._see(src)
            ok = 200 <= ev.status < 300
            b = latency_bin(ev.elapsed_ns)
            for acc in self._accs(src):
                acc.requests += 1
                acc.msgs += 1
                acc.errors += 0 if ok else 1
                acc.add_request_latency(b, ev.elapsed_ns)
            if ok and self._needs_data(src):
                self._on_data(src, ts, out)
        elif isinstance(ev, SourceError):
            src = self._source(ev.source)
            self._see(src)
            failed_request = src.kind == POLYGON and ev.status != 200
            fallback = ev.fallback_kind != FALLBACK_NONE
            for acc in self._accs(src):
                acc.source_errors += 1
                acc.fallbacks += 1 if fallback else 0
                if failed_request:
                    acc.requests += 1
                    acc.errors += 1
        elif isinstance(ev, SessionStat):
            k = int(self._inst_src[ev.instrument]) if 0 <= ev.instrument < self._inst_src.shape[0] else -1
            src = self._by_index[k] if k >= 0 else self._source(UNATTRIBUTED)
            for acc in self._accs(src):
                acc.msgs += 1
            if src.timed and self._needs_data(src):
                self._on_data(src, ts, out)
        elif isinstance(ev, DtcRaw):
            src = self._source(ev.source)
            self._see(src)
            for acc in self._accs(src):
                acc.msgs += 1
        elif isinstance(ev, RecordingEnded):
            self.paused = True
        # derived rows (Alert, GammaLevels, OrderflowBar) and anything else: not monitored

    def _accs(self, src: _Source) -> tuple[_Acc, _Acc, _Acc]:
        return src.day, src.window, src.hour(self.hour_start)

    def _feed_status(self, ev: FeedStatus, ts: int, out: list[Event]) -> None:
        src = self._source(ev.source)
        self._see(src)
        if ev.instrument >= 0:
            if ev.status == FEED_SUBSCRIPTION_REJECTED:
                for acc in self._accs(src):
                    acc.rejections += 1
            return
        if ev.status in DOWN_STATUSES:
            if src.up:
                src.up = False
                src.down_since = self.now
                for acc in self._accs(src):
                    acc.down += 1
            src.down_reason = FEED_STATUS_NAMES.get(ev.status, str(ev.status))
        elif ev.status in UP_STATUSES and not src.up:
            self._set_up(src, ts, out)

    def _gap(self, ev: Gap, ts: int, out: list[Event]) -> None:
        src = self._source(ev.source)
        self._see(src)
        lo = max(ev.start_ns, src.gap_watermark)
        added = max(0, ev.end_ns - lo)
        src.gap_watermark = max(src.gap_watermark, ev.end_ns)
        src.day.gap_ns += added
        src.day.gaps += 1
        src.window.gap_ns += added
        src.window.gaps += 1
        # the hour table shows a gap in the hours it covered
        t = lo
        while t < ev.end_ns:
            hour = t - t % NS_PER_HOUR
            end = min(ev.end_ns, hour + NS_PER_HOUR)
            src.hour(hour).gap_ns += end - t
            t = end
        src.hour(self.hour_start).gaps += 1
        seconds = (ev.end_ns - ev.start_ns) / NS_PER_S
        self._raise(src, "gap", ts, seconds, 0.0,
                    f"{src.name}: no data for {seconds:.1f} s ({ev.reason})", out)

    def _needs_data(self, src: _Source) -> bool:
        return src.timed and (not src.seen or not src.up or (src.name, "gap") in self.active)

    def _on_data(self, src: _Source, ts: int, out: list[Event]) -> None:
        if not src.seen:
            self._see(src)
        elif not src.up:
            self._set_up(src, ts, out)
        self._clear(src, "gap", ts, 0.0, f"{src.name}: data flowing again", out)

    def _set_up(self, src: _Source, ts: int, out: list[Event]) -> None:
        src.up = True
        down_s = (self.now - src.down_since) / NS_PER_S
        self._clear(src, "disconnected", ts, down_s, f"{src.name}: back after {down_s:.1f} s", out)

    # --- event time --------------------------------------------------------------------------

    def _next_deadline(self) -> int | None:
        if self.paused:
            return None
        best = None
        for src in self._by_index:
            if src.seen and src.timed and not src.up and (src.name, "disconnected") not in self.active:
                d = src.down_since + self.disconnect_ns
                best = d if best is None else min(best, d)
        return best

    def _advance(self, t: int, cause: int, out: list[Event]) -> None:
        """Move event time to t: count time, close the windows it passes, fire deadlines."""
        if t > self.now:
            steps = (t - self.window_start) // self.window_ns
            if steps > _MAX_WINDOW_STEPS:  # a clock jump (hours of silence): close once, skip ahead
                self._count_time(self.now, self.window_start + self.window_ns)
                self._close_window(cause, out)
                self.now = t - t % self.window_ns
                self.window_start = self.now
                self.hour_start = t - t % NS_PER_HOUR
            while True:
                window_end = self.window_start + self.window_ns
                hour_end = self.hour_start + NS_PER_HOUR
                bound = min(window_end, hour_end)
                if t < bound:
                    self._count_time(self.now, t)
                    self.now = t
                    break
                self._count_time(self.now, bound)
                self.now = bound
                if bound == window_end:
                    self._close_window(cause, out)
                    self.window_start = window_end
                if bound == hour_end:
                    self.hour_start = hour_end
        deadline = self._next_deadline()
        while deadline is not None and self.now > deadline:
            for src in self._by_index:
                if (src.seen and src.timed and not src.up and src.down_since + self.disconnect_ns == deadline
                        and (src.name, "disconnected") not in self.active):
                    down_s = (self.now - src.down_since) / NS_PER_S
                    self._raise(src, "disconnected", cause, down_s, self.settings.disconnect_alert_s,
                                f"{src.name}: {src.down_reason} for {down_s:.1f} s", out)
            deadline = self._next_deadline()

    def _count_time(self, a: int, b: int) -> None:
        if self.paused or b <= a:
            return
        span = b - a
        for src in self._by_index:
            if src.seen and src.timed:
                for acc in (src.day, src.window, src.hour(self.hour_start)):
                    acc.obs_ns += span
                    if src.up:
                        acc.conn_ns += span

    # --- windows -----------------------------------------------------------------------------

    def _thresholds(self, src: _Source) -> tuple[float, float, float]:
        """(latency ns, uptime, max gap fraction) for this source's kind."""
        s = self.settings
        if src.kind == POLYGON:
            return s.polygon_latency_ms * NS_PER_MS, s.polygon_uptime, 1.0 - s.min_completeness
        return s.dtc_latency_ms * NS_PER_MS, s.dtc_uptime, s.dtc_max_gap_fraction

    def _latency_p(self, src: _Source, acc: _Acc, percent: int) -> float:
        if src.kind == POLYGON:
            return quantile_ns(acc.req_hist, acc.req_n, acc.req_max, percent)
        return quantile_ns(acc.lat_hist, acc.lat_n, acc.lat_max, percent)

    def _window_sync(self) -> int:
        medians = [quantile_ns(s.window.lat_hist, s.window.lat_n, s.window.lat_max, 50)
                   for s in self._by_index if s.kind == "dtc" and s.timed and s.window.lat_n > 0]
        if len(medians) < 2:
            return 0
        return int(max(medians) - min(medians))

    def _score(self, src: _Source, acc: _Acc, sync_ns: int) -> tuple[float, dict]:
        """The window score of `acc` (a window's counters) and which thresholds it met."""
        lat_thr, up_thr, gap_thr = self._thresholds(src)
        p99 = self._latency_p(src, acc, 99)
        obs = acc.obs_ns
        checks = {
            "up": acc.conn_ns >= up_thr * obs,
            "complete": acc.gap_ns <= gap_thr * obs,
            "latency": not (p99 > lat_thr),  # NaN (no samples) passes
            "errors": acc.requests == 0 or acc.errors / acc.requests <= self.settings.polygon_max_error_rate,
            "sync": src.kind != "dtc" or sync_ns <= self.settings.max_sync_ms * NS_PER_MS,
        }
        score = (W_UP * checks["up"] + W_COMPLETE * checks["complete"] + W_LATENCY * checks["latency"]
                 + W_ERRORS * checks["errors"] + W_SYNC * checks["sync"])
        return score, checks

    def _close_window(self, cause: int, out: list[Event]) -> None:
        s = self.settings
        sync_ns = self._window_sync()
        hour = self.window_start - self.window_start % NS_PER_HOUR
        for src in self._by_index:
            w = src.window
            if not src.timed or w.obs_ns == 0:
                src.window = _Acc()
                continue
            score, checks = self._score(src, w, sync_ns)
            rate = w.msgs / (w.obs_ns / NS_PER_S)
            for acc in (src.day, src.hour(hour)):
                acc.score_sum += score * w.obs_ns
                acc.score_obs += w.obs_ns
                acc.windows += 1
                acc.good_windows += 1 if all(checks.values()) else 0
                acc.peak_rate = max(acc.peak_rate, rate)
                acc.worst_sync_ns = max(acc.worst_sync_ns, sync_ns if src.kind == "dtc" else 0)
            lat_thr = self._thresholds(src)[0]
            p99 = self._latency_p(src, w, 99)
            if p99 == p99:
                if p99 > lat_thr:
                    self._raise(src, "latency", cause, p99 / NS_PER_MS, lat_thr / NS_PER_MS,
                                f"{src.name}: p99 latency {p99 / NS_PER_MS:.1f} ms over {window_label(s.window_s)}", out)
                else:
                    self._clear(src, "latency", cause, p99 / NS_PER_MS, f"{src.name}: p99 latency "
                                f"{p99 / NS_PER_MS:.1f} ms", out)
            if w.requests:
                err = w.errors / w.requests
                if err > s.polygon_max_error_rate:
                    self._raise(src, "api_errors", cause, err, s.polygon_max_error_rate,
                                f"{src.name}: {w.errors} of {w.requests} requests failed", out)
                else:
                    self._clear(src, "api_errors", cause, err, f"{src.name}: {w.errors} of {w.requests} "
                                "requests failed", out)
            src.recent.append((w.obs_ns, score))
            while len(src.recent) > self.quality_windows:
                src.recent.popleft()
            quality = rolling_quality(src.recent)
            if quality < s.min_quality:
                self._raise(src, "quality", cause, quality, s.min_quality,
                            f"{src.name}: quality {quality:.1%} over the last {window_label(s.quality_span_s)}", out)
            else:
                self._clear(src, "quality", cause, quality, f"{src.name}: quality {quality:.1%}", out)
            src.window = _Acc()

    # --- alerts ------------------------------------------------------------------------------

    def _raise(self, src: _Source, name: str, ts: int, value: float, threshold: float, message: str,
               out: list[Event]) -> None:
        key = (src.name, name)
        if key in self.active:
            return
        alert = Alert(ts, ts, src.name, name, ALERT_RAISED, float(value), float(threshold), message)
        self.active[key] = alert
        self.alert_counts[name] = self.alert_counts.get(name, 0) + 1
        out.append(alert)

    def _clear(self, src: _Source, name: str, ts: int, value: float, message: str, out: list[Event]) -> None:
        raised = self.active.pop((src.name, name), None)
        if raised is None:
            return
        out.append(Alert(ts, ts, src.name, name, ALERT_CLEARED, float(value), raised.threshold, message))

    def active_alerts(self) -> list[Alert]:
        """Alerts raised and not yet cleared, oldest first."""
        return sorted(self.active.values(), key=lambda a: (a.ts_recv, a.source, a.name))

    # --- metrics -----------------------------------------------------------------------------

    def metrics(self) -> HealthMetrics:
        """The day so far against the thresholds: per source, per hour, overall.

        The window still open counts in the quality score, as if it closed now. Encode with
        `mia.engine.jsonenc.to_json` (NaN is written as null); `mia.analytics.health.format_health`
        prints it as a table.
        """
        s = self.settings
        sync_now = self._window_sync()
        sources: dict[str, SourceHealth] = {}
        hours: dict[int, dict[str, SourceHealth]] = {}
        for src in self._by_index:
            if not src.timed:
                continue
            pending = None
            if src.window.obs_ns > 0:
                pending = (src.window.obs_ns, self._score(src, src.window, sync_now)[0])
            sources[src.name] = self._summary(src, src.day, pending)
            current_hour = self.window_start - self.window_start % NS_PER_HOUR
            for hour, acc in src.hours.items():
                hp = pending if hour == current_hour else None
                hours.setdefault(hour, {})[src.name] = self._summary(src, acc, hp)
        unattributed = None
        if UNATTRIBUTED in self.sources:
            unattributed = UnattributedHealth(messages=self.sources[UNATTRIBUTED].day.msgs)
        timed = list(sources.values())
        completeness = min((v.completeness for v in timed if not math.isnan(v.completeness)), default=math.nan)
        quality = min((v.quality for v in timed if not math.isnan(v.quality)), default=math.nan)
        sync_ms = max((v.worst_sync_ms for v in timed if v.kind == "dtc"), default=0.0)
        sync_ms = max(sync_ms, sync_now / NS_PER_MS)
        overall = OverallHealth(
            completeness=completeness,
            completeness_ok=None if math.isnan(completeness) else completeness >= s.min_completeness,
            worst_sync_ms=sync_ms,
            sync_ok=sync_ms <= s.max_sync_ms,
            quality=quality,
            quality_ok=None if math.isnan(quality) else quality >= s.min_quality,
        )
        return HealthMetrics(
            start_ns=self.start_ns,
            end_ns=self.now,
            observed_s=math.nan if self.now is None else (self.now - self.start_ns) / NS_PER_S,
            recordings=self.recordings,
            max_queued=self.max_queued,
            thresholds=HealthThresholds(**{f: getattr(s, f) for f in HealthThresholds.__struct_fields__}),
            overall=overall,
            sources=sources,
            unattributed=unattributed,
            hours=[HourHealth(hour=hour_label(h), sources=hours[h]) for h in sorted(hours)],
            alerts=AlertsHealth(
                raised=dict(sorted(self.alert_counts.items())),
                active=[ActiveAlert(source=a.source, name=a.name, since_ns=a.ts_recv, value=a.value,
                                    threshold=a.threshold, message=a.message) for a in self.active_alerts()],
            ),
        )

    def _summary(self, src: _Source, acc: _Acc, pending: tuple[int, float] | None) -> SourceHealth:
        s = self.settings
        lat_thr, up_thr, gap_thr = self._thresholds(src)
        obs = acc.obs_ns
        uptime = acc.conn_ns / obs if obs else math.nan
        gap_fraction = min(1.0, acc.gap_ns / obs) if obs else math.nan
        completeness = 1.0 - max(gap_fraction, 1.0 - uptime) if obs else math.nan
        score_sum, score_obs = acc.score_sum, acc.score_obs
        if pending is not None:
            score_sum += pending[1] * pending[0]
            score_obs += pending[0]
        quality = score_sum / score_obs if score_obs else math.nan
        error_rate = acc.errors / acc.requests if acc.requests else math.nan
        p99 = self._latency_p(src, acc, 99)
        return SourceHealth(
            kind=src.kind,
            observed_s=obs / NS_PER_S,
            connected_s=acc.conn_ns / NS_PER_S,
            uptime=uptime,
            uptime_ok=uptime >= up_thr if obs else None,
            disconnects=acc.down,
            gaps=acc.gaps,
            gap_s=acc.gap_ns / NS_PER_S,
            gap_fraction=gap_fraction,
            gap_ok=gap_fraction <= gap_thr if obs else None,
            completeness=completeness,
            completeness_ok=completeness >= s.min_completeness if obs else None,
            messages=acc.msgs,
            rate_avg=acc.msgs / (obs / NS_PER_S) if obs else math.nan,
            rate_peak=acc.peak_rate,
            latency_ms=_lat_summary(acc.lat_hist, acc.lat_n, acc.lat_sum, acc.lat_max),
            requests=acc.requests,
            errors=acc.errors,
            error_rate=error_rate,
            errors_ok=error_rate <= s.polygon_max_error_rate if acc.requests else None,
            fallbacks=acc.fallbacks,
            source_errors=acc.source_errors,
            rejections=acc.rejections,
            request_latency_ms=_lat_summary(acc.req_hist, acc.req_n, acc.req_sum, acc.req_max),
            latency_ok=None if p99 != p99 else p99 <= lat_thr,
            worst_sync_ms=acc.worst_sync_ns / NS_PER_MS,
            windows=acc.windows,
            good_windows=acc.good_windows,
            quality=quality,
            quality_ok=quality >= s.min_quality if score_obs else None,
        )


def run_monitor(batches: Iterable[ColumnBatch], settings: MonitorConfig = DEFAULT_CONFIG
                ) -> tuple[HealthMetrics, list[Alert]]:
    """Fold a day's input batches (in log order) through a fresh monitor: (metrics, alerts)."""
    mon = MonitorReducer(settings)
    alerts: list[Alert] = []
    for batch in batches:
        alerts.extend(mon.on_batch(batch))
    return mon.metrics(), alerts


def rolling_quality(recent: Iterable[tuple[int, float]]) -> float:
    num = 0.0
    den = 0
    for obs, score in recent:
        num += score * obs
        den += obs
    return num / den if den else 1.0


def _lat_summary(hist: np.ndarray | None, n: int, total: int, vmax: int | None) -> LatencySummary | None:
    if n == 0 or vmax is None:
        return None
    return LatencySummary(
        n=n,
        mean=total / n / NS_PER_MS,
        p50=quantile_ns(hist, n, vmax, 50) / NS_PER_MS,
        p99=quantile_ns(hist, n, vmax, 99) / NS_PER_MS,
        max=vmax / NS_PER_MS,
    )
