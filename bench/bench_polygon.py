"""Options-chain parsing throughput: mia's msgspec models vs the official client's model classes.

Peer: what polygon's RESTClient does with each page, ``json.loads`` then
``OptionContractSnapshot.from_dict`` per row. Ours: ``parse_page`` (bytes -> typed structs) and
the whole reducer input path ``chain_columns`` (pages -> ChainColumns). Pages come from the
simulator's chain builder, so both sides parse the same bytes. Target: >= 10x the peer.
"""

from __future__ import annotations

import datetime as dt
import json
import time

from polygon.rest.models import OptionContractSnapshot

from mia.data.polygon.models import chain_columns, parse_page
from mia.data.polygon.server import build_chain, contract_row
from mia.engine.events import PolygonResponse

T0 = int(dt.datetime(2025, 12, 18, 15, 0, tzinfo=dt.timezone.utc).timestamp()) * 1_000_000_000
TARGET = 10.0


def make_pages(n_contracts: int, per_page: int = 250) -> list[bytes]:
    chain = build_chain(0, "SPX", T0)
    n = min(n_contracts, len(chain.strike))
    rows = [contract_row(chain, i, "SPX") for i in range(n)]
    pages = []
    for k in range(0, n, per_page):
        page = {"status": "OK", "request_id": f"bench{k}", "results": rows[k: k + per_page]}
        if k + per_page < n:
            page["next_url"] = f"https://api.polygon.io/v3/snapshot/options/I:SPX?cursor=c{k}"
        pages.append(json.dumps(page).encode())
    return pages


def best_of(fn, repeat: int) -> float:
    fn()  # warm-up: caches, allocator
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def peer(pages: list[bytes]) -> int:
    n = 0
    for body in pages:
        for row in json.loads(body)["results"]:
            OptionContractSnapshot.from_dict(row)
            n += 1
    return n


def ours_models(pages: list[bytes]) -> int:
    return sum(len(parse_page(body).results) for body in pages)


def ours_columns(events: list[PolygonResponse]) -> int:
    return len(chain_columns(events))


def run(quick: bool) -> str:
    repeat = 5 if quick else 9
    cases = [("one 250-contract page", 250), ("10 000-contract chain (40 pages)", 2_000 if quick else 10_000)]
    lines = ["## Polygon chain parsing", "",
             "Contracts/s parsing the same JSON (best of %d). Peer: the official client's parsing "
             "(`json.loads` + `OptionContractSnapshot.from_dict`, what `RESTClient` does). Target: >= %.0fx."
             % (repeat, TARGET), "",
             "| case | contracts | peer (from_dict) | mia parse_page | ratio | mia chain_columns | ratio | target met |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for label, n in cases:
        if quick and n != 250:
            label = f"{n}-contract chain (quick)"
        pages = make_pages(n)
        events = [PolygonResponse(ts_event=i, ts_recv=i, underlying="SPX", path="/v3/snapshot/options/I:SPX",
                                  query="", status=200, request_id="", elapsed_ns=0, body=b, snapshot_id=1,
                                  page=i, final=i == len(pages) - 1) for i, b in enumerate(pages)]
        count = peer(pages)
        assert ours_models(pages) == count == ours_columns(events)
        t_peer = best_of(lambda: peer(pages), repeat)
        t_models = best_of(lambda: ours_models(pages), repeat)
        t_cols = best_of(lambda: ours_columns(events), repeat)
        r_models, r_cols = t_peer / t_models, t_peer / t_cols
        lines.append(f"| {label} | {count} | {count / t_peer:,.0f}/s | {count / t_models:,.0f}/s | {r_models:.1f}x "
                     f"| {count / t_cols:,.0f}/s | {r_cols:.1f}x | {'yes' if r_models >= TARGET else 'NO'} |")
    lines += ["", "`parse_page` is the like-for-like comparison (JSON bytes to typed contract objects); "
              "`chain_columns` also builds the numpy columns the gamma reducer reads (settlement instants, "
              "de-duplication, NaN for missing values), work the peer does not do.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(quick=True))
