"""Backfill: the trades a DTC source missed while it was down, from the DTC historical port.

``backfill_day(root, date, ...)``:

1. reads the day's ``Gap`` events of DTC sources in the ``live`` stream (a Gap names its source
   and ``[start_ns, end_ns)``; gaps recorded the next day that start on this day count too) and
   the day's live ``Instrument`` declarations of those sources;
2. per instrument, widens each gap to its *dark interval*: from the last live trade received
   before the gap to the first live trade received after it (the feed may have died before the
   client noticed, and the first trades after a resubscription may predate the gap's end), so
   nothing between the two live trades is left out;
3. asks the historical port for those ticks (``historical.fetch_ticks``), keeps those inside
   the day and the dark interval, and drops every tick the day already holds (live or
   backfilled, matched as a multiset on time, price, size and side: two identical prints in
   one burst stay two);
4. writes what is left to the ``backfill`` stream of that UTC day as ``Trade`` events with
   ``ts_recv = ts_event`` and the instrument ids of the live declarations (re-declared first),
   the writer driven by a ManualClock set to each event's time. The segment's RecordingStarted
   lists, in ``sources``, the historical server and one ``window {json}`` entry per filled
   window (source, symbol, instrument, start_ns, end_ns, from, trades): ``filled_windows``
   reads them back for ``mia inspect``.

Idempotent: a second run finds every tick already there and writes nothing. All or nothing:
the ticks are fetched first and written only when every request succeeded.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from typing import Awaitable, Callable, Final, Iterable, Sequence

import msgspec
import numpy as np

from mia.engine.clock import NS_PER_S, ManualClock, day_bounds, parse_date, utc_day
from mia.engine.errors import NoDataError, UsageError
from mia.engine.events import Gap, Instrument, RecordingStarted, Trade
from mia.engine.log import EventLog

from . import protocol as p
from .convert import count_or_nan, price_or_nan
from .historical import DEFAULT_HISTORICAL_PORT, HistoricalTick, fetch_ticks

logger = logging.getLogger(__name__)

STREAM: Final = "backfill"
PAD_NS: Final = 5 * NS_PER_S  # when a gap has no live trade on one side: widen it this much
MAX_CONCURRENT_REQUESTS: Final = 4  # historical connections open at once
WINDOW_PREFIX: Final = "window "
SOURCE_PREFIX: Final = "dtc-historical:"
_SIDE: Final = {p.AT_ASK: 1, p.AT_BID: -1}  # AT_ASK: the buyer aggressed

Fetch = Callable[..., Awaitable[list[HistoricalTick]]]


class FilledWindow(msgspec.Struct, frozen=True, kw_only=True):
    """One instrument's window asked of the historical port, and the trades it added."""

    source: str  # the live source whose gap it was, "dtc:127.0.0.1:11099"
    symbol: str
    instrument: int
    start_ns: int  # the dark interval (inclusive ends)
    end_ns: int
    historical: str  # HOST:PORT of the historical port asked
    ticks: int = 0  # ticks the port returned inside the window
    trades: int = 0  # of those, trades the day did not hold yet (written)


class BackfillResult(msgspec.Struct, kw_only=True):
    """What `mia backfill` did for one day (its --json object)."""

    date: str
    gaps: int  # DTC Gap events considered
    windows: list[FilledWindow] = []
    added: int = 0  # trades written
    segment: str | None = None  # the backfill segment written (None: nothing to add)


def _dtc(source: str) -> bool:
    return source.startswith("dtc:")


def _host_of(source: str) -> str:
    host = source[4:].rpartition(":")[0]
    return host or "127.0.0.1"


def day_gaps(log: EventLog, date: str) -> list[Gap]:
    """The DTC Gap events of the live stream that touch `date` (the next day's included)."""
    lo, hi = day_bounds(date)
    gaps: list[Gap] = []
    dates = set(log.dates())
    nxt = utc_day(hi)
    for day in [date] + ([nxt] if nxt in dates else []):
        for _, ev in log.read(day, kinds=[Gap], streams="live"):
            if _dtc(ev.source) and ev.start_ns < hi and max(ev.end_ns, ev.start_ns) >= lo:
                gaps.append(ev)
    return gaps


