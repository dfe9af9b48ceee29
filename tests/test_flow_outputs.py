"""Option flow in the outputs: `replay --json` "flow" (strict JSON, `--check` ok on a day with
streams), `mia export --kind option_trades|flow|unusual` readable by pandas/pyarrow, the report's
flow figures, and `mia tail --flow`."""

from __future__ import annotations

import json
import math
import random
import threading
import time

import numpy as np
import pytest
from helpers import cli_run, write_events

from mia.config import AnalyticsConfig
from mia.engine.columns import ColumnBatch
from mia.engine.events import (
    DERIVED_KINDS,
    GammaLevels,
    IndexValue,
    OptionFlow,
    OptionQuote,
    OptionTrade,
    PolygonResponse,
    RecordingEnded,
    UnusualTrade,
)
from mia.fold import Fold

NS = 1_000_000_000
T0 = 1795183200 * NS  # 2026-11-20 14:00:00 UTC (a Friday)
DATE = "2026-11-20"
EXPIRY = "2026-11-27"
EXPIRY_NS = 1795813200 * NS  # 2026-11-27 16:00 ET


def ticker(strike: float, right: int) -> str:
    return f"O:SPXW261127{'C' if right > 0 else 'P'}{int(strike * 1000):08d}"


STRIKES = [5900.0 + 10 * k for k in range(21)]


def chain_pages(t: int, snapshot_id: int, seed: int) -> list[PolygonResponse]:
    rng = random.Random(seed)
    rows = []
    for k in STRIKES:
        for right in (1, -1):
            m = math.log(k / 6000.0)
            rows.append({"details": {"ticker": ticker(k, right), "contract_type": "call" if right > 0 else "put",
                                     "exercise_style": "european", "expiration_date": EXPIRY,
                                     "strike_price": k, "shares_per_contract": 100},
                         "open_interest": rng.randint(100, 5000), "implied_volatility": 0.16 - 0.3 * m + m * m,
                         "day": {"volume": float(rng.randint(0, 900))},
                         "underlying_asset": {"ticker": "I:SPX", "value": 6000.0}})
    half = len(rows) // 2
    out = []
    for i, part in enumerate((rows[:half], rows[half:])):
        body = {"status": "OK", "request_id": f"r{snapshot_id}{i}", "results": part}
        if i == 0:
            body["next_url"] = "https://api.polygon.io/v3/snapshot/options/I:SPX?cursor=x"
        out.append(PolygonResponse(t + i, t + i, "SPX", "/v3/snapshot/options/I:SPX", "limit=250", 200,
                                   body["request_id"], 1, json.dumps(body).encode(), snapshot_id, i, i == 1))
    return out


def stream_events() -> list:
    rng = random.Random(7)
    out = []
    t = T0
    books = {}
    snap = 0
    for n in range(900):
        t += rng.choice([50, 300, 900]) * 10**6
        if n in (300, 700):
            snap += 1
            out.extend(chain_pages(t, snap, snap))
            t += 10**6
            continue
        k, right = rng.choice(STRIKES[8:13]), rng.choice((1, -1))
        c = dict(ticker=ticker(k, right), underlying="SPX", right=right, strike=k, expiry_ns=EXPIRY_NS)
        r = rng.random()
        if r < 0.3:
            mid = 20.0 + (6000.0 - k) * 0.5 * right + rng.choice((-0.1, 0.0, 0.1))
            books[c["ticker"]] = (mid - 0.1, mid + 0.1)
            out.append(OptionQuote(t, t + 1000, **c, bid=mid - 0.1, bid_size=10.0, ask=mid + 0.1, ask_size=10.0))
        elif r < 0.95:
            bid, ask = books.get(c["ticker"], (20.0, 20.2))
            price = round(rng.choice((bid, ask, (bid + ask) / 2, ask + 0.05)), 2)
            size = float(rng.choice((1, 2, 5, 10, 50, 1200)))
            out.append(OptionTrade(t, t + 1000, **c, price=price, size=size, exchange=4,
                                   conditions=rng.choice(([], [209], [219])), sequence=n))
        else:
            out.append(IndexValue(t, t + 1000, "I:SPX", 6000.0 + rng.random()))
    out.append(RecordingEnded(t + NS, t + NS, "rec", "stopped"))
    return out


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    """A day with option streams and chains; its derived stream written as the recorder would."""
    root = tmp_path_factory.mktemp("flow-day")
    events = stream_events()
    write_events(root, events)
    fold = Fold(AnalyticsConfig())
    derived = fold.on_batch(ColumnBatch.from_events(events))
    write_events(root, derived, stream="derived", derived_kinds=sorted(DERIVED_KINDS))
    return root, events, derived


def _strict(text: str) -> dict:
    def bad(c):
        raise ValueError(f"not strict JSON: {c}")

    lines = [ln for ln in text.splitlines() if ln.strip()]
    return json.loads(lines[-1], parse_constant=bad)


