"""mia report: a self-contained HTML page whose figures draw the day's recorded values."""

from __future__ import annotations

import base64
import json
import math
import re
import sys

import numpy as np
import pytest
from helpers import assert_one_line_error, cli_run, recorded_gamma

pytest.importorskip("matplotlib")

from mia.analytics.report import MissingExtraError, vwap_bands  # noqa: E402
from mia.engine.events import GammaLevels  # noqa: E402
from mia.engine.jsonenc import to_json  # noqa: E402
from mia.engine.log import EventLog  # noqa: E402
from mia.replay import open_day, replay_day  # noqa: E402
from mia.replay.outputs import report_day  # noqa: E402


@pytest.fixture(scope="module")
def report(sim_day):
    root, date = sim_day
    return report_day(root, date)


def _num(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _json(figures) -> dict:
    """The figures' values as the page embeds them and `--json` prints them (NaN: null)."""
    return json.loads(to_json(figures))


def test_gamma_figures_draw_the_last_recorded_levels(sim_day, report):
    # Arrange: what the recorder wrote live
    root, date = sim_day
    last = recorded_gamma(root, date)
    assert last, "the demo day has no GammaLevels"
    # Assert: each GEX figure marks exactly those values; the profile marks the same flip
    figures = _json(report.figures)
    for u, g in last.items():
        fig = figures[f"gex-{u}"]
        for name in ("spot", "zero_gamma", "call_wall", "put_wall", "max_pain"):
            assert fig[name] == _num(getattr(g, name)), (u, name)
        assert figures[f"gamma-profile-{u}"]["zero_gamma"] == _num(g.zero_gamma)
        assert fig["ts"] == g.ts_event
        history = [h for _, h in EventLog(root).read(date, kinds=[GammaLevels], streams=["derived"])
                   if h.underlying == u]
        assert figures[f"levels-{u}"]["points"] == len(history)
        assert figures[f"levels-{u}"]["last_dealer_bias"] == _num(g.dealer_bias)


def test_order_flow_figures_match_the_trades_and_replay(sim_day, report):
    root, date = sim_day
    day = open_day(root, date)
    summary = replay_day(root, date).instruments
    trades = day.columns("Trade")
    symbols = day.symbols()
    figures = _json(report.figures)
    traded = [sym for sym, s in summary.items() if s.trades]
    assert {"ESZ6", "NQZ6"} <= set(traded), traded
    for sym in traded:
        s = summary[sym]
        sel = np.array([symbols[i] == sym for i in trades["instrument"]])
        price, size, side = trades["price"][sel], trades["size"][sel], trades["side"][sel]
        fig = figures[f"price-{sym}"]
        assert fig["trades"] == int(sel.sum()) == s.trades
        assert fig["last"] == price[-1] == s.last
        assert fig["cum_delta"] == float(np.sum(size * side))
        assert fig["vwap"] == pytest.approx(s.vwap, rel=1e-12)
        prof = figures[f"profile-{sym}"]
        assert (prof["poc"], prof["va_low"], prof["va_high"]) == (s.poc, s.va_low, s.va_high)
        assert prof["volume"] == s.volume


def test_html_is_self_contained_and_carries_the_values(report):
    page = report.html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "@import" not in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(report.figures)
    for b64 in images:
        assert base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n"
    embedded = re.search(r'<script type="application/json" id="mia-figures">(.*?)</script>', page, re.S)
    figures = _json(report.figures)
    assert json.loads(embedded.group(1)) == figures
    assert any(fig_id.startswith("gex-") for fig_id in figures)
    for fig_id, values in figures.items():
        if fig_id.startswith("gex-"):
            tag = re.search(rf'<figure id="{re.escape(fig_id)}"[^>]*>', page).group(0)
            assert f'data-zero-gamma="{json.dumps(values["zero_gamma"])}"' in tag
            assert f'data-call-wall="{json.dumps(values["call_wall"])}"' in tag


def test_cli_report_writes_the_file(sim_day, tmp_path):
    root, date = sim_day
    out = tmp_path / "r.html"
    res = cli_run("report", "--date", date, "--data-dir", root, "-o", out, "--json")
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    text = out.read_text()
    assert info["path"] == str(out) and info["bytes"] == len(text.encode())
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    last = recorded_gamma(root, date)
    for u, g in last.items():
        assert info["figures"][f"gex-{u}"]["call_wall"] == _num(g.call_wall)
    assert res.stderr == ""  # no progress bar when stderr is not a terminal


def test_report_up_to_a_moment_draws_the_levels_of_that_moment(sim_day):
    # Arrange: stop the replay at the last GammaLevels (exclusive)
    root, date = sim_day
    history = [g for _, g in EventLog(root).read(date, kinds=[GammaLevels], streams=["derived"])]
    cut = history[-1]
    before = [g for g in history if g.ts_recv < cut.ts_recv and g.underlying == cut.underlying]
    # Act
    rep = report_day(root, date, end=cut.ts_recv)
    # Assert: the figure shows the previous levels of that underlying (the shared day has two
    # snapshots of each underlying)
    key = f"gex-{cut.underlying}"
    assert before
    figures = _json(rep.figures)
    assert figures[key]["zero_gamma"] == _num(before[-1].zero_gamma)
    assert figures[key]["ts"] == before[-1].ts_event
    assert figures[f"levels-{cut.underlying}"]["points"] == len(before)


def test_vwap_bands_hand_computed():
    vwap, sd = vwap_bands(np.array([10.0, 12.0, 11.0]), np.array([1.0, 1.0, 2.0]))
    assert vwap.tolist() == [10.0, 11.0, 11.0]
    assert sd[0] == 0.0 and sd[1] == pytest.approx(1.0) and sd[2] == pytest.approx(math.sqrt(0.5))


def test_missing_matplotlib_is_one_clear_line(sim_day, tmp_path, monkeypatch):
    root, date = sim_day
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'mia\[report\]'"):
        report_day(root, date)
    res = cli_run("report", "--date", date, "--data-dir", root, "-o", tmp_path / "x.html")
    assert "mia[report]" in assert_one_line_error(res, 1)
    assert not (tmp_path / "x.html").exists()
