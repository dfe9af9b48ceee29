"""AlertHook: a working command gets the alert JSON on stdin; failing, missing and hanging
commands never raise out of the hook and never block the caller."""

from __future__ import annotations

import json
import logging
import shlex
import sys
import time

from mia.engine.events import ALERT_CLEARED, ALERT_RAISED, Alert, Heartbeat
from mia.recorder.alerts import AlertHook, alert_json, format_alerts

T = 1_718_000_000_000_000_000


def alert(name: str = "disconnected", state: int = ALERT_RAISED, value: float = 31.0, threshold: float = 30.0) -> Alert:
    return Alert(T, T, "dtc:127.0.0.1:11099", name, state, value, threshold, "dtc:127.0.0.1:11099: disconnected for 31.0 s")


def wait_for(predicate, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_working_command_receives_the_alert_json_on_stdin(tmp_path):
    # Arrange
    out = tmp_path / "alerts.jsonl"
    hook = AlertHook(f"cat >> {shlex.quote(str(out))}", timeout_s=5.0, workers=1)
    # Act: a sink call with mixed derived events; only Alerts reach the command
    hook([Heartbeat(T, T), alert(), alert(state=ALERT_CLEARED, value=40.0)])
    assert hook.close(timeout_s=10.0)
    # Assert
    lines = out.read_text().splitlines()
    assert len(lines) == 2 and hook.sent == 2 and hook.failed == 0
    first = json.loads(lines[0])
    assert first["kind"] == "Alert" and first["name"] == "disconnected" and first["state"] == 1
    assert first["state_name"] == "raised" and first["source"] == "dtc:127.0.0.1:11099"
    assert first["value"] == 31.0 and first["threshold"] == 30.0 and first["ts_recv"] == T
    assert json.loads(lines[1])["state_name"] == "cleared"


def test_failing_command_is_logged_and_never_raises(caplog):
    hook = AlertHook("echo boom >&2; exit 3", timeout_s=5.0)
    with caplog.at_level(logging.WARNING, logger="mia.recorder.alerts"):
        hook([alert()])
        assert hook.close(timeout_s=10.0)
    assert hook.failed == 1 and hook.sent == 0
    assert any("exit=3" in r.getMessage() and "boom" in r.getMessage() for r in caplog.records)


def test_missing_command_never_raises():
    hook = AlertHook("/nonexistent/mia-alert-handler --flag", timeout_s=5.0)
    hook([alert()])
    assert hook.close(timeout_s=10.0)
    assert hook.failed == 1 and hook.sent == 0


def test_hanging_command_is_killed_and_never_blocks_the_caller():
    # the shell starts a grandchild that would keep the pipes open: the whole group is killed
    hook = AlertHook(f"{shlex.quote(sys.executable)} -c 'import time; time.sleep(60)' & wait", timeout_s=0.5, workers=1)
    hook([alert(), alert(name="gap")])
    # the caller (the recorder's loop) is not held up: had it waited, both 0.5 s timeouts (one
    # worker, one after the other) would be behind it
    assert hook.timed_out < 2
    assert wait_for(lambda: hook.timed_out == 2, timeout_s=15.0)
    assert hook.close(timeout_s=5.0)


def test_queue_overflow_drops_and_counts_instead_of_blocking():
    hook = AlertHook("sleep 5", timeout_s=0.2, workers=1)
    hook([alert() for _ in range(400)])
    # returned at once: a blocking hook would have run (and timed out) every one of them first
    assert hook.timed_out + hook.sent + hook.failed < 10
    assert hook.dropped > 0
    while not hook._queue.empty():  # do not leave ~256 background sleeps running after the test
        hook._queue.get_nowait()
    assert hook.close(timeout_s=5.0)


def test_alert_json_is_strict_json_even_with_nan():
    text = alert_json(alert(value=float("nan")))
    assert json.loads(text)["value"] is None and "NaN" not in text


def test_format_alerts_for_the_status_line():
    active = [alert(), Alert(T + 1, T + 1, "polygon", "latency", ALERT_RAISED, 73.2, 50.0, ""),
              Alert(T + 2, T + 2, "polygon", "quality", ALERT_RAISED, 0.9, 0.95, "")]
    assert format_alerts(active) == ("disconnected dtc:127.0.0.1:11099 31s, latency polygon 73.2ms>50ms, "
                                     "quality polygon 90.0%<95%")
    assert format_alerts([]) == ""
