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
from mia.engine.bus import DEFAULT_ADDR
from mia.engine.errors import ConfigError, MiaError, UsageError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _default_data_dir() -> str:
    from mia.config import default_data_dir

    return default_data_dir()


def _echo_json(obj) -> None:
    """Every --json output: one line of strict JSON (NaN as null), through the one encoder."""
    from mia.engine.jsonenc import to_json

    click.echo(to_json(obj))


def _load_cfg(config_path):
    """The config a command runs with: --config, else ./mia.toml when it exists, else defaults."""
    from mia.config import load_config

    return load_config(config_path, find=True)


def _data_dir_url(ctx, param, value):
    """A URL --data-dir (s3://bucket/prefix) is read through fsspec, with mia.toml's [storage]."""
    if value and "://" in str(value) and not str(value).startswith("file://"):
        from mia.engine.storage import configure

        try:
            configure(_load_cfg(None).storage)
        except MiaError as exc:
            click.echo(f"mia: error: {exc}", err=True)
            sys.exit(2)
    return value


def data_dir_option(fn):
    """--data-dir, shared by every command that touches the log."""
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False),
        default=_default_data_dir,
        show_default="$MIA_DATA_DIR or ./mia-data",
        callback=_data_dir_url,
        help="Root of the event log (reading commands also take a URL: s3://bucket/prefix).",
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
    from mia.engine.clock import parse_date
    from mia.engine.errors import NoDataError

    if date is not None:
        return [parse_date(date)]
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
    """Show the log's days and segments: counts per kind and symbol, event rates, gaps, time
    range, sizes and compression, and each segment's state (clean, open, crashed, torn).

    \b
    Examples:
      mia inspect
      mia inspect --date 2026-11-20 --json
    """

    from mia.data.dtc.backfill import filled_windows
    from mia.engine.log import EventLog

    log = EventLog(data_dir)
    days = [log.day_summary(day) for day in _log_days(log, date)]
    filled = {d.date: filled_windows(log, d.date) for d in days}  # what `mia backfill` added
    if as_json:
        import msgspec

        _echo_json({"data_dir": str(log.root),
                    "days": [dict(msgspec.structs.asdict(d), backfilled=filled[d.date])
                             for d in days]})
        return
    for d in days:
        ratio = d.compression_ratio or 0.0
        click.echo(f"{d.date}  {len(d.segments)} segments  {d.events:,} events  "
                   f"{d.bytes:,} B on disk  {d.uncompressed_bytes:,} B raw  ({ratio:.1f}x)")
        click.echo(f"  {_fmt_ts(d.first_ts)}-{_fmt_ts(d.last_ts)} UTC  "
                   f"span {d.span_s:,.1f}s  {d.events_per_s:,.0f} events/s  "
                   f"gaps {d.gaps.count} ({d.gaps.seconds:,.1f}s)")
        if d.kinds:
            click.echo("  kinds: " + ", ".join(f"{k} {v:,}" for k, v in sorted(d.kinds.items())))
        for w in filled[d.date]:
            click.echo(f"  backfilled: {w.symbol} {_fmt_ts(w.start_ns)}-{_fmt_ts(w.end_ns)} UTC "
                       f"{w.trades:,} trades from {w.historical} (gap of {w.source})")
        for s in d.segments:
            name = s.path.replace("\\", "/").rsplit("/", 1)[-1]
            click.echo(f"  {name}  stream={s.stream}  state={s.state}  "
                       f"events={s.events:,}  seq={s.first_seq}..{s.last_seq}  "
                       f"{_fmt_ts(s.first_ts)}-{_fmt_ts(s.last_ts)} UTC  "
                       f"{s.bytes:,} B  ratio={s.compression_ratio or 0:.1f}x")
            if s.bad_frames or s.torn_bytes:
                click.echo(f"    damage: {s.bad_frames} bad frames, {s.torn_bytes} torn "
                           f"bytes (run: mia verify --date {d.date})")
            kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(s.kinds.items()))
            click.echo(f"    kinds: {kinds}")
            if s.instruments:
                insts = ", ".join(f"{k} {v:,}" for k, v in sorted(s.instruments.items()))
                click.echo(f"    instruments: {insts}")


@cli.command()
@click.option("--date", "date", default=None, metavar="YYYY-MM-DD", help="One day (default: all).")
@click.option("--repair", is_flag=True, help="Truncate torn tails to the last whole frame.")
@data_dir_option
@json_option
@handle_errors
def verify(date: str | None, repair: bool, data_dir: str, as_json: bool) -> None:
    """Check every frame (CRC, decompression, decoding). Exit 1 when damage remains.

    \b
    Examples:
      mia verify
      mia verify --date 2026-11-20 --repair
      mia verify --json
    """

    from mia.engine.log import EventLog

    log = EventLog(data_dir)
    reports = [log.verify(day, repair=repair) for day in _log_days(log, date)]
    ok = all(r.ok for r in reports)
    if as_json:
        _echo_json({"ok": ok, "days": [r.summary() for r in reports]})
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


