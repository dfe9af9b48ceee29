"""MonitorReducer: each alert raised and cleared exactly when expected, batching-independence,
and metrics against a hand-computed case. Streams are synthetic, built here."""

from __future__ import annotations

import json

import msgspec
import numpy as np
import pytest

from mia.analytics.monitor import (
    MonitorConfig,
    MonitorReducer,
    bin_upper_edge,
    latency_bin,
    latency_bins,
    quantile_ns,
)
from mia.engine.columns import ColumnBatch
from mia.engine.events import (
    ALERT_CLEARED,
    ALERT_RAISED,
    FALLBACK_NONE,
    FALLBACK_OTHER_SOURCE,
    FALLBACK_PARTIAL,
    FALLBACK_PREVIOUS,
    FEED_AVAILABLE,
    FEED_DISCONNECTED,
    FEED_HEARTBEAT_TIMEOUT,
    FEED_LOGGED_ON,
    FEED_UNAVAILABLE,
    Alert,
    EventCodec,
    FeedStatus,
    Gap,
    Heartbeat,
    Instrument,
    PolygonResponse,
    Quote,
    RecordingEnded,
    RecordingStarted,
    SourceError,
    Trade,
)
from mia.engine.jsonenc import to_json

S = 1_000_000_000
MS = 1_000_000
T0 = 1_718_000_000 * S - (1_718_000_000 * S) % (3600 * S)  # on an hour boundary
DTC = "dtc:127.0.0.1:11099"
DTC2 = "dtc:127.0.0.1:11100"


def _no_nan(token: str):
    raise AssertionError(f"JSON carries {token}: NaN must be written as null")


def at(seconds: float) -> int:
    return T0 + int(round(seconds * S))


def start(sources=(DTC,)) -> list:
    evs = [RecordingStarted(T0, T0, "rec-1", "0.1", 1, "fp", list(sources))]
    for i, src in enumerate(s for s in sources if s.startswith("dtc")):
        evs.append(Instrument(T0, T0, i, "ES" if i == 0 else "NQ", src))
        evs.append(FeedStatus(T0, T0, src, FEED_LOGGED_ON))
    return evs


def trade(seconds: float, latency_ns: int = 2 * MS, instrument: int = 0) -> Trade:
    t = at(seconds)
    return Trade(t - latency_ns, t, instrument, 5000.0, 1.0, 1)


def beat(seconds: float) -> Heartbeat:
    return Heartbeat(at(seconds), at(seconds))


def poly(seconds: float, elapsed_ms: float = 20.0, status: int = 200) -> PolygonResponse:
    t = at(seconds)
    return PolygonResponse(t, t, "SPX", "/v3/snapshot/options/I:SPX", "limit=250", status, "req", int(elapsed_ms * MS), b"{}")


def run(events: list, settings: MonitorConfig | None = None) -> tuple[MonitorReducer, list[Alert]]:
    mon = MonitorReducer(settings or MonitorConfig())
    return mon, mon.on_batch(ColumnBatch.from_events(events))


def summary(alerts: list[Alert], names=None) -> list[tuple[str, str, int, float]]:
    """(name, source, state, seconds since T0) of each alert, optionally only some names."""
    return [(a.name, a.source, a.state, (a.ts_recv - T0) / S) for a in alerts if names is None or a.name in names]


