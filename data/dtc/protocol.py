"""Sierra Chart DTC wire format, sans-IO: bytes in, messages out; messages in, bytes out.

Every layout below is transcribed from the official header's offsets (reference/dtc.md §3):
``offset type Name[=default]`` per field, in struct order, with the struct's full size. Gaps
between offsets are padding (zeros on send, ignored on receive); pack(1) messages simply have
no gaps. Each spec generates a frozen msgspec Struct whose Python names are the DTC names in
snake_case and whose JSON names are the DTC names, tagged by ``"Type"`` so JSON decodes in one
call. Values are kept exactly as sent (DBL_MAX stays DBL_MAX): turning them into mia events,
with NaN for unset, is the client's job.

Framing rules (dtc.md §1.2, §8): binary messages decode by ``min(Size, known size)`` with the
missing tail taking the header defaults; unknown types are skipped by Size and kept as
``RawMessage``; ``Size < 4`` or above ``max_message_size`` is a RemoteProtocolError. JSON
messages are NUL-terminated; compact JSON is ``{"Type":N,"F":[...]}``. ENCODING_REQUEST and
ENCODING_RESPONSE are always binary; the codec switches encoding after the response.
After a HISTORICAL_PRICE_DATA_RESPONSE_HEADER with UseZLibCompression=1 every following byte is
a zlib stream that inflates to ordinary framed messages.
"""

from __future__ import annotations

import re
import struct
import zlib
from typing import Final, Union

import msgspec

from mia.engine.errors import LocalProtocolError, RemoteProtocolError

CURRENT_VERSION: Final = 8
DBL_MAX: Final = 1.7976931348623157e308
FLT_MAX: Final = struct.unpack("<f", struct.pack("<I", 0x7F7FFFFF))[0]
UINT_MAX: Final = 0xFFFFFFFF

# EncodingEnum
BINARY_ENCODING: Final = 0
BINARY_WITH_VARIABLE_LENGTH_STRINGS: Final = 1
JSON_ENCODING: Final = 2
JSON_COMPACT_ENCODING: Final = 3
PROTOCOL_BUFFERS: Final = 4
ENCODING_BY_NAME: Final = {"binary": BINARY_ENCODING, "json": JSON_ENCODING,
                           "compact_json": JSON_COMPACT_ENCODING}

# LogonStatusEnum
LOGON_SUCCESS: Final = 1
LOGON_ERROR: Final = 2
LOGON_ERROR_NO_RECONNECT: Final = 3
LOGON_RECONNECT_NEW_ADDRESS: Final = 4

# RequestActionEnum
SUBSCRIBE: Final = 1
UNSUBSCRIBE: Final = 2
SNAPSHOT: Final = 3

# AtBidOrAskEnum (also the depth Side)
BID_ASK_UNSET: Final = 0
AT_BID: Final = 1
AT_ASK: Final = 2

# MarketDepthUpdateTypeEnum
DEPTH_INSERT_UPDATE: Final = 1
DEPTH_DELETE: Final = 2

# FinalUpdateInBatchEnum
FINAL_UPDATE_UNSET: Final = 0
FINAL_UPDATE_TRUE: Final = 1
FINAL_UPDATE_FALSE: Final = 2
FINAL_UPDATE_BEGIN_BATCH: Final = 3

# MarketDataFeedStatusEnum
FEED_STATUS_UNAVAILABLE: Final = 1
FEED_STATUS_AVAILABLE: Final = 2

# SecurityTypeEnum (the ones mia meets)
SECURITY_TYPE_FUTURES: Final = 1
SECURITY_TYPE_INDEX: Final = 4

