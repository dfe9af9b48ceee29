"""`[[sierra]]` in mia.toml: one Sierra Chart data folder to follow while recording."""

from __future__ import annotations

from mia.engine.config import ConfigBase


class SierraConfig(ConfigBase):
    """Follow `<data_dir>/<symbol>.scid` and `<data_dir>/MarketDepthData/<symbol>.<date>.depth`."""

    data_dir: str = ""
    symbols: list[str] = []
    depth: bool = True  # follow the .depth files too
    poll_s: float = 0.05  # how often the files are checked for new bytes
    silence_s: float = 30.0  # a file that has not grown this long (market open) is reported
    rollover_grace_s: float = 30.0  # keep reading yesterday's depth file this long after midnight
    tick_sizes: dict[str, float] = {}  # by symbol or root, for roots mia does not know
    point_values: dict[str, float] = {}
