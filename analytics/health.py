"""The health of a day's sources: the typed result of `MonitorReducer.metrics()` and the table of
`mia health`.

`HealthMetrics` is a tree of frozen msgspec Structs whose field names are the keys of the JSON of
`mia health --json` (encode it with `mia.engine.jsonenc.to_json`). A number with nothing to
measure (no observed time, no requests, no quality window yet) is NaN, which the encoder writes
as `null`; a threshold check with nothing to judge is None (`null`); `latency_ms` and
`request_latency_ms` are None without samples, `unattributed` is None when every market row
belonged to a declared instrument, `start_ns`/`end_ns` are None before the first event.

Definitions of every value: `mia.analytics.monitor` (module docstring) and docs/quality-score.md.
"""

from __future__ import annotations

import math

import msgspec

from ..engine.clock import utc_datetime


class Metrics(msgspec.Struct, frozen=True, kw_only=True):
    """Base of the health structs: frozen, keyword-built, fields in JSON key order."""


class LatencySummary(Metrics):
    """A latency histogram of one source over one span, in milliseconds."""

    n: int
    mean: float
    p50: float
    p99: float
    max: float


class SourceHealth(Metrics):
    """One source over one span (the day or one hour). `kind` is "dtc" or "polygon"."""

    kind: str
    observed_s: float
    connected_s: float
    uptime: float
    uptime_ok: bool | None
    disconnects: int
    gaps: int
    gap_s: float
    gap_fraction: float
    gap_ok: bool | None
    completeness: float
    completeness_ok: bool | None
    messages: int
    rate_avg: float
    rate_peak: float
    latency_ms: LatencySummary | None  # DTC: ts_recv - ts_event of market rows
    requests: int
    errors: int
    error_rate: float
    errors_ok: bool | None
    fallbacks: int
    source_errors: int
    rejections: int
    request_latency_ms: LatencySummary | None  # Polygon: PolygonResponse.elapsed_ns
    latency_ok: bool | None
    worst_sync_ms: float
    windows: int
    good_windows: int
    quality: float
    quality_ok: bool | None


class UnattributedHealth(Metrics):
    """Market rows whose instrument no Instrument event declared."""

    messages: int


class HourHealth(Metrics):
    """One UTC hour: `hour` is "YYYY-MM-DDTHH:00Z"."""

    hour: str
    sources: dict[str, SourceHealth]


class OverallHealth(Metrics):
    """The worst source: least completeness and quality, widest clock spread."""

    completeness: float
    completeness_ok: bool | None
    worst_sync_ms: float
    sync_ok: bool
    quality: float
    quality_ok: bool | None


class HealthThresholds(Metrics):
    """The thresholds the metrics were judged against: `MonitorConfig` without `on_alert`."""

    dtc_latency_ms: float
    dtc_uptime: float
    dtc_max_gap_fraction: float
    polygon_latency_ms: float
    polygon_uptime: float
    polygon_max_error_rate: float
    min_completeness: float
    max_sync_ms: float
    min_quality: float
    disconnect_alert_s: float
    window_s: float
    quality_span_s: float


class ActiveAlert(Metrics):
    """An alert raised and not cleared: `since_ns` is its ts_recv."""

    source: str
    name: str
    since_ns: int
    value: float
    threshold: float
    message: str


class AlertsHealth(Metrics):
    """How many alerts of each name were raised, and those still active (oldest first)."""

    raised: dict[str, int]
    active: list[ActiveAlert]


class HealthMetrics(Metrics):
    """The day so far against the thresholds: overall, per source, per hour, alerts."""

    start_ns: int | None
    end_ns: int | None
    observed_s: float
    recordings: int
    max_queued: int
    thresholds: HealthThresholds
    overall: OverallHealth
    sources: dict[str, SourceHealth]
    unattributed: UnattributedHealth | None
    hours: list[HourHealth]
    alerts: AlertsHealth


# --- labels ----------------------------------------------------------------------------------