@cli.command()
@click.option("--date", "date", required=True, metavar="YYYY-MM-DD", help="The UTC day to migrate.")
@click.option("--force", is_flag=True, help="Rewrite segments already in the current format too.")
@data_dir_option
@json_option
@handle_errors
def migrate(date: str, force: bool, data_dir: str, as_json: bool) -> None:
    """Rewrite a day into the current log format, and give it the ChainSnapshots it lacks.

    Every closed segment is rewritten (same events, same seqs, same metadata), read back and
    proved equal, then swapped in atomically; segments still being written are left for later.
    A day recorded before chains were logged as ChainSnapshots gets them in a `chains` stream.
    Migrating a migrated day does nothing. Exit 1 when a segment had to be skipped (damaged,
    or not proved equal: its original is kept).

    \b
    Examples:
      mia migrate --date 2026-11-20
      mia migrate --date 2026-11-20 --json
    """

    from mia.engine.clock import parse_date
    from mia.replay.migrate import migrate_day

    result = migrate_day(data_dir, parse_date(date), force=force)
    if as_json:
        import msgspec

        _echo_json(msgspec.to_builtins(result) | {"changed": result.changed})
    else:
        if result.changed:
            click.echo(f"{result.date}: migrated to log format {result.target_format}")
        for line in result.lines():
            click.echo(line)
    if result.skipped:
        sys.exit(1)


# --- record / replay / sim / tail / demo --------------------------------------------------------


def _parse_duration(text: str | None) -> float | None:
    """'30s', '5m', '1h', '90' -> seconds."""
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600}
    t = text.strip().lower()
    try:
        if t and t[-1] in units:
            return float(t[:-1]) * units[t[-1]]
        return float(t)
    except ValueError:
        raise UsageError(f"bad duration {text!r}: expected e.g. 30s, 5m, 1h") from None


def _parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"bad DTC address {text!r}: expected HOST:PORT")
    return host or "127.0.0.1", int(port)


def _split(text: str | None) -> list[str] | None:
    return [s.strip() for s in text.split(",") if s.strip()] if text else None


def _run_async(coro_fn):
    """Run a coroutine with Ctrl+C, SIGTERM and (Windows) Ctrl+Break or console close turned
    into a clean stop (`mia.engine.platform.install_stop_handler`)."""
    import asyncio

    from mia.engine.platform import install_stop_handler

    async def main():
        stop = asyncio.Event()
        remove = install_stop_handler(asyncio.get_running_loop(), stop.set)
        try:
            return await coro_fn(stop)
        finally:
            remove()

    return asyncio.run(main())


def _status_printer(quiet: bool):
    if quiet:
        return None
    tty = sys.stderr.isatty()

    def show(line: str) -> None:
        if tty:
            click.echo("\r\x1b[2K" + line[:200], err=True, nl=False)
        else:
            click.echo(line, err=True)

    return show


@cli.command()
@data_dir_option
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="mia.toml (default: ./mia.toml when it exists).")
@click.option("--dtc", "dtc_addrs", multiple=True, metavar="HOST:PORT",
              help="A DTC server (Sierra Chart instance); repeat for several.")
@click.option("--symbols", help="Comma-separated symbols for the DTC connections given by --dtc.")
@click.option("--depth", type=click.IntRange(0, 50), default=None, help="Depth levels [10].")
@click.option("--polygon-url", help="Polygon base URL (default https://api.polygon.io).")
@click.option("--polygon-ws-url", metavar="WS_URL",
              help="Stream option trades, quotes and index values from this Polygon WebSocket host "
                   "(ws://HOST:PORT, wss://socket.polygon.io); [polygon] stream = true does too.")
@click.option("--underlyings", help="Comma-separated option underlyings [SPX,NDX].")
@click.option("--poll", type=float, help="Seconds between chain snapshots [fits the plan].")
@click.option("--no-dtc", is_flag=True, help="Record no DTC connection.")
@click.option("--no-polygon", is_flag=True,
              help="Record no options chains (and no Polygon streams, unless --polygon-ws-url is given).")
@click.option("--sierra-data", type=click.Path(file_okay=False), metavar="DIR",
              help="Follow Sierra Chart's .scid/.depth files in DIR for --symbols.")