# Message types
LOGON_REQUEST: Final = 1
LOGON_RESPONSE: Final = 2
HEARTBEAT: Final = 3
LOGOFF: Final = 5
ENCODING_REQUEST: Final = 6
ENCODING_RESPONSE: Final = 7
MARKET_DATA_FEED_STATUS: Final = 100
MARKET_DATA_REQUEST: Final = 101
MARKET_DEPTH_REQUEST: Final = 102
MARKET_DATA_REJECT: Final = 103
MARKET_DATA_SNAPSHOT: Final = 104
MARKET_DEPTH_UPDATE_LEVEL: Final = 106
MARKET_DATA_UPDATE_TRADE: Final = 107
MARKET_DATA_UPDATE_BID_ASK: Final = 108
MARKET_DATA_UPDATE_TRADE_COMPACT: Final = 112
MARKET_DATA_UPDATE_SESSION_VOLUME: Final = 113
MARKET_DATA_UPDATE_SESSION_HIGH: Final = 114
MARKET_DATA_UPDATE_SESSION_LOW: Final = 115
MARKET_DATA_FEED_SYMBOL_STATUS: Final = 116
MARKET_DATA_UPDATE_BID_ASK_COMPACT: Final = 117
MARKET_DATA_UPDATE_SESSION_SETTLEMENT: Final = 119
MARKET_DATA_UPDATE_SESSION_OPEN: Final = 120
MARKET_DEPTH_REJECT: Final = 121
MARKET_DEPTH_SNAPSHOT_LEVEL: Final = 122
MARKET_DATA_UPDATE_OPEN_INTEREST: Final = 124
MARKET_DATA_UPDATE_LAST_TRADE_SNAPSHOT: Final = 134
MARKET_DATA_UPDATE_SESSION_NUM_TRADES: Final = 135
MARKET_DATA_UPDATE_TRADING_SESSION_DATE: Final = 136
MARKET_DATA_UPDATE_TRADE_WITH_UNBUNDLED_INDICATOR: Final = 137
TRADING_SYMBOL_STATUS: Final = 138
MARKET_DEPTH_UPDATE_LEVEL_FLOAT_WITH_MILLISECONDS: Final = 140
MARKET_DEPTH_UPDATE_LEVEL_NO_TIMESTAMP: Final = 141
MARKET_DATA_UPDATE_TRADE_NO_TIMESTAMP: Final = 142
MARKET_DATA_UPDATE_BID_ASK_NO_TIMESTAMP: Final = 143
MARKET_DATA_UPDATE_BID_ASK_FLOAT_WITH_MICROSECONDS: Final = 144
MARKET_DEPTH_SNAPSHOT_LEVEL_FLOAT: Final = 145
MARKET_DATA_UPDATE_TRADE_WITH_UNBUNDLED_INDICATOR_2: Final = 146
SECURITY_DEFINITION_FOR_SYMBOL_REQUEST: Final = 506
SECURITY_DEFINITION_RESPONSE: Final = 507
SECURITY_DEFINITION_REJECT: Final = 509
HISTORICAL_PRICE_DATA_REQUEST: Final = 800
HISTORICAL_PRICE_DATA_RESPONSE_HEADER: Final = 801
HISTORICAL_PRICE_DATA_REJECT: Final = 802
HISTORICAL_PRICE_DATA_RECORD_RESPONSE: Final = 803
HISTORICAL_PRICE_DATA_TICK_RECORD_RESPONSE: Final = 804
HISTORICAL_PRICE_DATA_RESPONSE_TRAILER: Final = 807

# Binary Size is a u16, so 65535 is the protocol's own ceiling; the largest message mia knows is
# 432 bytes, so anything past this limit is garbage and must not become an allocation.
DEFAULT_MAX_MESSAGE_SIZE: Final = 8192
DEFAULT_MAX_JSON_SIZE: Final = 65536

# Messages that have a compact JSON form (dtc.md §1.4); others stay plain JSON in compact mode.
COMPACT_JSON_TYPES: Final = frozenset({
    HEARTBEAT, MARKET_DATA_SNAPSHOT, MARKET_DATA_UPDATE_TRADE, MARKET_DATA_UPDATE_TRADE_COMPACT,
    MARKET_DATA_UPDATE_LAST_TRADE_SNAPSHOT, MARKET_DATA_UPDATE_BID_ASK,
    MARKET_DATA_UPDATE_BID_ASK_COMPACT, MARKET_DATA_UPDATE_SESSION_OPEN,
    MARKET_DATA_UPDATE_SESSION_HIGH, MARKET_DATA_UPDATE_SESSION_LOW,
    MARKET_DATA_UPDATE_SESSION_VOLUME, MARKET_DATA_UPDATE_SESSION_SETTLEMENT,
    MARKET_DATA_UPDATE_OPEN_INTEREST, MARKET_DEPTH_SNAPSHOT_LEVEL, MARKET_DEPTH_UPDATE_LEVEL,
    HISTORICAL_PRICE_DATA_RECORD_RESPONSE, HISTORICAL_PRICE_DATA_TICK_RECORD_RESPONSE,
})


class DtcMessage(msgspec.Struct, frozen=True, tag_field="Type"):
    """Base of every known DTC message; ``TYPE`` is its DTC type number."""

    TYPE = 0
    SIZE = 0


class RawMessage(msgspec.Struct, frozen=True, gc=False):
    """A message of a type this codec does not know, kept whole (binary bytes or JSON text)."""

    msg_type: int
    data: bytes
    encoding: int = BINARY_ENCODING


AnyMessage = Union[DtcMessage, RawMessage]

# --- layouts ---------------------------------------------------------------------------------
# (type, class name, struct size, "offset type Name[=default]; ...") from dtc.md §3.