def hour_label(hour_ns: int) -> str:
    """The UTC hour of an int-ns timestamp, "YYYY-MM-DDTHH:00Z"."""
    return utc_datetime(hour_ns).strftime("%Y-%m-%dT%H:00Z")


def window_label(seconds: float) -> str:
    """A span for people: "60 s", "10 min"."""
    return f"{seconds:g} s" if seconds < 120 else f"{seconds / 60:g} min"


# --- the human table for `mia health` -------------------------------------------------------


def _pct(value: float, digits: int = 2) -> str:
    return "-" if math.isnan(value) else f"{value * 100:.{digits}f}%"


def _ms(lat: LatencySummary | None) -> str:
    if lat is None:
        return "-"
    return f"{lat.p50:.1f}/{lat.p99:.1f}/{lat.max:.1f}"


def _mark(ok: bool | None) -> str:
    return " " if ok is None else ("" if ok else "!")


def _iso(ns: int) -> str:
    return utc_datetime(ns).strftime("%H:%M:%S")


def format_health(metrics: HealthMetrics) -> str:
    """The metrics of `MonitorReducer.metrics()` as a table; "!" marks a missed threshold."""
    if metrics.start_ns is None or metrics.end_ns is None:
        return "no events"
    t = metrics.thresholds
    o = metrics.overall
    lines = [
        f"observed {metrics.observed_s / 3600:.2f} h from {_iso(metrics.start_ns)} "
        f"to {_iso(metrics.end_ns)}, {metrics.recordings} recording(s)",
        f"quality {_pct(o.quality, 1)}{_mark(o.quality_ok)} (min {t.min_quality:.0%})   "
        f"completeness {_pct(o.completeness)}{_mark(o.completeness_ok)} "
        f"(min {t.min_completeness:.1%})   sync {o.worst_sync_ms:.1f} ms{_mark(o.sync_ok)} "
        f"(max {t.max_sync_ms:g} ms)",
        "",
    ]
    lines += _source_table(metrics.sources)
    lines.append("")
    lines.append(f"thresholds: DTC latency {t.dtc_latency_ms:g} ms, uptime {t.dtc_uptime:.1%}, gaps "
                 f"{t.dtc_max_gap_fraction:.1%}; Polygon latency {t.polygon_latency_ms:g} ms, uptime "
                 f"{t.polygon_uptime:.1%}, errors {t.polygon_max_error_rate:.0%}; window {t.window_s:g} s")
    if metrics.hours:
        lines.append("")
        lines.append("per hour (UTC)")
        for hour in metrics.hours:
            lines += _source_table(hour.sources, label=hour.hour[11:16])[1:]
    alerts = metrics.alerts
    lines.append("")
    raised = ", ".join(f"{k} {v}" for k, v in alerts.raised.items()) or "none"
    lines.append(f"alerts raised: {raised}")
    for a in alerts.active:
        lines.append(f"  active since {_iso(a.since_ns)}: {a.name}: {a.message}")
    return "\n".join(lines)


def _source_table(sources: dict[str, SourceHealth], label: str | None = None) -> list[str]:
    header = (f"{'hour ' if label else ''}{'source':<24}{'uptime':>9} {'gaps':>8} {'complete':>9} "
              f"{'lat p50/p99/max ms':>20} {'msgs':>10} {'req':>5} {'err':>7} {'quality':>8}")
    rows = [header]
    for name, m in sources.items():
        lat = m.request_latency_ms if m.kind == "polygon" else m.latency_ms
        rows.append(
            f"{(label + ' ') if label else ''}{name:<24}{_pct(m.uptime):>8}{_mark(m.uptime_ok)} "
            f"{_pct(m.gap_fraction):>7}{_mark(m.gap_ok)} {_pct(m.completeness):>8}"
            f"{_mark(m.completeness_ok)} {_ms(lat):>19}{_mark(m.latency_ok)} {m.messages:>10} "
            f"{m.requests:>5} {_pct(m.error_rate, 1):>6}{_mark(m.errors_ok)} "
            f"{_pct(m.quality, 1):>7}{_mark(m.quality_ok)}")
    return rows
