"""Every --json output is strict JSON: NaN and infinities are null (json.dumps wrote bare NaN:
`mia replay --json` on a chain with no zero-gamma crossing printed `"zero_gamma": NaN`)."""

import json
import math

import numpy as np
from click.testing import CliRunner

from mia.cli import cli
from mia.engine.jsonenc import to_json
from mia.replay.run import GammaSummary, ReplayResult


def strict_loads(text: str):
    def refuse(name):
        raise AssertionError(f"not strict JSON: {name} in {text[:200]}")

    return json.loads(text, parse_constant=refuse)


def test_the_encoder_writes_nan_and_infinities_as_null():
    got = strict_loads(to_json({"a": math.nan, "b": -math.inf, "c": np.float32("nan"),
                                "d": np.int64(7), "e": np.array([1.5, np.nan])}))
    assert got == {"a": None, "b": None, "c": None, "d": 7, "e": [1.5, None]}


def _no_crossing() -> ReplayResult:
    g = GammaSummary(ts=1, spot=6000.0, zero_gamma=math.nan, call_wall=6100.0, put_wall=5900.0,
                     max_pain=6000.0, total_gex=1e9, pcr_oi=math.nan, pcr_volume=0.8,
                     dealer_bias=0.1, stale=False)
    return ReplayResult(date="2026-11-20", events=10, gamma={"SPX": g}, check=None)


def test_replay_json_prints_null_for_a_chain_without_zero_gamma(monkeypatch, tmp_path):
    import mia.replay

    monkeypatch.setattr(mia.replay, "replay_day", lambda *a, **k: _no_crossing())
    res = CliRunner().invoke(cli, ["replay", "--data-dir", str(tmp_path), "--date", "2026-11-20",
                                   "--json", "-q"])
    assert res.exit_code == 0, res.output
    out = strict_loads(res.stdout.strip().splitlines()[-1])
    assert out["gamma"]["SPX"]["zero_gamma"] is None
    assert out["gamma"]["SPX"]["pcr_oi"] is None
    assert set(out) >= {"date", "events", "instruments", "gamma", "check"}


def test_replay_text_says_none_for_a_missing_zero_gamma(monkeypatch, tmp_path):
    import mia.replay

    monkeypatch.setattr(mia.replay, "replay_day", lambda *a, **k: _no_crossing())
    res = CliRunner().invoke(cli, ["replay", "--data-dir", str(tmp_path), "--date", "2026-11-20",
                                   "-q"])
    assert res.exit_code == 0, res.output
    assert "zero-gamma none" in res.stdout