_SPECS: Final = [
    # 3.1 session
    (6, "EncodingRequest", 16, "4 i32 ProtocolVersion=8; 8 i32 Encoding; 12 char[4] ProtocolType=DTC"),
    (7, "EncodingResponse", 16, "4 i32 ProtocolVersion=8; 8 i32 Encoding; 12 char[4] ProtocolType=DTC"),
    (1, "LogonRequest", 284,
     "4 i32 ProtocolVersion=8; 8 char[32] Username; 40 char[32] Password; 72 char[64] GeneralTextData;"
     " 136 i32 Integer_1; 140 i32 Integer_2; 144 i32 HeartbeatIntervalInSeconds; 148 i32 Unused1;"
     " 152 char[32] TradeAccount; 184 char[64] HardwareIdentifier; 248 char[32] ClientName;"
     " 280 i32 MarketDataTransmissionInterval"),
    (2, "LogonResponse", 256,
     "4 i32 ProtocolVersion=8; 8 i32 Result; 12 char[96] ResultText; 108 char[64] ReconnectAddress;"
     " 172 i32 Integer_1; 176 char[60] ServerName; 236 u8 MarketDepthUpdatesBestBidAndAsk;"
     " 237 u8 TradingIsSupported; 238 u8 OCOOrdersSupported; 239 u8 OrderCancelReplaceSupported=1;"
     " 240 char[4] SymbolExchangeDelimiter; 244 u8 SecurityDefinitionsSupported;"
     " 245 u8 HistoricalPriceDataSupported; 246 u8 ResubscribeWhenMarketDataFeedAvailable;"
     " 247 u8 MarketDepthIsSupported=1; 248 u8 OneHistoricalPriceDataRequestPerConnection;"
     " 249 u8 BracketOrdersSupported; 250 u8 Unused_1;"
     " 251 u8 UsesMultiplePositionsPerSymbolAndTradeAccount; 252 u8 MarketDataSupported=1"),
    (3, "Heartbeat", 16, "4 u32 NumDroppedMessages; 8 i64 CurrentDateTime"),
    (5, "Logoff", 102, "4 char[96] Reason; 100 u8 DoNotReconnect"),
    # 3.2 level 1
    (101, "MarketDataRequest", 96,
     "4 i32 RequestAction=1; 8 u32 SymbolID; 12 char[64] Symbol; 76 char[16] Exchange;"
     " 92 u32 IntervalForSnapshotUpdatesInMilliseconds"),
    (103, "MarketDataReject", 104, "4 u32 SymbolID; 8 char[96] RejectText"),
    (104, "MarketDataSnapshot", 144,
     "4 u32 SymbolID; 8 f64 SessionSettlementPrice=DBL_MAX; 16 f64 SessionOpenPrice=DBL_MAX;"
     " 24 f64 SessionHighPrice=DBL_MAX; 32 f64 SessionLowPrice=DBL_MAX; 40 f64 SessionVolume=DBL_MAX;"
     " 48 u32 SessionNumTrades=UINT_MAX; 52 u32 OpenInterest=UINT_MAX; 56 f64 BidPrice=DBL_MAX;"
     " 64 f64 AskPrice=DBL_MAX; 72 f64 AskQuantity=DBL_MAX; 80 f64 BidQuantity=DBL_MAX;"
     " 88 f64 LastTradePrice=DBL_MAX; 96 f64 LastTradeVolume=DBL_MAX; 104 f64 LastTradeDateTime;"
     " 112 f64 BidAskDateTime; 120 u32 SessionSettlementDateTime; 124 u32 TradingSessionDate;"
     " 128 i8 TradingStatus; 136 f64 MarketDepthUpdateDateTime"),
    (107, "MarketDataUpdateTrade", 40,
     "4 u32 SymbolID; 8 u16 AtBidOrAsk; 16 f64 Price; 24 f64 Volume; 32 f64 DateTime"),
    (112, "MarketDataUpdateTradeCompact", 24,
     "4 f32 Price; 8 f32 Volume; 12 u32 DateTime; 16 u32 SymbolID; 20 u16 AtBidOrAsk"),
    (137, "MarketDataUpdateTradeWithUnbundledIndicator", 40,
     "4 u32 SymbolID; 8 u8 AtBidOrAsk; 9 i8 UnbundledTradeIndicator; 10 u8 TradeCondition;"
     " 11 u8 Reserve_1; 12 u32 Reserve_2; 16 f64 Price; 24 u32 Volume; 28 u32 Reserve_3;"
     " 32 f64 DateTime"),
    (146, "MarketDataUpdateTradeWithUnbundledIndicator2", 27,
     "4 u32 SymbolID; 8 f32 Price; 12 u32 Volume; 16 i64 DateTime; 24 u8 AtBidOrAsk;"
     " 25 i8 UnbundledTradeIndicator; 26 i8 TradeCondition"),
    (142, "MarketDataUpdateTradeNoTimestamp", 19,
     "4 u32 SymbolID; 8 f32 Price; 12 u32 Volume; 16 u8 AtBidOrAsk; 17 i8 UnbundledTradeIndicator;"
     " 18 i8 TradeCondition"),
    (134, "MarketDataUpdateLastTradeSnapshot", 32,
     "4 u32 SymbolID; 8 f64 LastTradePrice; 16 f64 LastTradeVolume; 24 f64 LastTradeDateTime"),
    (108, "MarketDataUpdateBidAsk", 40,
     "4 u32 SymbolID; 8 f64 BidPrice=DBL_MAX; 16 f32 BidQuantity; 24 f64 AskPrice=DBL_MAX;"
     " 32 f32 AskQuantity; 36 u32 DateTime"),
    (117, "MarketDataUpdateBidAskCompact", 28,
     "4 f32 BidPrice=FLT_MAX; 8 f32 BidQuantity; 12 f32 AskPrice=FLT_MAX; 16 f32 AskQuantity;"
     " 20 u32 DateTime; 24 u32 SymbolID"),
    (144, "MarketDataUpdateBidAskFloatWithMicroseconds", 32,
     "4 u32 SymbolID; 8 f32 BidPrice=FLT_MAX; 12 f32 BidQuantity; 16 f32 AskPrice=FLT_MAX;"
     " 20 f32 AskQuantity; 24 i64 DateTime"),
    (143, "MarketDataUpdateBidAskNoTimeStamp", 24,
     "4 u32 SymbolID; 8 f32 BidPrice=FLT_MAX; 12 u32 BidQuantity; 16 f32 AskPrice=FLT_MAX;"
     " 20 u32 AskQuantity"),
    (120, "MarketDataUpdateSessionOpen", 24, "4 u32 SymbolID; 8 f64 Price; 16 u32 TradingSessionDate"),
    (114, "MarketDataUpdateSessionHigh", 24, "4 u32 SymbolID; 8 f64 Price; 16 u32 TradingSessionDate"),
    (115, "MarketDataUpdateSessionLow", 24, "4 u32 SymbolID; 8 f64 Price; 16 u32 TradingSessionDate"),
    (113, "MarketDataUpdateSessionVolume", 24,
     "4 u32 SymbolID; 8 f64 Volume; 16 u32 TradingSessionDate; 20 u8 IsFinalSessionVolume"),
    (119, "MarketDataUpdateSessionSettlement", 24, "4 u32 SymbolID; 8 f64 Price; 16 u32 DateTime"),
    (124, "MarketDataUpdateOpenInterest", 16,
     "4 u32 SymbolID; 8 u32 OpenInterest; 12 u32 TradingSessionDate"),
    (135, "MarketDataUpdateSessionNumTrades", 16,
     "4 u32 SymbolID; 8 i32 NumTrades; 12 u32 TradingSessionDate"),
    (136, "MarketDataUpdateTradingSessionDate", 12, "4 u32 SymbolID; 8 u32 Date"),
    (100, "MarketDataFeedStatus", 8, "4 i32 Status"),
    (116, "MarketDataFeedSymbolStatus", 12, "4 u32 SymbolID; 8 i32 Status"),
    (138, "TradingSymbolStatus", 12, "4 u32 SymbolID; 8 i8 Status"),
    # 3.3 depth
    (102, "MarketDepthRequest", 96,
     "4 i32 RequestAction=1; 8 u32 SymbolID; 12 char[64] Symbol; 76 char[16] Exchange;"
     " 92 i32 NumLevels"),
    (121, "MarketDepthReject", 104, "4 u32 SymbolID; 8 char[96] RejectText"),
    (122, "MarketDepthSnapshotLevel", 56,
     "4 u32 SymbolID; 8 u16 Side; 16 f64 Price; 24 f64 Quantity; 32 u16 Level;"
     " 34 u8 IsFirstMessageInBatch; 35 u8 IsLastMessageInBatch; 40 f64 DateTime; 48 u32 NumOrders"),
    (145, "MarketDepthSnapshotLevelFloat", 24,
     "4 u32 SymbolID; 8 f32 Price; 12 f32 Quantity; 16 u32 NumOrders; 20 u16 Level; 22 u8 Side;"
     " 23 u8 FinalUpdateInBatch"),
    # 52/54 sit in the old tail padding (dtc.md §3.4): older senders leave 0 = UNSET.
    (106, "MarketDepthUpdateLevel", 56,
     "4 u32 SymbolID; 8 u16 Side; 16 f64 Price; 24 f64 Quantity; 32 u8 UpdateType; 40 f64 DateTime;"
     " 48 u32 NumOrders; 52 u8 FinalUpdateInBatch; 54 u16 Level"),
    (140, "MarketDepthUpdateLevelFloatWithMilliseconds", 29,
     "4 u32 SymbolID; 8 i64 DateTime; 16 f32 Price; 20 f32 Quantity; 24 u8 Side; 25 u8 UpdateType;"
     " 26 u16 NumOrders; 28 u8 FinalUpdateInBatch"),
    (141, "MarketDepthUpdateLevelNoTimestamp", 21,
     "4 u32 SymbolID; 8 f32 Price; 12 f32 Quantity; 16 u16 NumOrders; 18 i8 Side; 19 i8 UpdateType;"
     " 20 u8 FinalUpdateInBatch"),
    # 3.5 security definitions and historical data
    (506, "SecurityDefinitionForSymbolRequest", 88,
     "4 i32 RequestID; 8 char[64] Symbol; 72 char[16] Exchange"),
    (507, "SecurityDefinitionResponse", 432,
     "4 i32 RequestID; 8 char[64] Symbol; 72 char[16] Exchange; 88 i32 SecurityType;"
     " 92 char[64] Description; 156 f32 MinPriceIncrement; 160 i32 PriceDisplayFormat=-1;"
     " 164 f32 CurrencyValuePerIncrement; 168 u8 IsFinalMessage; 172 f32 FloatToIntPriceMultiplier=1;"
     " 176 f32 IntToFloatPriceDivisor=1; 180 char[32] UnderlyingSymbol; 212 u8 UpdatesBidAskOnly;"
     " 216 f32 StrikePrice; 220 u8 PutOrCall; 224 u32 ShortInterest; 228 u32 SecurityExpirationDate;"
     " 232 f32 BuyRolloverInterest; 236 f32 SellRolloverInterest; 240 f32 EarningsPerShare;"
     " 244 u32 SharesOutstanding; 248 f32 IntToFloatQuantityDivisor; 252 u8 HasMarketDepthData=1;"
     " 256 f32 DisplayPriceMultiplier=1; 260 char[64] ExchangeSymbol;"
     " 324 f32 InitialMarginRequirement; 328 f32 MaintenanceMarginRequirement; 332 char[8] Currency;"
     " 340 f32 ContractSize; 344 u32 OpenInterest; 348 u32 RolloverDate; 352 u8 IsDelayed;"
     " 360 i64 SecurityIdentifier; 368 char[64] ProductIdentifier"),
    (509, "SecurityDefinitionReject", 104, "4 i32 RequestID; 8 char[96] RejectText"),
    (800, "HistoricalPriceDataRequest", 120,
     "4 i32 RequestID; 8 char[64] Symbol; 72 char[16] Exchange; 88 i32 RecordInterval;"
     " 96 i64 StartDateTime; 104 i64 EndDateTime; 112 u32 MaxDaysToReturn; 116 u8 UseZLibCompression;"
     " 117 u8 RequestDividendAdjustedStockData; 118 u16 Integer_1"),
    (801, "HistoricalPriceDataResponseHeader", 20,
     "4 i32 RequestID; 8 i32 RecordInterval; 12 u8 UseZLibCompression; 13 u8 NoRecordsToReturn;"
     " 16 f32 IntToFloatPriceDivisor"),
    (802, "HistoricalPriceDataReject", 108,
     "4 i32 RequestID; 8 char[96] RejectText; 104 i16 RejectReasonCode; 106 u16 RetryTimeInSeconds"),
    # 56 is a union OpenInterest|NumTrades; one name for both.
    (803, "HistoricalPriceDataRecordResponse", 88,
     "4 i32 RequestID; 8 i64 StartDateTime; 16 f64 OpenPrice; 24 f64 HighPrice; 32 f64 LowPrice;"
     " 40 f64 LastPrice; 48 f64 Volume; 56 u32 NumTrades; 64 f64 BidVolume; 72 f64 AskVolume;"
     " 80 u8 IsFinalRecord"),
    (804, "HistoricalPriceDataTickRecordResponse", 48,
     "4 i32 RequestID; 8 f64 DateTime; 16 u16 AtBidOrAsk; 24 f64 Price; 32 f64 Volume;"
     " 40 u8 IsFinalRecord"),
    (807, "HistoricalPriceDataResponseTrailer", 16, "4 i32 RequestID; 8 i64 FinalRecordLastDateTime"),
]

