"""The recorder's live levels file carries what `mia levels` writes: gamma, order flow, and the
VIX / 30-day VX lines of the last TermStructure."""

from mia.engine.events import TermStructure
from mia.recorder.sinks import LevelsSink

T = 1_764_000_000 * 1_000_000_000


def test_the_live_levels_file_has_the_vix_and_the_30_day_vx(tmp_path):
    path = tmp_path / "levels.txt"
    sink = LevelsSink(str(path))
    sink([TermStructure(T, T, 16.25, "polygon", ["VXZ6", "VXF7"], [20261216, 20270120],
                        [17.0, 17.6], [18.0, 53.0], 0.75, 17.6 / 17.0 - 1, 17.2)])
    lines = path.read_text().splitlines()
    assert sink.writes == 1
    vix = [ln for ln in lines if ", VIX (polygon)," in ln]
    cm30 = [ln for ln in lines if ", VX 30d," in ln]
    assert len(vix) == 1 and vix[0].split(", ")[4] == "16.25", lines
    assert len(cm30) == 1 and cm30[0].split(", ")[4] == "17.2", lines


def test_events_that_draw_nothing_leave_the_file_alone(tmp_path):
    path = tmp_path / "levels.txt"
    sink = LevelsSink(str(path))
    sink([])
    assert sink.writes == 0 and not path.exists()
