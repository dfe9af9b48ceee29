"""The one JSON encoder of every `--json` output, tail line and report: strict JSON.

msgspec writes NaN and infinities as `null` (the standard's only spelling of "no number"), so no
output ever carries a bare `NaN`; numpy scalars and arrays and paths are converted here (bytes are base64, msgspec's rule),
once, instead of in each command.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import msgspec
import numpy as np


def _hook(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, dt.timedelta):
        return obj.total_seconds()
    raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


_ENCODER = msgspec.json.Encoder(enc_hook=_hook)


def to_json(obj: Any) -> str:
    """One line of strict JSON (NaN and ±inf as null)."""
    return _ENCODER.encode(obj).decode()


def to_json_bytes(obj: Any) -> bytes:
    return _ENCODER.encode(obj)


def to_builtins(obj: Any) -> Any:
    """Plain dicts/lists/numbers of `obj` (Structs included), NaN kept as float."""
    return msgspec.to_builtins(obj, enc_hook=_hook)