_CODES: Final = {"i8": ("b", 1), "u8": ("B", 1), "i16": ("h", 2), "u16": ("H", 2), "i32": ("i", 4),
                 "u32": ("I", 4), "i64": ("q", 8), "f32": ("f", 4), "f64": ("d", 8)}
_NAMED_DEFAULTS: Final = {"DBL_MAX": DBL_MAX, "FLT_MAX": FLT_MAX, "UINT_MAX": UINT_MAX}


def _snake(name: str) -> str:
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower().replace("__", "_")


def _repr_without_password(msg: DtcMessage) -> str:
    # a LogonRequest must never print its credentials, whoever logs it
    shown = ", ".join(f"{k}={'***' if k in ('password', 'username') else repr(v)}"
                      for k, v in msgspec.structs.asdict(msg).items())
    return f"{type(msg).__name__}({shown})"


class _Layout:
    """One message's binary layout: pack/unpack structs, string fields, defaults template."""

    __slots__ = ("cls", "msg_type", "size", "unpack", "pack", "string_idx", "string_len",
                 "template", "wire_names", "py_names")

    def __init__(self, msg_type: int, name: str, size: int, spec: str) -> None:
        fmt = ["<4x"]
        pos = 4
        fields: list[tuple[str, type, object]] = []
        rename: dict[str, str] = {}
        self.string_idx: list[int] = []
        self.string_len: list[int] = []
        self.wire_names: list[str] = []
        for item in spec.split(";"):
            off_s, typ, decl = item.split()
            off = int(off_s)
            wire, _, default_s = decl.partition("=")
            if off < pos:
                raise ValueError(f"DTC layout {name}: {wire} at {off} overlaps the previous field")
            if off > pos:
                fmt.append(f"{off - pos}x")
            if typ.startswith("char["):
                n = int(typ[5:-1])
                fmt.append(f"{n}s")
                pos = off + n
                self.string_idx.append(len(fields))
                self.string_len.append(n)
                fields.append((_snake(wire), str, default_s))
            else:
                code, width = _CODES[typ]
                fmt.append(code)
                pos = off + width
                is_float = code in "fd"
                if default_s in _NAMED_DEFAULTS:
                    default: object = _NAMED_DEFAULTS[default_s]
                else:
                    default = (float(default_s) if is_float else int(default_s)) if default_s else 0
                if is_float:
                    default = float(default)
                fields.append((_snake(wire), float if is_float else int, default))
            rename[_snake(wire)] = wire
            self.wire_names.append(wire)
        if pos > size:
            raise ValueError(f"DTC layout {name}: fields end at {pos}, past size {size}")
        if size > pos:
            fmt.append(f"{size - pos}x")
        self.py_names = [f[0] for f in fields]
        self.unpack = struct.Struct("".join(fmt))
        self.pack = struct.Struct("<HH" + "".join(fmt)[3:])
        assert self.unpack.size == size == self.pack.size, name
        namespace: dict[str, object] = {"TYPE": msg_type, "SIZE": size, "__module__": __name__}
        if "password" in self.py_names:
            namespace["__repr__"] = _repr_without_password
        self.cls = msgspec.defstruct(
            name, fields, bases=(DtcMessage,), tag=msg_type, rename=rename, frozen=True,
            namespace=namespace, gc=False)
        self.msg_type = msg_type
        self.size = size
        self.template = b""
        self.template = self.encode(self.cls())

    def encode(self, msg: DtcMessage) -> bytes:
        values = list(msgspec.structs.astuple(msg))
        for i, n in zip(self.string_idx, self.string_len):
            s = values[i]
            # keep the final NUL: char[N] holds at most N-1 bytes of text
            values[i] = s.encode("utf-8")[: n - 1] if isinstance(s, str) else bytes(s)[: n - 1]
        try:
            return self.pack.pack(self.size, self.msg_type, *values)
        except struct.error as exc:
            raise LocalProtocolError(f"DTC {type(msg).__name__} (type {self.msg_type}): {exc}") from None

    def decode(self, buf: bytes | bytearray | memoryview, off: int, size: int) -> DtcMessage:
        if size < self.size:
            # older, shorter sender: missing tail fields keep the header defaults
            tmp = bytearray(self.template)
            tmp[:size] = buf[off:off + size]
            values = self.unpack.unpack_from(tmp, 0)
        else:
            values = self.unpack.unpack_from(buf, off)
        if self.string_idx:
            values = list(values)
            for i in self.string_idx:
                values[i] = values[i].split(b"\0", 1)[0].decode("utf-8", "replace")
        return self.cls(*values)


