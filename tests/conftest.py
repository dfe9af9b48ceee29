"""Fixtures shared by the whole suite.

- `sim_day`: ONE day recorded from the simulators per test session (`mia record --sim`, see
  helpers.record_sim_day), shared read-only by the command-line, levels, export, report and
  README tests. After each test that used it, the day is checked to be exactly as recorded: a
  test that needs to change a day (repair, corruption) takes `sim_day_copy` instead.
- `sim_day_copy`: a private copy of that day in the test's own tmp_path.

This folder goes on sys.path so that test modules can `import helpers` (pytest's importlib
mode does not put it there, and tests/ has no __init__.py).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from helpers import RecordedDay, day_fingerprint, record_sim_day  # noqa: E402


@pytest.fixture(scope="session")
def sim_day(tmp_path_factory) -> RecordedDay:
    """The simulators' recorded day: (root, date). Read it; never write to it."""
    return record_sim_day(tmp_path_factory.mktemp("sim-day") / "data")


@pytest.fixture(autouse=True)
def _sim_day_left_as_recorded(request):
    """Fail the test (at teardown) that changed the shared day, instead of a later one."""
    if "sim_day" not in request.fixturenames:
        yield
        return
    root = request.getfixturevalue("sim_day").root
    before = day_fingerprint(root)
    yield
    after = day_fingerprint(root)
    assert after == before, ("this test changed the shared sim_day (use sim_day_copy): "
                             f"{sorted(set(after) ^ set(before))}")


@pytest.fixture
def sim_day_copy(sim_day, tmp_path) -> RecordedDay:
    """A copy of the simulators' day that the test may change (repair, truncate, corrupt)."""
    root = tmp_path / "sim-day-copy"
    shutil.copytree(sim_day.root, root)
    return RecordedDay(str(root), sim_day.date)
