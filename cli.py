"""The `mia` command: thin. Parses options, calls the library, maps errors to exit codes.

Exit status: 0 success, 1 failed check or runtime failure, 2 usage error.
"""

from __future__ import annotations

import functools
import logging
import os
import sys

import click

from mia import __version__
from mia.engine.errors import ConfigError, MiaError, UsageError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def data_dir_option(fn):
    """--data-dir, shared by every command that touches the log."""
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False),
        default=lambda: os.environ.get("MIA_DATA_DIR", "./mia-data"),
        show_default="$MIA_DATA_DIR or ./mia-data",
        help="Root of the event log.",
    )(fn)


def json_option(fn):
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")(fn)


def handle_errors(fn):
    """Map library errors to one line on stderr and an exit code; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (UsageError, ConfigError) as exc:
            click.echo(f"mia: error: {exc}", err=True)
            sys.exit(2)
        except MiaError as exc:
            click.echo(f"mia: error: {exc}", err=True)
            sys.exit(1)
        except OSError as exc:
            click.echo(f"mia: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), err=True)
            sys.exit(1)

    return wrapper


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="mia")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """mia: record futures order flow and options chains; replay them exactly."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# --- log: inspect, verify ---------------------------------------------------------------------


def _log_days(log, date: str | None) -> list[str]:
    from mia.engine.errors import NoDataError
    from mia.engine.log import check_date

    if date is not None:
        return [check_date(date)]
    if not log.root.is_dir():
        raise NoDataError(f"data directory {log.root} does not exist")
    days = log.dates()
    if not days:
        raise NoDataError(f"no data in {log.root}")
    return days


def _fmt_ts(ns: int | None) -> str:
    import datetime as dt

    if ns is None:
        return "-"
    t = dt.datetime.fromtimestamp(ns // 1_000_000_000, dt.timezone.utc)
    return f"{t:%H:%M:%S}.{ns % 1_000_000_000 // 1_000_000:03d}"


@cli.command()
@click.option("--date", "date", default=None, metavar="YYYY-MM-DD", help="One day (default: all).")
@data_dir_option
@json_option
@handle_errors
def inspect(date: str | None, data_dir: str, as_json: bool) -> None:
    """Show the log's days and segments: state, counts per kind and symbol, sizes."""
    import json

    from mia.engine.log import EventLog

    log = EventLog(data_dir)
    days = []
    for day in _log_days(log, date):
        segs = [s.to_dict() for s in log.inspect(day)]
        days.append({"date": day, "segments": segs,
                     "events": sum(s["events"] for s in segs),
                     "bytes": sum(s["bytes"] for s in segs),
                     "uncompressed_bytes": sum(s["uncompressed_bytes"] for s in segs)})
    if as_json:
        click.echo(json.dumps({"data_dir": str(log.root), "days": days}))
        return
    for d in days:
        ratio = d["uncompressed_bytes"] / d["bytes"] if d["bytes"] else 0.0
        click.echo(f"{d['date']}  {len(d['segments'])} segments  {d['events']:,} events  "
                   f"{d['bytes']:,} B on disk  {d['uncompressed_bytes']:,} B raw  ({ratio:.1f}x)")
        for s in d["segments"]:
            name = s["path"].rsplit("/", 1)[-1]
            click.echo(f"  {name}  stream={s['stream']}  state={s['state']}  "
                       f"events={s['events']:,}  seq={s['first_seq']}..{s['last_seq']}  "
                       f"{_fmt_ts(s['first_ts'])}-{_fmt_ts(s['last_ts'])} UTC  "
                       f"{s['bytes']:,} B  ratio={s['compression_ratio'] or 0:.1f}x")
            if s["bad_frames"] or s["torn_bytes"]:
                click.echo(f"    damage: {s['bad_frames']} bad frames, {s['torn_bytes']} torn "
                           f"bytes (run: mia verify --date {d['date']})")
            kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(s["kinds"].items()))
            click.echo(f"    kinds: {kinds}")
            if s["instruments"]:
                insts = ", ".join(f"{k} {v:,}" for k, v in sorted(s["instruments"].items()))
                click.echo(f"    instruments: {insts}")


@cli.command()
@click.option("--date", "date", default=None, metavar="YYYY-MM-DD", help="One day (default: all).")
@click.option("--repair", is_flag=True, help="Truncate torn tails to the last whole frame.")
@data_dir_option
@json_option
@handle_errors
def verify(date: str | None, repair: bool, data_dir: str, as_json: bool) -> None:
    """Check every frame (CRC, decompression, decoding). Exit 1 when damage remains."""
    import json

    from mia.engine.log import EventLog

    log = EventLog(data_dir)
    reports = [log.verify(day, repair=repair) for day in _log_days(log, date)]
    ok = all(r.ok for r in reports)
    if as_json:
        click.echo(json.dumps({"ok": ok, "days": [r.to_dict() for r in reports]}))
    else:
        for r in reports:
            click.echo(f"{r.date}: {r.segments} segments, {r.frames} frames, {r.events:,} events: "
                       f"{'ok' if r.ok else 'DAMAGED'}")
            for p in r.bad_frames:
                click.echo(f"  bad frame: {p}")
            for t in r.torn_tails:
                state = "truncated" if t.path in r.repaired else "not repaired"
                click.echo(f"  torn tail: {t.path} at byte {t.offset}: {t.length} bytes "
                           f"({state})")
            for path in r.skipped_open:
                click.echo(f"  being written, not repaired: {path}")
            if r.truncated_bytes:
                click.echo(f"  truncated {r.truncated_bytes} bytes")
    if not ok:
        sys.exit(1)


def main() -> None:
    cli(prog_name="mia")


if __name__ == "__main__":
    main()
