"""One seeded price path both simulators follow, so SPX (Polygon) moves with ES (DTC).

The path is a per-second random walk with fat-tailed steps for one UTC day, drawn from
(seed, day) and interpolated linearly inside each second: a pure function of (seed, t_ns).
"""

from __future__ import annotations

import functools

import numpy as np

NS_PER_S = 1_000_000_000
SECONDS_PER_DAY = 86_400

# name: (level at the UTC day's start, typical 1-second move in points)
BASES: dict[str, tuple[float, float]] = {
    "ES": (6000.0, 0.35),
    "NQ": (21500.0, 1.6),
    "VIX": (16.0, 0.01),
}
# index = futures - basis (fair-value premium of the December future)
INDEX_BASIS: dict[str, tuple[str, float]] = {"SPX": ("ES", 28.5), "NDX": ("NQ", 102.0)}


@functools.lru_cache(maxsize=16)
def _day_path(seed: int, root: str, day: int) -> np.ndarray:
    level, step = BASES[root]
    rng = np.random.default_rng([seed, day, sum(map(ord, root))])
    moves = rng.standard_t(df=4, size=SECONDS_PER_DAY + 1) * step / np.sqrt(2.0)
    moves[0] = 0.0
    path = level + np.cumsum(moves)
    if root == "VIX":  # mean-reverting, stays positive
        path = np.clip(path, 9.0, 80.0)
    return path


def price_at(seed: int, root: str, t_ns: int) -> float:
    """The path's level for a futures root (ES, NQ, VIX) or an index (SPX, NDX) at t_ns."""
    basis = 0.0
    if root in INDEX_BASIS:
        root, basis = INDEX_BASIS[root]
    day, rem = divmod(int(t_ns), SECONDS_PER_DAY * NS_PER_S)
    sec, frac = divmod(rem, NS_PER_S)
    path = _day_path(seed, root, day)
    w = frac / NS_PER_S
    return float(path[sec] * (1.0 - w) + path[sec + 1] * w) - basis