@click.option("--publish", metavar="ADDR", help=f"ZeroMQ PUB address [{DEFAULT_ADDR}].")
@click.option("--no-publish", is_flag=True, help="Do not publish on the bus.")
@click.option("--levels-file", type=click.Path(dir_okay=False), help="Sierra Chart levels file to keep current.")
@click.option("--duration", help="Stop after this long (30s, 5m, 1h); default: until Ctrl-C.")
@click.option("--sim", is_flag=True, help="Start the embedded simulators and record from them.")
@click.option("--seed", type=int, default=0, show_default=True, help="Simulator seed (with --sim).")
@click.option("--rate", type=float, default=2000.0, show_default=True, help="Simulator messages/s (with --sim).")
@click.option("--on-alert", metavar="COMMAND", help="Run COMMAND with each alert as JSON on stdin.")
@click.option("--exit-if-unreachable", "exit_if_unreachable", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Exit 1 if a DTC server is not up within SECONDS (default: wait for it).")
@click.option("-q", "--quiet", is_flag=True, help="No status line.")
@handle_errors
def record(data_dir, config_path, dtc_addrs, symbols, depth, polygon_url, underlyings, poll,
           no_dtc, no_polygon, publish, no_publish, levels_file, duration, sim, seed, rate,
           on_alert, exit_if_unreachable, quiet, sierra_data, polygon_ws_url):
    """Record DTC order flow and Polygon options chains into the log.

    \b
    Examples:
      mia record --sim --duration 30s
      mia record --dtc 127.0.0.1:11099 --symbols ESZ6 --dtc 127.0.0.1:11100 --symbols NQZ6
      mia record --config mia.toml --levels-file C:/SierraChart/Data/mia-levels.txt
    """
    import msgspec

    from mia.data.dtc.config import DtcConfig
    from mia.recorder.live import Recorder

    cfg = _load_cfg(config_path)
    seconds = _parse_duration(duration)
    if sierra_data:
        from mia.data.sierra.config import SierraConfig

        ssyms = _split(symbols) or [s for c in cfg.sierra for s in c.symbols]
        if not ssyms:
            raise UsageError("--sierra-data needs --symbols (or symbols in the config)")
        base = cfg.sierra[0] if cfg.sierra else SierraConfig()
        cfg = msgspec.structs.replace(cfg, sierra=[msgspec.structs.replace(
            base, data_dir=sierra_data, symbols=ssyms)])
    if dtc_addrs:
        syms = _split(symbols) or [s for d in cfg.dtc for s in d.symbols]
        if not syms:
            raise UsageError("--dtc needs --symbols (or symbols in the config)")
        conns = []
        for addr in dtc_addrs:
            host, port = _parse_hostport(addr)
            conns.append(DtcConfig(host=host, port=port, symbols=syms))
        cfg = msgspec.structs.replace(cfg, dtc=conns)
    elif symbols and not sierra_data:
        cfg = msgspec.structs.replace(cfg, dtc=[msgspec.structs.replace(d, symbols=_split(symbols)) for d in cfg.dtc])
    if depth is not None:
        cfg = msgspec.structs.replace(cfg, dtc=[msgspec.structs.replace(d, depth=depth) for d in cfg.dtc])
    pol = cfg.polygon
    if polygon_url:
        pol = msgspec.structs.replace(pol, base_url=polygon_url)
    if underlyings:
        pol = msgspec.structs.replace(pol, underlyings=_split(underlyings))
    if poll is not None:
        pol = msgspec.structs.replace(pol, poll_s=poll)
    if polygon_ws_url:
        if not polygon_ws_url.startswith(("ws://", "wss://")):
            raise UsageError(f"--polygon-ws-url {polygon_ws_url!r} is not ws://HOST:PORT or wss://HOST")
        pol = msgspec.structs.replace(pol, stream=True, stream_url=polygon_ws_url)
    cfg = msgspec.structs.replace(cfg, polygon=pol)
    if publish:
        cfg = msgspec.structs.replace(cfg, bus=msgspec.structs.replace(cfg.bus, address=publish))
    if no_publish:
        cfg = msgspec.structs.replace(cfg, bus=msgspec.structs.replace(cfg.bus, enabled=False))
    if levels_file:
        cfg = msgspec.structs.replace(cfg, levels_file=levels_file)
    if on_alert:
        cfg = msgspec.structs.replace(cfg, monitor=msgspec.structs.replace(cfg.monitor, on_alert=on_alert))
    data_dir = cfg.data_dir if (cfg.data_dir and data_dir == _default_data_dir()) else data_dir
    from mia.engine.storage import is_url

    if is_url(data_dir):
        raise UsageError(f"recording needs a local data directory, not {data_dir}: recording "
                         f"stays local (upload closed days with `mia push`)")

    async def go(stop):
        import asyncio

        sims = None
        run_cfg = cfg
        if sim:
            from mia.recorder.sim import Simulators

            sims = await Simulators(seed=seed, rate=rate).start()
            run_cfg = sims.record_config(cfg, symbols=_split(symbols), poll_s=poll or 5.0)
        if no_dtc:
            run_cfg = msgspec.structs.replace(run_cfg, dtc=[])
        if no_polygon:
            run_cfg = msgspec.structs.replace(run_cfg, polygon=msgspec.structs.replace(
                run_cfg.polygon, enabled=False, stream=run_cfg.polygon.stream and bool(polygon_ws_url)))
        if not run_cfg.dtc and not run_cfg.sierra and not (run_cfg.polygon.enabled and run_cfg.polygon.underlyings) \
                and not run_cfg.polygon.stream:
            raise UsageError("nothing to record: give --dtc HOST:PORT --symbols ..., a config, or --sim")
        rec = Recorder(run_cfg, data_dir, status=_status_printer(quiet),
                       exit_if_unreachable_s=exit_if_unreachable)
        watcher = asyncio.create_task(stop.wait())
        watcher.add_done_callback(lambda _: rec.stop("signal"))
        try:
            return await rec.run(seconds)
        finally:
            watcher.cancel()
            if sims is not None:
                await sims.stop()

    result = _run_async(go)
    if not quiet and sys.stderr.isatty():
        click.echo("", err=True)
    click.echo(f"recorded {result.events:,} events and {result.derived:,} derived into "
               f"{data_dir}/{result.date} (recording {result.recording_id}, {result.reason})")


@cli.command()
@data_dir_option
@click.option("--date", "date_", required=True, help="The UTC day to replay, YYYY-MM-DD.")
@click.option("--from", "from_", metavar="HH:MM", help="Start of the window (UTC).")
@click.option("--to", "to", metavar="HH:MM", help="End of the window (UTC, exclusive).")
@click.option("--speed", type=click.Choice(["1", "10", "max"]), default="max", show_default=True)
@click.option("--symbols", help="Comma-separated symbols to summarise and publish.")
@click.option("--publish", metavar="ADDR", help="Publish the replayed events on this ZeroMQ address.")
@click.option("--check", is_flag=True, help="Recompute every derived event and compare with the live ones.")
@click.option("--deep", is_flag=True,
              help="With --check: also re-parse every chain snapshot's raw pages and prove the "
                   "stored ChainSnapshots equal to them.")
@click.option("--live-only", is_flag=True,
              help="Fold only what was recorded live (leave out imported and backfilled history).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="mia.toml with the reducer settings used live.")
@json_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@handle_errors
def replay(data_dir, date_, from_, to, speed, symbols, publish, check, deep, live_only, config_path,
           as_json, quiet):
    """Replay a recorded day through the reducers; --check proves live and replay agree.

    \b
    Examples:
      mia replay --date 2026-11-20 --check
      mia replay --date 2026-11-20 --check --deep
      mia replay --date 2026-11-20 --from 14:30 --to 15:00 --symbols ESZ6 --json
      mia replay --date 2026-11-20 --speed 10 --publish tcp://127.0.0.1:5557
    """

    from mia.replay import replay_day
    from mia.replay.run import summary_lines

    if deep and not check:
        raise UsageError("--deep goes with --check")
    cfg = _load_cfg(config_path)
    date, start, end = _date_and_window(date_, from_, to)
    show = not quiet and sys.stderr.isatty()
    bar = click.progressbar(length=1, label=f"replay {date}", file=sys.stderr) if show else None

    def progress(done, total):
        if bar is not None:
            bar.length = max(total, done, 1)
            bar.update(done - bar.pos)

    try:
        result = replay_day(data_dir, date, start=start, end=end, symbols=_split(symbols),
                            speed=speed, publish=publish, check=check, config=cfg,
                            live_only=live_only, deep=deep,
                            progress=progress if bar is not None else None)
    finally:
        if bar is not None:
            bar.render_finish()
    rate = result.events / result.seconds if result.seconds else 0.0
    if as_json:
        _echo_json(result.json())
    else:
        click.echo(f"replayed {result.events:,} events of {date} in {result.seconds:.2f}s "
                   f"({rate:,.0f}/s), {result.derived:,} derived")
        for line in summary_lines(result):
            click.echo(line)
    if check:
        if result.check == "ok":
            click.echo(f"check: ok ({result.derived:,} derived events identical)", err=True)
            if result.chains is not None:
                c = result.chains
                click.echo(f"check --deep: ok ({c.snapshots:,} chain snapshots equal to their pages"
                           + (f"; {c.page_only:,} recorded as pages only" if c.page_only else "") + ")",
                           err=True)
            if result.frames is not None and result.frames.frames:
                f = result.frames
                click.echo(f"check --deep: ok ({f.frames:,} Polygon stream frames re-parsed into their "
                           f"{f.events:,} events)", err=True)
        else:
            click.echo(f"check: MISMATCH: {result.mismatch}", err=True)
            sys.exit(1)


@cli.command()
@data_dir_option
@click.option("--date", "date_", required=True, metavar="YYYY-MM-DD", help="The UTC day to fill.")
@click.option("--dtc-historical", "historical", metavar="HOST:PORT",
              help="DTC historical data port [the gap's DTC host, port 11098].")
@click.option("--symbols", help="Comma-separated symbols to fill [every DTC instrument of the day].")
@click.option("--no-zlib", is_flag=True, help="Ask for the ticks uncompressed.")
@click.option("--timeout", type=float, default=15.0, show_default=True,
              help="Seconds without data before a request attempt fails.")
@click.option("--attempts", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Tries per request (capped, jittered backoff between them).")
@json_option
@handle_errors
def backfill(data_dir, date_, historical, symbols, no_zlib, timeout, attempts, as_json):
    """Fill the day's DTC gaps (Gap events of the live stream) with the trades the DTC
    historical port has for them, into the day's `backfill` stream. Running it again adds
    nothing. `mia replay` folds the filled trades; `--live-only` leaves them out.

    \b
    Examples:
      mia backfill --date 2026-11-20
      mia backfill --date 2026-11-20 --dtc-historical 127.0.0.1:11098 --symbols ESZ6 --json
    """
    from mia.data.dtc.backfill import backfill as run_backfill

    result = run_backfill(data_dir, date_, historical=historical, symbols=_split(symbols),
                          use_zlib=not no_zlib, idle_timeout_s=timeout, attempts=attempts)
    if as_json:
        _echo_json(result)
        return
    if not result.gaps:
        click.echo(f"{result.date}: no DTC gaps to fill")
        return
    for w in result.windows:
        click.echo(f"  {w.symbol:8} {_fmt_ts(w.start_ns)}-{_fmt_ts(w.end_ns)} UTC  "
                   f"{w.ticks:,} ticks from {w.historical}, {w.trades:,} new")
    where = f" -> {result.segment}" if result.segment else " (nothing new: already filled)"
    click.echo(f"{result.date}: {result.gaps} gaps, {len(result.windows)} windows, "
               f"{result.added:,} trades added{where}")


@cli.command()
@click.option("--dtc-port", type=int, default=11099, show_default=True)
@click.option("--dtc-historical-port", type=int, default=11098, show_default=True,
              help="The DTC simulator's historical data port (what `mia backfill` asks).")
@click.option("--polygon-port", type=int, default=8765, show_default=True)
@click.option("--polygon-ws-port", type=int, default=8766, show_default=True,
              help="Polygon's WebSocket clusters (/options, /indices).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--rate", type=float, default=2000.0, show_default=True, help="DTC messages per second.")
@click.option("--duration", help="Stop after this long (default: until Ctrl-C).")
@handle_errors
def sim(dtc_port, dtc_historical_port, polygon_port, seed, rate, duration, polygon_ws_port):
    """Serve the DTC exchange simulator and the Polygon API and WebSocket simulators on loopback.

    \b
    Example:
      mia sim --seed 7 &   then   mia record --dtc 127.0.0.1:11099 --symbols ESZ6 \\
          --polygon-url http://127.0.0.1:8765 --polygon-ws-url ws://127.0.0.1:8766
          (POLYGON_API_KEY=sim-key-not-a-secret)
    """
    from mia.recorder.sim import SIM_API_KEY, Simulators

    seconds = _parse_duration(duration)

    async def go(stop):
        import asyncio

        async with Simulators(seed=seed, dtc_port=dtc_port, polygon_port=polygon_port, rate=rate,
                              dtc_historical_port=dtc_historical_port, polygon_ws_port=polygon_ws_port) as sims:
            click.echo(f"DTC simulator on 127.0.0.1:{sims.dtc.port} (historical data on "
                       f"{sims.dtc_historical}), Polygon simulator on "
                       f"{sims.polygon.url}, its streams on {sims.polygon_ws.url} (API key "
                       f"{SIM_API_KEY!r}); Ctrl-C stops", err=True)
            try:
                await asyncio.wait_for(stop.wait(), seconds)
            except asyncio.TimeoutError:
                pass

    _run_async(go)


@cli.command()
@click.argument("addr", default=DEFAULT_ADDR)
@click.option("--topic", default="", help="Topic prefix, e.g. Trade.ESZ6 or GammaLevels.")
@click.option("--count", type=int, default=None, help="Stop after this many events.")
@click.option("--timeout", type=float, default=None, help="Stop after this many seconds.")
@click.option("--flow", "flow", is_flag=True,
              help="The option flow for people: one line per OptionFlow bar and UnusualTrade.")
@handle_errors
def tail(addr, topic, count, timeout, flow):
    """Print events from a running recorder's bus, one JSON object per line.

    \b
    Examples:
      mia tail --topic GammaLevels
      mia tail --topic OptionFlow.SPX
      mia tail --flow
    """
    from mia.engine.bus import tail as bus_tail
    from mia.engine.bus import tail_line

    if flow:
        from mia.analytics.flow import flow_line
        from mia.engine.bus import Subscriber

        topics = (topic,) if topic else ("OptionFlow", "UnusualTrade")
        with Subscriber(addr, topics) as sub:
            for msg in sub.messages(timeout_s=timeout, count=count):
                click.echo(flow_line(msg.event))
        return
    for msg in bus_tail(addr, topic, count=count, timeout_s=timeout):
        click.echo(tail_line(msg))


@cli.command()
@data_dir_option
@click.option("--seconds", type=float, default=20.0, show_default=True, help="How long to record.")
@click.option("--seed", type=int, default=0, show_default=True)
@handle_errors
def demo(data_dir, seconds, seed):
    """Simulators -> record -> replay --check -> summary and Sierra levels, in under a minute.

    \b
    Examples:
      mia demo
      mia demo --seconds 10 --data-dir /tmp/mia-demo
    """
    from mia.recorder.demo import run_demo

    ok = run_demo(data_dir, seconds=seconds, seed=seed, echo=click.echo)
    sys.exit(0 if ok else 1)


@cli.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="mia.toml with the reducer settings (default: ./mia.toml when it exists).")
@json_option
@handle_errors
def warmup(config_path, as_json):
    """Compile every numba kernel into numba's cache now (make runs it after installing).

    The cache is $NUMBA_CACHE_DIR when set, else __pycache__ beside the kernels' modules; a
    warm cache lets `mia record` and `mia replay` start without compiling.

    \b
    Examples:
      mia warmup
      NUMBA_CACHE_DIR=/var/cache/mia mia warmup --json
    """
    from mia.warmup import compile_kernels

    report = compile_kernels(_load_cfg(config_path))
    if as_json:
        _echo_json(report.json())
    else:
        click.echo(f"{report.kernels} kernels, {report.signatures} signatures ready in "
                   f"{report.seconds:.1f}s; cache: {', '.join(report.cache_dirs)}")
    if report.uncalled:
        click.echo(f"mia: warning: kernels no warm-up reached (they compile on first use): "
                   f"{', '.join(report.uncalled)}", err=True)


@cli.command()
@data_dir_option
@click.option("--date", "date_", required=True, help="The UTC day, YYYY-MM-DD.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="mia.toml with [monitor] thresholds.")
@json_option
@handle_errors
def health(data_dir, date_, config_path, as_json):
    """Data quality of a recorded day against the thresholds, per source and per hour.

    Computed from the events alone, so it equals what the recorder saw live. Exit status 1 when
    the overall quality misses its threshold.

    \b
    Example:
      mia health --date 2026-11-20 --json
    """

    from mia.analytics.health import format_health
    from mia.replay.outputs import health_of_day

    metrics = health_of_day(data_dir, date_, config=_load_cfg(config_path))
    if as_json:
        _echo_json(metrics)
    else:
        click.echo(format_health(metrics))
    if metrics.overall.quality_ok is False:
        sys.exit(1)




# --- outputs: levels, export, report ----------------------------------------------------------


class _Progress:
    """A click progress bar on stderr, shown only on a terminal and without --quiet.

    Called as progress(done, total); safe to call when hidden."""

    def __init__(self, label: str, quiet: bool) -> None:
        self.bar = None
        if not quiet and sys.stderr.isatty():
            self.bar = click.progressbar(length=1, label=label, file=sys.stderr)

    def __call__(self, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.length = max(total, 1)
            self.bar.update(max(0, min(done, self.bar.length)) - self.bar.pos)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.render_finish()


def quiet_option(fn):
    return click.option("-q", "--quiet", is_flag=True, help="No progress bar on stderr.")(fn)


def _date_and_window(date_: str, from_: str | None, to: str | None):
    from mia.engine.clock import parse_date, window_ns

    date = parse_date(date_)
    start, end = window_ns(date, from_, to)
    return date, start, end


@cli.command()
@data_dir_option
@click.option("--date", "date_", required=True, metavar="YYYY-MM-DD", help="The UTC day.")
@click.option("--at", "at", metavar="HH:MM", help="The moment (UTC) to rebuild [end of the day].")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the file here (atomically) instead of stdout.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="mia.toml with the reducer settings used live.")
@json_option
@quiet_option
@handle_errors
def levels(data_dir, date_, at, output, config_path, as_json, quiet):
    """The Sierra Chart levels file of a recorded day, at any moment of it.

    Replays the day up to --at through the standard reducers and writes the levels from the last
    GammaLevels of each underlying and the order-flow summary: the file the recorder kept
    current live (--levels-file), rebuilt after the fact. --json prints the levels as JSON.

    \b
    Examples:
      mia levels --date 2026-11-20
      mia levels --date 2026-11-20 --at 15:30 -o C:/SierraChart/Data/mia-levels.txt
      mia levels --date 2026-11-20 --json
    """
    from mia.analytics.levels import format_levels_file, levels_json, write_levels_file
    from mia.replay.outputs import levels_at

    date, _, _ = _date_and_window(date_, None, at)
    with _Progress(f"replay {date}", quiet) as progress:
        lv = levels_at(data_dir, date, at, config=_load_cfg(config_path), progress=progress)
    if output:
        write_levels_file(output, lv)
        if as_json:
            click.echo(levels_json(lv))
        else:
            click.echo(f"wrote {len(lv)} levels of {date}{' at ' + at if at else ''} to {output}", err=True)
    elif as_json:
        click.echo(levels_json(lv))
    else:
        click.echo(format_levels_file(lv), nl=False)


@cli.command()
@data_dir_option
@click.option("--date", "date_", required=True, metavar="YYYY-MM-DD", help="The UTC day.")
@click.option("--kind", required=True,
              type=click.Choice(["trades", "quotes", "book", "bars", "levels", "chains", "term", "iv",
                                 "option_trades", "flow", "unusual"]),
              help="What to export: trades, quotes, book (depth), bars (OrderflowBar), levels "
                   "(GammaLevels), chains (one row per option contract per chain page), term "
                   "(TermStructure: VIX and the VX curve), iv (IvSurface: ATM IV, 25-delta skew, smiles), "
                   "option_trades (OptionTrade, Polygon's stream), flow (OptionFlow bars), unusual "
                   "(UnusualTrade).")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), default=None,
              help="File format [from the -o suffix, else parquet].")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The file to write.")
@click.option("--symbols", help="Comma-separated symbols (underlyings for levels).")
@click.option("--from", "from_", metavar="HH:MM", help="Start of the window (UTC, on ts_recv).")
@click.option("--to", "to", metavar="HH:MM", help="End of the window (UTC, exclusive).")
@json_option
@quiet_option
@handle_errors
def export(data_dir, date_, kind, fmt, output, symbols, from_, to, as_json, quiet):
    """Export one kind of a recorded day as a typed Parquet or CSV table.

    Timestamps are timestamp[ns, UTC] (CSV: ISO 8601 with nanoseconds), symbols strings, sides
    int8: readable as is by pandas, polars and DuckDB. Needs pyarrow (pip install 'mia[export]').

    \b
    Examples:
      mia export --date 2026-11-20 --kind trades -o trades.parquet
      mia export --date 2026-11-20 --kind quotes --symbols ESZ6 --from 14:30 --to 15:00 -o es.csv
      mia export --date 2026-11-20 --kind chains --format parquet -o chains.parquet --json
    """

    from mia.replay.export import export_day

    date, start, end = _date_and_window(date_, from_, to)
    if fmt is None:
        fmt = "csv" if output.lower().endswith(".csv") else "parquet"
    with _Progress(f"export {kind}", quiet) as progress:
        summary = export_day(data_dir, date, kind, fmt, output, symbols=_split(symbols), start=start,
                             end=end, progress=progress)
    if as_json:
        _echo_json(summary)
    else:
        click.echo(f"exported {summary.rows:,} {kind} rows of {date} to {output} "
                   f"({fmt}, {len(summary.columns)} columns, {summary.bytes:,} B)")


@cli.command()
@data_dir_option
@click.option("--date", "date_", required=True, metavar="YYYY-MM-DD", help="The UTC day.")
@click.option("--to", "to", metavar="HH:MM", help="End of the replay (UTC) [end of the day].")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="The HTML file [mia-report-DATE.html].")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="mia.toml with the reducer settings used live.")
@json_option
@quiet_option
@handle_errors
def report(data_dir, date_, to, output, config_path, as_json, quiet):
    """One self-contained HTML report of a recorded day (charts embedded, no external files).

    Price with VWAP bands and cumulative delta, the volume profile with POC and value area, GEX by
    strike with spot, zero gamma, walls and max pain, the gamma profile, and the key levels and
    dealer bias through the day. Needs matplotlib (pip install 'mia[report]'). --json prints the
    values each figure draws.

    \b
    Examples:
      mia report --date 2026-11-20
      mia report --date 2026-11-20 --to 16:00 -o close.html
    """

    from mia.replay.outputs import report_day

    date, _, end = _date_and_window(date_, None, to)
    output = output or f"mia-report-{date}.html"
    with _Progress(f"replay {date}", quiet) as progress, _Progress("draw figures", quiet) as drawing:
        rep = report_day(data_dir, date, end=end, config=_load_cfg(config_path), progress=progress,
                         figure_progress=drawing)
    tmp = output + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(rep.html)
    os.replace(tmp, output)
    if as_json:
        _echo_json({"date": date, "path": output, "bytes": len(rep.html.encode()),
                    "figures": rep.figures})
    else:
        click.echo(f"wrote {output} ({len(rep.figures)} figures, {len(rep.html):,} B)")

