"""The reliability suite imports its helpers (reliability_kit.py) and runs its child scripts
from this folder; pytest's importlib mode does not put it on sys.path, so do it here."""

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