def day_instruments(log: EventLog, date: str) -> dict[int, Instrument]:
    """The day's live Instrument declarations of DTC sources, the last one per id."""
    out: dict[int, Instrument] = {}
    for _, ev in log.read(date, kinds=[Instrument], streams="live"):
        if _dtc(ev.source):
            out[ev.instrument] = ev
    return out


def _trade_columns(log: EventLog, date: str, streams: str, ids: Iterable[int]) -> dict[int, dict]:
    """Per instrument: the day's trades of `streams` as arrays (in log order)."""
    parts: dict[int, list] = {}
    ids = list(ids)
    if not ids:
        return {}
    for batch in log.read_batches(date, kinds=[Trade], instruments=ids, streams=streams):
        for iid in np.unique(batch.instrument):
            sel = batch.instrument == iid
            parts.setdefault(int(iid), []).append(
                (batch.ts_recv[sel], batch.ts_event[sel], batch.price[sel], batch.size[sel],
                 batch.side[sel]))
    out = {}
    for iid, chunks in parts.items():
        cols = [np.concatenate([c[k] for c in chunks]) for k in range(5)]
        out[iid] = dict(zip(("ts_recv", "ts_event", "price", "size", "side"), cols))
    return out


def _dark_intervals(gaps: Sequence[tuple[int, int]], live: dict | None, day_lo: int, day_hi: int,
                    pad_ns: int) -> list[tuple[int, int]]:
    """Each gap widened to the last live trade received before it and the first after it
    (ts_event of each), clipped to the day, then merged (inclusive ends)."""
    spans = []
    recv = live["ts_recv"] if live is not None else np.empty(0, np.int64)
    evt = live["ts_event"] if live is not None else np.empty(0, np.int64)
    order = np.argsort(recv, kind="stable")
    recv, evt = recv[order], evt[order]
    for start, end in gaps:
        i = int(np.searchsorted(recv, start, side="left")) - 1
        j = int(np.searchsorted(recv, max(end, start), side="left"))
        a = int(evt[i]) if i >= 0 else start - pad_ns
        b = int(evt[j]) if j < len(evt) else max(end, start) + pad_ns
        a, b = max(min(a, start), day_lo), min(max(b, end), day_hi - 1)
        if a <= b:
            spans.append((a, b))
    spans.sort()
    merged: list[list[int]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(a, b) for a, b in merged]


def _key(ts: int, price: float, size: float, side: int) -> tuple:
    return (int(ts), float(price), float(size), int(side))


def _held(cols_list: Sequence[dict | None], a: int, b: int) -> Counter:
    """The trades already in the day (any of the column sets) with ts_event in [a, b]."""
    held: Counter = Counter()
    for cols in cols_list:
        if cols is None:
            continue
        sel = (cols["ts_event"] >= a) & (cols["ts_event"] <= b)
        for ts, price, size, side in zip(cols["ts_event"][sel], cols["price"][sel],
                                         cols["size"][sel], cols["side"][sel]):
            held[_key(ts, price, size, side)] += 1
    return held


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"bad DTC historical address {text!r}: expected HOST:PORT")
    return host or "127.0.0.1", int(port)


