"""DTC messages -> mia events, sans-IO: the one place vendor shapes become events.

``DtcEventMapper.on_message(msg, ts_recv, out)`` appends the events one message means. It keeps
the state the conversion needs and nothing else: the last full BBO per instrument (a bid/ask
update may carry one side only), the last timestamp per stream (the *_NO_TIMESTAMP variants
reuse it), which instruments were declared, and whether a depth snapshot batch is open.

Conventions (dtc.md §3-§5): every DTC time is UTC since the Unix epoch; DBL_MAX / FLT_MAX /
UINT_MAX mean unset and become NaN; AtBidOrAsk AT_ASK is a buyer-initiated trade (+1), AT_BID a
seller (-1); depth Side AT_BID is the bid (+1), AT_ASK the ask (-1); DTC depth Level is 1-based
and mia's ``level`` 0-based. A message with no time of its own gets ``ts_event = ts_recv``.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import msgspec

from mia.engine.clock import NS_PER_MS, NS_PER_S, NS_PER_US, utc_day
from mia.engine.errors import LocalProtocolError
from mia.engine.events import (
    BATCH_BEGIN,
    BATCH_END,
    BOOK_CLEAR,
    BOOK_DELETE,
    BOOK_SNAPSHOT,
    BOOK_UPSERT,
    FEED_AVAILABLE,
    FEED_SUBSCRIPTION_REJECTED,
    FEED_UNAVAILABLE,
    BookLevel,
    DtcRaw,
    Event,
    FeedStatus,
    Instrument,
    Quote,
    SessionStat,
    Trade,
)

from . import protocol as p

NAN = math.nan
_UNSET_FLOAT = 3.4e38  # anything this large is FLT_MAX or DBL_MAX: the header's "unset"
_SIDE_OF_AGGRESSOR = {p.AT_ASK: 1, p.AT_BID: -1}
_BOOK_SIDE = {p.AT_BID: 1, p.AT_ASK: -1}
_UPDATE_FLAGS = {p.FINAL_UPDATE_UNSET: BATCH_END, p.FINAL_UPDATE_TRUE: BATCH_END,
                 p.FINAL_UPDATE_FALSE: 0, p.FINAL_UPDATE_BEGIN_BATCH: BATCH_BEGIN}
_KIND_OF_SECURITY = {1: "future", 2: "equity", 4: "index", 6: "option", 7: "option", 8: "option"}


def price_or_nan(x: float) -> float:
    return NAN if x >= _UNSET_FLOAT or x != x else float(x)


def count_or_nan(x: int | float) -> float:
    return NAN if x >= 0xFFFFFFFF or x >= _UNSET_FLOAT else float(x)


def ns_from_seconds_f64(x: float) -> int:
    """t_DateTimeWithMilliseconds (double seconds) -> ns, kept to the microsecond; 0 if unset."""
    if not (0.0 < x < 1e12):
        return 0
    return round(x * (NS_PER_S // NS_PER_US)) * NS_PER_US


def ns_from_seconds_int(x: int) -> int:
    """t_DateTime / t_DateTime4Byte (integer seconds) -> ns; 0 if unset."""
    return x * NS_PER_S if 0 < x < 0xFFFFFFFF else 0


def ns_from_millis(x: int) -> int:
    return x * NS_PER_MS if x > 0 else 0


def ns_from_micros(x: int) -> int:
    return x * NS_PER_US if x > 0 else 0


def ns_from_seconds_or_micros(x: int) -> int:
    """803.StartDateTime is µs or seconds by the sender's choice: tell them apart by magnitude."""
    if x <= 0:
        return 0
    return x * NS_PER_S if x < 100_000_000_000 else x * NS_PER_US


@functools.lru_cache(maxsize=64)
def yyyymmdd(seconds: int) -> int:
    """t_DateTime (integer seconds, UTC) -> its UTC date as yyyymmdd; 0 if unset."""
    if not 0 < seconds < 0xFFFFFFFF:
        return 0
    return int(utc_day(int(seconds) * NS_PER_S).replace("-", ""))


