"""The alert hook: run a user's command for each Alert the monitor derives.

`AlertHook` is a pipeline sink (`__call__(derived)`). Each Alert becomes one JSON object (one line) written
to the command's stdin; the command runs in a shell, on a small pool of background threads, in
its own process group so a timeout kills it and everything it started. A failing, missing or
hanging command is logged and never reaches the recorder: the recording always goes on.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import queue
import subprocess
import threading
import time
from typing import Final, Iterable

from mia.engine import platform as plat
from mia.engine.events import ALERT_RAISED, Alert, Event, to_builtins

logger = logging.getLogger(__name__)

MAX_PENDING: Final = 256  # alerts waiting for a free worker; beyond this they are dropped (logged)
STDERR_TAIL: Final = 300  # characters of a failing command's stderr kept in the log line


def alert_json(alert: Alert) -> str:
    """The alert as one JSON object: its fields, plus `state_name` and an ISO `time`."""
    data = to_builtins(alert)
    data["state_name"] = "raised" if alert.state == ALERT_RAISED else "cleared"
    data["time"] = dt.datetime.fromtimestamp(alert.ts_recv / 1e9, dt.timezone.utc).isoformat()
    for key in ("value", "threshold"):
        if isinstance(data[key], float) and not math.isfinite(data[key]):
            data[key] = None
    return json.dumps(data, separators=(",", ":"))


class AlertHook:
    """Runs `command` (a shell command line) with each Alert as JSON on stdin, in the background.

    At most `workers` commands run at once, each for at most `timeout_s` seconds (then its
    process group is killed); at most MAX_PENDING alerts wait. Counters `sent`, `failed`,
    `timed_out` and `dropped` say what happened.
    """

    def __init__(self, command: str, *, timeout_s: float = 10.0, workers: int = 2) -> None:
        self.command = command
        self.timeout_s = timeout_s
        self.sent = self.failed = self.timed_out = self.dropped = 0
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=MAX_PENDING)
        self._lock = threading.Lock()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"mia-alert-hook-{i}", daemon=True)
                         for i in range(max(1, workers))]
        for t in self._threads:
            t.start()

    def __call__(self, derived: list[Event]) -> None:
        for ev in derived:
            if isinstance(ev, Alert):
                self.submit(ev)

    def submit(self, alert: Alert) -> None:
        """Queue one alert; never blocks and never raises."""
        if self._closed:
            return
        try:
            self._queue.put_nowait(alert_json(alert))
        except queue.Full:
            with self._lock:
                self.dropped += 1
            logger.warning("alert hook queue full, alert dropped source=%s name=%s", alert.source, alert.name)
        except Exception:
            logger.exception("alert hook could not queue alert source=%s name=%s", alert.source, alert.name)

    def close(self, timeout_s: float = 5.0) -> bool:
        """Stop taking alerts and wait (bounded) for queued ones; True if every worker finished."""
        if not self._closed:
            self._closed = True
            for _ in self._threads:
                try:
                    self._queue.put(None, timeout=timeout_s)
                except queue.Full:
                    break
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def _work(self) -> None:
        while True:
            payload = self._queue.get()
            if payload is None:
                return
            try:
                self._run(payload)
            except Exception:  # the hook must outlive anything a command does
                with self._lock:
                    self.failed += 1
                logger.exception("alert hook failed command=%r", self.command)

    def _run(self, payload: str) -> None:
        try:
            proc = subprocess.Popen(self.command, shell=True, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, **plat.new_group_kwargs())
        except OSError as exc:
            with self._lock:
                self.failed += 1
            logger.warning("alert hook could not start command=%r error=%s", self.command, exc)
            return
        try:
            _, err = proc.communicate((payload + "\n").encode("utf-8"), timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            plat.kill_group(proc)
            try:
                proc.communicate(timeout=2.0)
            except (subprocess.TimeoutExpired, OSError):
                pass
            with self._lock:
                self.timed_out += 1
            logger.warning("alert hook timed out after %.1fs command=%r", self.timeout_s, self.command)
            return
        if proc.returncode != 0:
            with self._lock:
                self.failed += 1
            tail = err.decode("utf-8", "replace").strip()[-STDERR_TAIL:]
            logger.warning("alert hook failed exit=%d command=%r stderr=%s", proc.returncode, self.command, tail)
            return
        with self._lock:
            self.sent += 1


def format_alerts(active: Iterable[Alert]) -> str:
    """Active alerts for the recorder's status line: "disconnected dtc:h:p 42s, latency polygon
    73ms>50ms"; "" when none."""
    parts = []
    for a in sorted(active, key=lambda a: (a.ts_recv, a.source, a.name)):
        if a.name == "disconnected":
            what = f"{a.value:.0f}s"
        elif a.name == "gap":
            what = f"{a.value:.1f}s"
        elif a.name == "latency":
            what = f"{a.value:.1f}ms>{a.threshold:g}ms"
        elif a.name in ("quality", "api_errors"):
            what = f"{a.value:.1%}" + ("<" if a.name == "quality" else ">") + f"{a.threshold:.0%}"
        else:
            what = f"{a.value:g}"
        parts.append(f"{a.name} {a.source} {what}")
    return ", ".join(parts)


__all__ = ["AlertHook", "alert_json", "format_alerts"]