LAYOUTS: Final[dict[int, _Layout]] = {}
for _t, _name, _size, _spec in _SPECS:
    LAYOUTS[_t] = _layout = _Layout(_t, _name, _size, _spec)
    globals()[_name] = _layout.cls
MESSAGE_TYPES: Final[dict[int, type]] = {t: lay.cls for t, lay in LAYOUTS.items()}
MESSAGE_BY_NAME: Final[dict[str, type]] = {c.__name__: c for c in MESSAGE_TYPES.values()}

# Names for type checkers and readers; the classes are generated above from _SPECS.
EncodingRequest = MESSAGE_BY_NAME["EncodingRequest"]
EncodingResponse = MESSAGE_BY_NAME["EncodingResponse"]
LogonRequest = MESSAGE_BY_NAME["LogonRequest"]
LogonResponse = MESSAGE_BY_NAME["LogonResponse"]
Heartbeat = MESSAGE_BY_NAME["Heartbeat"]
Logoff = MESSAGE_BY_NAME["Logoff"]
MarketDataRequest = MESSAGE_BY_NAME["MarketDataRequest"]
MarketDataReject = MESSAGE_BY_NAME["MarketDataReject"]
MarketDataSnapshot = MESSAGE_BY_NAME["MarketDataSnapshot"]
MarketDataUpdateTrade = MESSAGE_BY_NAME["MarketDataUpdateTrade"]
MarketDataUpdateTradeCompact = MESSAGE_BY_NAME["MarketDataUpdateTradeCompact"]
MarketDataUpdateTradeWithUnbundledIndicator = MESSAGE_BY_NAME["MarketDataUpdateTradeWithUnbundledIndicator"]
MarketDataUpdateTradeWithUnbundledIndicator2 = MESSAGE_BY_NAME["MarketDataUpdateTradeWithUnbundledIndicator2"]
MarketDataUpdateTradeNoTimestamp = MESSAGE_BY_NAME["MarketDataUpdateTradeNoTimestamp"]
MarketDataUpdateLastTradeSnapshot = MESSAGE_BY_NAME["MarketDataUpdateLastTradeSnapshot"]
MarketDataUpdateBidAsk = MESSAGE_BY_NAME["MarketDataUpdateBidAsk"]
MarketDataUpdateBidAskCompact = MESSAGE_BY_NAME["MarketDataUpdateBidAskCompact"]
MarketDataUpdateBidAskFloatWithMicroseconds = MESSAGE_BY_NAME["MarketDataUpdateBidAskFloatWithMicroseconds"]
MarketDataUpdateBidAskNoTimeStamp = MESSAGE_BY_NAME["MarketDataUpdateBidAskNoTimeStamp"]
MarketDataUpdateSessionOpen = MESSAGE_BY_NAME["MarketDataUpdateSessionOpen"]
MarketDataUpdateSessionHigh = MESSAGE_BY_NAME["MarketDataUpdateSessionHigh"]
MarketDataUpdateSessionLow = MESSAGE_BY_NAME["MarketDataUpdateSessionLow"]
MarketDataUpdateSessionVolume = MESSAGE_BY_NAME["MarketDataUpdateSessionVolume"]
MarketDataUpdateSessionSettlement = MESSAGE_BY_NAME["MarketDataUpdateSessionSettlement"]
MarketDataUpdateOpenInterest = MESSAGE_BY_NAME["MarketDataUpdateOpenInterest"]
MarketDataUpdateSessionNumTrades = MESSAGE_BY_NAME["MarketDataUpdateSessionNumTrades"]
MarketDataUpdateTradingSessionDate = MESSAGE_BY_NAME["MarketDataUpdateTradingSessionDate"]
MarketDataFeedStatus = MESSAGE_BY_NAME["MarketDataFeedStatus"]
MarketDataFeedSymbolStatus = MESSAGE_BY_NAME["MarketDataFeedSymbolStatus"]
TradingSymbolStatus = MESSAGE_BY_NAME["TradingSymbolStatus"]
MarketDepthRequest = MESSAGE_BY_NAME["MarketDepthRequest"]
MarketDepthReject = MESSAGE_BY_NAME["MarketDepthReject"]
MarketDepthSnapshotLevel = MESSAGE_BY_NAME["MarketDepthSnapshotLevel"]
MarketDepthSnapshotLevelFloat = MESSAGE_BY_NAME["MarketDepthSnapshotLevelFloat"]
MarketDepthUpdateLevel = MESSAGE_BY_NAME["MarketDepthUpdateLevel"]
MarketDepthUpdateLevelFloatWithMilliseconds = MESSAGE_BY_NAME["MarketDepthUpdateLevelFloatWithMilliseconds"]
MarketDepthUpdateLevelNoTimestamp = MESSAGE_BY_NAME["MarketDepthUpdateLevelNoTimestamp"]
SecurityDefinitionForSymbolRequest = MESSAGE_BY_NAME["SecurityDefinitionForSymbolRequest"]
SecurityDefinitionResponse = MESSAGE_BY_NAME["SecurityDefinitionResponse"]
SecurityDefinitionReject = MESSAGE_BY_NAME["SecurityDefinitionReject"]
HistoricalPriceDataRequest = MESSAGE_BY_NAME["HistoricalPriceDataRequest"]
HistoricalPriceDataResponseHeader = MESSAGE_BY_NAME["HistoricalPriceDataResponseHeader"]
HistoricalPriceDataReject = MESSAGE_BY_NAME["HistoricalPriceDataReject"]
HistoricalPriceDataRecordResponse = MESSAGE_BY_NAME["HistoricalPriceDataRecordResponse"]
HistoricalPriceDataTickRecordResponse = MESSAGE_BY_NAME["HistoricalPriceDataTickRecordResponse"]
HistoricalPriceDataResponseTrailer = MESSAGE_BY_NAME["HistoricalPriceDataResponseTrailer"]