class DtcEventMapper:
    """Converts the messages of one DTC connection into mia events (see module doc)."""

    def __init__(self, source: str, symbols: dict[int, str]) -> None:
        self.source = source
        self.symbols = symbols  # DTC SymbolID (== mia instrument id) -> symbol, owned by caller
        self.instruments: dict[int, Instrument] = {}
        self._bbo: dict[int, list[float]] = {}
        self._last_trade_ts: dict[int, int] = {}
        self._last_quote_ts: dict[int, int] = {}
        self._last_depth_ts: dict[int, int] = {}
        self._in_snapshot: dict[int, bool] = {}
        self._dispatch: dict[int, Callable[[object, int, list], None]] = {
            p.MARKET_DATA_UPDATE_TRADE: self._trade,
            p.MARKET_DATA_UPDATE_TRADE_COMPACT: self._trade_compact,
            p.MARKET_DATA_UPDATE_TRADE_WITH_UNBUNDLED_INDICATOR: self._trade,
            p.MARKET_DATA_UPDATE_TRADE_WITH_UNBUNDLED_INDICATOR_2: self._trade_us,
            p.MARKET_DATA_UPDATE_TRADE_NO_TIMESTAMP: self._trade_no_ts,
            p.MARKET_DATA_UPDATE_BID_ASK: self._bid_ask_4byte,
            p.MARKET_DATA_UPDATE_BID_ASK_COMPACT: self._bid_ask_4byte,
            p.MARKET_DATA_UPDATE_BID_ASK_FLOAT_WITH_MICROSECONDS: self._bid_ask_us,
            p.MARKET_DATA_UPDATE_BID_ASK_NO_TIMESTAMP: self._bid_ask_no_ts,
            p.MARKET_DATA_SNAPSHOT: self._snapshot,
            p.MARKET_DEPTH_SNAPSHOT_LEVEL: self._depth_snapshot,
            p.MARKET_DEPTH_SNAPSHOT_LEVEL_FLOAT: self._depth_snapshot_float,
            p.MARKET_DEPTH_UPDATE_LEVEL: self._depth_update,
            p.MARKET_DEPTH_UPDATE_LEVEL_FLOAT_WITH_MILLISECONDS: self._depth_update_ms,
            p.MARKET_DEPTH_UPDATE_LEVEL_NO_TIMESTAMP: self._depth_update_no_ts,
            p.MARKET_DATA_UPDATE_SESSION_OPEN: self._session_price,
            p.MARKET_DATA_UPDATE_SESSION_HIGH: self._session_price,
            p.MARKET_DATA_UPDATE_SESSION_LOW: self._session_price,
            p.MARKET_DATA_UPDATE_SESSION_SETTLEMENT: self._session_price,
            p.MARKET_DATA_UPDATE_SESSION_VOLUME: self._session_volume,
            p.MARKET_DATA_UPDATE_OPEN_INTEREST: self._session_open_interest,
            p.MARKET_DATA_UPDATE_SESSION_NUM_TRADES: self._session_num_trades,
            p.MARKET_DATA_UPDATE_TRADING_SESSION_DATE: self._session_date,
            p.MARKET_DATA_UPDATE_LAST_TRADE_SNAPSHOT: self._last_trade_snapshot,
            p.MARKET_DATA_FEED_STATUS: self._feed_status,
            p.MARKET_DATA_FEED_SYMBOL_STATUS: self._feed_symbol_status,
            p.MARKET_DATA_REJECT: self._reject,
            p.MARKET_DEPTH_REJECT: self._reject,
            p.SECURITY_DEFINITION_RESPONSE: self._security_definition,
        }

    # --- entry points --------------------------------------------------------------------

    def on_message(self, msg: p.DtcMessage | p.RawMessage, ts_recv: int, out: list[Event]) -> None:
        self.on_typed_message(p.message_type(msg), msg, ts_recv, out)

    def on_typed_message(self, msg_type: int, msg: p.DtcMessage | p.RawMessage, ts_recv: int,
                         out: list[Event]) -> None:
        """`on_message` for a caller that already knows the message's DTC type."""
        handler = self._dispatch.get(msg_type)
        if handler is None:
            out.append(self.raw(msg, ts_recv))
        else:
            handler(msg, ts_recv, out)

    def raw(self, msg: p.DtcMessage | p.RawMessage, ts_recv: int) -> DtcRaw:
        if isinstance(msg, p.RawMessage):
            return DtcRaw(ts_recv, ts_recv, self.source, msg.msg_type, bytes(msg.data), msg.encoding)
        try:
            return DtcRaw(ts_recv, ts_recv, self.source, msg.TYPE, p.encode_binary(msg),
                          p.BINARY_ENCODING)
        except LocalProtocolError:  # a JSON value outside its binary field's range: keep JSON
            return DtcRaw(ts_recv, ts_recv, self.source, msg.TYPE, p.encode_json(msg)[:-1],
                          p.JSON_ENCODING)

    def reset_book_state(self) -> None:
        """Forget open snapshot batches and the BBO: the link was lost, a new snapshot comes."""
        self._in_snapshot.clear()
        self._bbo.clear()

    def declare(self, iid: int, ts_event: int, ts_recv: int, out: list[Event]) -> bool:
        """Emit the Instrument once before its first market event; False for unknown ids."""
        if iid in self.instruments:
            return True
        symbol = self.symbols.get(iid)
        if symbol is None:
            return False
        inst = Instrument(ts_event, ts_recv, iid, symbol, self.source)
        self.instruments[iid] = inst
        out.append(inst)
        return True

    # --- level 1 -------------------------------------------------------------------------

    def _emit_trade(self, msg, iid, ts, ts_recv, price, volume, side_code, out) -> None:
        if not self.declare(iid, ts, ts_recv, out):
            out.append(self.raw(msg, ts_recv))
            return
        self._last_trade_ts[iid] = ts
        out.append(Trade(ts, ts_recv, iid, price_or_nan(price), count_or_nan(volume),
                         _SIDE_OF_AGGRESSOR.get(side_code, 0)))

    def _trade(self, msg, ts_recv, out) -> None:  # 107 and 137: double seconds
        ts = ns_from_seconds_f64(msg.date_time) or ts_recv
        self._emit_trade(msg, msg.symbol_id, ts, ts_recv, msg.price, msg.volume, msg.at_bid_or_ask, out)

    def _trade_compact(self, msg, ts_recv, out) -> None:
        ts = ns_from_seconds_int(msg.date_time) or ts_recv
        self._emit_trade(msg, msg.symbol_id, ts, ts_recv, msg.price, msg.volume, msg.at_bid_or_ask, out)

    def _trade_us(self, msg, ts_recv, out) -> None:
        ts = ns_from_micros(msg.date_time) or ts_recv
        self._emit_trade(msg, msg.symbol_id, ts, ts_recv, msg.price, msg.volume, msg.at_bid_or_ask, out)

    def _trade_no_ts(self, msg, ts_recv, out) -> None:
        ts = self._last_trade_ts.get(msg.symbol_id) or ts_recv
        self._emit_trade(msg, msg.symbol_id, ts, ts_recv, msg.price, msg.volume, msg.at_bid_or_ask, out)

    def _emit_quote(self, msg, iid, ts, ts_recv, bid, bid_size, ask, ask_size, out) -> None:
        if not self.declare(iid, ts, ts_recv, out):
            out.append(self.raw(msg, ts_recv))
            return
        self._last_quote_ts[iid] = ts
        bbo = self._bbo.get(iid)
        if bbo is None:
            bbo = self._bbo[iid] = [NAN, NAN, NAN, NAN]
        # one side unset means that side did not change: keep the last full BBO
        if bid < _UNSET_FLOAT:
            bbo[0] = float(bid)
            bbo[1] = count_or_nan(bid_size)
        if ask < _UNSET_FLOAT:
            bbo[2] = float(ask)
            bbo[3] = count_or_nan(ask_size)
        out.append(Quote(ts, ts_recv, iid, bbo[0], bbo[1], bbo[2], bbo[3]))

    def _bid_ask_4byte(self, msg, ts_recv, out) -> None:  # 108 and 117
        ts = ns_from_seconds_int(msg.date_time) or ts_recv
        self._emit_quote(msg, msg.symbol_id, ts, ts_recv, msg.bid_price, msg.bid_quantity,
                         msg.ask_price, msg.ask_quantity, out)

    def _bid_ask_us(self, msg, ts_recv, out) -> None:
        ts = ns_from_micros(msg.date_time) or ts_recv
        self._emit_quote(msg, msg.symbol_id, ts, ts_recv, msg.bid_price, msg.bid_quantity,
                         msg.ask_price, msg.ask_quantity, out)

    def _bid_ask_no_ts(self, msg, ts_recv, out) -> None:
        ts = self._last_quote_ts.get(msg.symbol_id) or ts_recv
        self._emit_quote(msg, msg.symbol_id, ts, ts_recv, msg.bid_price, msg.bid_quantity,
                         msg.ask_price, msg.ask_quantity, out)

    def _snapshot(self, msg, ts_recv, out) -> None:
        iid = msg.symbol_id
        if not self.declare(iid, ts_recv, ts_recv, out):
            out.append(self.raw(msg, ts_recv))
            return
        out.append(SessionStat(
            ts_recv, ts_recv, iid,
            open=price_or_nan(msg.session_open_price), high=price_or_nan(msg.session_high_price),
            low=price_or_nan(msg.session_low_price),
            settlement=price_or_nan(msg.session_settlement_price),
            volume=count_or_nan(msg.session_volume), open_interest=count_or_nan(msg.open_interest),
            num_trades=count_or_nan(msg.session_num_trades),
            trading_date=yyyymmdd(msg.trading_session_date),
            last=price_or_nan(msg.last_trade_price)))
        if msg.bid_price < _UNSET_FLOAT or msg.ask_price < _UNSET_FLOAT:
            ts = ns_from_seconds_f64(msg.bid_ask_date_time) or ts_recv
            self._bbo.pop(iid, None)  # a snapshot replaces whatever BBO we had
            self._emit_quote(msg, iid, ts, ts_recv, msg.bid_price, msg.bid_quantity,
                             msg.ask_price, msg.ask_quantity, out)

    # --- session statistics --------------------------------------------------------------

    def _stat(self, msg, ts_recv, out, **fields) -> None:
        if not self.declare(msg.symbol_id, ts_recv, ts_recv, out):
            out.append(self.raw(msg, ts_recv))
            return
        out.append(SessionStat(ts_recv, ts_recv, msg.symbol_id, **fields))

    def _session_price(self, msg, ts_recv, out) -> None:
        field = {p.MARKET_DATA_UPDATE_SESSION_OPEN: "open", p.MARKET_DATA_UPDATE_SESSION_HIGH: "high",
                 p.MARKET_DATA_UPDATE_SESSION_LOW: "low",
                 p.MARKET_DATA_UPDATE_SESSION_SETTLEMENT: "settlement"}[msg.TYPE]
        day = msg.date_time if msg.TYPE == p.MARKET_DATA_UPDATE_SESSION_SETTLEMENT else msg.trading_session_date
        self._stat(msg, ts_recv, out, **{field: price_or_nan(msg.price)}, trading_date=yyyymmdd(day))

    def _session_volume(self, msg, ts_recv, out) -> None:
        self._stat(msg, ts_recv, out, volume=count_or_nan(msg.volume),
                   trading_date=yyyymmdd(msg.trading_session_date))

    def _session_open_interest(self, msg, ts_recv, out) -> None:
        self._stat(msg, ts_recv, out, open_interest=count_or_nan(msg.open_interest),
                   trading_date=yyyymmdd(msg.trading_session_date))

    def _session_num_trades(self, msg, ts_recv, out) -> None:
        self._stat(msg, ts_recv, out, num_trades=count_or_nan(msg.num_trades),
                   trading_date=yyyymmdd(msg.trading_session_date))

    def _session_date(self, msg, ts_recv, out) -> None:
        self._stat(msg, ts_recv, out, trading_date=yyyymmdd(msg.date))

    def _last_trade_snapshot(self, msg, ts_recv, out) -> None:
        self._stat(msg, ts_recv, out, last=price_or_nan(msg.last_trade_price))

    # --- depth ---------------------------------------------------------------------------

    def _book_row(self, msg, iid, ts, ts_recv, side_code, price, qty, orders, level, action,
                  flags, out) -> None:
        if not self.declare(iid, ts, ts_recv, out):
            out.append(self.raw(msg, ts_recv))
            return
        side = _BOOK_SIDE.get(side_code)
        if side is None:
            if action == BOOK_SNAPSHOT and price == 0 and qty == 0:
                # an all-default snapshot row is an empty book
                out.append(BookLevel(ts, ts_recv, iid, 0, NAN, 0.0, BOOK_CLEAR, -1, 0, flags))
            else:
                out.append(self.raw(msg, ts_recv))
            return
        out.append(BookLevel(ts, ts_recv, iid, side, price_or_nan(price), count_or_nan(qty), action,
                             level - 1 if level > 0 else -1, orders if orders < 0xFFFFFFFF else 0,
                             flags))

    def _snapshot_flags(self, iid: int, is_first: bool, is_last: bool) -> int:
        flags = 0
        if is_first or not self._in_snapshot.get(iid):
            flags |= BATCH_BEGIN
        if is_last:
            flags |= BATCH_END
        self._in_snapshot[iid] = not is_last
        return flags

    def _depth_snapshot(self, msg, ts_recv, out) -> None:
        iid = msg.symbol_id
        ts = ns_from_seconds_f64(msg.date_time) or self._last_depth_ts.get(iid) or ts_recv
        self._last_depth_ts[iid] = ts
        flags = self._snapshot_flags(iid, bool(msg.is_first_message_in_batch),
                                     bool(msg.is_last_message_in_batch))
        self._book_row(msg, iid, ts, ts_recv, msg.side, msg.price, msg.quantity, msg.num_orders,
                       msg.level, BOOK_SNAPSHOT, flags, out)

    def _depth_snapshot_float(self, msg, ts_recv, out) -> None:
        iid = msg.symbol_id
        ts = self._last_depth_ts.get(iid) or ts_recv
        fin = msg.final_update_in_batch
        flags = self._snapshot_flags(iid, fin == p.FINAL_UPDATE_BEGIN_BATCH, fin == p.FINAL_UPDATE_TRUE)
        self._book_row(msg, iid, ts, ts_recv, msg.side, msg.price, msg.quantity, msg.num_orders,
                       msg.level, BOOK_SNAPSHOT, flags, out)

    def _depth_update_common(self, msg, ts, ts_recv, level, out) -> None:
        iid = msg.symbol_id
        self._last_depth_ts[iid] = ts
        action = BOOK_DELETE if msg.update_type == p.DEPTH_DELETE else BOOK_UPSERT
        self._book_row(msg, iid, ts, ts_recv, msg.side, msg.price,
                       0.0 if action == BOOK_DELETE else msg.quantity, msg.num_orders, level,
                       action, _UPDATE_FLAGS.get(msg.final_update_in_batch, BATCH_END), out)

    def _depth_update(self, msg, ts_recv, out) -> None:
        ts = ns_from_seconds_f64(msg.date_time) or ts_recv
        self._depth_update_common(msg, ts, ts_recv, msg.level, out)

    def _depth_update_ms(self, msg, ts_recv, out) -> None:
        ts = ns_from_millis(msg.date_time) or ts_recv
        self._depth_update_common(msg, ts, ts_recv, 0, out)

    def _depth_update_no_ts(self, msg, ts_recv, out) -> None:
        ts = self._last_depth_ts.get(msg.symbol_id) or ts_recv
        self._depth_update_common(msg, ts, ts_recv, 0, out)

    # --- status and reference data -------------------------------------------------------

    def _feed_status(self, msg, ts_recv, out) -> None:
        status = FEED_UNAVAILABLE if msg.status == p.FEED_STATUS_UNAVAILABLE else FEED_AVAILABLE
        out.append(FeedStatus(ts_recv, ts_recv, self.source, status))

    def _feed_symbol_status(self, msg, ts_recv, out) -> None:
        status = FEED_UNAVAILABLE if msg.status == p.FEED_STATUS_UNAVAILABLE else FEED_AVAILABLE
        out.append(FeedStatus(ts_recv, ts_recv, self.source, status, msg.symbol_id,
                              self.symbols.get(msg.symbol_id, "")))

    def _reject(self, msg, ts_recv, out) -> None:
        what = "market data" if msg.TYPE == p.MARKET_DATA_REJECT else "market depth"
        symbol = self.symbols.get(msg.symbol_id, f"id {msg.symbol_id}")
        out.append(FeedStatus(ts_recv, ts_recv, self.source, FEED_SUBSCRIPTION_REJECTED,
                              msg.symbol_id, f"{what} {symbol}: {msg.reject_text}"))

    def _security_definition(self, msg, ts_recv, out) -> None:
        iid = msg.request_id
        symbol = self.symbols.get(iid)
        if symbol is None or not msg.symbol:
            out.append(self.raw(msg, ts_recv))
            return
        # float32 on the wire: 0.05 arrives as 0.0500000007; keep the 7 digits a float32 holds
        tick = float(f"{msg.min_price_increment:.7g}") if msg.min_price_increment > 0 else NAN
        tick_value = float(f"{msg.currency_value_per_increment:.7g}")
        point_value = round(tick_value / tick, 9) if tick == tick and tick_value > 0 else NAN
        inst = Instrument(
            ts_recv, ts_recv, iid, symbol, self.source, exchange=msg.exchange,
            tick_size=tick, point_value=point_value,
            kind=_KIND_OF_SECURITY.get(msg.security_type, "other"),
            description=msg.description, currency=msg.currency or "USD")
        prev = self.instruments.get(iid)
        if prev is None or msgspec.structs.replace(prev, ts_event=ts_recv, ts_recv=ts_recv) != inst:
            self.instruments[iid] = inst
            out.append(inst)