async def backfill_day(root: str, date: str, *, historical: str | None = None,
                       symbols: Sequence[str] | None = None, use_zlib: bool = True,
                       pad_ns: int = PAD_NS, fetch: Fetch = fetch_ticks,
                       dry_run: bool = False, **fetch_options) -> BackfillResult:
    """Fill the day's DTC gaps from the historical port (see module doc).

    `historical` is HOST:PORT (default: the gap's source host, port 11098); `symbols` limits
    the instruments; `fetch_options` go to ``fetch_ticks`` (timeouts, attempts, credentials).
    """
    date = parse_date(date)
    if historical is not None:
        parse_hostport(historical)  # a bad address is a usage error before anything is read
    log = EventLog(root)
    if date not in log.dates():
        raise NoDataError(f"no data for {date} in {root}")
    day_lo, day_hi = day_bounds(date)
    gaps = day_gaps(log, date)
    result = BackfillResult(date=date, gaps=len(gaps))
    if not gaps:
        return result
    instruments = day_instruments(log, date)
    if symbols:
        wanted = set(symbols)
        unknown = wanted - {i.symbol for i in instruments.values()}
        if unknown:
            raise UsageError(f"{date}: no DTC instrument {', '.join(sorted(unknown))} in the "
                             f"live stream (it has: "
                             f"{', '.join(sorted({i.symbol for i in instruments.values()})) or 'none'})")
        instruments = {k: v for k, v in instruments.items() if v.symbol in wanted}
    live = _trade_columns(log, date, "live", instruments)
    done = _trade_columns(log, date, STREAM, instruments)

    # the windows to ask, per instrument
    jobs: list[tuple[Instrument, str, int, int]] = []
    for iid, inst in sorted(instruments.items()):
        spans = [(g.start_ns, g.end_ns) for g in gaps
                 if g.source == inst.source and g.instrument in (-1, iid)]
        where = historical or f"{_host_of(inst.source)}:{DEFAULT_HISTORICAL_PORT}"
        for a, b in _dark_intervals(spans, live.get(iid), day_lo, day_hi, pad_ns):
            jobs.append((inst, where, a, b))

    limit = asyncio.Semaphore(MAX_CONCURRENT_REQUESTS)

    async def one(inst: Instrument, where: str, a: int, b: int) -> list[HistoricalTick]:
        host, port = parse_hostport(where)
        async with limit:
            return await fetch(host, port, inst.symbol, a, b + 1, use_zlib=use_zlib,
                               **fetch_options)

    fetched = await asyncio.gather(*(one(*job) for job in jobs))  # all or nothing

    trades: list[Trade] = []
    windows: list[FilledWindow] = []
    for (inst, where, a, b), ticks in zip(jobs, fetched):
        iid = inst.instrument
        held = _held([live.get(iid), done.get(iid)], a, b)
        added = 0
        inside = 0
        for tick in ticks:
            if not a <= tick.ts_event <= b:
                continue
            inside += 1
            side = _SIDE.get(tick.at_bid_or_ask, 0)
            k = _key(tick.ts_event, tick.price, tick.volume, side)
            if held[k] > 0:
                held[k] -= 1
                continue
            trades.append(Trade(tick.ts_event, tick.ts_event, iid, price_or_nan(tick.price),
                                count_or_nan(tick.volume), side))
            added += 1
        windows.append(FilledWindow(source=inst.source, symbol=inst.symbol, instrument=iid,
                                    start_ns=a, end_ns=b, historical=where, ticks=inside,
                                    trades=added))
    result.windows = windows
    result.added = len(trades)
    if trades and not dry_run:
        result.segment = _write(log, trades, instruments, windows)
    logger.info("backfill date=%s gaps=%d windows=%d added=%d", date, len(gaps), len(windows),
                len(trades))
    return result


def _write(log: EventLog, trades: list[Trade], instruments: dict[int, Instrument],
           windows: list[FilledWindow]) -> str:
    trades.sort(key=lambda t: t.ts_event)  # stable: a burst keeps the port's order
    first = trades[0].ts_event
    clock = ManualClock(first)
    servers = sorted({w.historical for w in windows})
    sources = [SOURCE_PREFIX + s for s in servers] + [
        WINDOW_PREFIX + json.dumps(msgspec.to_builtins(w), separators=(",", ":"))
        for w in windows if w.trades]
    used = sorted({t.instrument for t in trades})
    with log.writer(STREAM, sources=sources, clock=clock) as w:
        for iid in used:  # declared before first use, with the live ids
            w.append(msgspec.structs.replace(instruments[iid], ts_event=first, ts_recv=first))
        for t in trades:
            clock.set(t.ts_event)
            w.append(t)
        path = str(w.path)
    return path


def backfill(root: str, date: str, **kwargs) -> BackfillResult:
    """``backfill_day`` from synchronous code (what `mia backfill` calls)."""
    return asyncio.run(backfill_day(root, date, **kwargs))


def filled_windows(log: EventLog, date: str) -> list[FilledWindow]:
    """The windows the day's backfill segments say they filled (their RecordingStarted)."""
    out: list[FilledWindow] = []
    if not any(s.stream == STREAM for s in log.segments(date)):
        return out
    for _, ev in log.read(date, kinds=[RecordingStarted], streams=STREAM):
        for entry in ev.sources:
            if entry.startswith(WINDOW_PREFIX):
                try:
                    out.append(msgspec.json.decode(entry[len(WINDOW_PREFIX):], type=FilledWindow))
                except msgspec.DecodeError:
                    logger.warning("backfill: unreadable window entry in %s: %r", date, entry[:80])
    return out