_KnownUnion = Union[tuple(MESSAGE_TYPES.values())]  # type: ignore[misc]
_JSON_DECODER: Final = msgspec.json.Decoder(_KnownUnion, strict=False)
_JSON_ANY: Final = msgspec.json.Decoder()
_JSON_ENCODER: Final = msgspec.json.Encoder()
_HEADER: Final = struct.Struct("<HH")
_ALWAYS_BINARY: Final = frozenset({ENCODING_REQUEST, ENCODING_RESPONSE})


def encode_binary(msg: DtcMessage | RawMessage) -> bytes:
    """One message in the binary encoding (Size includes the header and the tail padding)."""
    if isinstance(msg, RawMessage):
        return bytes(msg.data)
    return LAYOUTS[msg.TYPE].encode(msg)


def encode_json(msg: DtcMessage | RawMessage, *, compact: bool = False) -> bytes:
    """One message as NUL-terminated JSON; compact form for the types that have one."""
    if isinstance(msg, RawMessage):
        return bytes(msg.data)
    if compact and msg.TYPE in COMPACT_JSON_TYPES:
        body = _JSON_ENCODER.encode({"Type": msg.TYPE, "F": msgspec.structs.astuple(msg)})
    else:
        body = _JSON_ENCODER.encode(msg)
    return body + b"\0"