@cli.command()
@data_dir_option
@click.option("--from-date", "from_date", required=True, metavar="YYYY-MM-DD",
              help="First UTC day (inclusive).")
@click.option("--to-date", "to_date", required=True, metavar="YYYY-MM-DD",
              help="Last UTC day (inclusive).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Local Dask worker processes [the cores]; 0: serially, in this process.")
@click.option("--scheduler", metavar="tcp://HOST:PORT",
              help="Run on this existing Dask cluster instead of starting one.")
@click.option("--kind", type=click.Choice(["summary", "bars", "levels"]), default="summary",
              show_default=True,
              help="summary: a row per day and instrument (order-flow totals) and per day and "
                   "underlying (last gamma levels); bars: every OrderflowBar; levels: every "
                   "GammaLevels.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The Parquet file to write.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="mia.toml with the reducer settings (sent to the workers).")
@json_option
@quiet_option
@handle_errors
def study(data_dir, from_date, to_date, workers, scheduler, kind, output, config_path, as_json,
          quiet):
    """Replay every day of a date range through the standard reducers, on Dask, into one table.

    Each day that holds data is folded on a worker exactly as `mia replay` folds it; the rows
    are gathered into one typed Parquet table (a `date` column first, timestamps in UTC),
    sorted by date and the same whatever the number of workers. A day that fails is reported
    on stderr, one line each, the others still finish, and the exit status is 1. Needs Dask
    (pip install 'mia[study]') and pyarrow, unless --workers 0.

    \b
    Examples:
      mia study --from-date 2026-11-02 --to-date 2026-11-27 -o november.parquet
      mia study --from-date 2026-11-02 --to-date 2026-11-27 --kind bars --workers 4 -o bars.parquet
      mia study --from-date 2026-11-02 --to-date 2026-11-06 --scheduler tcp://10.0.0.5:8786 -o s.parquet
    """
    from mia.replay.study import write_study

    if workers is not None and scheduler is not None:
        raise UsageError("give --workers or --scheduler, not both")
    try:  # Dask configures its loggers (INFO) when imported: keep them at the -v level
        import distributed  # noqa: F401
    except ImportError:
        pass
    logging.getLogger("distributed").setLevel(logging.getLogger().getEffectiveLevel())
    with _Progress(f"study {kind}", quiet) as progress:
        summary = write_study(data_dir, from_date, to_date, kind, output,
                              config=_load_cfg(config_path), workers=workers,
                              scheduler=scheduler, progress=progress)
    for failure in summary.failed:
        click.echo(f"mia: error: {failure.date}: {failure.error}", err=True)
    if as_json:
        _echo_json(summary)
    else:
        click.echo(f"studied {len(summary.days)} days ({summary.start} to {summary.end}) on "
                   f"{summary.workers or 'no'} workers in {summary.seconds:.1f}s: "
                   f"{summary.rows:,} {kind} rows to {output}"
                   + (f"; {len(summary.failed)} days FAILED" if summary.failed else ""))
    if summary.failed:
        sys.exit(1)


# --- import: history from Sierra Chart's files ------------------------------------------------


@cli.group("import")
def import_() -> None:
    """Import history into the log (the `import` stream, one segment per UTC day).

    \b
    Examples:
      mia import scid C:/SierraChart/Data/ESZ6.scid --from 2026-11-02
      mia import depth C:/SierraChart/Data/MarketDepthData/ESZ6.2026-11-27.depth
    """


def _sierra_import(kind, paths, data_dir, symbol, date_from, date_to, tick_size, as_json, quiet):
    from mia.data.sierra.importer import import_files

    if not paths:
        raise UsageError(f"give at least one .{kind} file")
    ticks = {symbol or "": tick_size} if tick_size else None
    if ticks and not symbol:
        from mia.data.sierra.symbols import symbol_of_file

        ticks = {symbol_of_file(p): tick_size for p in paths}
    with _Progress(f"importing {len(paths)} .{kind} file(s)", quiet) as progress:
        summary = import_files(data_dir, paths, kind, symbol=symbol, date_from=date_from,
                               date_to=date_to, tick_sizes=ticks, progress=progress)
    for f in summary.files:
        for d in f.damage:
            click.echo(f"mia: warning: {f.path} at byte {d.offset}: {d.reason}"
                       + (f" ({d.records:,} records left out)" if d.records else ""), err=True)
    if as_json:
        _echo_json(summary)
        return
    for f in summary.files:
        days = f"{f.days[0]}..{f.days[-1]}" if len(f.days) > 1 else (f.days[0] if f.days else "-")
        click.echo(f"{f.path}: {f.symbol} {f.records:,} records: {f.imported:,} imported "
                   f"({f.events:,} events, days {days}), {f.already_present:,} already present, "
                   f"{f.outside_dates:,} outside the dates, {f.damaged:,} damaged")


def _sierra_import_options(fn):
    for opt in reversed([
        click.argument("paths", nargs=-1, type=click.Path(exists=True, dir_okay=False)),
        data_dir_option,
        click.option("--symbol", help="The symbol (default: from the file name)."),
        click.option("--from", "date_from", metavar="YYYY-MM-DD", help="First UTC day to import."),
        click.option("--to", "date_to", metavar="YYYY-MM-DD", help="Last UTC day to import (inclusive)."),
        click.option("--tick-size", type=float, help="Tick size, for a root mia does not know."),
        json_option,
        quiet_option,
    ]):
        fn = opt(fn)
    return fn


@import_.command("scid")
@_sierra_import_options
@handle_errors
def import_scid(paths, data_dir, symbol, date_from, date_to, tick_size, as_json, quiet):
    """Import Sierra Chart intraday files (.scid): trades, and quotes from tick records.

    Re-importing a file adds only the records not imported before; damaged records are reported
    with their byte offset and left out.

    \b
    Examples:
      mia import scid C:/SierraChart/Data/ESZ6.scid --from 2026-11-02 --to 2026-11-27
      mia import scid ESZ6.scid NQZ6.scid --json
    """
    _sierra_import("scid", paths, data_dir, symbol, date_from, date_to, tick_size, as_json, quiet)


@import_.command("depth")
@_sierra_import_options
@handle_errors
def import_depth(paths, data_dir, symbol, date_from, date_to, tick_size, as_json, quiet):
    """Import Sierra Chart market depth files (.depth) as BookLevel events.

    \b
    Example:
      mia import depth C:/SierraChart/Data/MarketDepthData/ESZ6.2026-11-27.depth
    """
    _sierra_import("depth", paths, data_dir, symbol, date_from, date_to, tick_size, as_json, quiet)


@import_.command("dbn")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@data_dir_option
@click.option("--from", "date_from", metavar="YYYY-MM-DD", help="First UTC day to import.")
@click.option("--to", "date_to", metavar="YYYY-MM-DD", help="Last UTC day to import (inclusive).")
@json_option
@quiet_option
@handle_errors
def import_dbn(paths, data_dir, date_from, date_to, as_json, quiet):
    """Import Databento DBN files (.dbn, .dbn.zst): definition, trades, mbp-1, tbbo, mbp-10, mbo.

    Definitions become Instruments, trades Trades, MBP-1/TBBO Trades and Quotes, MBP-10 and MBO
    the 10-level book (BookLevel); one segment per UTC day of the records' ts_recv. Re-importing
    a file adds nothing; another schema (ohlcv-1m, statistics, ...) is an error (exit 2).

    \b
    Examples:
      mia import dbn glbx-mdp3-20261124.mbo.dbn.zst
      mia import dbn es-definition.dbn.zst es-trades.dbn.zst --json
    """
    from mia.data.databento.importer import import_files

    if not paths:
        raise UsageError("give at least one .dbn or .dbn.zst file")
    with _Progress(f"importing {len(paths)} DBN file(s)", quiet) as progress:
        summary = import_files(data_dir, paths, date_from=date_from, date_to=date_to,
                               progress=progress)
    for f in summary.files:
        if f.torn_bytes:
            click.echo(f"mia: warning: {f.path}: torn tail, {f.torn_bytes:,} bytes of a partial "
                       "record left out", err=True)
    if as_json:
        _echo_json(summary)
        return
    for f in summary.files:
        days = f"{f.days[0]}..{f.days[-1]}" if len(f.days) > 1 else (f.days[0] if f.days else "-")
        click.echo(f"{f.path}: {f.schema} {','.join(f.symbols) or '-'} {f.records:,} records: "
                   f"{f.imported:,} imported ({f.events:,} events, days {days}), "
                   f"{f.already_present:,} already present, {f.outside_dates:,} outside the dates")


@cli.command()
@click.option("--date", "date_", required=True, metavar="YYYY-MM-DD", help="The UTC day to upload.")
@click.argument("url")
@data_dir_option
@json_option
@quiet_option
@handle_errors
def push(date_, url, data_dir, as_json, quiet):
    """Upload a closed day to object storage (URL: s3://bucket/prefix, any fsspec URL).

    The day is verified first; a segment still being written is refused. Segments already
    there with the same size and checksum are skipped. Reading commands then take the URL as
    --data-dir. Credentials: the AWS environment; endpoint: AWS_ENDPOINT_URL or [storage].

    \b
    Examples:
      mia push --date 2026-11-20 s3://my-bucket/mia
      mia replay --date 2026-11-20 --check --data-dir s3://my-bucket/mia
    """
    from mia.engine.storage import configure
    from mia.replay.push import push_day

    configure(_load_cfg(None).storage)

    def progress(line: str) -> None:
        if not quiet:
            click.echo(line, err=True)

    summary = push_day(data_dir, date_, url, progress=progress)
    if as_json:
        _echo_json(summary)
        return
    click.echo(f"{summary.date} -> {summary.url}: {summary.uploaded} uploaded "
               f"({summary.bytes_uploaded:,} B), {summary.skipped} already there, "
               f"{summary.seconds:.1f}s")


def main() -> None:
    cli(prog_name="mia")


if __name__ == "__main__":
    main()
