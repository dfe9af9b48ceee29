"""Sierra Chart's own files: `.scid` intraday records and `.depth` market-depth records.

- `scid`, `depth`: sans-IO readers (bytes in, numpy records out, a torn tail kept for the next
  call) and the converters that turn records into mia events.
- `symbols`: instrument specs (tick size, point value, exchange) from a Sierra symbol.
- `follower`: the live source that tails the files Sierra appends to (`mia record --sierra-data`).
- `importer`: history into the `import` stream, per UTC day, idempotent (`mia import scid|depth`).
- `simwriter`: writes both files with Sierra's byte layouts, flushes and torn tails (tests, bench).

Imports only `mia.engine`.
"""

from .common import SierraFileError, ns_to_scdt, scdt_to_ns
from .config import SierraConfig

__all__ = ["SierraConfig", "SierraFileError", "scdt_to_ns", "ns_to_scdt"]