def _decode_json_text(text: bytes, encoding: int) -> DtcMessage | RawMessage:
    if b'"F"' not in text:
        try:
            return _JSON_DECODER.decode(text)
        except (msgspec.DecodeError, ValueError):
            pass  # unknown type, or a shape the typed path does not take: go the slow way
    try:
        obj = _JSON_ANY.decode(text)
    except (msgspec.DecodeError, ValueError) as exc:
        raise RemoteProtocolError(f"DTC JSON message does not parse: {exc}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("Type"), int) or isinstance(obj.get("Type"), bool):
        raise RemoteProtocolError("DTC JSON message has no integer Type")
    msg_type = obj["Type"]
    layout = LAYOUTS.get(msg_type)
    if layout is None:
        return RawMessage(msg_type, bytes(text), encoding)
    values = obj.get("F")
    if isinstance(values, list):
        obj = dict(zip(layout.wire_names, values))
    else:
        obj = {k: v for k, v in obj.items() if k != "Type"}
    try:
        return msgspec.convert(obj, layout.cls, strict=False)
    except (msgspec.ValidationError, ValueError, TypeError) as exc:
        raise RemoteProtocolError(f"DTC JSON message type {msg_type}: {exc}") from None


class DtcCodec:
    """Framing and encoding state of one DTC connection, with no I/O.

    ``feed(data)`` takes whatever bytes arrived (any split) and returns the complete messages;
    ``encode(msg)`` returns the bytes to send. ``role`` is "client" or "server": a client
    switches encoding when it *receives* ENCODING_RESPONSE, a server when it *sends* one.
    """

    def __init__(self, *, role: str = "client", encoding: int = BINARY_ENCODING,
                 max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
                 max_json_size: int = DEFAULT_MAX_JSON_SIZE) -> None:
        if role not in ("client", "server"):
            raise ValueError(f"DtcCodec role must be 'client' or 'server', not {role!r}")
        self.role = role
        self.encoding = encoding
        self.max_message_size = max_message_size
        self.max_json_size = max_json_size
        self._buf = bytearray()
        self._off = 0
        self._inflater: zlib._Decompress | None = None  # type: ignore[name-defined]
        self.messages_in = 0
        self.bytes_in = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete message."""
        return len(self._buf) - self._off

    def set_encoding(self, encoding: int) -> None:
        if encoding not in (BINARY_ENCODING, JSON_ENCODING, JSON_COMPACT_ENCODING):
            raise LocalProtocolError(f"DTC encoding {encoding} is not supported by this codec")
        self.encoding = encoding

    # --- outgoing ----------------------------------------------------------------------------

    def encode(self, msg: DtcMessage | RawMessage) -> bytes:
        msg_type = msg.msg_type if isinstance(msg, RawMessage) else msg.TYPE
        if msg_type in _ALWAYS_BINARY or self.encoding == BINARY_ENCODING:
            data = encode_binary(msg)
        else:
            data = encode_json(msg, compact=self.encoding == JSON_COMPACT_ENCODING)
        if self.role == "server" and msg_type == ENCODING_RESPONSE:
            self.set_encoding(msg.encoding)  # type: ignore[union-attr]
        return data

    # --- incoming ----------------------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> list[DtcMessage | RawMessage]:
        self.bytes_in += len(data)
        if self._inflater is not None:
            data = self._inflate(data)
        buf = self._buf
        buf += data
        out: list[DtcMessage | RawMessage] = []
        try:
            self._parse(out)
        finally:
            # compact once the consumed prefix dominates, so the buffer never grows without bound
            if self._off and (self._off >= len(buf) or self._off > 65536):
                del buf[: self._off]
                self._off = 0
        self.messages_in += len(out)
        return out

    def _inflate(self, data: bytes | bytearray | memoryview) -> bytes:
        try:
            return self._inflater.decompress(data)  # type: ignore[union-attr]
        except zlib.error as exc:
            raise RemoteProtocolError(f"DTC historical zlib stream is corrupt: {exc}") from None

    def _parse(self, out: list) -> None:
        buf = self._buf
        layouts = LAYOUTS
        header = _HEADER.unpack_from
        while True:
            end = len(buf)
            off = self._off
            encoding = self.encoding
            if encoding == BINARY_ENCODING:
                if end - off < 4:
                    return
                size, msg_type = header(buf, off)
                if size < 4:
                    raise RemoteProtocolError(
                        f"DTC message Size {size} < 4 (type {msg_type}) after message "
                        f"{self.messages_in + len(out)}")
                if size > self.max_message_size:
                    raise RemoteProtocolError(
                        f"DTC message Size {size} above the {self.max_message_size}-byte limit "
                        f"(type {msg_type})")
                if end - off < size:
                    return
                layout = layouts.get(msg_type)
                if layout is None:
                    msg = RawMessage(msg_type, bytes(buf[off:off + size]))
                else:
                    msg = layout.decode(buf, off, size)
                self._off = off + size
            else:
                nul = buf.find(0, off)
                if nul < 0:
                    if end - off > self.max_json_size:
                        raise RemoteProtocolError(
                            f"DTC JSON message longer than {self.max_json_size} bytes without NUL")
                    return
                self._off = nul + 1
                text = bytes(buf[off:nul])
                if not text.strip():
                    continue  # stray NUL between messages
                msg = _decode_json_text(text, encoding)
            out.append(msg)
            msg_type = msg.msg_type if isinstance(msg, RawMessage) else msg.TYPE
            if msg_type == ENCODING_RESPONSE and self.role == "client":
                enc = msg.encoding  # type: ignore[union-attr]
                self.encoding = enc if enc in (BINARY_ENCODING, JSON_ENCODING,
                                               JSON_COMPACT_ENCODING) else BINARY_ENCODING
            elif (msg_type == HISTORICAL_PRICE_DATA_RESPONSE_HEADER
                  and msg.use_z_lib_compression and not msg.no_records_to_return):  # type: ignore[union-attr]
                self._start_inflating()

    def _start_inflating(self) -> None:
        self._inflater = zlib.decompressobj()
        rest = bytes(self._buf[self._off:])
        del self._buf[self._off:]
        if rest:
            self._buf += self._inflate(rest)


def message_type(msg: DtcMessage | RawMessage) -> int:
    return msg.msg_type if isinstance(msg, RawMessage) else msg.TYPE
