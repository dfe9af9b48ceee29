"""The report's figure values are typed, frozen structs; their JSON (embedded in the page and in
`mia report --json`) keeps every field and writes no NaN. Synthetic inputs, no recording."""

from __future__ import annotations

import html
import json
import math
import re

import msgspec
import numpy as np
import pytest

pytest.importorskip("matplotlib")

from mia.analytics._gamma_synth import synthetic_chain  # noqa: E402
from mia.analytics.gamma import compute_gamma, gamma_levels  # noqa: E402
from mia.analytics.report import (  # noqa: E402
    FlowInput,
    GammaInput,
    GammaProfileFigure,
    GexFigure,
    LevelsFigure,
    PriceFigure,
    ProfileFigure,
    Report,
    build_report,
)
from mia.engine.jsonenc import to_json  # noqa: E402

S = 10**9

# The keys of each figure's values: a field lost or renamed fails here.
KEYS = {
    "price": (PriceFigure, ["symbol", "trades", "last", "vwap", "vwap_sd", "cum_delta", "bars"]),
    "profile": (ProfileFigure, ["symbol", "poc", "va_low", "va_high", "volume"]),
    "gex": (GexFigure, ["underlying", "ts", "spot", "zero_gamma", "call_wall", "put_wall", "max_pain",
                        "total_gex", "dealer_bias", "stale", "strikes", "net_gex_sum"]),
    "gamma-profile": (GammaProfileFigure, ["underlying", "spot", "zero_gamma", "grid_low", "grid_high",
                                           "crossings"]),
    "levels": (LevelsFigure, ["underlying", "points", "last_dealer_bias"]),
}


def _no_nan(token: str):
    raise AssertionError(f"JSON carries {token}: NaN must be written as null")


@pytest.fixture(scope="module")
def report() -> Report:
    # Arrange: SPX with its chain (zero gamma unknown at the last snapshot), NDX without a chain;
    # ES with trades but no profile (POC unknown)
    chain = synthetic_chain(1500, seed=3)
    result = compute_gamma(chain, futures_mid=6031.0)
    spx = gamma_levels(result, ts_recv=chain.ts_ns + 5)
    spx_late = msgspec.structs.replace(spx, ts_recv=spx.ts_recv + 60 * S, zero_gamma=math.nan, stale=True)
    ndx = msgspec.structs.replace(spx, underlying="NDX")
    rng = np.random.default_rng(1)
    n = 300
    ts = chain.ts_ns + np.arange(n, dtype=np.int64) * S
    price = 6000.0 + np.cumsum(rng.choice([-0.25, 0.0, 0.25], n))
    size = rng.integers(1, 5, n).astype(np.float64)
    side = rng.choice([-1, 0, 1], n).astype(np.int8)
    flow = FlowInput(symbol="ESU5", ts=ts, price=price, size=size, side=side,
                     profile_prices=np.zeros(0), profile_volume=np.zeros(0),
                     poc=math.nan, va_low=math.nan, va_high=math.nan)
    gammas = [GammaInput(levels=spx_late, result=result), GammaInput(levels=ndx)]
    # Act
    return build_report("2025-06-16", [flow], gammas, [spx, spx_late, ndx], subtitle="synthetic")


def test_figure_values_are_typed_frozen_structs_with_every_field(report):
    assert isinstance(report, Report)
    assert sorted(report.figures) == ["gamma-profile-NDX", "gamma-profile-SPX", "gex-NDX", "gex-SPX",
                                      "levels-NDX", "levels-SPX", "price-ESU5", "profile-ESU5"]
    for fig_id, values in report.figures.items():
        kind = fig_id.rsplit("-", 1)[0]
        cls, keys = KEYS[kind]
        assert type(values) is cls, fig_id
        assert list(cls.__struct_fields__) == keys
        assert list(json.loads(to_json(values))) == keys
        with pytest.raises(AttributeError, match="immutable"):
            setattr(values, keys[0], "x")  # frozen


def test_figure_values_are_what_is_drawn(report):
    f = report.figures
    assert f["price-ESU5"].trades == 300 and f["price-ESU5"].bars == 0
    assert math.isnan(f["profile-ESU5"].poc) and f["profile-ESU5"].volume == 0.0
    assert f["gex-SPX"].stale is True and math.isnan(f["gex-SPX"].zero_gamma)
    assert f["gex-SPX"].strikes > 0 and math.isfinite(f["gex-SPX"].net_gex_sum)
    assert f["gex-NDX"].strikes == 0 and math.isnan(f["gex-NDX"].net_gex_sum)  # no chain behind it
    assert f["gamma-profile-SPX"].grid_low < f["gamma-profile-SPX"].spot < f["gamma-profile-SPX"].grid_high
    assert f["gamma-profile-NDX"].crossings == []
    assert f["levels-SPX"].points == 2 and f["levels-NDX"].points == 1


def test_embedded_json_and_data_attributes_write_null_not_nan(report):
    page = report.html
    embedded = re.search(r'<script type="application/json" id="mia-figures">(.*?)</script>', page, re.S)
    data = json.loads(embedded.group(1), parse_constant=_no_nan)
    assert data == json.loads(to_json(report.figures))
    assert data["profile-ESU5"]["poc"] is None and data["gex-SPX"]["zero_gamma"] is None
    assert data["gex-NDX"]["net_gex_sum"] is None and data["gamma-profile-NDX"]["grid_low"] is None
    tag = re.search(r'<figure id="gex-SPX"[^>]*>', page).group(0)
    assert 'data-zero-gamma="null"' in tag and "NaN" not in tag
    assert f'data-call-wall="{html.escape(to_json(report.figures["gex-SPX"].call_wall))}"' in tag
    assert 'data-stale="true"' in tag and 'data-underlying="&quot;SPX&quot;"' in tag