def test_dtc_outage_of_40s_raises_disconnected_after_30s_and_gap_then_clears():
    # Arrange: trades each second; disconnected at 100 s; heartbeats at x.5 (one exactly at 130.0)
    evs = start()
    for sec in range(1, 100):
        evs += [trade(sec), beat(sec + 0.5)]
    evs.append(FeedStatus(at(100), at(100), DTC, FEED_DISCONNECTED))
    for sec in range(100, 140):
        evs.append(beat(sec + 0.5))
        if sec == 129:
            evs.append(beat(130.0))  # exactly at the deadline: not "more than 30 s" yet
    evs += [FeedStatus(at(140), at(140), DTC, FEED_LOGGED_ON), Gap(at(140), at(140), DTC, at(100), at(140), "reconnect")]
    for sec in range(141, 200):
        evs += [trade(sec), beat(sec + 0.5)]
    # Act
    mon, alerts = run(evs)
    # Assert
    assert summary(alerts, {"disconnected", "gap"}) == [
        ("disconnected", DTC, ALERT_RAISED, 130.5),
        ("disconnected", DTC, ALERT_CLEARED, 140.0),
        ("gap", DTC, ALERT_RAISED, 140.0),
        ("gap", DTC, ALERT_CLEARED, 141.0),
    ]
    raised = [a for a in alerts if a.name == "disconnected" and a.state == ALERT_RAISED][0]
    assert raised.value == pytest.approx(30.5) and raised.threshold == 30.0
    cleared = [a for a in alerts if a.name == "disconnected" and a.state == ALERT_CLEARED][0]
    assert cleared.value == pytest.approx(40.0)
    assert mon.metrics().sources[DTC].disconnects == 1
    assert mon.active_alerts() == [a for a in mon.active_alerts() if a.name == "quality"]


def test_short_outage_raises_no_disconnected_alert():
    evs = start()
    for sec in range(1, 50):
        evs += [trade(sec), beat(sec + 0.5)]
    evs.append(FeedStatus(at(50), at(50), DTC, FEED_DISCONNECTED))
    evs += [beat(s + 0.5) for s in range(50, 75)]
    evs.append(FeedStatus(at(75), at(75), DTC, FEED_LOGGED_ON))
    evs += [trade(s) for s in range(76, 90)]
    _, alerts = run(evs)
    assert summary(alerts, {"disconnected"}) == []


def test_stalled_feed_raises_disconnected_and_data_clears_it():
    evs = start()
    evs += [trade(s) for s in range(1, 20)]
    evs.append(FeedStatus(at(20), at(20), DTC, FEED_HEARTBEAT_TIMEOUT))
    evs += [beat(s) for s in range(21, 56)]
    evs += [trade(56.25), trade(57)]  # data flows again: no FeedStatus needed
    mon, alerts = run(evs)
    assert summary(alerts, {"disconnected"}) == [
        ("disconnected", DTC, ALERT_RAISED, 51.0),
        ("disconnected", DTC, ALERT_CLEARED, 56.25),
    ]
    assert "heartbeat_timeout" in alerts[0].message or any("heartbeat_timeout" in a.message for a in alerts)
    m = mon.metrics().sources[DTC]
    assert m.connected_s == pytest.approx(57 - 36.25)


def test_dtc_latency_over_threshold_raises_once_and_clears_at_window_close():
    # windows are [0,60), [60,120) ...; the slow minutes are 60..180 (two windows)
    evs = start()
    for sec in range(1, 300):
        slow = 60 <= sec < 180
        evs += [trade(sec, latency_ns=(25 if slow else 2) * MS), beat(sec + 0.5)]
    _, alerts = run(evs)
    assert summary(alerts, {"latency"}) == [
        ("latency", DTC, ALERT_RAISED, 120.0),  # the trade at 120 s closes the window [60, 120)
        ("latency", DTC, ALERT_CLEARED, 240.0),
    ]
    assert alerts[0].value == pytest.approx(25.0, rel=0.01) and alerts[0].threshold == 10.0


def test_slow_polygon_answers_raise_latency():
    evs = start(("polygon",))
    evs += [poly(5 * k + 1, elapsed_ms=120.0 if 12 <= k < 24 else 20.0) for k in range(48)]
    evs += [beat(s + 0.5) for s in range(0, 240)]
    evs.sort(key=lambda e: e.ts_recv)
    mon, alerts = run(evs)
    assert summary(alerts, {"latency"}) == [
        ("latency", "polygon", ALERT_RAISED, 120.5),
        ("latency", "polygon", ALERT_CLEARED, 180.5),
    ]
    assert alerts[0].value == pytest.approx(120.0, rel=0.01)
    m = mon.metrics().sources["polygon"]
    assert m.requests == 48 and m.request_latency_ms.max == pytest.approx(120.0)


