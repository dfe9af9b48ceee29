"""mia report: a self-contained HTML page whose figures draw the day's recorded values."""

from __future__ import annotations

import base64
import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("matplotlib")

from mia.analytics.report import MissingExtraError, vwap_bands  # noqa: E402
from mia.cli import cli  # noqa: E402
from mia.engine.events import GammaLevels  # noqa: E402
from mia.engine.log import EventLog  # noqa: E402
from mia.replay import open_day, replay_day  # noqa: E402
from mia.replay.outputs import report_day  # noqa: E402


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    root = tmp_path_factory.mktemp("report-day")
    subprocess.run([sys.executable, "-m", "mia.cli", "record", "--sim", "--duration", "6s", "--no-publish",
                    "--data-dir", str(root), "-q"], check=True, timeout=120, capture_output=True)
    return str(root), EventLog(root).dates()[-1]


@pytest.fixture(scope="module")
def report(recorded):
    root, date = recorded
    return report_day(root, date)


def _num(x):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _last_recorded_levels(root, date) -> dict[str, GammaLevels]:
    out = {}
    for _, g in EventLog(root).read(date, kinds=[GammaLevels], streams=["derived"]):
        out[g.underlying] = g
    return out


def test_gamma_figures_draw_the_last_recorded_levels(recorded, report):
    # Arrange: what the recorder wrote live
    root, date = recorded
    last = _last_recorded_levels(root, date)
    assert last, "the demo day has no GammaLevels"
    # Assert: each GEX figure marks exactly those values; the profile marks the same flip
    for u, g in last.items():
        fig = report.figures[f"gex-{u}"]
        for name in ("spot", "zero_gamma", "call_wall", "put_wall", "max_pain"):
            assert fig[name] == _num(getattr(g, name)), (u, name)
        assert report.figures[f"gamma-profile-{u}"]["zero_gamma"] == _num(g.zero_gamma)
        assert fig["ts"] == g.ts_event
        history = [h for _, h in EventLog(root).read(date, kinds=[GammaLevels], streams=["derived"])
                   if h.underlying == u]
        assert report.figures[f"levels-{u}"]["points"] == len(history)
        assert report.figures[f"levels-{u}"]["last_dealer_bias"] == _num(g.dealer_bias)


def test_order_flow_figures_match_the_trades_and_replay(recorded, report):
    root, date = recorded
    day = open_day(root, date)
    summary = replay_day(root, date).instruments
    trades = day.columns("Trade")
    symbols = day.symbols()
    for sym, s in summary.items():
        if not s["trades"]:
            continue
        sel = np.array([symbols[i] == sym for i in trades["instrument"]])
        price, size, side = trades["price"][sel], trades["size"][sel], trades["side"][sel]
        fig = report.figures[f"price-{sym}"]
        assert fig["trades"] == int(sel.sum()) == s["trades"]
        assert fig["last"] == price[-1] == s["last"]
        assert fig["cum_delta"] == float(np.sum(size * side))
        assert fig["vwap"] == pytest.approx(s["vwap"], rel=1e-12)
        prof = report.figures[f"profile-{sym}"]
        assert (prof["poc"], prof["va_low"], prof["va_high"]) == (s["poc"], s["va_low"], s["va_high"])
        assert prof["volume"] == s["volume"]


def test_html_is_self_contained_and_carries_the_values(report):
    page = report.html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "@import" not in page
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(report.figures)
    for b64 in images:
        assert base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n"
    embedded = re.search(r'<script type="application/json" id="mia-figures">(.*?)</script>', page, re.S)
    assert json.loads(embedded.group(1)) == report.figures
    for fig_id, values in report.figures.items():
        if fig_id.startswith("gex-"):
            tag = re.search(rf'<figure id="{re.escape(fig_id)}"[^>]*>', page).group(0)
            assert f'data-zero-gamma="{json.dumps(values["zero_gamma"])}"' in tag
            assert f'data-call-wall="{json.dumps(values["call_wall"])}"' in tag


def test_cli_report_writes_the_file(recorded, tmp_path):
    root, date = recorded
    out = tmp_path / "r.html"
    res = CliRunner().invoke(cli, ["report", "--date", date, "--data-dir", root, "-o", str(out), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    text = out.read_text()
    assert info["path"] == str(out) and info["bytes"] == len(text.encode())
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    last = _last_recorded_levels(root, date)
    for u, g in last.items():
        assert info["figures"][f"gex-{u}"]["call_wall"] == _num(g.call_wall)
    assert res.stderr == ""  # no progress bar when stderr is not a terminal


def test_report_up_to_a_moment_draws_the_levels_of_that_moment(recorded):
    # Arrange: stop the replay at the last GammaLevels (exclusive)
    root, date = recorded
    history = [g for _, g in EventLog(root).read(date, kinds=[GammaLevels], streams=["derived"])]
    cut = history[-1]
    before = [g for g in history if g.ts_recv < cut.ts_recv and g.underlying == cut.underlying]
    # Act
    rep = report_day(root, date, end=cut.ts_recv)
    # Assert: the figure shows the previous levels of that underlying, or none
    key = f"gex-{cut.underlying}"
    if before:
        assert rep.figures[key]["zero_gamma"] == _num(before[-1].zero_gamma)
        assert rep.figures[key]["ts"] == before[-1].ts_event
        assert rep.figures[f"levels-{cut.underlying}"]["points"] == len(before)
    else:
        assert key not in rep.figures


def test_vwap_bands_hand_computed():
    vwap, sd = vwap_bands(np.array([10.0, 12.0, 11.0]), np.array([1.0, 1.0, 2.0]))
    assert vwap.tolist() == [10.0, 11.0, 11.0]
    assert sd[0] == 0.0 and sd[1] == pytest.approx(1.0) and sd[2] == pytest.approx(math.sqrt(0.5))


def test_missing_matplotlib_is_one_clear_line(recorded, tmp_path, monkeypatch):
    root, date = recorded
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'mia\[report\]'"):
        report_day(root, date)
    res = CliRunner().invoke(cli, ["report", "--date", date, "--data-dir", root, "-o", str(tmp_path / "x.html")])
    assert res.exit_code == 1
    assert res.stderr.strip().count("\n") == 0 and "mia[report]" in res.stderr
