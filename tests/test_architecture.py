"""The layout DESIGN.md promises: engine/ imports nothing from the outer folders and names no
vendor; no engine module grows past ~600 lines."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGINE = ROOT / "engine"
OUTER = ("mia.data", "mia.analytics", "mia.recorder", "mia.replay", "mia.fold", "mia.config",
         "mia.cli")
VENDOR_WORDS = ("POLYGON_API_KEY", "MIA_DTC_", "DtcConfig", "PolygonConfig", "LogonRejected",
                "PolygonHttp", "Entitlement", "api.polygon.io")
MAX_LINES = 620


def _engine_files():
    return sorted(p for p in ENGINE.rglob("*.py") if "__pycache__" not in p.parts)


def _absolute(module: str | None, level: int, path: Path) -> str:
    if not level:
        return module or ""
    pkg = ["mia", *path.relative_to(ROOT).parent.parts]
    base = pkg[: len(pkg) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def test_engine_imports_nothing_from_the_outer_folders():
    bad = []
    for path in _engine_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [_absolute(node.module, node.level, path)]
            for name in names:
                if name.startswith(OUTER):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert bad == []


def test_engine_names_no_vendor_settings_errors_or_secrets():
    bad = [f"{p.relative_to(ROOT)}: {w}" for p in _engine_files()
           for w in VENDOR_WORDS if w in p.read_text(encoding="utf-8")]
    assert bad == []


def test_no_engine_module_over_600_lines():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines())
             for p in _engine_files()}
    assert {p: n for p, n in sizes.items() if n > MAX_LINES} == {}