def test_polygon_5xx_burst_raises_api_errors_and_clean_window_clears():
    evs = start(("polygon",))
    for k in range(36):  # one request every 5 s
        t = 5 * k + 1
        if 60 <= t < 120 and k % 3 == 0:
            evs.append(SourceError(at(t), at(t), "polygon", "PolygonHttpError: HTTP 503", "using chain from 10:15", 7 * S, "SPX", 503))
        else:
            evs.append(poly(t))
    evs += [beat(s + 0.5) for s in range(0, 200)]
    evs.sort(key=lambda e: e.ts_recv)
    mon, alerts = run(evs)
    assert summary(alerts, {"api_errors"}) == [
        ("api_errors", "polygon", ALERT_RAISED, 120.5),
        ("api_errors", "polygon", ALERT_CLEARED, 180.5),
    ]
    m = mon.metrics().sources["polygon"]
    assert m.errors == 4 and m.requests == 36 and m.fallbacks == 4


def test_polygon_unavailable_counts_as_downtime_and_a_good_answer_ends_it():
    evs = start(("polygon",))
    evs += [poly(1), FeedStatus(at(10), at(10), "polygon", FEED_UNAVAILABLE, detail="SPX: error")]
    evs += [beat(s + 0.5) for s in range(10, 50)]
    evs += [poly(50), FeedStatus(at(50), at(50), "polygon", FEED_AVAILABLE), beat(60)]
    evs.sort(key=lambda e: e.ts_recv)
    mon, alerts = run(evs)
    assert summary(alerts, {"disconnected"}) == [
        ("disconnected", "polygon", ALERT_RAISED, 40.5),
        ("disconnected", "polygon", ALERT_CLEARED, 50.0),
    ]
    m = mon.metrics().sources["polygon"]
    assert m.observed_s == pytest.approx(59.0) and m.connected_s == pytest.approx(19.0)


def test_recording_restart_is_nobodys_downtime():
    evs = start()
    evs += [trade(s) for s in range(1, 10)]
    evs.append(FeedStatus(at(10), at(10), DTC, FEED_DISCONNECTED))
    evs.append(RecordingEnded(at(11), at(11), "rec-1", "stopped"))
    evs += [RecordingStarted(at(500), at(500), "rec-2", "0.1", 1, "fp", [DTC]), Instrument(at(500), at(500), 0, "ES", DTC)]
    evs += [trade(s) for s in range(501, 520)]
    mon, alerts = run(evs)
    assert summary(alerts, {"disconnected"}) == []
    m = mon.metrics().sources[DTC]
    assert m.observed_s == pytest.approx(11 + 19) and m.connected_s == pytest.approx(10 + 19)