def test_replay_json_flow_and_check_ok(day):
    root, events, derived = day
    res = cli_run("replay", "--data-dir", root, "--date", DATE, "--json", "--check", "-q")
    assert res.exit_code == 0, res.output
    out = _strict(res.stdout)
    assert out["check"] == "ok"
    flows = [d for d in derived if isinstance(d, OptionFlow)]
    unusual = [d for d in derived if isinstance(d, UnusualTrade)]
    last = [d for d in derived if isinstance(d, GammaLevels)][-1]
    spx = out["flow"]["SPX"]
    assert spx["trades"] == sum(f.trades for f in flows) == sum(isinstance(e, OptionTrade) for e in events)
    assert spx["signed_premium"] == pytest.approx(sum(f.signed_premium for f in flows))
    assert spx["unusual"] == len(unusual) > 0
    assert math.isfinite(last.flow_zero_gamma) and spx["flow_zero_gamma"] == last.flow_zero_gamma
    assert set(spx) == {"trades", "signed_premium", "unusual", "flow_zero_gamma"}
    assert last.gex_flow != last.gex_oi and len(last.gex_strikes) == len(STRIKES)


def test_replay_json_flow_over_a_window(day):
    root, _, derived = day
    res = cli_run("replay", "--data-dir", root, "--date", DATE, "--from", "14:02", "--json", "-q")
    assert res.exit_code == 0, res.output
    cut = T0 + 120 * NS
    flows = [d for d in derived if isinstance(d, OptionFlow) and d.ts_recv >= cut]
    assert _strict(res.stdout)["flow"]["SPX"]["trades"] == sum(f.trades for f in flows) > 0


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_export_option_trades_flow_and_unusual(day, tmp_path, fmt):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    root, events, derived = day
    want = {"option_trades": [e for e in events if isinstance(e, OptionTrade)],
            "flow": [d for d in derived if isinstance(d, OptionFlow)],
            "unusual": [d for d in derived if isinstance(d, UnusualTrade)]}
    for kind, rows in want.items():
        path = tmp_path / f"{kind}.{fmt}"
        res = cli_run("export", "--data-dir", root, "--date", DATE, "--kind", kind, "-o", path, "--json")
        assert res.exit_code == 0, res.output
        df = pd.read_parquet(path) if fmt == "parquet" else pd.read_csv(path)
        assert len(df) == len(rows) > 0, kind
        if kind == "option_trades":
            assert list(df["ticker"]) == [e.ticker for e in rows]
            assert np.allclose(df["price"], [e.price for e in rows])
        if kind == "flow":
            assert np.allclose(df["signed_premium"], [e.signed_premium for e in rows])
            strikes = df["strikes"].iloc[0]
            strikes = json.loads(strikes) if fmt == "csv" else list(strikes)
            assert strikes == rows[0].strikes
    res = cli_run("export", "--data-dir", root, "--date", DATE, "--kind", "flow", "--symbols", "NDX",
                  "-o", tmp_path / "none.parquet")
    assert res.exit_code == 0, res.output
    assert len(pd.read_parquet(tmp_path / "none.parquet")) == 0


def test_report_draws_the_flow_and_the_flow_adjusted_gex(day, tmp_path):
    pytest.importorskip("matplotlib")
    root, _, derived = day
    out = tmp_path / "r.html"
    res = cli_run("report", "--data-dir", root, "--date", DATE, "-o", out, "--json", "-q")
    assert res.exit_code == 0, res.output
    page = out.read_text()
    figures = json.loads(page.split('id="mia-figures">')[1].split("</script>")[0])
    flows = [d for d in derived if isinstance(d, OptionFlow)]
    last = [d for d in derived if isinstance(d, GammaLevels)][-1]
    f = figures["flow-SPX"]
    assert f["trades"] == sum(b.trades for b in flows) and f["bars"] == len(flows)
    assert f["signed_premium"] == pytest.approx(sum(b.signed_premium for b in flows))
    g = figures["flow-gex-SPX"]
    assert g["flow_zero_gamma"] == last.flow_zero_gamma and g["zero_gamma"] == last.zero_gamma
    assert g["strikes"] == len(STRIKES) and g["flow_total_gex"] == last.flow_total_gex
    for fig_id in ("flow-SPX", "flow-gex-SPX"):
        assert f'<figure id="{fig_id}"' in page


def test_tail_flow_prints_the_flow_lines(day):
    from mia.engine.bus import Publisher

    _, _, derived = day
    flow = next(d for d in derived if isinstance(d, OptionFlow))
    unusual = next(d for d in derived if isinstance(d, UnusualTrade))
    with Publisher("tcp://127.0.0.1:*") as pub:
        result = {}

        def run():
            result["res"] = cli_run("tail", pub.addr, "--flow", "--count", "2", "--timeout", "30")

        th = threading.Thread(target=run, daemon=True)
        th.start()
        seq = 0
        deadline = time.monotonic() + 60
        while th.is_alive() and time.monotonic() < deadline:
            pub.publish("derived", seq, flow)
            pub.publish("derived", seq + 1, unusual)
            seq += 2
            th.join(timeout=0.02)
        th.join(timeout=5)
    res = result["res"]
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert len(lines) == 2
    assert any(f"trades {flow.trades:,}" in ln and "flow" in ln for ln in lines), lines
    assert any("UNUSUAL" in ln and unusual.ticker in ln for ln in lines), lines  # they alternate