def rich_stream() -> list:
    """Two DTC sources and Polygon with every kind of fault, for the batching test."""
    evs = start((DTC, DTC2, "polygon"))
    rng = np.random.default_rng(7)
    for ms in range(0, 400_000, 250):
        sec = ms / 1000
        if ms % 1000 == 500:
            evs.append(beat(sec))
        down = 100 <= sec < 145
        if not down:
            lat = int(rng.integers(1, 4) * MS) if not 200 <= sec < 260 else 30 * MS
            evs.append(trade(sec, latency_ns=lat, instrument=0))
            evs.append(Quote(at(sec) - lat, at(sec), 0, 4999.75, 10.0, 5000.0, 12.0))
        evs.append(trade(sec + 0.001, latency_ns=int(rng.integers(1, 300)) * MS // 10, instrument=1))
        if ms % 5000 == 0:
            bad = 300 <= sec < 330
            evs.append(poly(sec + 0.002, elapsed_ms=90.0 if 150 <= sec < 200 else 25.0, status=502 if bad else 200))
        if ms == 100_000:
            evs.append(FeedStatus(at(sec), at(sec), DTC, FEED_DISCONNECTED))
        if ms == 145_000:
            evs += [FeedStatus(at(sec), at(sec), DTC, FEED_LOGGED_ON), Gap(at(sec), at(sec), DTC, at(100), at(145), "reconnect")]
        if ms == 350_000:
            evs.append(FeedStatus(at(sec), at(sec), DTC2, FEED_HEARTBEAT_TIMEOUT))
    evs.sort(key=lambda e: e.ts_recv)
    return evs


@pytest.mark.parametrize("size", [1, 7, 4096])
def test_batches_of_any_size_give_identical_alerts_and_metrics(size):
    # Arrange
    evs = rich_stream()
    whole = ColumnBatch.from_events(evs)
    ref = MonitorReducer()
    ref_alerts = ref.on_batch(whole)
    names = {a.name for a in ref_alerts}
    assert {"disconnected", "gap", "latency", "api_errors", "quality"} <= names  # the stream exercises them all
    codec = EventCodec()
    assert codec.decode_many(codec.encode_many(ref_alerts)) == ref_alerts  # alerts go to the derived log
    # Act
    mon = MonitorReducer()
    alerts = []
    for lo in range(0, len(whole), size):
        alerts += mon.on_batch(whole.take(np.arange(lo, min(lo + size, len(whole)))))
    # Assert: bit for bit
    assert alerts == ref_alerts
    assert msgspec.msgpack.encode(mon.metrics()) == msgspec.msgpack.encode(ref.metrics())


def test_metrics_hand_computed_tiny_case():
    # Arrange: 10 s windows. DTC up 0-20, down 20-25 (Gap 20-25), up 25-40. Polygon from 1 s:
    # 3 good answers (10 ms) and one failed poll (503) in the first window.
    settings = MonitorConfig(window_s=10.0)
    evs = start((DTC, "polygon"))
    evs += [trade(s, latency_ns=1 * MS) for s in range(0, 20)]
    evs.append(FeedStatus(at(20), at(20), DTC, FEED_DISCONNECTED))
    evs += [beat(s + 0.5) for s in range(20, 25)]
    evs += [FeedStatus(at(25), at(25), DTC, FEED_LOGGED_ON), Gap(at(25), at(25), DTC, at(20), at(25), "reconnect")]
    evs += [trade(s, latency_ns=1 * MS) for s in range(25, 40)]
    evs += [poly(1, 10.0), poly(2, 10.0), poly(3, 10.0),
            SourceError(at(4), at(4), "polygon", "PolygonHttpError: HTTP 503", "none: no chain yet", 0, "SPX", 503)]
    evs.append(beat(40))
    evs.sort(key=lambda e: e.ts_recv)
    # Act
    mon, alerts = run(evs, settings)
    m = mon.metrics()
    d, p = m.sources[DTC], m.sources["polygon"]
    # Assert: DTC
    assert d.observed_s == 40.0 and d.connected_s == 35.0
    assert d.uptime == pytest.approx(0.875) and d.uptime_ok is False
    assert d.gap_s == 5.0 and d.gap_fraction == pytest.approx(0.125)
    assert d.completeness == pytest.approx(0.875)
    assert d.latency_ms.p99 == pytest.approx(1.0) and d.latency_ms.n == 35
    # windows [0,10) [10,20) [30,40) score 1; [20,30) fails up and complete: 0.4
    assert d.quality == pytest.approx((10 + 10 + 4 + 10) / 40)
    # Polygon: observed from 1 s; 4 requests, 1 error; first window misses only the error check
    assert p.observed_s == 39.0 and p.uptime == 1.0
    assert p.requests == 4 and p.errors == 1 and p.error_rate == pytest.approx(0.25)
    assert p.fallbacks == 0 and p.errors_ok is False
    assert p.quality == pytest.approx((9 * 0.9 + 30) / 39)
    assert m.overall.quality == pytest.approx(0.85) and m.overall.quality_ok is False
    assert m.overall.completeness == pytest.approx(0.875)
    assert len(m.hours) == 1 and m.hours[0].sources[DTC].connected_s == 35.0
    json.loads(to_json(m), parse_constant=_no_nan)  # strict JSON
    # alerts of this case
    assert summary(alerts, {"api_errors", "quality"}) == [
        ("api_errors", "polygon", ALERT_RAISED, 10.0),
        ("quality", "polygon", ALERT_RAISED, 10.0),
        ("quality", "polygon", ALERT_CLEARED, 20.0),
        ("quality", DTC, ALERT_RAISED, 30.0),
    ]


def test_two_dtc_sources_out_of_sync_fail_the_sync_check():
    evs = start((DTC, DTC2))
    for sec in range(1, 130):
        evs += [trade(sec, 2 * MS, 0), trade(sec + 0.1, 400 * MS, 1)]
    _, alerts = run(evs)
    mon, _ = run(evs)
    m = mon.metrics()
    assert m.overall.worst_sync_ms == pytest.approx(398.0, rel=0.01)
    assert m.overall.sync_ok is False


def test_latency_histogram_bins_and_quantiles():
    values = np.array([0, -5, 1, 2, 3, 1000, 999_999, 10**12], dtype=np.int64)
    bins = latency_bins(values)
    assert bins.tolist() == [latency_bin(int(v)) for v in values]
    for v, b in zip(values.tolist(), bins.tolist()):
        if v > 0:
            assert bin_upper_edge(b) >= v and bin_upper_edge(b) <= v * (1 + 1 / 64) + 1
    lat = np.arange(1, 1001, dtype=np.int64) * MS  # 1..1000 ms
    hist = np.bincount(latency_bins(lat), minlength=65 * 64)
    assert quantile_ns(hist, 1000, int(lat.max()), 99) == pytest.approx(990 * MS, rel=0.01)
    assert quantile_ns(hist, 1000, int(lat.max()), 50) == pytest.approx(500 * MS, rel=0.01)


def test_format_health_table_names_sources_and_marks_missed_thresholds():
    from mia.analytics.health import format_health

    mon = MonitorReducer()
    mon.on_batch(ColumnBatch.from_events(rich_stream()))
    text = format_health(mon.metrics())
    lines = text.splitlines()
    dtc_row = next(line for line in lines if line.startswith(DTC))
    dtc2_row = next(line for line in lines if line.startswith(DTC2))
    assert "88.74%!" in dtc_row  # uptime under 99.9 %
    assert "100.00% " in dtc2_row
    assert "per hour (UTC)" in text and "alerts raised:" in text and "api_errors 1" in text
    assert format_health(MonitorReducer().metrics()) == "no events"


def test_random_cuts_and_run_monitor_agree_with_one_batch():
    from mia.analytics.monitor import run_monitor

    whole = ColumnBatch.from_events(rich_stream())
    ref_metrics, ref_alerts = run_monitor([whole])
    rng = np.random.default_rng(11)
    for _ in range(3):
        cuts = np.unique(np.concatenate([[0], rng.integers(1, len(whole), 60), [len(whole)]]))
        batches = [whole.take(np.arange(a, b)) for a, b in zip(cuts[:-1], cuts[1:])]
        metrics, alerts = run_monitor(batches)
        assert alerts == ref_alerts
        assert msgspec.msgpack.encode(metrics) == msgspec.msgpack.encode(ref_metrics)


def _old_log_source_error(ev: SourceError) -> SourceError:
    """`ev` as a log written before `fallback_kind` existed holds it (decoded: prose mapped)."""
    raw = msgspec.msgpack.encode([24, ev.ts_event, ev.ts_recv, ev.source, ev.error, ev.fallback,
                                  ev.stale_age_ns, ev.underlying, ev.status])
    return EventCodec().decode(raw)


def test_fallbacks_count_from_the_typed_kind_of_old_and_new_source_errors():
    # Arrange: the poller's three sentences as old logs hold them, then typed errors whose prose
    # says the opposite of their kind
    def err(sec, fallback, age=0, **kw):
        return SourceError(at(sec), at(sec), "polygon", "PolygonHttpError: HTTP 503", fallback, age,
                           "SPX", 503, **kw)

    old = [_old_log_source_error(err(1, "none: no chain yet")),
           _old_log_source_error(err(2, "")),
           _old_log_source_error(err(3, "using chain from 10:15:00 UTC, 7 s old", 7 * S)),
           _old_log_source_error(err(4, "using the 250 contracts received"))]
    omitted = [err(5, "none: no chain yet"), err(6, "using chain from 10:15:00 UTC, 9 s old", 9 * S)]
    typed = [err(7, "none: but typed as previous", 9 * S, fallback_kind=FALLBACK_PREVIOUS),
             err(8, "using chain from 10:15:00 UTC", 9 * S, fallback_kind=FALLBACK_NONE),
             err(9, "backup", fallback_kind=FALLBACK_OTHER_SOURCE)]
    # Act
    mon, _ = run(start(("polygon",)) + old + omitted + typed + [beat(10)])
    m = mon.metrics().sources["polygon"]
    # Assert: old prose mapped (none, none, previous, partial), omitted mapped, typed read as is
    assert [e.fallback_kind for e in old + omitted] == [FALLBACK_NONE, FALLBACK_NONE, FALLBACK_PREVIOUS,
                                                        FALLBACK_PARTIAL, FALLBACK_NONE, FALLBACK_PREVIOUS]
    assert m.source_errors == 9 and m.errors == 9
    assert m.fallbacks == 2 + 1 + 2


# The keys of `mia health --json` (one level at a time): a typed field lost or renamed fails here.
HEALTH_KEYS = ["start_ns", "end_ns", "observed_s", "recordings", "max_queued", "thresholds", "overall",
               "sources", "unattributed", "hours", "alerts"]
THRESHOLD_KEYS = ["dtc_latency_ms", "dtc_uptime", "dtc_max_gap_fraction", "polygon_latency_ms", "polygon_uptime",
                  "polygon_max_error_rate", "min_completeness", "max_sync_ms", "min_quality", "disconnect_alert_s",
                  "window_s", "quality_span_s"]
OVERALL_KEYS = ["completeness", "completeness_ok", "worst_sync_ms", "sync_ok", "quality", "quality_ok"]
SOURCE_KEYS = ["kind", "observed_s", "connected_s", "uptime", "uptime_ok", "disconnects", "gaps", "gap_s",
               "gap_fraction", "gap_ok", "completeness", "completeness_ok", "messages", "rate_avg", "rate_peak",
               "latency_ms", "requests", "errors", "error_rate", "errors_ok", "fallbacks", "source_errors",
               "rejections", "request_latency_ms", "latency_ok", "worst_sync_ms", "windows", "good_windows",
               "quality", "quality_ok"]
LATENCY_KEYS = ["n", "mean", "p50", "p99", "max"]
ACTIVE_KEYS = ["source", "name", "since_ns", "value", "threshold", "message"]


def test_health_json_keeps_every_key_in_order_and_writes_no_nan():
    # Arrange: every kind of source, an unattributed instrument, an active alert
    evs = rich_stream() + [Trade(at(400.5), at(400.5), 9, 1.0, 1.0, 1)]
    mon, _ = run(evs)
    # Act
    data = json.loads(to_json(mon.metrics()), parse_constant=_no_nan)
    # Assert
    assert list(data) == HEALTH_KEYS
    assert list(data["thresholds"]) == THRESHOLD_KEYS
    assert list(data["overall"]) == OVERALL_KEYS
    assert list(data["sources"]) == [DTC, DTC2, "polygon"]
    for src in data["sources"].values():
        assert list(src) == SOURCE_KEYS
    assert list(data["sources"][DTC]["latency_ms"]) == LATENCY_KEYS
    assert list(data["sources"]["polygon"]["request_latency_ms"]) == LATENCY_KEYS
    assert data["sources"][DTC]["request_latency_ms"] is None and data["sources"]["polygon"]["latency_ms"] is None
    assert data["sources"][DTC]["error_rate"] is None and data["sources"][DTC]["errors_ok"] is None  # no requests
    assert data["unattributed"] == {"messages": 1}
    assert [list(h) for h in data["hours"]] == [["hour", "sources"]]
    assert data["hours"][0]["hour"] == "2024-06-10T06:00Z"
    assert list(data["hours"][0]["sources"][DTC]) == SOURCE_KEYS
    assert list(data["alerts"]) == ["raised", "active"]
    assert data["alerts"]["active"] and all(list(a) == ACTIVE_KEYS for a in data["alerts"]["active"])


def test_health_json_of_nothing_is_nulls_not_nan():
    data = json.loads(to_json(MonitorReducer().metrics()), parse_constant=_no_nan)
    assert data["start_ns"] is None and data["end_ns"] is None and data["observed_s"] is None
    assert data["overall"]["completeness"] is None and data["overall"]["quality"] is None
    assert data["overall"]["quality_ok"] is None and data["overall"]["sync_ok"] is True
    assert data["sources"] == {} and data["hours"] == [] and data["unattributed"] is None


def test_health_thresholds_are_the_monitor_config_without_the_hook():
    from mia.analytics.health import HealthThresholds

    assert list(HealthThresholds.__struct_fields__) == [
        f for f in MonitorConfig.__struct_fields__ if f != "on_alert"] == THRESHOLD_KEYS


def test_format_health_prints_the_same_table():
    # The text of `mia health` for the rich stream, pinned (what the dict-based table printed).
    from mia.analytics.health import format_health

    mon, _ = run(rich_stream())
    assert format_health(mon.metrics()).splitlines() == RICH_HEALTH_TABLE


RICH_HEALTH_TABLE = [
    'observed 0.11 h from 06:00:00 to 06:06:39, 1 recording(s)',
    'quality 80.0%! (min 95%)   completeness 88.74%! (min 99.8%)   sync 15.3 ms (max 100 ms)',
    '',
    'source                     uptime     gaps  complete   lat p50/p99/max ms       msgs   req     err  quality',
    'dtc:127.0.0.1:11099       88.74%!  11.26%!   88.74%!       2.0/30.0/30.0!       2840     0      -    80.5%!',
    'dtc:127.0.0.1:11100      100.00%   0.00%  100.00%      15.1/29.6/29.9!       1600     0      -    80.0%!',
    'polygon                  100.00%   0.00%  100.00%      25.2/90.0/90.0!         80    80   7.5%!   92.5%!',
    '',
    'thresholds: DTC latency 10 ms, uptime 99.9%, gaps 0.1%; Polygon latency 50 ms, uptime 99.5%, errors 1%; window 60 s',
    '',
    'per hour (UTC)',
    '06:00 dtc:127.0.0.1:11099       88.74%!  11.26%!   88.74%!       2.0/30.0/30.0!       2840     0      -    80.5%!',
    '06:00 dtc:127.0.0.1:11100      100.00%   0.00%  100.00%      15.1/29.6/29.9!       1600     0      -    80.0%!',
    '06:00 polygon                  100.00%   0.00%  100.00%      25.2/90.0/90.0!         80    80   7.5%!   92.5%!',
    '',
    'alerts raised: api_errors 1, disconnected 1, gap 1, latency 3, quality 3',
    '  active since 06:01:00: latency: dtc:127.0.0.1:11100: p99 latency 29.6 ms over 60 s',
    '  active since 06:01:00: quality: dtc:127.0.0.1:11100: quality 80.0% over the last 10 min',
    '  active since 06:02:00: quality: dtc:127.0.0.1:11099: quality 85.0% over the last 10 min',
    '  active since 06:03:00: quality: polygon: quality 93.3% over the last 10 min',
    '  active since 06:06:00: api_errors: polygon: 6 of 12 requests failed',
]
